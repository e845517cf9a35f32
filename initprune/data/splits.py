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


def holdout_indices(
    n: int, val_size: int, seed: int, groups: Tensor | None = None, strata: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into (train, val) index tensors, ``val`` of ``val_size`` drawn by ``seed``.

    Both are sorted, so the kept training samples stay in file order; the same ``seed`` always gives the
    same split and different seeds give (almost surely) different ones.

    ``groups`` (n,): whole groups are held out, in a seeded order, until ``val_size`` samples are reached
    (the last group may take it a little beyond), so no group is in both splits. ``strata`` (n,) class
    labels: the hold-out is stratified, class c giving round(val_size · n_c / n) samples (largest
    remainders first, so that they add up to ``val_size``).
    """
    val_size = count(val_size, "val_size", 0)
    if val_size >= n:
        raise InitpruneError(
            f"val_size={val_size} leaves no training data: the training set has only {n} samples"
        )
    generator = torch.Generator().manual_seed(int(seed))
    if groups is not None and val_size > 0:
        ids, inverse, sizes = torch.unique(groups.cpu(), return_inverse=True, return_counts=True)
        order = torch.randperm(ids.numel(), generator=generator)
        taken = int((sizes[order].cumsum(0) < val_size).sum()) + 1
        held = torch.zeros(ids.numel(), dtype=torch.bool)
        held[order[:taken]] = True
        if bool(held.all()):
            raise InitpruneError(f"val_size={val_size} takes every group of the {n} training samples")
        val = held[inverse]
        return (~val).nonzero().flatten(), val.nonzero().flatten()
    if strata is not None and val_size > 0:
        labels = strata.cpu().long()
        counts = torch.bincount(labels).double()
        share = counts * val_size / n
        quota = share.floor().long()
        extra = val_size - int(quota.sum())
        quota[torch.argsort(share - quota, descending=True, stable=True)[:extra]] += 1
        perm = torch.randperm(n, generator=generator)
        picked = [perm[labels[perm] == c][: int(q)] for c, q in enumerate(quota.tolist())]
        val_idx = torch.cat(picked).sort().values
        keep = torch.ones(n, dtype=torch.bool)
        keep[val_idx] = False
        return keep.nonzero().flatten(), val_idx
    perm = torch.randperm(n, generator=generator)
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
