"""Cost of the curvature diagonals in units of one batched gradient, measured in one process.

    python benchmarks/curvature_cost.py [--samples 100] [--repeats 5] [--vgg-width 0.25] [--hutchinson]

For a small VGG-style BatchNorm net (VGG-11 at a fraction of its width) and ResNet-20 on random 3×32×32
inputs with 10 classes, in eval mode, it times: one batched gradient of the mean loss (the unit), the
empirical Fisher diagonal (FD), the exact GGN diagonal (C = 10 backward columns: expect about C + 1 units
at most), the Monte-Carlo true Fisher with m = 1 and m = 4 sampled labels (m = 1 should cost about what FD
does), and, with ``--hutchinson``, Hutchinson with 10 probes per sample (T = 200). Fastest of
``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from initprune.curvature import batch_gradient, hutchinson_diagonal, per_sample_gradient_moments
from initprune.gauss_newton import ggn_diagonal, mc_fisher_diagonal
from initprune.models import create_model
from initprune.prunable import prunable_parameters


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed runs after one warm-up (the minimum resists load from other processes)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(
    name: str, model: torch.nn.Module, samples: int, repeats: int, hutchinson: bool
) -> list[tuple[str, str, float, float]]:
    torch.manual_seed(0)
    model.eval()
    params = prunable_parameters(model)
    for p in params.values():
        p.requires_grad_(True)
    batches = [(torch.randn(samples, 3, 32, 32), torch.arange(samples) % 10)]

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    jobs: dict[str, Callable[[], object]] = {
        "batch gradient": lambda: batch_gradient(model, params, batches),
        "fisher_diag (EF)": lambda: per_sample_gradient_moments(model, params, batches),
        "ggn_diag (exact, C=10)": lambda: ggn_diagonal(model, params, batches),
        "fisher_mc_diag m=1": lambda: mc_fisher_diagonal(model, params, batches, generator=gen()),
        "fisher_mc_diag m=4": lambda: mc_fisher_diagonal(model, params, batches, samples=4, generator=gen()),
    }
    if hutchinson:
        jobs["hutch_diag k=10, T=200"] = lambda: hutchinson_diagonal(
            model, params, batches, probes=10, temperature=200.0, generator=gen()
        )
    unit = best_time(jobs.pop("batch gradient"), repeats)
    rows = [(name, "batch gradient", unit, 1.0)]
    for label, fn in jobs.items():
        t = best_time(fn, 1 if "hutch" in label else repeats)
        rows.append((name, label, t, t / unit))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100, help="scoring samples (one batch)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per estimator (median)")
    parser.add_argument("--hutchinson", action="store_true", help="also time Hutchinson (slow on CPU)")
    parser.add_argument("--vgg-width", type=float, default=0.25, help="width multiplier of the VGG-11")
    args = parser.parse_args()
    nets = {
        f"vgg11 (width {args.vgg_width})": create_model("vgg11", num_classes=10, width=args.vgg_width),
        "resnet20": create_model("resnet20", num_classes=10),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.samples} samples, CPU")
    print(f"{'model':<22} {'estimator':<26} {'seconds':>9} {'× gradient':>11}")
    for name, model in nets.items():
        for net, label, seconds, ratio in measure(name, model, args.samples, args.repeats, args.hutchinson):
            print(f"{net:<22} {label:<26} {seconds:>9.3f} {ratio:>11.2f}")


if __name__ == "__main__":
    main()
