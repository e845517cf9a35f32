"""Layer collapse beyond empty layers: kept weights that lie on no path from the input to the output.

A layer can keep weights and still cut the network: when every kept weight of a layer feeds only units
whose outgoing weights were all pruned (or is fed by units with no incoming weight), no signal crosses it.
The check counts paths as SynFlow does (Tanaka et al. 2020): in a copy of the network where every kept
prunable weight is 1, every pruned one 0, every other parameter and buffer non-negative, biases 0 and
BatchNorm the identity, R = 1ᵀ f(1) is the number of input-output paths, and ∂R/∂w is the number of paths
through weight w. A layer none of whose kept weights carries a path is collapsed.

Exact for networks of convolutions, linear layers, ReLU-like activations, pooling, BatchNorm and residual
sums, which are positively homogeneous: the all-ones input is scaled by 1e-100 so that smooth activations
(tanh, GELU) work in their linear range instead of saturating, and the counts stay finite in float64.
For other networks (attention, custom arithmetic) the count is a heuristic. Normalizations over a sample's
features (LayerNorm, GroupNorm, RMSNorm, InstanceNorm) are the identity in the path network, like
BatchNorm: normalizing would subtract the mean of an all-ones input and cut every path behind it. Given a
real sample x of the scoring data, the input is 1 + |x|: positive everywhere, so the count of a
homogeneous network decides exactly as with all ones. A weight carries a path where its count is not 0.
Finally, a layer is called cut only if it carries a path in the dense network: a dense model is never
flagged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .warmup import batchnorm_modules

_INPUT_SCALE = 1e-100

_SAMPLE_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.instancenorm._InstanceNorm)
"""Normalizations over a sample's own features: the identity in the path network (as BatchNorm is), since
they pass every path, while normalizing would subtract the mean of the counts and cut them."""


def _identity(x: Tensor) -> Tensor:
    return x


@torch.no_grad()
def _path_network(model: nn.Module, mask: Mapping[str, Tensor]) -> nn.Module:
    net = copy.deepcopy(model).double().eval()
    for name, p in net.named_parameters():
        if name in mask:
            p.copy_(mask[name].to(p.device, torch.float64))
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.abs_()
    for module in net.modules():
        if isinstance(module, _SAMPLE_NORMS):
            module.forward = _identity  # type: ignore[method-assign]
    for bn in batchnorm_modules(net):
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        if bn.affine:
            bn.weight.fill_(1.0)
            bn.bias.zero_()
    for buffer in net.buffers():
        if buffer.is_floating_point():
            buffer.abs_()
    return net


def _probe_input(input_shape: tuple[int, ...], sample: Tensor | None, device: torch.device) -> Tensor:
    """(1 + |x|) · 1e-100 for a real sample x (one row of shape ``input_shape``), else all 1e-100."""
    if sample is None:
        return torch.full((1, *input_shape), _INPUT_SCALE, dtype=torch.float64, device=device)
    x = sample.detach().to(device, torch.float64).reshape(1, *input_shape)
    return (1.0 + x.abs()) * _INPUT_SCALE


def paths_through_weights(
    model: nn.Module,
    mask: Mapping[str, Tensor],
    input_shape: tuple[int, ...],
    sample: Tensor | None = None,
) -> tuple[float, dict[str, Tensor]]:
    """(number of input-output paths R, {name: paths through each kept weight, 0 where pruned}).

    ``sample``: one real input of shape ``input_shape`` (a batch of one allowed); the probe input is then
    1 + |sample| instead of all ones (see the module docstring)."""
    net = _path_network(model, mask)
    named = dict(net.named_parameters())
    weights = [named[name].requires_grad_(True) for name in mask]
    device = weights[0].device
    with torch.enable_grad():
        inputs = _probe_input(input_shape, sample, device)
        total = net(inputs).sum() / _INPUT_SCALE
        grads = torch.autograd.grad(total, weights, allow_unused=True)
    counts = {
        name: (w.detach() * g) if g is not None else torch.zeros_like(w.detach())
        for name, w, g in zip(mask, weights, grads, strict=True)
    }
    return float(total.detach()), counts


def disconnected_layers(
    model: nn.Module,
    mask: Mapping[str, Tensor],
    input_shape: tuple[int, ...],
    sample: Tensor | None = None,
) -> list[str]:
    """Masked parameters none of whose kept weights lies on an input-output path (empty layers included).

    A non-empty layer is listed only if it carries a path in the dense network (every weight kept): where
    the count is a heuristic (LayerNorm, attention), a layer it cannot see even dense is not called cut.
    ``sample``: a real input for the probe (see :func:`paths_through_weights`)."""
    _, counts = paths_through_weights(model, mask, input_shape, sample)
    cut = [name for name, c in counts.items() if not bool((c != 0).any())]
    empty = {name for name in cut if not bool(mask[name].any())}
    if len(cut) > len(empty):
        dense = {name: torch.ones_like(m, dtype=torch.bool) for name, m in mask.items()}
        _, reached = paths_through_weights(model, dense, input_shape, sample)
        cut = [name for name in cut if name in empty or bool((reached[name] != 0).any())]
    return cut


def _layer_names(value: Any) -> list[str]:
    """A result's list of layer names; None and NaN (a field a row of a table of results lacks) are none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return list(value)


def collapsed_or_cut(result: Mapping[str, Any]) -> list[str]:
    """The layers a run's result (its ``result.json`` as a dict, or a row of a table of them) left empty
    (``collapsed_layers``), then those cut off from the input or the output (``disconnected_layers``), each
    named once. A missing, None or NaN field counts as no layer."""
    empty = _layer_names(result.get("collapsed_layers"))
    return empty + [name for name in _layer_names(result.get("disconnected_layers")) if name not in empty]


def run_collapsed(result: Mapping[str, Any]) -> bool:
    """Whether a run left a layer empty or cut off from the input or the output: the one test of layer
    collapse that every table (sweep summaries, ``initprune report``, the studies' scripts) counts by."""
    return bool(collapsed_or_cut(result))
