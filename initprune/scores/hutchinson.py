"""Hutchinson criteria: HD (Hessian diagonal), HP (OBD with it) and HTS (second-order Taylor)."""

from __future__ import annotations

from typing import Annotated

from torch import nn

from ..curvature import batch_gradient, hutchinson_diagonal
from ..errors import InitpruneError
from .registry import ChunkSize, OptionSpec, Probes, ScoreDict, ScoringContext, Temperature, register

PROBE_SCOPES = ("prunable", "all")
ProbeScope = Annotated[str, OptionSpec(str, choices=PROBE_SCOPES)]
"""Which parameters the probes span: the prunable weights only, or every parameter."""


def _diagonal(ctx: ScoringContext, probes: int, temperature: float, chunk_size: int | None, probe_scope: str):
    probe_params = None
    if probe_scope == "all":
        probe_params = {n: p for n, p in ctx.model.named_parameters() if p.is_floating_point()}
    try:
        return hutchinson_diagonal(
            ctx.model,
            ctx.params,
            ctx.batches,
            probes=probes,
            temperature=temperature,
            seed=ctx.seed,
            chunk_size=chunk_size,
            probe_params=probe_params,
            loss=ctx.loss,
        )
    except RuntimeError as exc:
        recurrent = [
            f"{type(m).__name__} {n!r}" for n, m in ctx.model.named_modules() if isinstance(m, nn.RNNBase)
        ]
        if not recurrent:
            raise
        # Recurrent models take the loop route (double backward per sample); some RNN kernels (cuDNN's)
        # have no double backward.
        reason = str(exc).strip().splitlines()[0]
        raise InitpruneError(
            f"Hutchinson criteria cannot score {type(ctx.model).__name__}: the per-sample Hessian-vector "
            f"products fail on its {', '.join(recurrent)} ({reason}); score it on the CPU, or use a "
            "Gauss-Newton/Fisher criterion"
        ) from None


@register(
    "hutch_diag",
    "HD: Hutchinson Hessian diagonal, 10 probes per sample, logits/200",
    needs_data=True,
    second_order=True,
)
def hutch_diag(
    ctx: ScoringContext,
    *,
    probes: Probes = 10,
    temperature: Temperature = 200.0,
    chunk_size: ChunkSize = None,
    probe_scope: ProbeScope = "prunable",
) -> ScoreDict:
    """HD: ĥ = (1/(kN)) Σ_i Σ_j z_ij ⊙ (H_i z_ij), signed, k independent Rademacher probes per sample
    (Hutchinson 1989; arXiv 2502.11450). Logits divided by T = 200 as in the paper's reference code.
    ``probe_scope``: ``prunable`` probes only the prunable weights (unbiased, less variance); ``all`` probes
    every parameter as the reference code does. ``chunk_size``: samples per batched pass (None: as many as
    fit the device's memory budget, see ``initprune.curvature.set_memory_budget``). Mean reduction."""
    return _diagonal(ctx, probes, temperature, chunk_size, probe_scope)


@register(
    "hutch_pruner",
    "HP: OBD with the Hutchinson diagonal, ½ θ² ⊙ ĥ (signed)",
    needs_data=True,
    second_order=True,
)
def hutch_pruner(
    ctx: ScoringContext,
    *,
    probes: Probes = 10,
    temperature: Temperature = 200.0,
    chunk_size: ChunkSize = None,
    probe_scope: ProbeScope = "prunable",
) -> ScoreDict:
    """HP: ½ θ² ⊙ ĥ (signed), Optimal Brain Damage with the Hutchinson Hessian diagonal ĥ
    (arXiv 2502.11450). Mean reduction."""
    diag = _diagonal(ctx, probes, temperature, chunk_size, probe_scope)
    return {name: 0.5 * p.detach().square() * diag[name] for name, p in ctx.params.items()}


@register(
    "hutch_taylor",
    "HTS: second-order Taylor |θ ⊙ g + ½ θ² ⊙ ĥ|, logits/200",
    needs_data=True,
    second_order=True,
)
def hutch_taylor(
    ctx: ScoringContext,
    *,
    probes: Probes = 10,
    temperature: Temperature = 200.0,
    chunk_size: ChunkSize = None,
    probe_scope: ProbeScope = "prunable",
) -> ScoreDict:
    """HTS: |θ ⊙ g + ½ θ² ⊙ ĥ| with g = ∇L and the Hutchinson diagonal ĥ, both at the same temperature
    (T = 200 by default, as the paper's reference code). Mean reduction."""
    diag = _diagonal(ctx, probes, temperature, chunk_size, probe_scope)
    g = batch_gradient(ctx.model, ctx.params, ctx.batches, temperature=temperature, loss=ctx.loss)
    return {
        name: (p.detach() * g[name] + 0.5 * p.detach().square() * diag[name]).abs()
        for name, p in ctx.params.items()
    }
