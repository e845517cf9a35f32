"""First-order and gradient-flow criteria: gradient norm, SNIP and GraSP."""

from __future__ import annotations

from ..curvature import batch_gradient, hessian_vector_product
from .registry import ScoreDict, ScoringContext, Temperature, register


@register("grad_norm", "first order: |g|, the magnitude of the loss gradient", needs_data=True)
def grad_norm(ctx: ScoringContext, *, temperature: Temperature = 1.0) -> ScoreDict:
    """Score = |g|, g = ∇L with L the mean cross-entropy of logits/T over the N scoring samples."""
    g = batch_gradient(ctx.model, ctx.params, ctx.batches, temperature=temperature)
    return {name: v.abs() for name, v in g.items()}


@register("snip", "SNIP (Lee et al. 2019): |θ ⊙ g|", needs_data=True)
def snip(ctx: ScoringContext, *, temperature: Temperature = 1.0) -> ScoreDict:
    """SNIP connection sensitivity (Lee et al., ICLR 2019): score = |θ ⊙ g|, g = ∇L (mean reduction).

    Sum reduction would scale every score by N, which leaves the mask unchanged.
    """
    g = batch_gradient(ctx.model, ctx.params, ctx.batches, temperature=temperature)
    return {name: (p.detach() * g[name]).abs() for name, p in ctx.params.items()}


@register(
    "grasp",
    "GraSP (Wang et al. 2020): θ ⊙ Hg with logits/200, keep largest",
    needs_data=True,
    second_order=True,
)
def grasp(ctx: ScoringContext, *, temperature: Temperature = 200.0) -> ScoreDict:
    """GraSP gradient-signal preservation (Wang et al., ICLR 2020): score = θ ⊙ (H g).

    g = ∇L and H = ∇²L of the mean loss of logits/T (T = 200 by default, as in GraSP). GraSP removes the
    weights with the largest −θ ⊙ Hg; stored here with the sign flipped, keeping the largest θ ⊙ Hg is
    the same mask. Mean reduction; sum reduction scales scores by N², leaving the mask unchanged.
    """
    g = batch_gradient(ctx.model, ctx.params, ctx.batches, temperature=temperature)
    hg = hessian_vector_product(ctx.model, ctx.params, ctx.batches, g, temperature=temperature)
    return {name: p.detach() * hg[name] for name, p in ctx.params.items()}
