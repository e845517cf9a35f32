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
from ..distributed import sample_shard, shard_batches
from ..errors import DegenerateScoresWarning, InitpruneError
from ..prunable import prunable_parameters
from .registry import (
    Criterion,
    ScoreDict,
    ScoringContext,
    get_criterion,
)


def as_batches(data: Any, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """Materialize scoring data as a list of ``(inputs, targets)`` pairs on ``device``.

    ``data`` is any iterable of ``(inputs, targets)`` batches (a DataLoader, a list of pairs), or one
    ``(inputs, targets)`` pair of tensors.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        data = [data]
    batches = []
    for i, item in enumerate(data):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2 and torch.is_tensor(item[0])):
            raise InitpruneError(
                f"scoring data must yield (inputs, targets) pairs of tensors; batch {i} is a "
                f"{type(item).__name__}"
            )
        x, y = item[0], item[1]
        if not torch.is_tensor(y):
            y = torch.as_tensor(y)
        if x.shape[0] != y.shape[0]:
            raise InitpruneError(f"batch {i} has {x.shape[0]} inputs but {y.shape[0]} targets")
        batches.append((x.to(device, non_blocking=True), y.to(device, non_blocking=True)))
    if not batches or sum(x.shape[0] for x, _ in batches) == 0:
        raise InitpruneError("scoring data is empty")
    return batches


def check_batches(model: nn.Module, batches: list[tuple[Tensor, Tensor]], loss: Loss | None = None) -> None:
    """Raise :class:`InitpruneError` for scoring data the criteria cannot use, naming the batch and input.

    Checks: floating inputs hold no NaN or infinity; the model accepts the inputs (one sample of each
    distinct input shape is run, in eval mode, without gradients); and the targets fit its outputs for
    ``loss`` (default cross-entropy: 1-D integer class indices in [0, C) for ``(batch, C)`` logits;
    ``token_cross_entropy``: ``(batch, length)`` token indices in [0, C) or its ``ignore_index``, for
    ``(batch, length, C)`` logits).
    """
    loss = get_loss(loss)
    for i, (x, _) in enumerate(batches):
        if x.is_floating_point() or x.is_complex():
            bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
            if bool(bad.any()):
                j = int(bad.nonzero()[0, 0])
                kind = "NaN" if bool(torch.isnan(x[j]).any()) else "infinity"
                raise InitpruneError(
                    f"scoring data: batch {i}, input {j} (of {x.shape[0]}) contains {kind}; "
                    "inputs must be finite"
                )
    outputs: dict[tuple[tuple[int, ...], torch.dtype], Any] = {}
    for i, (x, y) in enumerate(batches):
        kind = (tuple(x.shape[1:]), x.dtype)
        if kind not in outputs:  # one sample of each new input shape through the model
            outputs[kind] = _first_output(model, x, i)
        loss.check(outputs[kind], y, i)


def _first_output(model: nn.Module, x: Tensor, batch: int) -> Any:
    """The model's output on the first sample of ``x`` (an error naming the batch if it fails)."""
    try:
        with torch.no_grad():
            return model(x[:1])
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InitpruneError(
            f"scoring data: the inputs of batch {batch} (shape {tuple(x.shape)}, dtype {x.dtype}) do not "
            f"fit model {type(model).__name__}: {first}"
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


def warn_degenerate(criterion: str, scores: Mapping[str, Tensor], stacklevel: int = 2) -> None:
    """Warn (:class:`DegenerateScoresWarning`) when every score is equal, or a layer's scores are all 0:
    the mask is then chosen by the tie-break (lowest index), not by the criterion."""
    names = list(scores)
    per_layer = [
        torch.stack([s.min().double(), s.max().double(), (s != 0).any().double()]) for s in scores.values()
    ]
    stats = torch.stack(per_layer).cpu().tolist()  # one synchronization for every layer
    low, high = min(r[0] for r in stats), max(r[1] for r in stats)
    cause = (
        "Likely causes: a saturated softmax (one-hot predictions from very large logits: warm up "
        "BatchNorm or raise the temperature), a bounded activation (ReLU6, Hardtanh, sigmoid) in its flat "
        "part (SynFlow's all-ones input through |θ| saturates ReLU6), dead ReLUs, a zero-initialized "
        "layer, or weights the output does not depend on"
    )
    if low == high:
        warnings.warn(
            f"every score of {criterion!r} equals {low:g} (all {len(names)} layers): the criterion does "
            f"not rank the weights, and the mask is chosen by the tie-break (lowest index). {cause}.",
            DegenerateScoresWarning,
            stacklevel=stacklevel,
        )
        return
    zero = [name for name, r in zip(names, stats, strict=True) if not r[2]]
    if zero:
        warnings.warn(
            f"every score of {criterion!r} is 0 in {', '.join(zero)}: the criterion does not rank the "
            f"weights there. {cause}.",
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
    is an iterable of ``(inputs, targets)`` batches (required by data-dependent criteria), checked first
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
    warn_degenerate(criterion, scores, stacklevel=2)
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
    if input_shape is None and batches is not None:
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
