"""The model registry: ``register_model`` (timm style), ``models`` and ``create_model``.

A model builder is a function ``fn(*, num_classes, in_channels, **options) -> nn.Module`` whose other
keyword-only parameters are the model's options, with their defaults. Every builder takes ``num_classes``
and ``in_channels``; an option a model does not take is an error that lists the ones it does. Names of
the form ``timm:NAME`` and ``tv:NAME`` are models of timm and torchvision (:mod:`.external`); they pass
options they do not declare on to the library.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import InitpruneError, suggest, unknown_choice
from .external import FORMS, external_builder, is_external

Builder = Callable[..., nn.Module]
_COMMON = ("num_classes", "in_channels")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    fn: Builder
    inputs: str = "images"  # "images" (B, C, H, W) floats, or "tokens" (B, L) integer ids
    passthrough: bool = False  # options beyond the declared ones go on to another library (timm:, tv:)

    @property
    def options(self) -> dict[str, Any]:
        """The model's own options (beyond ``num_classes`` and ``in_channels``), with their defaults."""
        params = inspect.signature(self.fn).parameters.values()
        return {
            p.name: p.default
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _COMMON
        }


_REGISTRY: dict[str, ModelEntry] = {}


INPUT_KINDS = ("images", "tokens")


def register_model(name: str, description: str, inputs: str = "images") -> Callable[[Builder], Builder]:
    """Decorator adding a model builder to the registry under ``name``; ``inputs`` is what it takes:
    ``images`` (B, C, H, W) or ``tokens`` (B, L) integer ids (text models)."""
    if inputs not in INPUT_KINDS:
        raise unknown_choice("model input kind", inputs, INPUT_KINDS)

    def wrap(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        params = inspect.signature(fn).parameters
        missing = [p for p in _COMMON if p not in params]
        if missing:
            raise TypeError(f"model builder {name!r} must take keyword options {', '.join(missing)}")
        _REGISTRY[name] = ModelEntry(name, description, fn, inputs)
        return fn

    return wrap


def get_model(name: str) -> ModelEntry:
    """The registry entry of ``name`` (or of ``timm:NAME`` / ``tv:NAME``); an unknown name lists the valid
    ones."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if isinstance(name, str) and is_external(name):
        if name not in _EXTERNAL:
            fn, description = external_builder(name)
            _EXTERNAL[name] = ModelEntry(name, description, fn, passthrough=True)
        return _EXTERNAL[name]
    raise unknown_choice("model", name, [*_REGISTRY, *FORMS], "`initprune models` lists them")


_EXTERNAL: dict[str, ModelEntry] = {}


def models() -> dict[str, str]:
    """{name: one-line description} of every registered model."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def model_options(name: str) -> dict[str, Any]:
    """The options model ``name`` takes beyond ``num_classes`` and ``in_channels``, with their defaults."""
    return dict(get_model(name).options)


def check_model_options(name: str, options: Any) -> None:
    """Raise :class:`InitpruneError` if model ``name`` does not take one of the option names ``options``
    (``timm:``/``tv:`` models take any: the library checks them when the model is built)."""
    entry = get_model(name)
    unknown = sorted(set(options) - set(entry.options))
    if unknown and not entry.passthrough:
        raise InitpruneError(
            f"model {name!r} does not take option(s) {', '.join(map(repr, unknown))}; "
            f"{suggest(unknown[0], entry.options)}"
        )


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InitpruneError(f"{what} must be a positive integer, got {value!r}")
    return value


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` for ``num_classes`` classes and ``in_channels`` input channels.

    ``kwargs`` are the model's own options (see :func:`model_options`); one it does not take raises
    :class:`~initprune.errors.InitpruneError` naming it and the valid ones. Parameters are initialized
    from torch's global generator, so ``torch.manual_seed`` before this call makes the model reproducible.
    """
    entry = get_model(name)
    check_model_options(name, kwargs)
    return entry.fn(
        num_classes=_positive_int("num_classes", num_classes),
        in_channels=_positive_int("in_channels", in_channels),
        **kwargs,
    )
