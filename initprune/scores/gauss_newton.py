"""Gauss-Newton criteria: the exact GGN diagonal and the Monte-Carlo true-Fisher diagonal, alone, in OBD
(½ θ² ⊙ d) and in the second-order Taylor score |θ ⊙ g + ½ θ² ⊙ d|.

In networks piecewise linear in each weight (ReLU, max-pool, eval BatchNorm, residual sums) the GGN
diagonal *is* the Hessian diagonal that the Hutchinson criteria estimate, computed exactly with C backward
passes; the MC Fisher estimates the same diagonal with m backward passes at far lower variance than
Hutchinson (see :mod:`initprune.curvature.ggn`).
"""

from __future__ import annotations

from ..curvature import batch_gradient, ggn_diagonal, mc_fisher_diagonal
from .registry import ChunkSize, Samples, ScoreDict, ScoringContext, Temperature, register


def _ggn(ctx: ScoringContext, temperature: float, chunk_size: int | None) -> ScoreDict:
    return ggn_diagonal(
        ctx.model, ctx.params, ctx.batches, temperature=temperature, chunk_size=chunk_size, loss=ctx.loss
    )


def _mc(ctx: ScoringContext, samples: int, temperature: float, chunk_size: int | None) -> ScoreDict:
    return mc_fisher_diagonal(
        ctx.model,
        ctx.params,
        ctx.batches,
        samples=samples,
        temperature=temperature,
        generator=ctx.generator(),
        chunk_size=chunk_size,
        loss=ctx.loss,
    )


def _obd(ctx: ScoringContext, diag: ScoreDict) -> ScoreDict:
    return {name: 0.5 * p.detach().square() * diag[name] for name, p in ctx.params.items()}


def _taylor(ctx: ScoringContext, diag: ScoreDict, temperature: float) -> ScoreDict:
    g = batch_gradient(ctx.model, ctx.params, ctx.batches, temperature=temperature, loss=ctx.loss)
    return {
        name: (p.detach() * g[name] + 0.5 * p.detach().square() * diag[name]).abs()
        for name, p in ctx.params.items()
    }


@register(
    "ggn_diag",
    "exact GGN diagonal (= Hessian diagonal in ReLU/BN nets), C backwards",
    needs_data=True,
    output_hessian=True,
)
def ggn_diag(
    ctx: ScoringContext, *, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """diag(G), G = (1/N) Σ_i J_iᵀ Λ_i J_i with Λ_i = (diag(p_i) − p_i p_iᵀ)/T², p_i = softmax(z_i/T):
    the exact generalized Gauss-Newton diagonal of the mean loss (equal to diag(∇²L) in networks piecewise
    linear in each weight). Mean reduction; ∝ 1/T²."""
    return _ggn(ctx, temperature, chunk_size)


@register(
    "ggn_pruner", "OBD with the exact GGN diagonal, ½ θ² ⊙ diag(GGN)", needs_data=True, output_hessian=True
)
def ggn_pruner(
    ctx: ScoringContext, *, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """½ θ² ⊙ diag(G): Optimal Brain Damage (LeCun et al. 1990) with the exact GGN diagonal. Mean
    reduction."""
    return _obd(ctx, _ggn(ctx, temperature, chunk_size))


@register(
    "ggn_taylor",
    "second-order Taylor with the exact GGN diagonal, |θ ⊙ g + ½ θ² ⊙ diag(GGN)|",
    needs_data=True,
    output_hessian=True,
)
def ggn_taylor(
    ctx: ScoringContext, *, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """|θ ⊙ g + ½ θ² ⊙ diag(G)| with g = ∇L and the GGN diagonal at the same temperature. Mean reduction
    for both terms."""
    return _taylor(ctx, _ggn(ctx, temperature, chunk_size), temperature)


@register(
    "fisher_mc_diag",
    "true Fisher diagonal by Monte Carlo, labels sampled from the model",
    needs_data=True,
    output_hessian=True,
)
def fisher_mc_diag(
    ctx: ScoringContext, *, samples: Samples = 1, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """F̂ = (1/N) Σ_i (1/m) Σ_s (∇ CE(z_i/T, ŷ_is))², ŷ_is ~ softmax(z_i/T), m = ``samples`` draws per data
    point from the scoring seed: an unbiased estimate of the true Fisher = GGN diagonal. Mean reduction."""
    return _mc(ctx, samples, temperature, chunk_size)


@register(
    "fisher_mc_pruner",
    "OBD with the Monte-Carlo true Fisher diagonal, ½ θ² ⊙ F̂",
    needs_data=True,
    output_hessian=True,
)
def fisher_mc_pruner(
    ctx: ScoringContext, *, samples: Samples = 1, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """½ θ² ⊙ F̂ with the Monte-Carlo true Fisher diagonal F̂ (``fisher_mc_diag``). Mean reduction."""
    return _obd(ctx, _mc(ctx, samples, temperature, chunk_size))


@register(
    "fisher_mc_taylor",
    "second-order Taylor with the MC true Fisher, |θ ⊙ g + ½ θ² ⊙ F̂|",
    needs_data=True,
    output_hessian=True,
)
def fisher_mc_taylor(
    ctx: ScoringContext, *, samples: Samples = 1, temperature: Temperature = 1.0, chunk_size: ChunkSize = None
) -> ScoreDict:
    """|θ ⊙ g + ½ θ² ⊙ F̂| with g = ∇L and the Monte-Carlo true Fisher diagonal F̂ at the same temperature.
    Mean reduction for both terms."""
    return _taylor(ctx, _mc(ctx, samples, temperature, chunk_size), temperature)
