"""Empirical-Fisher criteria: FD, FP (OBD with the empirical Fisher) and FTS (second-order Taylor)."""

from __future__ import annotations

from ..curvature import per_sample_gradient_moments
from .registry import ChunkSize, ScoreDict, ScoringContext, Temperature, register


def _moments(ctx: ScoringContext, temperature: float, chunk_size: int | None, gradient: bool = False):
    return per_sample_gradient_moments(
        ctx.model,
        ctx.params,
        ctx.batches,
        temperature=temperature,
        chunk_size=chunk_size,
        gradient=gradient,
        loss=ctx.loss,
    )


@register("fisher_diag", "FD: empirical Fisher diagonal (1/N) Σ g_i², per-sample gradients", needs_data=True)
def fisher_diag(
    ctx: ScoringContext, *, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """FD: F = (1/N) Σ_i g_i ⊙ g_i, the empirical Fisher diagonal from true per-sample gradients g_i = ∇ℓ_i
    (arXiv 2502.11450). Mean reduction; with sum reduction F is N times larger (same mask). ``chunk_size``
    (every Fisher, GGN and MC-Fisher criterion): samples per batched pass; None sizes the passes by the
    device's memory budget (``initprune.curvature.set_memory_budget``, ``INITPRUNE_MEMORY_BUDGET``)."""
    _, fisher = _moments(ctx, temperature, chunk_size)
    return fisher


@register("fisher_pruner", "FP: OBD with the empirical Fisher, ½ θ² ⊙ F", needs_data=True)
def fisher_pruner(
    ctx: ScoringContext, *, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """FP: ½ θ² ⊙ F, Optimal Brain Damage's saliency (LeCun et al. 1990) with the empirical Fisher diagonal
    F = (1/N) Σ_i g_i² in place of the Hessian diagonal (arXiv 2502.11450). Mean reduction."""
    _, fisher = _moments(ctx, temperature, chunk_size)
    return {name: 0.5 * p.detach().square() * fisher[name] for name, p in ctx.params.items()}


@register("fisher_taylor", "FTS: second-order Taylor |θ ⊙ g + ½ θ² ⊙ F|", needs_data=True)
def fisher_taylor(
    ctx: ScoringContext, *, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """FTS: |θ ⊙ g + ½ θ² ⊙ F|, the magnitude of the second-order Taylor change of L when θ_p is removed,
    with g = (1/N) Σ g_i and the empirical Fisher diagonal F = (1/N) Σ g_i² (arXiv 2502.11450). Mean
    reduction for both terms."""
    g, fisher = _moments(ctx, temperature, chunk_size, gradient=True)
    return {
        name: (p.detach() * g[name] + 0.5 * p.detach().square() * fisher[name]).abs()
        for name, p in ctx.params.items()
    }
