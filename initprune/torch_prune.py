"""The mask in PyTorch's own pruning format: ``mask.to_torch_prune(model)``.

Every use of a masked weight gets :func:`torch.nn.utils.prune.custom_from_mask`: the module then holds
``<name>_orig`` (the parameter), the buffer ``<name>_mask`` (the keep-mask as 0/1 in the weight's dtype)
and a forward pre-hook computing ``<name> = <name>_orig * <name>_mask``, which is what the tools of
``torch.nn.utils.prune`` read and extend: ``prune.is_pruned``, ``prune.remove``, further ``prune.*``
calls (they combine with this mask in a ``PruningContainer``), ``global_unstructured``.

Two cases ``torch.nn.utils.prune`` alone gets wrong are handled:

* **weight tying**: each module using a tied parameter is pruned with the same mask; they keep sharing
  one ``<name>_orig`` parameter, and ``prune.remove`` on each gives them back one shared weight;
* **``nn.MultiheadAttention``** reads ``out_proj.weight`` without calling ``out_proj``, so ``out_proj``'s
  pre-hook would never run and attention would compute with the weight of the moment the mask was
  applied: the attention module gets a pre-hook of its own that runs ``out_proj``'s pruning hooks first.

A weight reparametrized by :mod:`torch.nn.utils.parametrize` (``mask.hold``, weight norm) is refused: the
two mechanisms cannot share an attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

from .errors import InitpruneError
from .hold import check_not_held, masked_parameters, parameter_uses

__all__ = ["to_torch_prune"]


def _refresh_out_proj(module: nn.Module, inputs: Any) -> None:
    """Forward pre-hook of ``nn.MultiheadAttention``: recompute ``out_proj``'s pruned weight, as its own
    pre-hook would if attention called ``out_proj``."""
    out_proj = module.out_proj
    for hook in list(out_proj._forward_pre_hooks.values()):
        if isinstance(hook, prune.BasePruningMethod):
            hook(out_proj, inputs)


@torch.no_grad()
def to_torch_prune(model: nn.Module, mask: Mapping[str, Tensor]) -> nn.Module:
    """Apply ``mask`` (``named_parameters()`` name → bool keep tensor) to ``model`` in place through
    ``torch.nn.utils.prune.custom_from_mask`` and return the model (see the module docstring).

    The pruned entries of each parameter are set to +0.0 first, so that ``prune.remove`` leaves exact
    zeros. Every name and shape is checked before anything changes (:class:`InitpruneError`).
    """
    keep_masks = mask
    check_not_held(model, keep_masks)
    chosen = masked_parameters(model, keep_masks)  # raises naming a bad name or shape
    uses = parameter_uses(model, list(chosen))
    for use_list in uses.values():
        for path, module, attr in use_list:
            if parametrize.is_parametrized(module, attr):
                raise InitpruneError(
                    f"{path or 'the model'}.{attr} is reparametrized (torch.nn.utils.parametrize): "
                    "torch.nn.utils.prune cannot prune it; remove the parametrization first"
                )
    for name, p in chosen.items():
        keep = keep_masks[name].to(p.device)
        p.masked_fill_(~keep, 0.0)
        for _, module, attr in uses[name]:
            prune.custom_from_mask(module, attr, keep)
    for module in model.modules():
        if (
            isinstance(module, nn.MultiheadAttention)
            and prune.is_pruned(module.out_proj)
            and not any(h is _refresh_out_proj for h in module._forward_pre_hooks.values())
        ):
            module.register_forward_pre_hook(_refresh_out_proj)
    return model
