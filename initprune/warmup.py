"""BatchNorm warmup: running statistics from train-mode forward passes, before scoring."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .curvature.samples import batch_inputs, map_inputs, run_model
from .errors import InitpruneError
from .progress import progress_bar


def batchnorm_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer that tracks running statistics."""
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def warmup_bn(
    model: nn.Module,
    data: Iterable[Any],
    batches: int | None = None,
    *,
    cumulative: bool = False,
    progress: bool = False,
) -> int:
    """Update BatchNorm running statistics with train-mode forwards over ``batches`` batches of ``data``.

    A batch is an ``(inputs, targets)`` pair, a dict (its entries but ``labels`` are the inputs, passed as
    keyword arguments) or the inputs alone (a tensor); tuple inputs are passed positionally.

    No gradient is computed and no weight changes; only BatchNorm buffers (running mean, running variance,
    batch count) do. ``batches=None`` makes one pass over ``data``; ``batches=0`` does nothing.
    ``cumulative=True`` replaces PyTorch's exponential momentum by a cumulative average over the warmup
    batches (the statistics then are the mean over those batches, independent of their order). The
    model's train/eval modes are restored afterwards. ``progress`` shows a bar on a terminal. Returns the
    number of batches used; where ``data`` holds fewer than ``batches``, all of them are used, with a
    warning that says so.
    """
    if batches is not None and int(batches) < 0:
        raise InitpruneError(f"warmup batches must be >= 0 or None (one pass), got {batches!r}")
    norms = batchnorm_modules(model)
    if batches == 0 or not norms:
        return 0
    device = next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    used = 0
    try:
        model.train()
        if cumulative:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
        total = batches if batches is not None else (len(data) if hasattr(data, "__len__") else None)
        for item in progress_bar(data, total=total, desc="BN warmup", enabled=progress):
            if batches is not None and used >= batches:
                break
            x = batch_inputs(item)
            run_model(model, map_inputs(x, lambda t: t.to(device, non_blocking=True)))
            used += 1
    finally:
        for m, training in modes.items():
            m.training = training
        for m, momentum in momenta.items():
            m.momentum = momentum
    if used == 0:
        raise InitpruneError("warmup data is empty")
    if batches is not None and used < batches:
        warnings.warn(
            f"warmup_bn: {batches} batches asked for, but the data holds {used}: warmed up on {used}",
            stacklevel=3,  # the caller of warmup_bn (torch.no_grad's wrapper is one frame)
        )
    return used
