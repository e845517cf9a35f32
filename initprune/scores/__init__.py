"""Scoring: the criterion registry and :func:`score`, which runs one criterion on a model."""

from . import data_free, fisher, gauss_newton, gradient, hutchinson  # noqa: F401  (registers the criteria)
from .batches import as_batches, check_batches
from .degenerate import warn_degenerate, zero_scale_norms
from .registry import (
    ChunkSize,
    Criterion,
    OptionSpec,
    Probes,
    Samples,
    ScoreDict,
    ScoringContext,
    Temperature,
    criteria,
    get_criterion,
    register,
)
from .scoring import attention_backend, check_loss, score, score_batches, scoring_mode

__all__ = [
    "ChunkSize",
    "Criterion",
    "OptionSpec",
    "Probes",
    "Samples",
    "ScoreDict",
    "ScoringContext",
    "Temperature",
    "as_batches",
    "attention_backend",
    "check_batches",
    "check_loss",
    "criteria",
    "get_criterion",
    "register",
    "score",
    "score_batches",
    "scoring_mode",
    "warn_degenerate",
    "zero_scale_norms",
]
