"""Exact references, written from the formulas with plain autograd and torch.func.hessian."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, hessian


def cat(batches: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def per_sample_grads(model: nn.Module, names: list[str], x: Tensor, y: Tensor, temperature: float = 1.0):
    """g_i = ∇ℓ_i by a plain loop of autograd.grad at batch size 1 (model in eval mode)."""
    params = dict(model.named_parameters())
    out = []
    for i in range(x.shape[0]):
        loss = F.cross_entropy(model(x[i : i + 1]) / temperature, y[i : i + 1])
        out.append(dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True)))
    return out


def mean_loss_fn(model: nn.Module, names: list[str], x: Tensor, y: Tensor, temperature: float):
    """L(θ_flat) = mean CE(f(x; θ)/T, y) as a function of the named parameters concatenated."""
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    rest = {k: v.detach() for k, v in params.items() if k not in names}
    rest.update(dict(model.named_buffers()))

    def loss(flat: Tensor) -> Tensor:
        parts = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes, strict=True)}
        return F.cross_entropy(functional_call(model, {**rest, **parts}, (x,)) / temperature, y)

    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    return loss, flat, shapes, sizes


def split(flat: Tensor, names: list[str], shapes, sizes) -> dict[str, Tensor]:
    return {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes, strict=True)}


def exact_hessian(model: nn.Module, names: list[str], x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """The full Hessian of the mean loss over the named parameters (eval mode), by torch.func.hessian."""
    loss, flat, _, _ = mean_loss_fn(model, names, x, y, temperature)
    return hessian(loss)(flat)


def exact_hessian_diag(model: nn.Module, names: list[str], x: Tensor, y: Tensor, temperature: float):
    _, _, shapes, sizes = mean_loss_fn(model, names, x, y, temperature)
    return split(torch.diagonal(exact_hessian(model, names, x, y, temperature)), names, shapes, sizes)


def rel_err(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    """‖a − b‖ / ‖b‖ over all entries of the dicts."""
    num = sum(float((a[k] - b[k]).square().sum()) for k in b)
    den = sum(float(b[k].square().sum()) for k in b)
    return (num / den) ** 0.5
