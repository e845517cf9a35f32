"""Scoring cost of every criterion, as ratios to one batched gradient over the same samples.

    python benchmarks/scoring.py [--quick] [--device cpu|cuda] [--models vgg_small resnet20]
    python benchmarks/scoring.py --models vgg16 resnet18 --criteria fisher_diag   # the paper's networks

Two networks (a small VGG-style conv net with BatchNorm, and ResNet-20), 100 scoring samples (10 per
class) of CIFAR-shaped input, everything in one process. For every registered criterion it prints
time / time(one batched gradient), the median over pairs timed back to back; then the two comparisons
with the batch-1 loop formulations:
  - fisher_diag vs a loop of autograd.grad at batch size 1 (and its peak memory vs the batched gradient's),
    and fisher_diag in one pass over the 100 samples instead of the default chunks of 64,
  - hutch_diag (10 independent probes per sample) vs a loop over samples at batch size 1 that builds one
    gradient graph per sample and reuses it for its 10 probes.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))

from common import median_seconds, paired_ratio, peak_memory_bytes, vgg_small

import initprune
from initprune.curvature import hessian_vector_product
from initprune.models import create_model
from initprune.prunable import prunable_parameters

DATA_FREE = {"random", "magnitude", "synflow"}


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


def scoring_data(device: torch.device, per_class: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(per_class)
    x = torch.randn(len(y), 3, 32, 32, generator=g)
    return [(x.to(device), y.to(device))]


def batched_gradient(model: nn.Module, params: dict, data) -> None:
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        torch.autograd.grad(loss, list(params.values()))


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


def run(model_name: str, device: torch.device, repeats: int, criteria: list[str]) -> None:
    model = build(model_name, device)
    params = prunable_parameters(model)
    data = scoring_data(device)
    n_params = sum(p.numel() for p in params.values())
    print(f"\n== {model_name}: {n_params / 1e6:.2f}M prunable weights, 100 samples, device {device} ==")

    def gradient() -> None:
        with torch.enable_grad():
            batched_gradient(model, params, data)

    base = median_seconds(gradient, device, repeats * 3)
    print(f"one batched gradient: {base * 1e3:.1f} ms (the unit below)")
    print(f"{'criterion':<18}{'× batched gradient':>20}   (median of {repeats} back-to-back pairs)")
    times = {}
    for name in criteria:
        crit_data = None if name in DATA_FREE else data
        reps = 1 if name.startswith("hutch") else repeats

        def call(name: str = name, crit_data=crit_data) -> None:
            initprune.score(model, name, crit_data, input_shape=(3, 32, 32))

        times[name] = paired_ratio(call, gradient, device, reps) * base
        print(f"{name:<18}{times[name] / base:>20.2f}")

    if "fisher_diag" in times:
        loop_reps = max(1, repeats // 2)
        with torch.enable_grad():
            loop = median_seconds(lambda: fisher_loop(model, params, data), device, loop_reps)
        mem_fd = peak_memory_bytes(lambda: initprune.score(model, "fisher_diag", data), device)
        with torch.enable_grad():
            mem_base = peak_memory_bytes(lambda: batched_gradient(model, params, data), device)
        print(
            f"fisher_diag: {times['fisher_diag'] / base:.2f}× one batched gradient (target ≤ 1.5); "
            f"{loop / times['fisher_diag']:.1f}× faster than the batch-1 loop ({loop / base:.1f}×); "
            f"peak memory {mem_fd / mem_base:.2f}× the batched gradient's (target ≤ 2; "
            f"{mem_fd / 2**20:.0f} vs {mem_base / 2**20:.0f} MiB)"
        )

        def one_pass() -> None:
            initprune.score(model, "fisher_diag", data, chunk_size=None)

        whole = paired_ratio(one_pass, gradient, device, repeats) * base
        mem_whole = peak_memory_bytes(one_pass, device)
        print(
            f"fisher_diag in one pass (chunk_size=None; the default passes 64 samples at a time): "
            f"{whole / base:.2f}× one batched gradient, peak memory {mem_whole / mem_base:.2f}×"
        )
    if "hutch_diag" in times:
        with torch.enable_grad():
            hloop = median_seconds(
                lambda: hutchinson_loop(model, params, data, 10, 200.0), device, 1, warmup=0
            )
            probe = {k: torch.ones_like(p) for k, p in params.items()}
            hvp = median_seconds(
                lambda: hessian_vector_product(model, params, data, probe, temperature=200.0), device, repeats
            )
        print(
            f"hutch_diag (10 probes/sample): {hloop / times['hutch_diag']:.1f}× faster than the batch-1 loop "
            f"(target ≥ 20); loop {hloop / base:.1f}×, batched {times['hutch_diag'] / base:.1f}× one batched "
            f"gradient; floor 10 × one batched HVP = {10 * hvp / base:.1f}×"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
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
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        run(name, device, repeats=2 if args.quick else 5, criteria=args.criteria)


if __name__ == "__main__":
    main()
