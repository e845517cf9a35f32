"""Holding a mask in the user's own training loop: ``handle = mask.hold(model)``.

Every use of a masked weight is reparametrized with :mod:`torch.nn.utils.parametrize` as
``weight = where(keep, original, 0)``: the module reads the masked weight on every access, so the
gradient of a pruned entry is exactly 0 and the pruned entries of the weight the model computes with are
0 whatever the optimizer does to ``original`` (momentum, weight decay, Adam moments, AMP's loss scaling,
DistributedDataParallel's gradient all-reduce). No call is needed in the loop: build the optimizer after
``hold`` (or keep the one you have: the optimized tensor ``original`` is the same ``nn.Parameter`` object
as before) and train as usual. ``handle.remove()`` bakes the zeros into the weights and gives the model
back its plain parameters and ``state_dict`` names.

Three things a hook-based holder gets wrong are handled here:

* **weight tying**: a parameter held by several modules is reparametrized in every one of them (the
  second use of a tied weight is masked too); the modules keep sharing one ``original``;
* **``nn.MultiheadAttention``** reads ``out_proj.weight`` without calling ``out_proj`` (and its fast path
  reads ``in_proj_weight`` directly): a parametrization is an attribute, so every read is masked, where
  a forward hook on ``out_proj`` never fires;
* **``nn.RNN``/``LSTM``/``GRU``** cache their weights in ``_flat_weights``; they refresh that cache from
  the attributes before each forward (``_update_flat_weights``), so they compute with the masked weights.

While the mask is held, ``model.state_dict()`` names a held weight ``<module>.parametrizations.<name>
.original`` (torch's convention); after ``remove()`` the names are the usual ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .errors import InitpruneError

__all__ = ["KeepMask", "MaskHandle", "hold", "parameter_uses"]


class KeepMask(nn.Module):
    """The parametrization ``weight ↦ where(keep, weight, 0)``: pruned entries are exactly +0.0 and their
    gradient is 0. ``keep`` is a bool buffer, so it follows ``model.to(device)`` and any dtype change."""

    def __init__(self, keep: Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", keep.to(torch.bool))

    def forward(self, weight: Tensor) -> Tensor:
        return torch.where(self.keep, weight, 0.0)


def parameter_uses(model: nn.Module, names: list[str]) -> dict[str, list[tuple[str, nn.Module, str]]]:
    """For each ``named_parameters()`` name, every ``(module path, module, attribute)`` holding that
    parameter: one entry for a plain weight, one per module for a tied one."""
    params = dict(model.named_parameters())
    wanted = {id(params[name]): name for name in names}
    uses: dict[str, list[tuple[str, nn.Module, str]]] = {name: [] for name in names}
    for path, module in model.named_modules():
        for attr, p in module._parameters.items():
            if p is not None and id(p) in wanted:
                uses[wanted[id(p)]].append((path, module, attr))
    return uses


def check_not_held(model: nn.Module, mask: Mapping[str, Tensor]) -> None:
    """Raise :class:`InitpruneError` where ``mask`` names parameters ``model`` no longer has because it is
    reparametrized (a mask already held): the names checked by :func:`masked_parameters` would fail with
    a less helpful message."""
    params = dict(model.named_parameters())
    missing = [name for name in mask if name not in params]
    if missing and any(parametrize.is_parametrized(m) for m in model.modules()):
        raise InitpruneError(
            f"mask names {missing[:3]} are not parameters of {type(model).__name__}: the model is "
            "reparametrized (a mask already held? call handle.remove() first)"
        )


def _own_class(module: nn.Module) -> None:
    """Give ``module`` a private copy of its parametrized class. ``remove_parametrizations`` deletes the
    weight's property from the class, and ``copy.deepcopy`` of a parametrized module (an EMA copy, say)
    shares that class: without this, ending the hold on the model would break every copy of it."""
    cls = type(module)
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)


class MaskHandle:
    """What :func:`hold` returns: ``remove()`` ends holding and bakes the zeros in; usable as a context
    manager (``with mask.hold(model): ...`` removes on exit)."""

    def __init__(
        self, model: nn.Module, registrations: list[tuple[nn.Module, str]], orders: dict[int, list[str]]
    ) -> None:
        self.model = model
        self._registrations = registrations
        self._orders = orders  # each module's parameter names in their order before holding

    @property
    def held(self) -> bool:
        """True until :meth:`remove` is called."""
        return bool(self._registrations)

    def remove(self) -> nn.Module:
        """Give every held weight back as a plain parameter holding the masked values (pruned entries
        +0.0); tied modules share one parameter again. Returns the model; a second call does nothing."""
        # Tied uses share one original: the first removal bakes the masked value into it (leave_parametrized
        # computes where(keep, original, 0) and sets original to it), so later removals change nothing.
        for module, attr in self._registrations:
            if parametrize.is_parametrized(module, attr):
                _own_class(module)
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        for module, _ in self._registrations:  # registration order back, so state_dict() reads as before
            order = self._orders.get(id(module), [])
            for name in order + [n for n in module._parameters if n not in order]:
                if name in module._parameters:
                    module._parameters[name] = module._parameters.pop(name)
        self._registrations = []
        return self.model

    def __enter__(self) -> MaskHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = f"{len(self._registrations)} weight uses" if self.held else "removed"
        return f"MaskHandle({type(self.model).__name__}, {state})"


def masked_parameters(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, nn.Parameter]:
    """The parameters of ``model`` that ``masks`` (``named_parameters()`` name → keep tensor) names, or
    :class:`InitpruneError` naming a name that is not a parameter or a shape that differs."""
    params = dict(model.named_parameters())
    missing = [name for name in masks if name not in params]
    if missing:
        raise InitpruneError(
            f"mask names {missing} are not parameters of {type(model).__name__}; "
            f"its parameters are: {', '.join(params)}"
        )
    for name, m in masks.items():
        if params[name].shape != m.shape:
            raise InitpruneError(
                f"mask for {name!r} has shape {tuple(m.shape)} but the parameter has "
                f"{tuple(params[name].shape)}"
            )
    return {name: params[name] for name in masks}


@torch.no_grad()
def hold(model: nn.Module, mask: Mapping[str, Tensor]) -> MaskHandle:
    """Hold ``mask`` (``named_parameters()`` name → bool keep tensor) on ``model`` until ``remove()``.

    Zeros the pruned weights (as +0.0), then reparametrizes every use of every masked parameter as
    ``where(keep, original, 0)`` (see the module docstring). Checks every name and shape before changing
    anything; a name that is not a parameter or a shape that differs raises :class:`InitpruneError`.
    """
    check_not_held(model, mask)
    keep_masks = mask
    params = masked_parameters(model, keep_masks)  # raises naming a bad name or shape
    uses = parameter_uses(model, list(params))
    registrations: list[tuple[nn.Module, str]] = []
    orders = {id(m): list(m._parameters) for use in uses.values() for _, m, _ in use}
    for name, p in params.items():
        # in the parameter's memory format (channels_last convolutions stay channels_last)
        keep = torch.empty_like(p, dtype=torch.bool).copy_(keep_masks[name])
        p.masked_fill_(~keep, 0.0)
        parametrization = KeepMask(keep)  # one per parameter, shared by its tied uses
        for _, module, attr in uses[name]:
            parametrize.register_parametrization(module, attr, parametrization)
            registrations.append((module, attr))
    return MaskHandle(model, registrations, orders)
