"""Data-free criteria: random, magnitude and SynFlow."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InitpruneError
from .registry import ScoreDict, ScoringContext, register


@register("random", "baseline: i.i.d. uniform random scores (seeded)", needs_data=False)
def random_scores(ctx: ScoringContext) -> ScoreDict:
    """Score_p ~ U(0, 1) i.i.d., drawn from the scoring seed: keeps a uniformly random subset."""
    gen = ctx.generator()
    return {
        name: torch.rand(p.shape, generator=gen, device=ctx.device, dtype=torch.float32)
        for name, p in ctx.params.items()
    }


@register("magnitude", "baseline: |θ|, keep the largest weights", needs_data=False)
def magnitude(ctx: ScoringContext) -> ScoreDict:
    """Score = |θ|."""
    return {name: p.detach().abs() for name, p in ctx.params.items()}


@register(
    "synflow",
    "SynFlow (Tanaka et al. 2020): |θ ⊙ ∂R/∂θ|, R = Σ f(1; |θ|); iterative, 100 rounds",
    needs_data=False,
    default_rounds=100,
)
def synflow(ctx: ScoringContext) -> ScoreDict:
    """SynFlow: score = |θ ⊙ ∂R/∂θ| with R = 1ᵀ f(1; |θ|) (Tanaka et al., NeurIPS 2020).

    R is the network's summed output on an all-ones input (batch of one) after every parameter and
    floating buffer (BatchNorm statistics included) is made non-negative, in eval mode. The computation
    runs in float64 on a copy of the model, so the caller's model is never touched and the products of
    many layers neither overflow nor underflow. Scores are returned in float64. It uses no data; the input
    shape comes from ``input_shape`` or from the scoring data; a model that takes integer inputs
    (``nn.Embedding``) has no all-ones input and is refused with an error. Through ``prune`` it runs 100
    rounds with density_t = d^((t+1)/100) (the paper's schedule).
    """
    lookups = [
        f"{type(m).__name__} {n!r}"
        for n, m in ctx.model.named_modules()
        if isinstance(m, nn.Embedding | nn.EmbeddingBag)
    ]
    inputs = ctx.batches[0][0] if ctx.batches else None
    structured = inputs is not None and not torch.is_tensor(inputs)
    if lookups or structured or (inputs is not None and not inputs.is_floating_point()):
        if lookups:
            why = f"it looks up integer inputs in {', '.join(lookups)}"
        else:
            why = "it takes several inputs" if structured else "its inputs are integers"
        raise InitpruneError(
            f"synflow cannot score {type(ctx.model).__name__}: {why}, and SynFlow feeds the network an "
            "all-ones real input; use a data-dependent criterion"
        )
    if ctx.input_shape is None:
        raise InitpruneError("synflow needs the input shape: pass input_shape=(C, H, W) or scoring data")
    net = copy.deepcopy(ctx.model).double().eval()
    with torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:
            if tensor.is_floating_point():
                tensor.abs_()
    own = dict(net.named_parameters())
    weights = [own[name] for name in ctx.params]
    for w in weights:
        w.requires_grad_(True)
    ones = torch.ones((1, *ctx.input_shape), dtype=torch.float64, device=ctx.device)
    flow = net(ones).sum()
    grads = torch.autograd.grad(flow, weights, allow_unused=True)
    return {
        name: (w.detach() * g).abs() if g is not None else torch.zeros_like(w.detach())
        for name, w, g in zip(ctx.params, weights, grads, strict=True)
    }
