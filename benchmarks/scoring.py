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
  - fisher_diag vs a loop of autograd.grad at batch size 1, and fisher_diag in passes of 64 samples (on
    the CPU the default, CPU_PASS_SAMPLES; elsewhere the former default chunk) instead of the passes the
    memory budget gives,
  - hutch_diag (10 independent probes per sample, reverse-over-reverse) vs a loop over samples at batch
    size 1 that builds one gradient graph per sample and reuses it for its 10 probes; also the
    route that route="auto" does not take (vmap or loop; the loop route reuses the batched route's probes),
    the forward-over-reverse route (method="jvp"), and, per network, hutch_diag against the shared-probe
    floor (10 batched HVPs of the mean loss with one Rademacher probe shared by the batch: the cost of
    10 probes without per-sample products) and the share of its time spent drawing the probes (drawn as
    hutch_diag draws them: per chunk, into one reused buffer); ``--hutch-breakdown`` times hutch_diag's
    steps (drawing, the per-sample gradient graph, the double-backward HVPs, the contraction z ⊙ Hz).
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

from common import median_seconds, now, paired_ratio, peak_memory_bytes, set_clock, vgg_small

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
from initprune.curvature.probes import row_length
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
    breakdown: bool = False,
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
        print(
            f"fisher_diag in passes of 64 samples (the CPU default; elsewhere the former default): "
            f"{old / base:.2f}× batched gradient"
        )
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
        draw_samples = min(n, max(chunk, loop_samples))
        draw = probe_drawing_seconds(params, data, chunk, draw_samples, device) * n / draw_samples
        with torch.enable_grad():
            shared = rademacher_probes(
                {k: p.shape for k, p in params.items()}, 1, 1, 0, device, torch.float32
            )
            probe = {k: z[0, 0] for k, z in shared.items()}
            hvp = median_seconds(
                lambda: hessian_vector_product(model, params, data, probe, temperature=200.0), device, repeats
            )
        hutch, floor = times["hutch_diag"], 10 * hvp
        print(
            f"hutch_diag (10 probes/sample): {loop / hutch:.1f}× faster than the batch-1 loop "
            f"(target ≥ 20 on a GPU); loop {loop / base:.1f}× (timed on {looped} samples, "
            f"scaled to {n}); hutch_diag {hutch / base:.1f}× one batched gradient "
            f"(route {taken} at chunks of {chunk}, reverse-over-reverse; route {other_route} "
            + (f"{alt / base:.1f}×, {loop / alt:.1f}× faster than the loop" if hutch_routes else "not timed")
            + "; forward-over-reverse by vmap "
            + (f"{fwd / base:.1f}×" if hutch_forward else "not timed")
            + ")"
        )
        print(
            f"hutch_diag against its floor: shared-probe floor (10 batched HVPs, one probe shared by the "
            f"batch) {floor / base:.1f}×; hutch_diag {hutch / base:.1f}× = {hutch / floor:.2f}× the floor "
            f"(goal ≤ 2); drawing the probes (rademacher_probes, chunks of {chunk} into one buffer, timed "
            f"on {draw_samples} samples, scaled to {n}) {draw / base:.1f}× = {100 * draw / hutch:.1f} % of "
            f"hutch_diag (goal ≤ 10 %), {draw / floor:.2f}× the floor"
        )
        if breakdown:
            parts = hutchinson_breakdown(model, params, data, taken, chunk, loop_samples, device)
            print(
                f"hutch_diag breakdown (route {taken}, timed on {min(loop_samples, n)} samples, scaled to "
                f"{n}; × one batched gradient): "
                + ", ".join(f"{name} {seconds / base:.1f}" for name, seconds in parts.items())
                + f"; sum {sum(parts.values()) / base:.1f}"
            )


def probe_drawing_seconds(params: dict, data, chunk: int, samples: int, device: torch.device) -> float:
    """Seconds to draw 10 probes for the first ``samples`` samples as hutchinson_diagonal does: in chunks of
    ``chunk`` samples, into one reused buffer (allocated before the clock starts)."""
    shapes = {k: p.shape for k, p in params.items()}
    size = row_length(sum(p.numel() for p in params.values()))
    buffer = torch.empty(min(chunk, samples) * 10 * size, device=device)

    def draw() -> None:
        for start in range(0, samples, chunk):
            count = min(chunk, samples - start)
            rademacher_probes(shapes, 10, count, 0, device, torch.float32, start=start, out=buffer)

    return median_seconds(draw, device, 1)


def hutchinson_breakdown(
    model: nn.Module, params: dict, data, route: str, chunk: int, samples: int, device: torch.device
) -> dict[str, float]:
    """Where hutch_diag's time goes, timed on the first ``samples`` samples and scaled to all N: the route
    ``loop`` step by step as it takes them (drawing the probes, the sample's gradient graph, its 10
    double-backward HVPs, the contraction Σ_j z_j ⊙ H z_j), after a warm-up on one sample; the route
    ``vmap`` as drawing and the batched pass, per chunk."""
    from torch.func import functional_call

    from initprune.curvature.hvp import _vmap_chunk_sums
    from initprune.curvature.samples import functional_parts, per_sample_loss_fn

    x, y = data[0]
    n, m = sample_count(data), min(samples, x.shape[0])
    shapes = {k: p.shape for k, p in params.items()}
    names = list(params)
    size = row_length(sum(p.numel() for p in params.values()))
    if route == "vmap":
        parts = {"drawing": 0.0, "batched pass": 0.0}
        step = min(chunk, m)
        buffer = torch.empty(step * 10 * size, device=device)
        probed, fixed = functional_parts(model, params)
        sums = _vmap_chunk_sums(per_sample_loss_fn(model, fixed, 200.0), probed, names, "vjp")
        for lo in range(0, m, step):
            xs, ys = x[lo : lo + step], y[lo : lo + step]
            t0 = now(device)
            z = rademacher_probes(shapes, 10, xs.shape[0], 0, device, torch.float32, start=lo, out=buffer)
            t1 = now(device)
            sums(xs, ys, z)
            t2 = now(device)
            parts["drawing"] += t1 - t0
            parts["batched pass"] += t2 - t1
        return {k: v * n / m for k, v in parts.items()}
    parts = dict.fromkeys(("drawing", "gradient graph", "HVPs", "contraction"), 0.0)
    buffer = torch.empty(10 * size, device=device)
    _, fixed = functional_parts(model, params)
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    for i in range(m + 1):  # sample 0 warms up and is not counted
        counted = 1.0 if i > 0 else 0.0
        t0 = now(device)
        z = rademacher_probes(shapes, 10, 1, 0, device, torch.float32, start=i, out=buffer)
        t1 = now(device)
        leaves = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        with torch.enable_grad():
            logits = functional_call(model, {**fixed, **leaves}, (x[i : i + 1],))
            loss = F.cross_entropy(logits / 200.0, y[i : i + 1], reduction="sum")
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
        t2 = now(device)
        parts["drawing"] += counted * (t1 - t0)
        parts["gradient graph"] += counted * (t2 - t1)
        for j in range(10):
            t0 = now(device)
            hz = torch.autograd.grad(
                grads, list(leaves.values()), grad_outputs=[z[k][0, j] for k in names], retain_graph=True
            )
            t1 = now(device)
            for k, h in zip(names, hz, strict=True):
                total[k].addcmul_(z[k][0, j], h)
            t2 = now(device)
            parts["HVPs"] += counted * (t1 - t0)
            parts["contraction"] += counted * (t2 - t1)
    return {k: v * n / m for k, v in parts.items()}


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
        "--hutch-breakdown",
        action="store_true",
        help="time hutch_diag's steps (drawing, gradient graph, HVPs, contraction) on --loop-samples samples",
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
                args.hutch_breakdown,
            )


if __name__ == "__main__":
    main()
