"""Scoring data as batches: the forms a batch may take (tensor, tuple or dict inputs, a dict with
``labels``), their move to the device, and the checks made before anything is scored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..curvature.losses import Loss, get_loss
from ..curvature.samples import (
    Batch,
    Inputs,
    NotLogitsError,
    input_tensors,
    map_inputs,
    num_samples,
    run_model,
    slice_inputs,
)
from ..errors import InitpruneError

LABELS_KEY = "labels"
"""The key of the targets in a dict batch (a Hugging Face batch: ``input_ids``, ``attention_mask``, ...)."""


def _split_item(item: Any, i: int) -> tuple[Inputs, Any]:
    """(inputs, targets) of one batch: a dict with ``labels``, or an ``(inputs, targets)`` pair whose
    inputs are a tensor, a tuple (or list) of tensors or a dict of tensors."""
    if isinstance(item, Mapping):
        if LABELS_KEY not in item:
            raise InitpruneError(
                f"scoring data: batch {i} is a dict without {LABELS_KEY!r} (keys: "
                f"{', '.join(map(str, item))}); give the targets as {LABELS_KEY!r} or pass (inputs, targets) "
                "pairs"
            )
        return {k: v for k, v in item.items() if k != LABELS_KEY}, item[LABELS_KEY]
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise InitpruneError(
        f"scoring data must yield (inputs, targets) pairs or dicts with {LABELS_KEY!r}; batch {i} is a "
        f"{type(item).__name__}"
    )


def _check_inputs(inputs: Any, i: int) -> Inputs:
    """``inputs`` as a tensor, a tuple of tensors or a dict of tensors (None values of a dict dropped), or
    an error naming what is not a tensor."""
    if torch.is_tensor(inputs):
        return inputs
    if isinstance(inputs, Mapping):
        checked = {k: v for k, v in inputs.items() if v is not None}
        where = [f"{k!r}" for k, v in checked.items() if not torch.is_tensor(v)]
    elif isinstance(inputs, (tuple, list)):
        checked = tuple(inputs)
        where = [f"{j}" for j, v in enumerate(checked) if not torch.is_tensor(v)]
    else:
        raise InitpruneError(
            f"scoring data: the inputs of batch {i} are a {type(inputs).__name__}; give a tensor, a tuple "
            "of tensors (passed positionally) or a dict of tensors (passed as keyword arguments)"
        )
    if not checked or where:
        what = (
            f"input(s) {', '.join(where)} of batch {i} are not tensors"
            if where
            else f"batch {i} has no inputs"
        )
        raise InitpruneError(f"scoring data: {what}; every input must be a tensor with the samples first")
    return checked


def as_batches(data: Any, device: torch.device) -> list[Batch]:
    """Materialize scoring data as a list of ``(inputs, targets)`` pairs on ``device``.

    ``data`` is any iterable of batches (a DataLoader, a list), or one batch. A batch is an ``(inputs,
    targets)`` pair, or a dict whose ``labels`` are the targets and whose other entries are the inputs
    (a Hugging Face batch). Inputs are a tensor, a tuple of tensors (passed to the model positionally) or
    a dict of tensors (passed as keyword arguments), every tensor with the samples along its first
    dimension.
    Batches that redraw their augmentation on every pass (``data.redraw.RedrawnBatches``, already on
    the device) are returned as they are.
    """
    if getattr(data, "redraws", False):  # drawn afresh on every pass (data.redraw): kept as it is
        return data
    single = isinstance(data, Mapping) or (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and torch.is_tensor(data[1])
        and (torch.is_tensor(data[0]) or isinstance(data[0], Mapping))
    )
    if single:
        data = [data]
    batches = []
    for i, item in enumerate(data):
        x, y = _split_item(item, i)
        x = _check_inputs(x, i)
        if not torch.is_tensor(y):
            y = torch.as_tensor(y)
        counts = {tuple(t.shape[:1]) for t in input_tensors(x)}
        if len(counts) != 1 or counts != {tuple(y.shape[:1])}:
            sizes = ", ".join(str(tuple(t.shape)) for t in input_tensors(x))
            raise InitpruneError(
                f"batch {i} has inputs of shape {sizes} but {tuple(y.shape)} targets: every input needs "
                "one row per target"
            )
        batches.append(
            (map_inputs(x, lambda t: t.to(device, non_blocking=True)), y.to(device, non_blocking=True))
        )
    if not batches or num_samples(batches) == 0:
        raise InitpruneError("scoring data is empty")
    return batches


def _input_name(x: Inputs, key: Any) -> str:
    """Where in structured inputs a tensor is, for messages: `` in 'attention_mask'``, `` in argument 1``."""
    if torch.is_tensor(x):
        return ""
    return f" in {key!r}" if isinstance(x, Mapping) else f" in argument {key}"


def _named_inputs(x: Inputs) -> list[tuple[Any, Tensor]]:
    if torch.is_tensor(x):
        return [(None, x)]
    return list(x.items()) if isinstance(x, Mapping) else list(enumerate(x))


def check_batches(model: nn.Module, batches: list[Batch], loss: Loss | None = None) -> None:
    """Raise :class:`InitpruneError` for scoring data the criteria cannot use, naming the batch and input.

    Checks: floating inputs hold no NaN or infinity; the model accepts the inputs (one sample of each
    distinct input shape is run, in eval mode, without gradients); and the targets fit its outputs for
    ``loss`` (default cross-entropy: 1-D integer class indices in [0, C) for ``(batch, C)`` logits;
    ``token_cross_entropy``: ``(batch, length)`` token indices in [0, C) or its ``ignore_index``, for
    ``(batch, length, C)`` logits).
    """
    loss = get_loss(loss)
    for i, (x, _) in enumerate(batches):
        for key, t in _named_inputs(x):
            if t.is_floating_point() or t.is_complex():
                bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(1)
                if bool(bad.any()):
                    j = int(bad.nonzero()[0, 0])
                    kind = "NaN" if bool(torch.isnan(t[j]).any()) else "infinity"
                    raise InitpruneError(
                        f"scoring data: batch {i}, input {j} (of {t.shape[0]}){_input_name(x, key)} contains "
                        f"{kind}; inputs must be finite"
                    )
    outputs: dict[tuple, Any] = {}
    for i, (x, y) in enumerate(batches):
        kind = tuple((key, tuple(t.shape[1:]), t.dtype) for key, t in _named_inputs(x))
        if kind not in outputs:  # one sample of each new input shape through the model
            outputs[kind] = _first_output(model, x, i)
        loss.check(outputs[kind], y, i)


def _describe(x: Inputs) -> str:
    """The shapes and dtypes of ``x``, for messages."""
    if torch.is_tensor(x):
        return f"shape {tuple(x.shape)}, dtype {x.dtype}"
    return ", ".join(f"{k}: {tuple(t.shape)} {t.dtype}" for k, t in _named_inputs(x))


def _first_output(model: nn.Module, x: Inputs, batch: int) -> Tensor:
    """The model's logits on the first sample of ``x`` (an error naming the batch if it fails)."""
    try:
        with torch.no_grad():
            return run_model(model, slice_inputs(x, 0, 1))
    except NotLogitsError as exc:
        raise InitpruneError(
            f"model {type(model).__name__} must return logits of shape (batch, classes); on one sample of "
            f"batch {batch} it returned {exc}"
        ) from None
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InitpruneError(
            f"scoring data: the inputs of batch {batch} ({_describe(x)}) do not fit model "
            f"{type(model).__name__}: {first}"
        ) from None
