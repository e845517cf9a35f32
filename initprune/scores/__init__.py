"""Scoring: the criterion registry and :func:`score`, which runs one criterion on a model."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..distributed import sample_shard, shard_batches
from ..errors import InitpruneError
from ..prunable import prunable_parameters
from . import data_free, fisher, gauss_newton, gradient, hutchinson  # noqa: F401  (registers the criteria)
from .registry import Criterion, ScoreDict, ScoringContext, criteria, get_criterion, register

__all__ = ["Criterion", "ScoreDict", "ScoringContext", "criteria", "get_criterion", "register", "score"]


def as_batches(data: Any, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """Materialize scoring data as a list of ``(inputs, targets)`` pairs on ``device``.

    ``data`` is any iterable of ``(inputs, targets)`` batches (a DataLoader, a list of pairs), or one
    ``(inputs, targets)`` pair of tensors.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        data = [data]
    batches = []
    for i, item in enumerate(data):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2 and torch.is_tensor(item[0])):
            raise InitpruneError(
                f"scoring data must yield (inputs, targets) pairs of tensors; batch {i} is a "
                f"{type(item).__name__}"
            )
        x, y = item[0], item[1]
        if not torch.is_tensor(y):
            y = torch.as_tensor(y)
        if x.shape[0] != y.shape[0]:
            raise InitpruneError(f"batch {i} has {x.shape[0]} inputs but {y.shape[0]} targets")
        batches.append((x.to(device, non_blocking=True), y.to(device, non_blocking=True)))
    if not batches or sum(x.shape[0] for x, _ in batches) == 0:
        raise InitpruneError("scoring data is empty")
    return batches


@contextmanager
def scoring_mode(model: nn.Module, params: Mapping[str, nn.Parameter]):
    """Eval mode and gradients on ``params`` for the duration; modes and flags restored exactly after."""
    modes = {m: m.training for m in model.modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    named = dict(model.named_parameters())
    try:
        model.eval()
        for p in params.values():
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training
        for name, flag in flags.items():
            named[name].requires_grad_(flag)


def score(
    model: nn.Module,
    criterion: str,
    data: Any = None,
    *,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    prunable: Mapping[str, nn.Parameter] | None = None,
    include_classifier: bool = False,
    exclude_first: bool = False,
    progress: bool = False,
    **options: Any,
) -> ScoreDict:
    """Score every prunable weight of ``model`` with ``criterion``; larger scores are kept.

    Returns one score tensor per prunable parameter, keyed by ``model.named_parameters()`` names. ``data``
    is an iterable of ``(inputs, targets)`` batches (required by data-dependent criteria); ``options`` are
    the criterion's own (see ``get_criterion(name).options``); an option it does not take is an error.
    ``prunable`` overrides the default choice of prunable weights (``prunable_parameters``). Scoring runs
    in eval mode and leaves the model exactly as it was; ``progress`` shows a bar on a terminal where
    the criterion is long (Hutchinson). Under a process group (torchrun) ``data`` must be the same on
    every rank: each rank scores its contiguous part of the samples, the curvature sums are all-reduced,
    and every rank returns the scores one process would compute from all of them.
    """
    crit = get_criterion(criterion)
    crit.check_options(options)
    params = (
        dict(prunable)
        if prunable is not None
        else prunable_parameters(model, include_classifier=include_classifier, exclude_first=exclude_first)
    )
    if not params:
        raise InitpruneError("no prunable parameters given")
    device = next(iter(params.values())).device
    if crit.needs_data and data is None:
        raise InitpruneError(f"criterion {criterion!r} needs scoring data (data=None was given)")
    batches = as_batches(data, device) if data is not None else None
    if input_shape is None and batches is not None:
        input_shape = tuple(batches[0][0].shape[1:])
    # Under torchrun each rank scores its own part of the samples; the engines sum over all ranks.
    batches, shard = shard_batches(batches) if batches is not None else (None, None)
    ctx = ScoringContext(
        model, params, batches, int(seed), None if input_shape is None else tuple(input_shape), progress
    )
    with scoring_mode(model, params), sample_shard(shard):
        scores = crit.fn(ctx, **options)
    return {name: scores[name].detach() for name in params}
