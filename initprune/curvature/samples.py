"""Scoring samples as batches and chunks, the scaled loss, and functional views of a model."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .losses import Loss

Batch = tuple[Tensor, Tensor]
TensorDict = dict[str, Tensor]


def num_samples(batches: Sequence[Batch]) -> int:
    """Total number of samples N over all batches."""
    return sum(int(x.shape[0]) for x, _ in batches)


def iter_chunks(batches: Sequence[Batch], chunk_size: int | None) -> Iterator[Batch]:
    """Yield the samples of ``batches`` in order, in pieces of at most ``chunk_size`` samples."""
    for x, y in batches:
        if chunk_size is None or x.shape[0] <= chunk_size:
            yield x, y
            continue
        for start in range(0, x.shape[0], chunk_size):
            yield x[start : start + chunk_size], y[start : start + chunk_size]


def scaled_loss(
    logits: Tensor, targets: Tensor, temperature: float, reduction: str = "sum", loss: Loss | None = None
) -> Tensor:
    """The loss of ``logits / temperature``: cross-entropy, or ``loss`` (:mod:`.losses`) summed over the
    samples (``reduction="sum"``) or averaged (``"mean"``)."""
    if loss is None:
        return F.cross_entropy(logits / temperature, targets, reduction=reduction)
    total = loss.total(logits, targets, temperature)
    return total if reduction == "sum" else total / targets.shape[0]


def functional_parts(model: nn.Module, params: Mapping[str, Tensor]) -> tuple[TensorDict, TensorDict]:
    """(detached tensors to differentiate, detached copies of everything else the model holds)."""
    probed = {name: p.detach() for name, p in params.items()}
    fixed = {n: t.detach() for n, t in model.named_parameters() if n not in params}
    fixed.update({n: t.detach() for n, t in model.named_buffers()})
    return probed, fixed


def per_sample_loss_fn(
    model: nn.Module, fixed: TensorDict, temperature: float, loss: Loss | None = None
) -> Callable:
    """``fn(p, x, y)``: ℓ = CE(f(x; p, fixed)/T, y) (or ``loss``) for ONE sample ``x`` (no batch dim), for
    torch.func."""

    def fn(p: TensorDict, x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, {**fixed, **p}, (x.unsqueeze(0),))
        return scaled_loss(logits, y.unsqueeze(0), temperature, loss=loss)

    return fn
