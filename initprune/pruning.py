"""The pruning pipeline: BatchNorm warmup, scoring, masking, and iterative rounds."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

from .collapse import disconnected_layers
from .errors import InitpruneError, LayerCollapseWarning, check_sparsity, unknown_choice
from .masks import SCOPES, Mask, make_mask
from .progress import progress_bar
from .prunable import prunable_parameters
from .scores import as_batches, get_criterion, score
from .warmup import warmup_bn

_ROUND_SEED_STRIDE = 1_000_003  # round t scores with seed + t·stride: fresh probes every round


def round_densities(sparsity: float, rounds: int) -> list[float]:
    """Exponential schedule on density: d_t = d^((t+1)/R), t = 0..R-1, ending at d = 1 − sparsity."""
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
    include_classifier: bool = False,
    exclude_first: bool = False,
    progress: bool = False,
    scorer: Callable[..., dict[str, Tensor]] | None = None,
    **options: Any,
) -> Mask:
    """Warm up BatchNorm, score, mask and prune ``model`` in place; return the final :class:`Mask`.

    ``rounds`` (default: the criterion's, 100 for SynFlow, else 1) iterates with density
    d_t = d^((t+1)/R): each round scores the already-pruned model, pruned weights are zeroed between
    rounds and stay pruned. ``warmup_batches`` batches of ``warmup_data`` (default: ``data``) update the
    BatchNorm statistics first (0: no warmup, None: one pass). ``options`` go to the criterion;
    ``progress`` shows bars on a terminal. Layer collapse warns (:class:`LayerCollapseWarning`): a layer
    with no weight left, or whose kept weights lie on no input-output path (:mod:`initprune.collapse`).
    ``scorer`` stands in for :func:`initprune.scores.score` (called with the same arguments), e.g. to
    take the scores from a cache.
    """
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise unknown_choice("scope", scope, SCOPES)
    crit = get_criterion(criterion)
    crit.check_options(options)
    rounds = crit.default_rounds if rounds is None else rounds
    if not isinstance(rounds, int) or rounds < 1:
        raise InitpruneError(f"rounds must be a positive integer, got {rounds!r}")
    params = prunable_parameters(model, include_classifier=include_classifier, exclude_first=exclude_first)
    device = next(iter(params.values())).device
    if crit.needs_data and data is None:
        raise InitpruneError(f"criterion {criterion!r} needs scoring data (data=None was given)")
    batches = as_batches(data, device) if data is not None else None
    if warmup_batches != 0:
        source = warmup_data if warmup_data is not None else batches
        if source is None:
            raise InitpruneError("BatchNorm warmup needs data: pass data or warmup_data, or warmup_batches=0")
        warmup_bn(model, source, batches=warmup_batches, progress=progress)

    mask: Mask | None = None
    densities = round_densities(sparsity, rounds)
    bar = progress_bar(total=rounds, desc=f"{criterion} rounds", enabled=progress and rounds > 1)
    for t, density in enumerate(densities):
        scores = (scorer or score)(
            model,
            criterion,
            batches,
            seed=seed + t * _ROUND_SEED_STRIDE,
            input_shape=input_shape,
            prunable=params,
            progress=progress and rounds == 1,
            **options,
        )
        last = t == rounds - 1
        mask = make_mask(scores, 1.0 - density, scope, previous=mask, warn=last)
        mask.apply(model)
        bar.update()
    bar.close()
    assert mask is not None
    if input_shape is None and batches is not None:
        input_shape = tuple(batches[0][0].shape[1:])
    if input_shape is not None:
        empty = set(mask.collapsed())
        cut = [name for name in disconnected_layers(model, mask, input_shape) if name not in empty]
        if cut:
            warnings.warn(
                f"layer collapse at sparsity {sparsity:g}: the kept weights of {', '.join(cut)} lie on no "
                "path from the input to the output",
                LayerCollapseWarning,
                stacklevel=2,
            )
    return mask
