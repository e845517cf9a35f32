"""Hutchinson criteria: HD (Hessian diagonal), HP (OBD with it) and HTS (second-order Taylor)."""

from __future__ import annotations

from ..curvature import batch_gradient, hutchinson_diagonal
from ..errors import InitpruneError, unknown_choice
from .registry import ScoreDict, ScoringContext, register

PROBE_SCOPES = ("prunable", "all")


def _diagonal(ctx: ScoringContext, probes: int, temperature: float, chunk_size: int | None, probe_scope: str):
    if probe_scope not in PROBE_SCOPES:
        raise unknown_choice("probe_scope", probe_scope, PROBE_SCOPES)
    if int(probes) < 1:
        raise InitpruneError(f"probes must be a positive integer, got {probes!r}")
    probe_params = None
    if probe_scope == "all":
        probe_params = {n: p for n, p in ctx.model.named_parameters() if p.is_floating_point()}
    return hutchinson_diagonal(
        ctx.model,
        ctx.params,
        ctx.batches,
        probes=int(probes),
        temperature=temperature,
        generator=ctx.generator(),
        chunk_size=chunk_size,
        probe_params=probe_params,
    )


@register("hutch_diag", "HD: Hutchinson Hessian diagonal, 10 probes per sample, logits/200", needs_data=True)
def hutch_diag(
    ctx: ScoringContext,
    *,
    probes: int = 10,
    temperature: float = 200.0,
    chunk_size: int | None = None,
    probe_scope: str = "prunable",
) -> ScoreDict:
    """HD: ĥ = (1/(kN)) Σ_i Σ_j z_ij ⊙ (H_i z_ij), signed, k independent Rademacher probes per sample
    (Hutchinson 1989; arXiv 2502.11450). Logits divided by T = 200 as in the paper's reference code.
    ``probe_scope``: ``prunable`` probes only the prunable weights (unbiased, less variance); ``all`` probes
    every parameter as the reference code does. ``chunk_size``: samples per batched pass (None: as many as
    fit the device's memory budget, see ``initprune.curvature.set_memory_budget``). Mean reduction."""
    return _diagonal(ctx, probes, temperature, chunk_size, probe_scope)


@register("hutch_pruner", "HP: OBD with the Hutchinson diagonal, ½ θ² ⊙ ĥ (signed)", needs_data=True)
def hutch_pruner(
    ctx: ScoringContext,
    *,
    probes: int = 10,
    temperature: float = 200.0,
    chunk_size: int | None = None,
    probe_scope: str = "prunable",
) -> ScoreDict:
    """HP: ½ θ² ⊙ ĥ (signed), Optimal Brain Damage with the Hutchinson Hessian diagonal ĥ
    (arXiv 2502.11450). Mean reduction."""
    diag = _diagonal(ctx, probes, temperature, chunk_size, probe_scope)
    return {name: 0.5 * p.detach().square() * diag[name] for name, p in ctx.params.items()}


@register("hutch_taylor", "HTS: second-order Taylor |θ ⊙ g + ½ θ² ⊙ ĥ|, logits/200", needs_data=True)
def hutch_taylor(
    ctx: ScoringContext,
    *,
    probes: int = 10,
    temperature: float = 200.0,
    chunk_size: int | None = None,
    probe_scope: str = "prunable",
) -> ScoreDict:
    """HTS: |θ ⊙ g + ½ θ² ⊙ ĥ| with g = ∇L and the Hutchinson diagonal ĥ, both at the same temperature
    (T = 200 by default, as the paper's reference code). Mean reduction."""
    diag = _diagonal(ctx, probes, temperature, chunk_size, probe_scope)
    g = batch_gradient(ctx.model, ctx.params, ctx.batches, temperature=temperature)
    return {
        name: (p.detach() * g[name] + 0.5 * p.detach().square() * diag[name]).abs()
        for name, p in ctx.params.items()
    }
