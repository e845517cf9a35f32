"""Scoring cost of every criterion, as ratios to one batched gradient over the same samples.

    python benchmarks/scoring.py [--quick] [--device cpu|cuda] [--models vgg_small resnet20]
    python benchmarks/scoring.py --models vgg16 resnet18 vit_small --samples 100 1000 --loop-samples 5
    python benchmarks/scoring.py --models vit_small --samples 1000 --batch-size 100

Networks (by default a small VGG-style conv net with BatchNorm and ResNet-20; any registered model), N
scoring samples (``--samples``, N/10 per class) of CIFAR-shaped input (3×32×32), everything in one
process. The samples form one batch, or with ``--batch-size B`` a list of batches of B (as a DataLoader
gives them); the unit is then the gradient accumulated over those batches, so one pass never holds more
than B samples' activations. The header gives the memory budget and the chunk sizes it gives each
engine. For every criterion it prints time / time(one batched gradient), the median over pairs timed
back to back (``--clock cpu`` times CPU seconds of this process, steadier on a shared machine), and for
those in ``--memory`` the peak memory / the batched gradient's; then the comparisons with the batch-1
loop formulations, which are timed on ``--loop-samples`` samples and scaled to N:
  - fisher_diag vs a loop of autograd.grad at batch size 1, and fisher_diag in passes of 64 samples (the
    former default chunk) instead of the passes the memory budget gives,
  - hutch_diag (10 independent probes per sample, reverse-over-reverse) vs a loop over samples at batch
    size 1 that builds one gradient graph per sample and reuses it for its 10 probes; also the
    route that route="auto" does not take (vmap or loop; the loop route reuses the batched route's probes),
    the forward-over-reverse route (method="jvp"), 10 batched HVPs of the mean loss as a floor, and the cost
    of drawing the probes alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))

from common import median_seconds, paired_ratio, peak_memory_bytes, set_clock, vgg_small

import initprune
import initprune.curvature
from initprune.curvature import (
    auto_chunk_size,
    hessian_vector_product,
    hutchinson_chunk_size,
    hutchinson_route,
    memory_budget,
    rademacher_probes,
)
from initprune.curvature.ggn import ggn_vectors
from initprune.curvature.per_sample import loss_gradient_vectors
from initprune.models import create_model
from initprune.prunable import prunable_parameters

DATA_FREE = {"random", "magnitude", "synflow"}
LOSS, GGN = loss_gradient_vectors(), ggn_vectors()


def build(name: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = vgg_small() if name == "vgg_small" else create_model(name, num_classes=10, in_channels=3)
    model = model.to(device).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after a warmup
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.2)
    return model


def scoring_data(
    device: torch.device, per_class: int = 10, batch_size: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """10 · per_class samples: one batch, or consecutive batches of ``batch_size`` (the same samples)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(per_class)
    x = torch.randn(len(y), 3, 32, 32, generator=g)
    size = batch_size or len(y)
    return [(xb.to(device), yb.to(device)) for xb, yb in zip(x.split(size), y.split(size), strict=True)]


def sample_count(data) -> int:
    """N, the samples over all batches of ``data``."""
    return sum(x.shape[0] for x, _ in data)


def batched_gradient(model: nn.Module, params: dict, data) -> None:
    """The unit: the gradient of the mean loss over all samples, summed over the batches."""
    n = sample_count(data)
    total: list[torch.Tensor] = []
    for x, y in data:
        loss = F.cross_entropy(model(x), y, reduction="sum") / n
        grads = torch.autograd.grad(loss, list(params.values()))
        total = list(grads) if not total else [t.add_(g) for t, g in zip(total, grads, strict=True)]


def fisher_loop(model: nn.Module, params: dict, data) -> dict:
    """Baseline: one autograd.grad per sample at batch size 1."""
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    for x, y in data:
        for i in range(x.shape[0]):
            loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
            for k, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
                total[k] += g.square()
    return total


def hutchinson_loop(model: nn.Module, params: dict, data, probes: int, temperature: float) -> dict:
    """Baseline: per sample one gradient graph at batch size 1, reused by its ``probes`` HVPs."""
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
    values = list(params.values())
    for x, y in data:
        for i in range(x.shape[0]):
            loss = F.cross_entropy(model(x[i : i + 1]) / temperature, y[i : i + 1])
            grads = torch.autograd.grad(loss, values, create_graph=True)
            for _ in range(probes):
                zs = [
                    torch.randint(0, 2, p.shape, generator=gen, device=p.device).to(p.dtype) * 2 - 1
                    for p in values
                ]
                dot = sum((g * z).sum() for g, z in zip(grads, zs, strict=True))
                hz = torch.autograd.grad(dot, values, retain_graph=True)
                for k, z, h in zip(params, zs, hz, strict=True):
                    total[k] += z * h
    return total


def _loop_seconds(loop: Callable[[list], object], data, samples: int, device: torch.device) -> float:
    """Seconds of a batch-1 loop over all N samples, timed on the first ``samples`` of them and scaled
    by N / samples (the loop's cost is linear in N), after a warm-up on one sample (first-call costs
    would otherwise be scaled by N / samples too)."""
    x, y = data[0]
    n = sample_count(data)
    k = min(samples, x.shape[0])
    with torch.enable_grad():
        loop([(x[:1], y[:1])])
        seconds = median_seconds(lambda: loop([(x[:k], y[:k])]), device, 1, warmup=0)
    return seconds * n / k


def _peak_ratio(fn: Callable[[], object], base_peak: int, device: torch.device) -> str:
    peak = peak_memory_bytes(fn, device)
    return f"{peak / base_peak:.2f}× ({peak / 2**20:.0f} MiB)"


def run(
    model_name: str,
    device: torch.device,
    repeats: int,
    criteria: list[str],
    samples: int,
    loop_samples: int,
    memory: list[str],
    hutch_forward: bool = True,
    hutch_routes: bool = True,
    batch_size: int | None = None,
) -> None:
    model = build(model_name, device)
    params = prunable_parameters(model)
    data = scoring_data(device, per_class=samples // 10, batch_size=batch_size)
    n = sample_count(data)
    looped = min(loop_samples, data[0][0].shape[0])  # the loops are timed on the first batch's samples
    n_params = sum(p.numel() for p in params.values())
    budget = memory_budget(device)
    print(
        f"\n== {model_name}: {n_params / 1e6:.2f}M prunable weights, {n} samples in {len(data)} "
        f"batch(es), device {device}; "
        f"memory budget {budget / 2**20:.0f} MiB: chunks of {auto_chunk_size(model, params, data, LOSS)} "
        f"(fisher), {auto_chunk_size(model, params, data, GGN)} (ggn), "
        f"{hutchinson_chunk_size(model, params, data, 10)} (hutch) samples =="
    )

    def gradient() -> None:
        with torch.enable_grad():
            batched_gradient(model, params, data)

    base = median_seconds(gradient, device, repeats * 3)
    with torch.enable_grad():
        base_peak = peak_memory_bytes(lambda: batched_gradient(model, params, data), device)
    print(f"one batched gradient: {base * 1e3:.1f} ms, peak memory {base_peak / 2**20:.0f} MiB (the units)")
    print(
        f"{'criterion':<18}{'× batched gradient':>20}   (median of {repeats} back-to-back pairs)   peak mem."
    )
    times = {}
    for name in criteria:
        crit_data = None if name in DATA_FREE else data
        reps = 1 if name.startswith("hutch") else repeats

        def call(name: str = name, crit_data=crit_data) -> None:
            initprune.score(model, name, crit_data, input_shape=(3, 32, 32))

        times[name] = paired_ratio(call, gradient, device, reps) * base
        mem = _peak_ratio(call, base_peak, device) if name in memory else "-"
        print(f"{name:<18}{times[name] / base:>20.2f}   {mem:>40}", flush=True)

    if "fisher_diag" in times:
        loop = _loop_seconds(lambda d: fisher_loop(model, params, d), data, loop_samples, device)
        print(
            f"fisher_diag: {times['fisher_diag'] / base:.2f}× one batched gradient (target ≤ 1.5 on a GPU); "
            f"{loop / times['fisher_diag']:.1f}× faster than the batch-1 loop ({loop / base:.1f}×; "
            f"timed on {looped} samples, scaled to {n})"
        )

        def chunked() -> None:
            initprune.score(model, "fisher_diag", data, chunk_size=64)

        old = paired_ratio(chunked, gradient, device, repeats) * base
        print(f"fisher_diag in passes of 64 samples (the former default): {old / base:.2f}× batched gradient")
    if "hutch_diag" in times:
        loop = _loop_seconds(
            lambda d: hutchinson_loop(model, params, d, 10, 200.0), data, loop_samples, device
        )

        def forward() -> None:
            initprune.curvature.hutchinson_diagonal(
                model, params, data, probes=10, temperature=200.0, generator=torch.Generator().manual_seed(0),
                method="jvp",
            )  # fmt: skip

        fwd = paired_ratio(forward, gradient, device, 1) * base if hutch_forward else float("nan")
        chunk = hutchinson_chunk_size(model, params, data, 10)
        taken = hutchinson_route(model, chunk)
        other_route = "vmap" if taken == "loop" else "loop"

        def other() -> None:
            initprune.curvature.hutchinson_diagonal(
                model, params, data, probes=10, temperature=200.0, generator=torch.Generator().manual_seed(0),
                route=other_route,
            )  # fmt: skip

        alt = paired_ratio(other, gradient, device, 1) * base if hutch_routes else float("nan")
        shapes = {k: p.shape for k, p in params.items()}
        draw = _loop_seconds(
            lambda d: rademacher_probes(
                shapes, 10, d[0][0].shape[0], torch.Generator(), device, torch.float32
            ),
            data,
            loop_samples,
            device,
        )
        with torch.enable_grad():
            probe = {k: torch.ones_like(p) for k, p in params.items()}
            hvp = median_seconds(
                lambda: hessian_vector_product(model, params, data, probe, temperature=200.0), device, repeats
            )
        print(
            f"hutch_diag (10 probes/sample): {loop / times['hutch_diag']:.1f}× faster than the batch-1 loop "
            f"(target ≥ 20 on a GPU); loop {loop / base:.1f}× (timed on {looped} samples, "
            f"scaled to {n}); hutch_diag {times['hutch_diag'] / base:.1f}× one batched gradient "
            f"(route {taken} at chunks of {chunk}, reverse-over-reverse; route {other_route} "
            + (f"{alt / base:.1f}×, {loop / alt:.1f}× faster than the loop" if hutch_routes else "not timed")
            + "; forward-over-reverse by vmap "
            + (f"{fwd / base:.1f}×" if hutch_forward else "not timed")
            + "); "
            f"floor 10 × one batched HVP = {10 * hvp / base:.1f}×; drawing the probes alone "
            f"(rademacher_probes, in both routes) {draw / base:.1f}×"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--samples",
        nargs="+",
        type=int,
        default=[100],
        help="scoring samples (multiples of 10); each is a run",
    )
    parser.add_argument(
        "--loop-samples",
        type=int,
        default=100,
        help="the batch-1 loops are timed on at most this many samples and scaled to all (default 100)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="split the samples into batches of this size (default: one batch); the unit is the "
        "gradient accumulated over them",
    )
    parser.add_argument("--repeats", type=int, help="back-to-back pairs per ratio (default 5; --quick: 2)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (steadier on a shared CPU; not for CUDA)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--no-hutch-forward",
        dest="hutch_forward",
        action="store_false",
        help="skip timing hutch_diag's forward-over-reverse route (method='jvp')",
    )
    parser.add_argument(
        "--no-hutch-routes",
        dest="hutch_routes",
        action="store_false",
        help="skip timing the hutch_diag route (vmap or loop) that route='auto' does not take",
    )
    parser.add_argument(
        "--memory",
        nargs="*",
        default=["fisher_diag", "ggn_diag", "fisher_mc_diag", "grasp", "hutch_diag"],
        metavar="NAME",
        help="criteria whose peak memory is measured (one more run each)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--models", nargs="+", default=["vgg_small", "resnet20"], help="vgg_small or any registered model"
    )
    parser.add_argument(
        "--criteria",
        nargs="+",
        default=list(initprune.criteria()),
        choices=list(initprune.criteria()),
        metavar="NAME",
        help="criteria to time (default: all); the batch-1 loops run with fisher_diag and hutch_diag",
    )
    args = parser.parse_args()
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be a positive number of samples, got {args.batch_size}")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_clock(args.clock)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock")
    print("command: python " + " ".join(sys.argv))
    repeats = args.repeats or (2 if args.quick else 5)
    for samples in args.samples:
        for name in args.models:
            run(
                name,
                device,
                repeats,
                args.criteria,
                samples,
                args.loop_samples,
                args.memory,
                args.hutch_forward,
                args.hutch_routes,
                args.batch_size,
            )


if __name__ == "__main__":
    main()
