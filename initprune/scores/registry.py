"""The criterion registry and the context a criterion scores in.

A criterion is a function ``fn(ctx, **options) -> {name: score}`` whose keyword-only parameters are its
options, with their defaults. It only scores: thresholding and masking are shared (masks.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..curvature.samples import Batch
from ..distributed import global_samples
from ..errors import InitpruneError, unknown_choice

ScoreDict = dict[str, Tensor]


@dataclass
class ScoringContext:
    """What a criterion sees: the model (in eval mode), its prunable parameters, and the scoring data.

    Under torchrun ``batches`` holds this rank's part of the scoring samples and the curvature engines
    sum over every rank's part (:mod:`initprune.distributed`); a criterion needs no code of its own.
    """

    model: nn.Module
    params: dict[str, nn.Parameter]
    batches: Sequence[Batch] | None
    seed: int
    input_shape: tuple[int, ...] | None
    progress: bool = False
    device: torch.device = field(init=False)

    def __post_init__(self) -> None:
        self.device = next(iter(self.params.values())).device

    @property
    def num_samples(self) -> int:
        """N, the scoring samples over all ranks (``batches`` holds this rank's part under torchrun)."""
        return 0 if self.batches is None else global_samples(self.batches)

    def generator(self) -> torch.Generator:
        """A fresh generator on the model's device, seeded with the scoring seed."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed)
        return gen


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str
    fn: Callable[..., ScoreDict]
    needs_data: bool
    default_rounds: int = 1

    @property
    def options(self) -> dict[str, Any]:
        """The options this criterion takes, with their defaults."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise InitpruneError(
                f"criterion {self.name!r} does not take option(s) {', '.join(map(repr, unknown))}; "
                f"its options: {valid}"
            )


_REGISTRY: dict[str, Criterion] = {}


def register(
    name: str, description: str, *, needs_data: bool, default_rounds: int = 1
) -> Callable[[Callable[..., ScoreDict]], Callable[..., ScoreDict]]:
    """Decorator adding a scoring function to the registry under ``name``."""

    def wrap(fn: Callable[..., ScoreDict]) -> Callable[..., ScoreDict]:
        if name in _REGISTRY:
            raise ValueError(f"criterion {name!r} is registered twice")
        _REGISTRY[name] = Criterion(name, description, fn, needs_data, default_rounds)
        return fn

    return wrap


def get_criterion(name: str) -> Criterion:
    """The registered criterion ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_choice("criterion", name, _REGISTRY) from None


def criteria() -> dict[str, str]:
    """{name: one-line description} of every registered criterion."""
    return {name: c.description for name, c in _REGISTRY.items()}
