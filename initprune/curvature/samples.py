"""Scoring samples as batches and chunks, the model call, the scaled loss, and functional views of a model.

A batch is ``(inputs, targets)``. The inputs are a tensor (passed to the model as its one positional
argument), a tuple of tensors (passed positionally) or a dict of tensors (passed as keyword arguments, as
Hugging Face models take ``input_ids``, ``attention_mask``, ...); every tensor has the samples along its
first dimension. The model's output is a tensor of logits, a tuple or list (its first element), a dict
(its ``logits``) or an object with a ``logits`` attribute (a Hugging Face ``ModelOutput``). Every route
of the curvature engine calls the model and cuts the inputs through the functions below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .losses import Loss

Inputs = Tensor | tuple[Tensor, ...] | Mapping[str, Tensor]
"""A model's inputs for a batch of samples: a tensor, a tuple of tensors or a dict of tensors."""
Batch = tuple[Inputs, Tensor]
TensorDict = dict[str, Tensor]


def map_inputs(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    """``inputs`` with ``fn`` applied to every tensor, the structure (tensor, tuple, dict) kept."""
    if torch.is_tensor(inputs):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {key: fn(value) for key, value in inputs.items()}
    return tuple(fn(value) for value in inputs)


def input_tensors(inputs: Inputs) -> list[Tensor]:
    """The tensors of ``inputs``, in order."""
    if torch.is_tensor(inputs):
        return [inputs]
    return list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)


def input_count(inputs: Inputs) -> int:
    """The number of samples in ``inputs``: the first dimension of its (first) tensor."""
    return int(input_tensors(inputs)[0].shape[0])


def first_input(inputs: Inputs) -> Tensor:
    """The first tensor of ``inputs`` (its device is the batch's)."""
    return input_tensors(inputs)[0]


def slice_inputs(inputs: Inputs, start: int, stop: int) -> Inputs:
    """Samples ``start`` to ``stop`` (excluded) of every tensor of ``inputs``."""
    return map_inputs(inputs, lambda t: t[start:stop])


def batch_of_one(sample: Inputs) -> Inputs:
    """One sample (no batch dimension, as ``torch.func.vmap`` hands it) as a batch of one."""
    return map_inputs(sample, lambda t: t.unsqueeze(0))


class NotLogitsError(TypeError):
    """The model's output holds no logits tensor where :func:`model_logits` looks for one."""


def model_logits(output: Any) -> Tensor:
    """The logits in a model's output: the tensor itself, the first element of a tuple or list, the
    ``logits`` of a dict or of an object that has them (a Hugging Face ``ModelOutput``)."""
    if torch.is_tensor(output):
        return output
    logits = getattr(output, "logits", None)
    if torch.is_tensor(logits):
        return logits
    if isinstance(output, Mapping):
        if torch.is_tensor(output.get("logits")):
            return output["logits"]
        raise NotLogitsError(f"a dict without 'logits' (keys: {', '.join(map(str, output))})")
    if isinstance(output, (tuple, list)) and output:
        return model_logits(output[0])
    raise NotLogitsError(
        f"a {type(output).__name__}; a model must return logits: a tensor, a tuple (the first element), a "
        "dict or an object with 'logits'"
    )


def _arguments(inputs: Inputs) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    if torch.is_tensor(inputs):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    return tuple(inputs), {}


def run_model(model: nn.Module, inputs: Inputs) -> Tensor:
    """``model(inputs)`` (a tuple passed positionally, a dict as keyword arguments), as logits."""
    args, kwargs = _arguments(inputs)
    return model_logits(model(*args, **kwargs))


def call_model(model: nn.Module, params: Mapping[str, Tensor], inputs: Inputs) -> Tensor:
    """:func:`run_model` with the model's parameters and buffers replaced by ``params``
    (``torch.func.functional_call``), as logits."""
    args, kwargs = _arguments(inputs)
    return model_logits(functional_call(model, dict(params), args, kwargs))


def batch_inputs(item: Any, labels: str = "labels") -> Inputs:
    """The inputs of one batch as a data loader yields it: of an ``(inputs, targets)`` pair, of a dict
    (every entry but ``labels``), or the item itself (a tensor)."""
    if isinstance(item, Mapping):
        return {k: v for k, v in item.items() if k != labels and v is not None}
    if isinstance(item, (tuple, list)):
        return item[0]
    return item


def num_samples(batches: Sequence[Batch]) -> int:
    """Total number of samples N over all batches."""
    return sum(input_count(x) for x, _ in batches)


def iter_chunks(batches: Sequence[Batch], chunk_size: int | None) -> Iterator[Batch]:
    """Yield the samples of ``batches`` in order, in pieces of at most ``chunk_size`` samples."""
    for x, y in batches:
        count = input_count(x)
        if chunk_size is None or count <= chunk_size:
            yield x, y
            continue
        for start in range(0, count, chunk_size):
            yield slice_inputs(x, start, start + chunk_size), y[start : start + chunk_size]


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

    def fn(p: TensorDict, x: Inputs, y: Tensor) -> Tensor:
        logits = call_model(model, {**fixed, **p}, batch_of_one(x))
        return scaled_loss(logits, y.unsqueeze(0), temperature, loss=loss)

    return fn
