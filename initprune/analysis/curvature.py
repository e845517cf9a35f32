"""How good are the scalable curvature estimates? Each one against the exact Hessian diagonal.

For a model at initialization (optionally after a BatchNorm warmup) and each temperature T, the reference is
the exact diagonal of the Hessian of the mean scoring loss. For the networks analysed here — ReLU, max-pool,
eval-mode BatchNorm, residual sums — it equals the exact generalized Gauss-Newton diagonal
(:func:`initprune.curvature.ggn.ggn_diagonal`, C backward passes), because every logit is linear along each
single weight; :func:`analyze_curvature` checks H_pp = GGN_pp on a few coordinates per setting with exact
Hessian-vector products (``hessian_check``). Against it we measure:

* ``constant``: a baseline without curvature information, d = mean(exact)·1 (its OBD score ranks by |θ|);
* ``ef``: the empirical Fisher diagonal (1/N) Σ g_i² (the paper's FD);
* ``mc_fisher``: the true Fisher by Monte Carlo, m sampled labels per sample;
* ``hutchinson``: (1/k) Σ_j z_j ⊙ H z_j with k Rademacher probes, ``independent`` probes per sample (the
  paper's HD, via per-sample HVPs) or one ``shared`` probe for the whole batch (one HVP of the batch loss),
  probing the prunable weights only or ``all`` parameters (as the paper's reference code does).

Per estimate: the relative error ‖est − exact‖/‖exact‖ over all prunable weights, the cosine similarity,
the fraction of the exact kept set recovered by the estimate's kept set at each sparsity (global top-k)
for the OBD score ½θ²·d and the Taylor score |θ g + ½θ²·d|, and the cost in units of one batched gradient
measured in the same process. Estimates with several sample/probe counts are nested (the m = 4 estimate
extends the m = 2 one with 2 more draws); the cost of count k is the cumulative time of the draws it uses.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..curvature import (
    Batch,
    TensorDict,
    batch_gradient,
    ggn_diagonal,
    hessian_vector_product,
    hutchinson_diagonal,
    mc_fisher_diagonal,
    per_sample_gradient_moments,
)
from ..masks import top_k_mask
from ..prunable import prunable_parameters
from ..scores import scoring_mode
from ..warmup import warmup_bn

logger = logging.getLogger(__name__)

SPARSITIES = (0.9, 0.95, 0.98, 0.99)
MC_SAMPLES = (1, 2, 4, 8, 16, 32, 64)
PROBES = (1, 3, 10, 30, 100)


def _flat(d: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    return torch.cat([d[n].detach().reshape(-1).double() for n in names])


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def relative_error(estimate: Tensor, exact: Tensor) -> float:
    """‖estimate − exact‖ / ‖exact‖ (flat tensors)."""
    return float((estimate - exact).norm() / exact.norm().clamp_min(1e-300))


def cosine(estimate: Tensor, exact: Tensor) -> float:
    """Cosine similarity; 1 − cos² is the squared relative error after the best rescaling of the estimate."""
    return float(estimate @ exact / (estimate.norm() * exact.norm()).clamp_min(1e-300))


def kept_overlap(score: Tensor, reference: Tensor, sparsity: float) -> float:
    """Fraction of the reference's kept set (global top-k, k = round((1 − sparsity)·n)) kept by ``score``.

    Ties are broken toward lower indices, as the masks do."""
    k = max(1, round((1.0 - sparsity) * score.numel()))
    mine, theirs = top_k_mask(score, k), top_k_mask(reference, k)
    return float((mine & theirs).sum() / theirs.sum())


class _Setting:
    """One (model state, temperature): the exact diagonal and everything an estimate is compared with."""

    def __init__(self, model: nn.Module, params: dict, batches: Sequence[Batch], temperature: float) -> None:
        self.model, self.params, self.batches, self.temperature = model, params, batches, temperature
        self.names = list(params)
        unit = []
        for _ in range(3):  # the fastest of three: robust to other processes' load
            g, t = _timed(lambda: batch_gradient(model, params, batches, temperature=temperature))
            unit.append(t)
        self.unit = min(unit)
        self.theta = _flat(params, self.names)
        self.g = _flat(g, self.names)
        exact, self.exact_seconds = _timed(
            lambda: ggn_diagonal(model, params, batches, temperature=temperature)
        )
        self.exact_dict = exact
        self.exact = _flat(exact, self.names)
        self.obd_exact = 0.5 * self.theta.square() * self.exact
        self.taylor_exact = (self.theta * self.g + self.obd_exact).abs()

    def row(self, estimator: str, estimate: Tensor, seconds: float, **extra: Any) -> dict[str, Any]:
        obd = 0.5 * self.theta.square() * estimate
        taylor = (self.theta * self.g + obd).abs()
        row: dict[str, Any] = {
            "temperature": self.temperature,
            "estimator": estimator,
            "count": None,
            "probe_mode": None,
            "probe_scope": None,
            **extra,
            "rel_error": relative_error(estimate, self.exact),
            "cosine": cosine(estimate, self.exact),
            "seconds": seconds,
            "cost": seconds / self.unit,
            "gradient_seconds": self.unit,
        }
        for s in SPARSITIES:
            row[f"overlap_obd_{s}"] = kept_overlap(obd, self.obd_exact, s)
            row[f"overlap_taylor_{s}"] = kept_overlap(taylor, self.taylor_exact, s)
        return row


def _nested(
    counts: Sequence[int], draw: Callable[[int], TensorDict], setting: _Setting
) -> Iterable[tuple[int, Tensor, float]]:
    """(count, mean estimate, cumulative seconds) for increasing counts; each extends the previous one."""
    total, done, seconds = None, 0, 0.0
    for count in sorted(set(counts)):
        est, t = _timed(lambda extra=count - done: draw(extra))
        flat = _flat(est, setting.names) * (count - done)
        total = flat if total is None else total + flat
        done, seconds = count, seconds + t
        yield count, total / count, seconds


def hessian_diagonal_check(setting: _Setting, coordinates: int, generator: torch.Generator) -> float:
    """Largest relative deviation |H_pp − GGN_pp| / |GGN_pp| over ``coordinates`` coordinates (one exact HVP
    with the unit vector e_p each), one in each of ``coordinates`` layers spread evenly over the network,
    drawn with probability ∝ GGN_pp so that it is not a dead (zero-curvature) weight."""
    worst = 0.0
    layers = setting.names[:: max(1, math.ceil(len(setting.names) / coordinates))][:coordinates]
    for name in layers:
        diag = setting.exact_dict[name].reshape(-1).double()
        if not diag.sum() > 0:
            continue
        p = int(torch.multinomial(diag / diag.sum(), 1, generator=generator))
        unit = {n: torch.zeros_like(v) for n, v in setting.params.items()}
        unit[name].view(-1)[p] = 1.0
        hv = hessian_vector_product(
            setting.model, setting.params, setting.batches, unit, temperature=setting.temperature
        )
        h_pp, g_pp = float(hv[name].reshape(-1)[p]), float(diag[p])
        worst = max(worst, abs(h_pp - g_pp) / abs(g_pp))
    return worst


def _analyze_state(
    model: nn.Module,
    batches: Sequence[Batch],
    warmup: str,
    *,
    seed: int,
    temperatures: Sequence[float],
    mc_samples: Sequence[int],
    probes: Sequence[int],
    probe_scopes: Sequence[str],
    probe_modes: Sequence[str],
    hessian_check: int,
    hutchinson_chunk_size: int | None,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    params = prunable_parameters(model)
    every = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
    rows: list[dict[str, Any]] = []
    device = next(iter(params.values())).device

    def gen(series: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed * 1_000 + series)

    with scoring_mode(model, every):  # eval mode; every parameter differentiable (for `all` probes)
        for t_index, temperature in enumerate(temperatures):
            s = _Setting(model, params, batches, float(temperature))
            base = 100 * t_index
            progress(
                f"[{warmup}, T={temperature:g}] gradient {s.unit:.3f}s, exact GGN {s.exact_seconds:.2f}s"
            )
            dev = hessian_diagonal_check(s, hessian_check, gen(base)) if hessian_check else None
            rows.append(s.row("ggn_exact", s.exact, s.exact_seconds, hessian_check_max_rel_dev=dev))
            if dev is not None:
                progress(f"  diag(H) = diag(GGN) on {hessian_check} coordinates: max rel. dev. {dev:.2e}")
            (_, ef), t = _timed(
                lambda s=s: per_sample_gradient_moments(model, params, batches, temperature=s.temperature)
            )
            rows.append(s.row("ef", _flat(ef, s.names), t))
            # Baseline: no curvature information, d = mean(exact)·1, so ½θ²·d ranks by magnitude.
            rows.append(s.row("constant", torch.full_like(s.exact, float(s.exact.mean())), 0.0))
            mc_gen = gen(base + 1)

            def mc(m: int, s: _Setting = s, g: torch.Generator = mc_gen) -> TensorDict:
                return mc_fisher_diagonal(
                    model, params, batches, samples=m, temperature=s.temperature, generator=g
                )

            for m, est, t in _nested(mc_samples, mc, s):
                rows.append(s.row("mc_fisher", est, t, count=m))
            progress(f"  EF and MC Fisher done: m=1 error {rows[-len(mc_samples)]['rel_error']:.3f}")
            for j, (mode, scope) in enumerate((m, c) for m in probe_modes for c in probe_scopes):
                probe_params = params if scope == "prunable" else every
                h_gen = gen(base + 2 + j)

                def hutch(k: int, s=s, mode=mode, probe_params=probe_params, g=h_gen) -> TensorDict:
                    if mode == "independent":
                        return hutchinson_diagonal(
                            model, params, batches, probes=k, temperature=s.temperature, generator=g,
                            chunk_size=hutchinson_chunk_size, probe_params=probe_params,
                        )  # fmt: skip
                    return _shared_probe_diagonal(model, params, probe_params, batches, k, s.temperature, g)

                for k, est, t in _nested(probes, hutch, s):
                    rows.append(s.row("hutchinson", est, t, count=k, probe_mode=mode, probe_scope=scope))
                progress(f"  Hutchinson {mode}/{scope}: k={k} error {rows[-1]['rel_error']:.3f}, {t:.1f}s")
    return [{"warmup": warmup, "hessian_check_max_rel_dev": None, **row} for row in rows]


def _shared_probe_diagonal(
    model: nn.Module,
    params: Mapping[str, Tensor],
    probe_params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    probes: int,
    temperature: float,
    generator: torch.Generator,
) -> TensorDict:
    """(1/k) Σ_j z_j ⊙ H z_j with ONE Rademacher probe z_j per draw shared by all samples: k HVPs of the
    batch loss (mean reduction), unbiased for diag(H) with variance (1/k) Σ_{q≠p} H_pq² per coordinate."""
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for _ in range(probes):
        z = {
            n: torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype).mul_(2).sub_(1)
            for n, p in probe_params.items()
        }
        hz = hessian_vector_product(model, probe_params, batches, z, temperature=temperature)
        for n in total:
            total[n] += z[n] * hz[n]
    return {n: t / probes for n, t in total.items()}


def analyze_curvature(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    warmup_data: Iterable[Any] | None = None,
    warmup_batches: int | None = None,
    seed: int = 0,
    temperatures: Sequence[float] = (1.0, 200.0),
    mc_samples: Sequence[int] = MC_SAMPLES,
    probes: Sequence[int] = PROBES,
    probe_scopes: Sequence[str] = ("prunable", "all"),
    probe_modes: Sequence[str] = ("independent", "shared"),
    hessian_check: int = 4,
    hutchinson_chunk_size: int | None = None,
    label: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows comparing every curvature estimate with the exact diagonal (see the module docstring).

    ``batches``: the scoring data, ``(inputs, targets)`` pairs on the model's device. The model is analysed
    as it is (``warmup = "none"``) and, if ``warmup_data`` is given, once more on a copy whose BatchNorm
    statistics were warmed up by :func:`initprune.warmup_bn` over ``warmup_batches`` batches (None: one
    pass). The caller's model is never changed. ``hessian_check``: coordinates per setting on which
    H_pp = GGN_pp is verified by exact HVPs (0: skip; only meaningful for piecewise-linear networks).
    ``hutchinson_chunk_size``: samples per batched pass of the independent-probe estimator (None: its own
    memory-bounded default).
    Every row has the keys ``model, warmup, temperature, estimator, count, probe_mode, probe_scope,
    rel_error, cosine, seconds, cost, gradient_seconds, hessian_check_max_rel_dev`` and
    ``overlap_{obd,taylor}_{sparsity}``.
    """
    for mode in probe_modes:
        if mode not in ("independent", "shared"):
            raise ValueError(f"unknown probe mode {mode!r}; valid: independent, shared")
    for scope in probe_scopes:
        if scope not in ("prunable", "all"):
            raise ValueError(f"unknown probe scope {scope!r}; valid: all, prunable")
    label = label or type(model).__name__
    say = progress or (lambda _msg: None)
    options = dict(
        seed=seed, temperatures=temperatures, mc_samples=mc_samples, probes=probes, probe_scopes=probe_scopes,
        probe_modes=probe_modes, hessian_check=hessian_check, hutchinson_chunk_size=hutchinson_chunk_size,
        progress=say,
    )  # fmt: skip
    states = [("none", model)]
    if warmup_data is not None:
        warmed = copy.deepcopy(model)
        used = warmup_bn(warmed, warmup_data, warmup_batches)
        states.append((f"{used} batches", warmed))
    rows = []
    for warmup, state in states:
        rows += _analyze_state(state, batches, warmup, **options)
    return [{"model": label, **row} for row in rows]


def run_curvature_analysis(
    model_name: str,
    dataset: str,
    *,
    samples_per_class: int = 10,
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    warmup_batches: int | None = None,
    warmup_batch_size: int = 512,
    model_options: Mapping[str, Any] | None = None,
    plot: bool = True,
    progress: Callable[[str], None] | None = logger.info,
    **options: Any,
) -> list[dict[str, Any]]:
    """Build ``model_name`` (seeded init) and ``dataset``, analyse the estimators, write the report.

    Scoring data: ``samples_per_class`` training samples per class (``scoring_batches``, seeded). The model
    is analysed at initialization and after a BatchNorm warmup over ``warmup_batches`` training batches of
    ``warmup_batch_size`` (None: one pass over the training split, the paper's setting; 0: no warmup).
    Writes ``rows.json``, ``rows.csv``, ``report.md`` and ``curvature_<model>.png`` under ``out_dir``
    (default ``docs/results/curvature/<model>``). Progress lines go to ``progress`` (default: this module's
    logger at INFO level). ``options`` go to :func:`analyze_curvature`
    (``temperatures``, ``mc_samples``, ``probes``, ``probe_scopes``, ``probe_modes``, ...).
    """
    from ..data import load_dataset, scoring_batches
    from ..models import create_model
    from .tables import plot_curvature, write_report

    splits = load_dataset(dataset, data_dir=data_dir, seed=seed, device=device)
    torch.manual_seed(seed)
    model = create_model(
        model_name,
        num_classes=splits.num_classes,
        in_channels=splits.input_shape[0],
        **dict(model_options or {}),
    ).to(device)
    batches = scoring_batches(splits, per_class=samples_per_class, seed=seed)
    warmup_data = None
    if warmup_batches is None or warmup_batches > 0:
        warmup_data = splits.loader(
            "train", batch_size=warmup_batch_size, shuffle=True, augment=False, seed=seed
        )
    rows = analyze_curvature(
        model, batches, warmup_data=warmup_data, warmup_batches=warmup_batches, seed=seed, label=model_name,
        progress=progress, **options,
    )  # fmt: skip
    out = Path(out_dir) if out_dir is not None else Path("docs/results/curvature") / model_name
    write_report(rows, out)
    if plot:
        plot_curvature(rows, out)
    return rows
