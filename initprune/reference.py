"""The mask rule of the paper's reference code (Gollini/Scalable_Second_Order_PaI, ``mask2binary``), used
only by the reproduction of its SynFlow loop (``round_schedule="sparsity"`` in :func:`initprune.prune`).

It differs from :func:`initprune.masks.make_mask` in two ways that matter inside that loop: k is
``max(1, int((1 − s)·n))`` (floored, not rounded), and the k largest are taken by ``torch.topk`` with no
rule for ties, so which of many equal scores are kept is whatever ``torch.topk`` returns on the device.
In the reference SynFlow loop every weight pruned by an earlier round scores exactly 0, and a round that
keeps more weights than are still alive fills the rest from those zeros in ``torch.topk``'s order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .errors import unknown_choice
from .masks import Mask, check_scores

REFERENCE_SCOPES = ("global", "layerwise")


def reference_mask(scores: Mapping[str, Tensor], sparsity: float, scope: str = "global") -> Mask:
    """Keep the ``max(1, int((1 − sparsity)·n))`` largest scores by ``torch.topk`` (ties: its order).

    ``scope``: ``global`` (n = all scored weights, concatenated in the order of ``scores``) or
    ``layerwise`` (n = each layer's weights; the reference code's ``layer``).
    """
    if scope not in REFERENCE_SCOPES:
        raise unknown_choice("scope of the reference-code schedule", scope, REFERENCE_SCOPES)
    check_scores(scores)

    def keep(flat: Tensor) -> Tensor:
        k = max(1, int((1.0 - sparsity) * flat.numel()))
        out = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        out[torch.topk(flat, min(k, flat.numel()), largest=True, sorted=False).indices] = True
        return out

    if scope == "layerwise":
        return Mask({name: keep(s.detach().reshape(-1)).view_as(s) for name, s in scores.items()})
    dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores.values()) else torch.float32
    flat = keep(torch.cat([s.detach().reshape(-1).to(dtype) for s in scores.values()]))
    masks, offset = {}, 0
    for name, s in scores.items():
        masks[name] = flat[offset : offset + s.numel()].view_as(s)
        offset += s.numel()
    return Mask(masks)
