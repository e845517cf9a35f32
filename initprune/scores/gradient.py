"""First-order and gradient-flow criteria: gradient norm, SNIP and GraSP."""

from __future__ import annotations

from typing import Annotated

from ..curvature import batch_gradient, hessian_vector_product
from .registry import OptionSpec, ScoreDict, ScoringContext, Temperature, register


@register("grad_norm", "first order: |g|, the magnitude of the loss gradient", needs_data=True)
def grad_norm(ctx: ScoringContext, *, temperature: Temperature = 1.0) -> ScoreDict:
    """Score = |g|, g = ∇L with L the mean cross-entropy of logits/T over the N scoring samples."""
    g = batch_gradient(ctx.model, ctx.params, ctx.batches, temperature=temperature, loss=ctx.loss)
    return {name: v.abs() for name, v in g.items()}


@register("snip", "SNIP (Lee et al. 2019): |θ ⊙ g|", needs_data=True)
def snip(ctx: ScoringContext, *, temperature: Temperature = 1.0) -> ScoreDict:
    """SNIP connection sensitivity (Lee et al., ICLR 2019): score = |θ ⊙ g|, g = ∇L (mean reduction).

    Sum reduction would scale every score by N, which leaves the mask unchanged.
    """
    g = batch_gradient(ctx.model, ctx.params, ctx.batches, temperature=temperature, loss=ctx.loss)
    return {name: (p.detach() * g[name]).abs() for name, p in ctx.params.items()}


HVP_SCOPES = ("prunable", "all")


@register(
    "grasp",
    "GraSP (Wang et al. 2020): θ ⊙ Hg with logits/200, keep largest",
    needs_data=True,
    second_order=True,
)
def grasp(
    ctx: ScoringContext,
    *,
    temperature: Temperature = 200.0,
    reference_sign: bool = False,
    hvp_scope: Annotated[str, OptionSpec(str, choices=HVP_SCOPES)] = "prunable",
) -> ScoreDict:
    """GraSP gradient-signal preservation (Wang et al., ICLR 2020): score = θ ⊙ (H g).

    g = ∇L and H = ∇²L of the mean loss of logits/T (T = 200 by default, as in GraSP). GraSP removes the
    weights with the largest −θ ⊙ Hg; stored here with the sign flipped, keeping the largest θ ⊙ Hg is
    the same mask. Mean reduction; sum reduction scales scores by N², leaving the mask unchanged.

    Reproduction options of the paper's reference code (Gollini/Scalable_Second_Order_PaI), which runs
    GraSP as ``reference_sign=True, hvp_scope="all", temperature=1``; none is the default, because together
    they keep the set GraSP removes:

    - ``reference_sign=True``: score = −θ ⊙ (H g), so the largest −θ ⊙ Hg are *kept* (the reference code
      scores −θ ⊙ Hg and keeps its top k).
    - ``hvp_scope="all"``: g and H g over every parameter of the model (biases, BatchNorm, classifier),
      (H g)_w = Σ_p H_wp g_p over all p, as the reference code's backward passes do; ``prunable`` (the
      default) restricts both to the prunable weights, GraSP's own choice.
    """
    params = ctx.params
    if hvp_scope == "all":
        params = {n: p for n, p in ctx.model.named_parameters() if p.is_floating_point()}
        for p in params.values():
            p.requires_grad_(True)  # scoring_mode restores every flag afterwards
    g = batch_gradient(ctx.model, params, ctx.batches, temperature=temperature, loss=ctx.loss)
    hg = hessian_vector_product(ctx.model, params, ctx.batches, g, temperature=temperature, loss=ctx.loss)
    sign = -1.0 if reference_sign else 1.0
    return {name: sign * p.detach() * hg[name] for name, p in ctx.params.items()}
