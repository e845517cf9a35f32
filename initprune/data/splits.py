"""Seeded index selection: the validation hold-out and the per-class scoring sampler."""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from ..errors import InitpruneError


def count(value: object, name: str, low: int) -> int:
    """``value`` as an int >= ``low`` (any integer type, numpy's included; not bool or float)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        result = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        result = None
    if result is None or result < low:
        raise InitpruneError(f"{name} must be an integer >= {low}, got {value!r}")
    return result


def holdout_indices(n: int, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into (train, val) index tensors, ``val`` of ``val_size`` drawn by ``seed``.

    Both are sorted, so the kept training samples stay in file order; the same ``seed`` always gives the
    same split and different seeds give (almost surely) different ones.
    """
    val_size = count(val_size, "val_size", 0)
    if val_size >= n:
        raise InitpruneError(
            f"val_size={val_size} leaves no training data: the training set has only {n} samples"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def per_class_indices(targets: Tensor, per_class: int, num_classes: int, seed: int) -> Tensor:
    """Indices of ``per_class`` samples of each class in ``targets``, drawn by ``seed``, in shuffled order.

    One random permutation, a stable sort by class and a slice per class: the cost is one sort of the
    targets however many classes there are.
    """
    per_class = count(per_class, "per_class", 1)
    targets = targets.detach().to("cpu", torch.long)
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(targets.numel(), generator=generator)
    shuffled = targets[perm]
    order = torch.sort(shuffled, stable=True).indices
    counts = torch.bincount(shuffled, minlength=num_classes)[:num_classes]
    short = (counts < per_class).nonzero().flatten().tolist()
    if short:
        few = ", ".join(f"class {c}: {int(counts[c])}" for c in short[:5])
        raise InitpruneError(
            f"per_class={per_class} is more than the training split holds for {len(short)} classes ({few})"
        )
    starts = torch.cumsum(counts, 0) - counts
    pick = (starts.view(-1, 1) + torch.arange(per_class)).flatten()
    chosen = perm[order[pick]]
    return chosen[torch.randperm(chosen.numel(), generator=generator)]
