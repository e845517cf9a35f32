"""The criterion registry and the context a criterion scores in.

A criterion is a function ``fn(ctx, **options) -> {name: score}`` whose keyword-only parameters are its
options, with their defaults. Each option declares its type and range in its annotation, as
``Annotated[type, OptionSpec(...)]`` (the shared ones: :data:`Temperature`, :data:`Probes`,
:data:`ChunkSize`, :data:`Samples`), or its type alone as a plain ``bool``, ``int``, ``float`` or
``str``; :meth:`Criterion.check_options` checks every given option against it once, for the Python API
and the command line alike. A criterion only scores: thresholding and masking are shared (masks.py).
"""

from __future__ import annotations

import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from ..curvature.losses import CrossEntropy, Loss
from ..curvature.samples import Batch
from ..distributed import global_samples
from ..errors import InitpruneError, suggest, unknown_choice

ScoreDict = dict[str, Tensor]


@dataclass(frozen=True)
class OptionSpec:
    """The type and range of one criterion option.

    ``kind`` is ``bool``, ``int``, ``float`` or ``str``: a bool option takes ``True``/``False`` only; an
    int option takes integers only (not ``True``/``False``, not 2.0 or 2.5); a float option takes finite
    real numbers (integers included, booleans not); a str option takes one of ``choices`` (any string if
    there are none). ``minimum`` bounds numbers from below (excluded if ``exclusive``); ``none`` also
    accepts None.
    """

    kind: type
    minimum: float | None = None
    exclusive: bool = False
    choices: tuple[str, ...] = ()
    none: bool = False

    def describe(self) -> str:
        """What is valid, in words (used in error messages)."""
        if self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = "one of " + ", ".join(self.choices) if self.choices else "a string"
        else:
            text = "an integer" if self.kind is int else "a finite number"
            if self.minimum is not None:
                text += f" {'>' if self.exclusive else '>='} {self.minimum:g}"
        return text + (" or None" if self.none else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is str:
            return isinstance(value, str) and (not self.choices or value in self.choices)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        if self.minimum is not None:
            return value > self.minimum if self.exclusive else value >= self.minimum
        return True


Temperature = Annotated[float, OptionSpec(float, minimum=0.0, exclusive=True)]
"""Softmax temperature T of the scored loss CE(z/T, y): finite, > 0."""
Probes = Annotated[int, OptionSpec(int, minimum=1)]
"""Hutchinson probes per sample: an integer >= 1."""
Samples = Annotated[int, OptionSpec(int, minimum=1)]
"""Monte-Carlo label draws per sample: an integer >= 1."""
ChunkSize = Annotated[int | None, OptionSpec(int, minimum=1, none=True)]
"""Samples per batched pass: an integer >= 1, or None for the engine's own choice."""


def _spec_of(hint: Any) -> OptionSpec | None:
    """The declared spec of an annotation: its ``OptionSpec`` metadata, or for a plain ``bool``, ``int``,
    ``float`` or ``str`` (or one of them ``| None``) the type alone, without a range."""
    specs = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, OptionSpec)]
    if specs:
        return specs[0] if len(specs) == 1 else None
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) == 1 and kinds[0] in (bool, int, float, str):
        return OptionSpec(kinds[0], none=len(kinds) < len(args))
    return None


def option_specs(fn: Callable[..., Any]) -> dict[str, tuple[Any, OptionSpec]]:
    """{option: (default, spec)} for the keyword-only parameters of ``fn``; an undeclared one is an error."""
    hints = typing.get_type_hints(fn, include_extras=True)
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        spec = _spec_of(hints.get(p.name))
        if spec is None:
            raise TypeError(
                f"option {p.name!r} of {fn.__name__} must be annotated with bool, int, float or str, or "
                "Annotated[type, OptionSpec(...)] for a range or choices"
            )
        out[p.name] = (p.default, spec)
    return out


@dataclass
class ScoringContext:
    """What a criterion sees: the model (in eval mode), its prunable parameters, the scoring data, and the
    per-sample loss ``loss`` (:mod:`initprune.curvature.losses`) every data-dependent criterion scores.

    Under torchrun ``batches`` holds this rank's part of the scoring samples and the curvature engines
    sum over every rank's part (:mod:`initprune.distributed`); a criterion needs no code of its own.
    """

    model: nn.Module
    params: dict[str, nn.Parameter]
    batches: Sequence[Batch] | None
    seed: int
    input_shape: tuple[int, ...] | None
    progress: bool = False
    loss: Loss = field(default_factory=CrossEntropy)
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
    second_order: bool = False
    output_hessian: bool = False

    @property
    def options(self) -> dict[str, Any]:
        """The options this criterion takes, with their defaults."""
        return {name: default for name, (default, _) in option_specs(self.fn).items()}

    @property
    def option_specs(self) -> dict[str, OptionSpec]:
        """The declared type and range of every option."""
        return {name: spec for name, (_, spec) in option_specs(self.fn).items()}

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise :class:`InitpruneError` for an option this criterion does not take, or a value outside
        the option's declared type and range (naming the option, the value and what is valid)."""
        specs = self.option_specs
        unknown = sorted(set(options) - set(specs))
        if unknown:
            raise InitpruneError(
                f"criterion {self.name!r} does not take option(s) {', '.join(map(repr, unknown))}; "
                f"{suggest(unknown[0], specs)}"
            )
        for name, value in options.items():
            if not specs[name].accepts(value):
                raise InitpruneError(
                    f"criterion {self.name!r}: option {name}={value!r} is invalid; "
                    f"valid: {specs[name].describe()}"
                )


_REGISTRY: dict[str, Criterion] = {}


def register(
    name: str,
    description: str,
    *,
    needs_data: bool,
    default_rounds: int = 1,
    second_order: bool = False,
    output_hessian: bool = False,
) -> Callable[[Callable[..., ScoreDict]], Callable[..., ScoreDict]]:
    """Decorator adding a scoring function to the registry under ``name``.

    Every keyword-only parameter of the function is an option and must declare its type and range
    (``Annotated[type, OptionSpec(...)]``). ``second_order``: the criterion differentiates twice (Hessian-
    vector products), so it scores with the attention kernels that have a double backward.
    ``output_hessian``: the criterion needs the loss's Hessian in the outputs in closed form (exact GGN,
    Monte-Carlo Fisher), which a user's callable loss does not give.
    """

    def wrap(fn: Callable[..., ScoreDict]) -> Callable[..., ScoreDict]:
        if name in _REGISTRY:
            raise ValueError(f"criterion {name!r} is registered twice")
        option_specs(fn)  # every option declared, or fail at import
        _REGISTRY[name] = Criterion(
            name, description, fn, needs_data, default_rounds, second_order, output_hessian
        )
        return fn

    return wrap


def get_criterion(name: str) -> Criterion:
    """The registered criterion ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_choice("criterion", name, _REGISTRY, "`initprune criteria` lists them") from None


def criteria() -> dict[str, str]:
    """{name: one-line description} of every registered criterion."""
    return {name: c.description for name, c in _REGISTRY.items()}
