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
For other networks (LayerNorm, attention) the count is a heuristic.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .warmup import batchnorm_modules

_INPUT_SCALE = 1e-100


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


def paths_through_weights(
    model: nn.Module, mask: Mapping[str, Tensor], input_shape: tuple[int, ...]
) -> tuple[float, dict[str, Tensor]]:
    """(number of input-output paths R, {name: paths through each kept weight, 0 where pruned})."""
    net = _path_network(model, mask)
    named = dict(net.named_parameters())
    weights = [named[name].requires_grad_(True) for name in mask]
    device = weights[0].device
    with torch.enable_grad():
        inputs = torch.full((1, *input_shape), _INPUT_SCALE, dtype=torch.float64, device=device)
        total = net(inputs).sum() / _INPUT_SCALE
        grads = torch.autograd.grad(total, weights, allow_unused=True)
    counts = {
        name: (w.detach() * g) if g is not None else torch.zeros_like(w.detach())
        for name, w, g in zip(mask, weights, grads, strict=True)
    }
    return float(total.detach()), counts


def disconnected_layers(
    model: nn.Module, mask: Mapping[str, Tensor], input_shape: tuple[int, ...]
) -> list[str]:
    """Masked parameters none of whose kept weights lies on an input-output path (empty layers included)."""
    _, counts = paths_through_weights(model, mask, input_shape)
    return [name for name, c in counts.items() if not bool((c > 0).any())]
