"""Masks: keep-largest top-k over a scope, the Mask type, and saving/loading it safely.

Conventions (DESIGN.md §1): ``sparsity`` is the fraction of prunable weights removed, ``density = 1 −
sparsity``; the weights with the largest scores are kept; ``k = round(density × n)`` weights are kept in each
scope (the whole network for ``global``, each layer for ``layerwise`` and ``erk``), at least one per scope.
Ties are broken deterministically: among equal scores the one with the lower flat index is kept.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .allocation import check_layer_densities
from .atomic import atomic_torch_save
from .errors import InitpruneError, LayerCollapseWarning, check_sparsity, unknown_choice
from .hold import masked_parameters

if TYPE_CHECKING:
    from .hold import MaskHandle

SCOPES = ("global", "layerwise", "erk")
_FORMAT = "initprune.mask"
_VERSION = 1


class Mask(Mapping[str, Tensor]):
    """Boolean keep-masks for the prunable parameters of a model, keyed by ``named_parameters()`` names.

    ``True`` means kept. A Mask is immutable; it behaves as a read-only mapping of name → bool tensor.
    """

    def __init__(self, masks: Mapping[str, Tensor]):
        if not masks:
            raise InitpruneError("a Mask needs at least one parameter")
        self._masks = {name: m.detach().to(torch.bool) for name, m in masks.items()}

    # Mapping interface
    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Mask({len(self)} parameters, sparsity={self.sparsity:.4f})"

    @property
    def num_total(self) -> int:
        """Number of prunable weights covered by the mask."""
        return sum(m.numel() for m in self._masks.values())

    @property
    def num_kept(self) -> int:
        """Number of weights kept."""
        return int(sum(m.sum() for m in self._masks.values()))

    @property
    def density(self) -> float:
        """Fraction of prunable weights kept."""
        return self.num_kept / self.num_total

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights removed."""
        return 1.0 - self.density

    def per_layer(self) -> dict[str, float]:
        """Density (fraction kept) of every masked parameter."""
        return {name: float(m.sum()) / m.numel() for name, m in self._masks.items()}

    def collapsed(self) -> list[str]:
        """Names of the prunable parameters left with no weight at all (layer collapse)."""
        return [name for name, m in self._masks.items() if not bool(m.any())]

    def to(self, device: torch.device | str) -> Mask:
        """A copy of the mask on ``device``."""
        return Mask({name: m.to(device) for name, m in self._masks.items()})

    def _parameters_of(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return masked_parameters(model, self._masks)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place (as +0.0, never -0.0) and return it.

        Once only: an optimizer step can revive them. To train with the mask held, use :meth:`hold`."""
        for name, p in self._parameters_of(model).items():
            p.masked_fill_(~self._masks[name].to(p.device), 0.0)
        return model

    def hold(self, model: nn.Module) -> MaskHandle:
        """Hold the mask on ``model`` in your own training loop, with any optimizer, AMP or DDP:
        ``handle = mask.hold(model)`` ... ``handle.remove()`` (bakes the zeros in).

        Every use of a masked weight (tied ones and ``nn.MultiheadAttention``'s ``out_proj`` included)
        becomes ``where(keep, original, 0)`` through ``torch.nn.utils.parametrize``: pruned weights stay
        exactly 0 through every step. See :mod:`initprune.hold`."""
        from .hold import hold

        return hold(model, self)

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Apply the mask through ``torch.nn.utils.prune.custom_from_mask`` (``weight_orig``,
        ``weight_mask`` and the pre-hook), so that ``torch.nn.utils.prune`` tools read and extend it; tied
        weights and ``nn.MultiheadAttention`` handled. Returns the model. See :mod:`initprune.torch_prune`."""
        from .torch_prune import to_torch_prune

        return to_torch_prune(model, self)

    def save(self, path: str | os.PathLike[str], *, settings_hash: str | None = None) -> None:
        """Write the mask atomically in a pickle-free format (``torch.load(weights_only=True)`` reads it);
        ``settings_hash`` records the run it belongs to."""
        payload: dict[str, object] = {
            "format": _FORMAT,
            "version": _VERSION,
            "masks": {name: m.cpu() for name, m in self._masks.items()},
        }
        if settings_hash is not None:
            payload["settings_hash"] = settings_hash
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Mask:
        """Read a mask written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise InitpruneError(f"mask file {str(path)!r} does not exist")
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # truncated, overwritten or not a torch file at all
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InitpruneError(
                f"mask file {str(path)!r} is corrupt or not a mask ({first}); write it again with Mask.save "
                "(in a run folder: delete it and run again to recompute it)"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise InitpruneError(f"{str(path)!r} is not an initprune mask file (not written by Mask.save)")
        masks = payload.get("masks")
        if not isinstance(masks, dict) or not all(torch.is_tensor(m) for m in masks.values()):
            raise InitpruneError(
                f"mask file {str(path)!r} is corrupt: it holds no name -> tensor masks (in a run folder: "
                "delete it and run again to recompute it)"
            )
        return cls(masks)


def check_scores(scores: Mapping[str, Tensor]) -> None:
    """Raise naming the parameter if any score is NaN or infinite, or if there are no scores."""
    if not scores:
        raise InitpruneError("no scores given: the scores dict is empty")
    for name, s in scores.items():
        if not torch.is_tensor(s):
            raise InitpruneError(f"score for {name!r} is a {type(s).__name__}, not a tensor")
        bad = ~torch.isfinite(s)
        if bool(bad.any()):
            count = int(bad.sum())
            raise InitpruneError(
                f"scores for parameter {name!r} contain {count} NaN or infinite value(s) of {s.numel()}"
            )


def top_k_mask(flat: Tensor, k: int) -> Tensor:
    """Boolean mask keeping the ``k`` largest entries of the 1-D tensor ``flat``.

    Among entries equal to the k-th largest value, the lowest indices are kept, so the result is
    deterministic on every device. Runs in O(n) without a host-device synchronization.
    """
    n = flat.numel()
    if k >= n:
        return torch.ones_like(flat, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(flat, dtype=torch.bool)
    threshold = torch.kthvalue(flat, n - k + 1).values  # k-th largest
    above = flat > threshold
    ties = flat == threshold
    needed = k - above.sum()
    return above | (ties & (torch.cumsum(ties, 0) <= needed))


def erk_densities(shapes: Mapping[str, torch.Size], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel allocation (Evci et al. 2020, RigL): per-layer densities averaging to ``density``.

    Layer l gets density ε·(Σ dims)/(Π dims), with ε chosen so that the kept count is ``density`` of the
    total; layers whose density would exceed 1 are kept dense and ε is solved again for the others.
    """
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / numel[name] for name, shape in shapes.items()}
    target = density * sum(numel.values())
    dense: set[str] = set()
    while True:
        sparse_names = [n for n in shapes if n not in dense]
        budget = target - sum(numel[n] for n in dense)
        denominator = sum(raw[n] * numel[n] for n in sparse_names)
        eps = budget / denominator if denominator > 0 else 0.0
        overflow = [n for n in sparse_names if eps * raw[n] > 1.0]
        if not overflow:
            break
        dense.update(overflow)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def make_mask(
    scores: Mapping[str, Tensor],
    sparsity: float,
    scope: str = "global",
    *,
    previous: Mapping[str, Tensor] | None = None,
    warn: bool = True,
    layer_densities: Mapping[str, float] | None = None,
) -> Mask:
    """Keep the largest scores so that ``sparsity`` of the prunable weights are removed.

    ``scope``: ``global`` (one threshold over all weights), ``layerwise`` (the same sparsity in every
    layer) or ``erk`` (Erdős–Rényi-Kernel per-layer densities). ``previous``: a mask whose pruned weights
    stay pruned (iterative pruning: masks only shrink). Warns with :class:`LayerCollapseWarning` when a
    layer is left with no weight (unless ``warn=False``).

    ``layer_densities`` (name → density, every scored layer; :mod:`initprune.allocation`) replaces the
    scope's allocation: layer l keeps its round(d_l · n_l) largest scores (0 where d_l = 0), and the
    densities must make ``sparsity`` (within 0.001).
    """
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise unknown_choice("scope", scope, SCOPES)
    check_scores(scores)
    density = 1.0 - sparsity
    # float64 scores (SynFlow's) keep their precision; everything else is compared in float32.
    dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores.values()) else torch.float32
    work = {name: s.detach().to(dtype) for name, s in scores.items()}
    if previous is not None:
        missing = set(work) - set(previous)
        if missing:
            raise InitpruneError(f"previous mask lacks parameters {sorted(missing)}")
        work = {
            name: s.masked_fill(~previous[name].to(device=s.device, dtype=torch.bool), -math.inf)
            for name, s in work.items()
        }

    if layer_densities is not None:
        counts = check_layer_densities(layer_densities, {n: s.numel() for n, s in work.items()}, sparsity)
        masks = {name: top_k_mask(s.reshape(-1), counts[name]).view_as(s) for name, s in work.items()}
    elif scope == "global":
        flat = torch.cat([s.reshape(-1) for s in work.values()])
        keep = top_k_mask(flat, max(1, round(density * flat.numel())))
        masks, offset = {}, 0
        for name, s in work.items():
            masks[name] = keep[offset : offset + s.numel()].view_as(s)
            offset += s.numel()
    else:
        if scope == "layerwise":
            densities = dict.fromkeys(work, density)
        else:
            densities = erk_densities({name: s.shape for name, s in work.items()}, density)
        masks = {
            name: top_k_mask(s.reshape(-1), max(1, round(densities[name] * s.numel()))).view_as(s)
            for name, s in work.items()
        }
    if previous is not None:  # a weight pruned before must stay pruned even where k exceeds survivors
        masks = {name: m & previous[name].to(device=m.device, dtype=torch.bool) for name, m in masks.items()}
    mask = Mask(masks)
    if warn:
        collapsed = mask.collapsed()
        if collapsed:
            warnings.warn(
                f"layer collapse at sparsity {sparsity:g} "
                f"({'given layer densities' if layer_densities is not None else scope}): "
                f"no weight left in {', '.join(collapsed)}",
                LayerCollapseWarning,
                stacklevel=2,
            )
    return mask
