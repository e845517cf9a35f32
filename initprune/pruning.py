"""The pruning pipeline: BatchNorm warmup, scoring, masking, and iterative rounds."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from numbers import Integral
from typing import Any

import torch
from torch import Tensor, nn

from .allocation import check_layer_densities
from .collapse import disconnected_layers
from .curvature.losses import Loss
from .errors import InitpruneError, LayerCollapseWarning, check_sparsity, unknown_choice
from .masks import SCOPES, Mask, make_mask
from .progress import progress_bar
from .prunable import prunable_parameters
from .reference import reference_mask
from .scores import as_batches, check_batches, check_loss, get_criterion, score, scoring_mode
from .warmup import warmup_bn

_ROUND_SEED_STRIDE = 1_000_003  # round t scores with seed + t·stride: fresh probes every round
ROUND_SCHEDULES = ("density", "sparsity")


def round_densities(sparsity: float, rounds: int, schedule: str = "density") -> list[float]:
    """Exponential schedule on density: d_t = d^((t+1)/R), t = 0..R-1, ending at d = 1 − sparsity.

    ``schedule="sparsity"`` reads the same schedule as a sparsity, as the paper's reference code does:
    s_t = s^((t+1)/R), so d_t = 1 − s^((t+1)/R) (round 0 of 100 at s = 0.9 keeps 0.105%).
    """
    if schedule not in ROUND_SCHEDULES:
        raise unknown_choice("round_schedule", schedule, ROUND_SCHEDULES)
    if schedule == "sparsity":
        return [1.0 - sparsity ** ((t + 1) / rounds) for t in range(rounds)]
    density = 1.0 - sparsity
    return [density ** ((t + 1) / rounds) for t in range(rounds)]


def prune(
    model: nn.Module,
    criterion: str,
    data: Iterable[Any] | None = None,
    *,
    sparsity: float,
    rounds: int | None = None,
    scope: str = "global",
    warmup_batches: int | None = 0,
    warmup_data: Iterable[Any] | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    prunable: Mapping[str, nn.Parameter] | None = None,
    include_classifier: bool = False,
    exclude_first: bool = False,
    shortcut_bn_scales: bool = False,
    include_attention: bool = True,
    round_schedule: str = "density",
    round_warmup_batches: int | None = 0,
    warmup_cumulative: bool = False,
    progress: bool = False,
    scorer: Callable[..., dict[str, Tensor]] | None = None,
    layer_densities: Mapping[str, float] | None = None,
    loss: str | Loss | Callable[[Tensor, Tensor], Tensor] | None = "cross_entropy",
    **options: Any,
) -> Mask:
    """Warm up BatchNorm, score, mask and prune ``model`` in place; return the final :class:`Mask`.

    ``rounds`` (default: the criterion's, 100 for SynFlow, else 1) iterates with density
    d_t = d^((t+1)/R): each round scores the already-pruned model, pruned weights are zeroed between
    rounds and stay pruned. ``warmup_batches`` batches of ``warmup_data`` (default: ``data``) update the
    BatchNorm statistics first (0: no warmup, None: one pass); ``warmup_cumulative`` averages them
    cumulatively (see :func:`initprune.warmup.warmup_bn`). ``round_warmup_batches`` batches of the same data
    (re-iterable: a list or a loader) warm them up again before every round after the first (None: one
    pass), so that each round scores the pruned network with statistics of its own activations; at 0
    (default) every round uses the first warmup's statistics, which, in eval mode, no longer match a
    network pruned 10 or 100 times (on the study's VGG-11 FP and exact OBD then empty whole layers).
    ``options`` go to the criterion;
    ``progress`` shows bars on a terminal. ``shortcut_bn_scales``: see :func:`prunable_parameters`.
    ``prunable`` (name → parameter, as ``model.named_parameters()`` names them) overrides the default
    choice of the weights to prune, as in :func:`initprune.score`. ``data``: see
    :func:`initprune.score` (tensor, tuple or dict inputs; dict batches with ``labels``).

    ``round_schedule="sparsity"`` reproduces the iterative loop of the paper's reference code (not the
    default: it is not SynFlow's schedule, and it collapses the network): the schedule is read as a
    sparsity (:func:`round_densities`; round 0 already prunes to 1 − s^(1/R), 99.9% at s = 0.9, R = 100),
    each round keeps the top k of its own scores by :func:`~initprune.reference.reference_mask` without
    regard to earlier rounds (weights pruned before score 0 and fill any excess in ``torch.topk``'s tie
    order), pruned weights are zeroed in the model between rounds, and the last round's mask is applied to
    the weights as they were before the loop. With one round (every criterion but synflow) it is the
    reference code's one-shot mask rule. Layer collapse warns (:class:`LayerCollapseWarning`): a layer
    with no weight left, or whose kept weights lie on no input-output path (:mod:`initprune.collapse`).
    The path check feeds real inputs; for a model scored on integer inputs (``nn.Embedding``) it is
    skipped with a warning that says so. Scores that are all equal, or all 0 in a layer, warn
    (:class:`DegenerateScoresWarning`, from :func:`initprune.score`).

    Everything that can be checked is checked before the model changes (options, prunable weights, the
    scoring data: see :func:`initprune.score`); if anything fails later, the model's parameters and
    buffers are restored to what they were before the call (a copy of its state is held for the
    duration) and the error is raised: no half-pruned model is left behind.

    ``scorer`` stands in for :func:`initprune.scores.score` (called with the same arguments), e.g. to
    take the scores from a cache.

    ``layer_densities`` (name → density of every prunable layer, e.g. from
    :func:`initprune.allocation.read_layer_densities`) takes each layer's density from elsewhere: the
    criterion ranks the weights inside each layer, and layer l keeps round(d_l · n_l) of them (one-shot
    only; ``scope`` is then unused). The densities must name exactly the prunable layers and make
    ``sparsity``; this is checked before anything runs.

    ``loss``: the per-sample loss the criterion scores (see :func:`initprune.score`: ``cross_entropy``,
    ``token_cross_entropy`` or a callable).
    """
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise unknown_choice("scope", scope, SCOPES)
    crit = get_criterion(criterion)
    crit.check_options(options)
    loss = check_loss(crit, loss)
    rounds = crit.default_rounds if rounds is None else rounds
    if not isinstance(rounds, int) or rounds < 1:
        raise InitpruneError(f"rounds must be a positive integer, got {rounds!r}")
    if round_schedule not in ROUND_SCHEDULES:
        raise unknown_choice("round_schedule", round_schedule, ROUND_SCHEDULES)
    params = (
        _given_prunable(model, prunable)
        if prunable is not None
        else prunable_parameters(
            model,
            include_classifier=include_classifier,
            exclude_first=exclude_first,
            shortcut_bn_scales=shortcut_bn_scales,
            include_attention=include_attention,
        )
    )
    if layer_densities is not None:
        if rounds != 1 or round_schedule != "density":
            raise InitpruneError(
                f"layer_densities make a one-shot mask; got rounds={rounds}, "
                f"round_schedule={round_schedule!r} (use rounds=1 and round_schedule='density')"
            )
        check_layer_densities(layer_densities, {n: p.numel() for n, p in params.items()}, sparsity)
    device = next(iter(params.values())).device
    if crit.needs_data and data is None:
        raise InitpruneError(f"criterion {criterion!r} needs scoring data (data=None was given)")
    batches = as_batches(data, device) if data is not None else None
    if batches is not None:
        with scoring_mode(model, {}):
            check_batches(model, batches, loss)
    for name, count in (("warmup_batches", warmup_batches), ("round_warmup_batches", round_warmup_batches)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, Integral) or count < 0):
            raise InitpruneError(f"{name} must be an integer >= 0 or None (one pass), got {count!r}")
        if count != 0 and warmup_data is None and batches is None:
            raise InitpruneError(f"BatchNorm warmup needs data: pass data or warmup_data, or {name}=0")
    if input_shape is None and batches is not None and torch.is_tensor(batches[0][0]):
        input_shape = tuple(batches[0][0].shape[1:])
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    try:
        return _prune_in_place(
            model, criterion, batches, sparsity, rounds, scope, warmup_batches, warmup_data, seed,
            input_shape, params, progress, options, scorer, round_schedule, layer_densities, loss,
            round_warmup_batches, warmup_cumulative,
        )  # fmt: skip
    except BaseException:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.detach().copy_(saved[k])
        raise


def _given_prunable(model: nn.Module, prunable: Mapping[str, nn.Parameter]) -> dict[str, nn.Parameter]:
    """``prunable`` checked against the model: every name is one of its parameters, and is that parameter."""
    named = dict(model.named_parameters())
    params = dict(prunable)
    if not params:
        raise InitpruneError("no prunable parameters given")
    foreign = [name for name, p in params.items() if named.get(name) is not p]
    if foreign:
        raise InitpruneError(
            f"prunable names {', '.join(map(repr, foreign))}, which are not parameters of "
            f"{type(model).__name__} under these names; give model.named_parameters() names and parameters"
        )
    return params


def _prune_in_place(
    model: nn.Module,
    criterion: str,
    batches: list | None,
    sparsity: float,
    rounds: int,
    scope: str,
    warmup_batches: int | None,
    warmup_data: Iterable[Any] | None,
    seed: int,
    input_shape: tuple[int, ...] | None,
    params: dict[str, nn.Parameter],
    progress: bool,
    options: dict[str, Any],
    scorer: Callable[..., dict[str, Tensor]] | None = None,
    round_schedule: str = "density",
    layer_densities: Mapping[str, float] | None = None,
    loss: Loss | None = None,
    round_warmup_batches: int | None = 0,
    warmup_cumulative: bool = False,
) -> Mask:
    """The steps of :func:`prune` that change the model, after every check."""
    source = warmup_data if warmup_data is not None else batches
    if warmup_batches != 0:
        warmup_bn(model, source, batches=warmup_batches, cumulative=warmup_cumulative, progress=progress)

    mask: Mask | None = None
    densities = round_densities(sparsity, rounds, round_schedule)
    reference = round_schedule == "sparsity"
    originals = {name: p.detach().clone() for name, p in params.items()} if reference else {}
    bar = progress_bar(total=rounds, desc=f"{criterion} rounds", enabled=progress and rounds > 1)
    for t, density in enumerate(densities):
        if t > 0 and round_warmup_batches != 0:  # statistics of the network pruned so far
            warmup_bn(model, source, batches=round_warmup_batches, cumulative=warmup_cumulative)
        scores = (scorer or score)(
            model,
            criterion,
            batches,
            seed=seed + t * _ROUND_SEED_STRIDE,
            input_shape=input_shape,
            prunable=params,
            progress=progress and rounds == 1,
            loss=loss,
            **options,
        )
        last = t == rounds - 1
        if reference:
            mask = reference_mask(scores, 1.0 - density, scope)
        else:
            mask = make_mask(
                scores, 1.0 - density, scope, previous=mask, warn=last, layer_densities=layer_densities
            )
        mask.apply(model)
        bar.update()
    bar.close()
    assert mask is not None
    if reference:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(originals[name])
        mask.apply(model)
        if mask.collapsed():
            warnings.warn(
                f"layer collapse at sparsity {sparsity:g} ({scope}): no weight left in "
                f"{', '.join(mask.collapsed())}",
                LayerCollapseWarning,
                stacklevel=3,
            )
    if input_shape is not None or batches is not None:
        _check_paths(model, mask, input_shape, batches, sparsity)
    return mask


def _check_paths(
    model: nn.Module, mask: Mask, input_shape: tuple[int, ...] | None, batches: list | None, sparsity: float
) -> None:
    """Warn about layers whose kept weights lie on no input-output path (empty layers warn in make_mask)."""
    lookups = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    inputs = batches[0][0] if batches is not None else None
    real = inputs is None or (torch.is_tensor(inputs) and inputs.is_floating_point())
    if lookups or not real or input_shape is None:
        if lookups:
            why = f"integer inputs ({lookups[0]})"
        elif torch.is_tensor(inputs):
            why = f"{inputs.dtype} inputs"
        else:
            why = f"{'a dict' if isinstance(inputs, Mapping) else 'a tuple'} of inputs"
        warnings.warn(
            f"layer-collapse path check skipped: the model takes {why}, and the path count feeds a real "
            "all-ones input; only empty layers were checked",
            UserWarning,
            stacklevel=4,
        )
        return
    empty = set(mask.collapsed())
    # A real sample of the scoring data where there is one: LayerNorm maps the all-ones input to 0.
    sample = batches[0][0][:1] if batches is not None else None
    cut = [name for name in disconnected_layers(model, mask, input_shape, sample) if name not in empty]
    if cut:
        warnings.warn(
            f"layer collapse at sparsity {sparsity:g}: the kept weights of {', '.join(cut)} lie on no "
            "path from the input to the output",
            LayerCollapseWarning,
            stacklevel=4,
        )
