"""Running one criterion on a model: :func:`score`, the scoring data's checks, the scoring mode that
leaves the model as it was, and the warning for degenerate scores."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

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
from ..distributed import sample_shard, shard_batches
from ..errors import DegenerateScoresWarning, InitpruneError
from ..prunable import prunable_parameters
from .registry import (
    Criterion,
    ScoreDict,
    ScoringContext,
    get_criterion,
)

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


def check_loss(crit: Criterion, loss: str | Loss | Callable | None) -> Loss:
    """The :class:`Loss` for ``loss``; an error if it is unknown or ``crit`` needs a closed-form output
    Hessian (exact GGN, Monte-Carlo Fisher) that it does not have."""
    value = get_loss(loss)
    if crit.output_hessian and not value.has_output_hessian:
        raise InitpruneError(
            f"criterion {crit.name!r} needs the loss's Hessian in the outputs, which loss {value.name!r} "
            f"(a callable) does not give; use loss cross_entropy or token_cross_entropy, or a criterion "
            "that needs only gradients (grad_norm, snip, grasp, fisher_*, hutch_*)"
        )
    return value


@contextmanager
def scoring_mode(model: nn.Module, params: Mapping[str, nn.Parameter]) -> Iterator[None]:
    """Eval mode and gradients on ``params`` for the duration; modes and flags restored exactly after."""
    modes = {m: m.training for m in model.modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    named = dict(model.named_parameters())
    try:
        model.eval()
        for p in params.values():
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training
        for name, flag in flags.items():
            named[name].requires_grad_(flag)


def attention_backend(crit: Criterion):
    """The attention kernels a criterion scores with: for second-order criteria the math one, whose
    backward is differentiable again (the fused CPU and GPU kernels of ``scaled_dot_product_attention``
    have no double backward); the default choice otherwise."""
    return sdpa_kernel(SDPBackend.MATH) if crit.second_order else nullcontext()


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


def score(
    model: nn.Module,
    criterion: str,
    data: Any = None,
    *,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    prunable: Mapping[str, nn.Parameter] | None = None,
    include_classifier: bool = False,
    exclude_first: bool = False,
    include_attention: bool = True,
    progress: bool = False,
    loss: str | Loss | Callable[[Tensor, Tensor], Tensor] | None = "cross_entropy",
    **options: Any,
) -> ScoreDict:
    """Score every prunable weight of ``model`` with ``criterion``; larger scores are kept.

    Returns one score tensor per prunable parameter, keyed by ``model.named_parameters()`` names. ``data``
    is an iterable of ``(inputs, targets)`` batches or of dict batches with ``labels`` (:func:`as_batches`:
    tensor, tuple or dict inputs; the model may return a tensor, a tuple, a dict or an object with
    ``logits``), required by data-dependent criteria and checked first
    (:func:`check_batches`: finite inputs, labels in [0, C), inputs the model accepts); ``options`` are
    the criterion's own (see ``get_criterion(name).options``), each checked against its declared type and
    range. ``prunable`` overrides the default choice of prunable weights (``prunable_parameters``, with
    ``include_classifier``, ``exclude_first`` and ``include_attention``). Scoring runs in eval mode and
    leaves the model exactly as it was; second-order criteria run attention on the math kernel (which
    has a double backward). Scores that are all equal, or all 0 in a layer, warn
    (:class:`DegenerateScoresWarning`). ``progress`` shows a bar on a terminal where the criterion is
    long (Hutchinson). Under a process group (torchrun) ``data`` must be the same on every rank: each
    rank scores its contiguous part of the samples, the curvature sums are all-reduced, and every rank
    returns the scores one process would compute from all of them.

    ``loss``: the per-sample loss ℓ_i the criteria score (:mod:`initprune.curvature.losses`):
    ``cross_entropy`` (default; logits (B, C), class targets (B,)), ``token_cross_entropy`` (logits
    (B, L, C), token targets (B, L), ``ignore_index`` −100 not counted, one sample = one sequence whose loss
    is the mean over its counted tokens), or a callable ``fn(outputs, targets) -> (B,)`` (given the
    outputs divided by the criterion's temperature) for every criterion that needs only gradients and
    Hessian-vector products; the exact GGN and Monte-Carlo Fisher criteria refuse a callable.
    """
    crit = get_criterion(criterion)
    crit.check_options(options)
    loss = check_loss(crit, loss)
    params = (
        dict(prunable)
        if prunable is not None
        else prunable_parameters(
            model,
            include_classifier=include_classifier,
            exclude_first=exclude_first,
            include_attention=include_attention,
        )
    )
    if not params:
        raise InitpruneError("no prunable parameters given")
    device = next(iter(params.values())).device
    if crit.needs_data and data is None:
        raise InitpruneError(f"criterion {criterion!r} needs scoring data (data=None was given)")
    batches = as_batches(data, device) if data is not None else None
    if batches is not None:
        with scoring_mode(model, {}):
            check_batches(model, batches, loss)
    scores = score_batches(model, crit, params, batches, seed, input_shape, progress, options, loss)
    warn_degenerate(criterion, scores, stacklevel=2, model=model)
    return scores


def score_batches(
    model: nn.Module,
    crit: Criterion,
    params: Mapping[str, nn.Parameter],
    batches: list[tuple[Tensor, Tensor]] | None,
    seed: int,
    input_shape: tuple[int, ...] | None,
    progress: bool,
    options: Mapping[str, Any],
    loss: Loss | None = None,
) -> ScoreDict:
    """Run ``crit`` on checked batches and options (what :func:`score` does after its checks)."""
    if input_shape is None and batches is not None and torch.is_tensor(batches[0][0]):
        input_shape = tuple(batches[0][0].shape[1:])
    # Under torchrun each rank scores its own part of the samples; the engines sum over all ranks.
    batches, shard = shard_batches(batches) if batches is not None else (None, None)
    ctx = ScoringContext(
        model,
        dict(params),
        batches,
        int(seed),
        None if input_shape is None else tuple(input_shape),
        progress,
        get_loss(loss),
    )
    with scoring_mode(model, params), attention_backend(crit), sample_shard(shard):
        scores = crit.fn(ctx, **options)
    return {name: scores[name].detach() for name in params}
