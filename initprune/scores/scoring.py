"""Running one criterion on a model: :func:`score`, the loss check, and the scoring mode that leaves the
model as it was. The scoring data's forms and checks are in :mod:`.batches`, the warning for degenerate
scores in :mod:`.degenerate`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..curvature.losses import Loss, get_loss
from ..distributed import sample_shard, shard_batches
from ..errors import InitpruneError
from ..prunable import prunable_parameters
from .batches import as_batches, check_batches
from .degenerate import warn_degenerate
from .registry import (
    Criterion,
    ScoreDict,
    ScoringContext,
    get_criterion,
)


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
