"""The warning for scores that do not rank the weights: all equal, or a layer's all 0 up to rounding,
with the likely cause (a zero-initialized normalization scale named where the model has one)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import DegenerateScoresWarning

# A layer whose largest |score| is below this many units in the last place of the model's largest |score|
# holds rounding noise, not a ranking: a score that is 0 in exact arithmetic (SynFlow's scores before a
# LayerNorm, say) comes out as exact 0 with some CPU kernels and as ~1e-16 noise with others.
ROUNDING_ULPS = 64


NORMALIZATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)


def zero_scale_norms(model: nn.Module) -> list[str]:
    """The normalization layers whose scale (``weight``) is all 0: zero-initialized, as timm's ResNets do
    with the last BatchNorm of every residual block (``zero_init_last``) and torchvision's with
    ``zero_init_residual=True``. Such a layer passes neither signal nor gradient, so every data-dependent
    score of the layers before it in its branch is 0."""
    norms = [
        (name, m.weight)
        for name, m in model.named_modules()
        if isinstance(m, NORMALIZATION_TYPES) and isinstance(getattr(m, "weight", None), Tensor)
    ]
    if not norms:
        return []
    nonzero = torch.stack([(w != 0).any() for _, w in norms]).cpu().tolist()  # one synchronization
    return [name for (name, _), keep in zip(norms, nonzero, strict=True) if not keep]


def _zero_scale_cause(model: nn.Module | None) -> str:
    """The first sentence of the warning's causes where the model holds zero-initialized norm scales."""
    zeroed = zero_scale_norms(model) if model is not None else []
    if not zeroed:
        return ""
    shown = ", ".join(zeroed[:4]) + (f" and {len(zeroed) - 4} more" if len(zeroed) > 4 else "")
    return (
        f" Likely cause: a zero-initialized normalization scale ({len(zeroed)} layer(s) with weight all 0: "
        f"{shown}), which blocks the signal and the gradient of its branch (timm's ResNets zero the last "
        "BatchNorm of each block with zero_init_last=True, torchvision's with zero_init_residual=True). "
        "Fix: build the model with zero_init_last=False (timm) or zero_init_residual=False "
        "(torchvision), or fill those scales with 1 before scoring and zero them again afterwards."
    )


def warn_degenerate(
    criterion: str, scores: Mapping[str, Tensor], stacklevel: int = 2, model: nn.Module | None = None
) -> None:
    """Warn (:class:`DegenerateScoresWarning`) when every score is equal, or a layer's scores are all 0
    up to rounding (largest |score| ≤ ``ROUNDING_ULPS`` · eps · the model's largest |score|, eps of the
    scores' dtype): the mask is then chosen by the tie-break (lowest index) or by rounding noise, not by
    the criterion. Given the ``model``, the warning names its zero-initialized normalization scales
    (:func:`zero_scale_norms`) first."""
    names = list(scores)
    per_layer = [
        torch.stack([s.min().double(), s.max().double(), s.abs().max().double()]) for s in scores.values()
    ]
    stats = torch.stack(per_layer).cpu().tolist()  # one synchronization for every layer
    low, high = min(r[0] for r in stats), max(r[1] for r in stats)
    eps = max(torch.finfo(s.dtype).eps if s.is_floating_point() else 0.0 for s in scores.values())
    noise = ROUNDING_ULPS * eps * max(r[2] for r in stats)
    zero = [name for name, r in zip(names, stats, strict=True) if r[2] <= noise]
    if low != high and not zero:
        return
    cause = _zero_scale_cause(model) + (
        " Likely causes: a saturated softmax (one-hot predictions from very large logits: warm up "
        "BatchNorm or raise the temperature), a bounded activation (ReLU6, Hardtanh, sigmoid) in its flat "
        "part (SynFlow's all-ones input through |θ| saturates ReLU6), dead ReLUs, a zero-initialized "
        "layer, or weights the output does not depend on"
    )
    if low == high:
        warnings.warn(
            f"every score of {criterion!r} equals {low:g} (all {len(names)} layers): the criterion does "
            f"not rank the weights, and the mask is chosen by the tie-break (lowest index).{cause}.",
            DegenerateScoresWarning,
            stacklevel=stacklevel,
        )
        return
    warnings.warn(
        f"every score of {criterion!r} is 0 in {', '.join(zero)}: the criterion does not rank the "
        f"weights there.{cause}.",
        DegenerateScoresWarning,
        stacklevel=stacklevel,
    )
