"""Cost of the curvature diagonals in units of one batched gradient, measured in one process.

    python benchmarks/curvature_cost.py [--threads N] [--repeats 5] [--models M ...] [--hutchinson]

The networks and data of ``benchmarks/scoring.py`` (a small VGG-style BatchNorm net and ResNet-20, 100
CIFAR-shaped samples, 10 classes, eval mode). It times one batched gradient of the mean loss (the unit),
the empirical Fisher diagonal (FD), the exact GGN diagonal (C = 10 backward columns), the Monte-Carlo true
Fisher with m = 1 and m = 4 sampled labels, and, with ``--hutchinson``, Hutchinson with 10 independent
probes per sample (T = 200). Fastest of ``--repeats`` runs after one warm-up (the minimum resists load
from other processes). The GGN needs C backward passes, so its floor is about C + 1 gradients; each
column's per-sample square sums cost what FD's one column costs, so expect about C × (FD − 1) + 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))

from common import best_time
from scoring import build, scoring_data

from initprune.curvature import batch_gradient, hutchinson_diagonal, per_sample_gradient_moments
from initprune.curvature.ggn import ggn_diagonal, mc_fisher_diagonal
from initprune.prunable import prunable_parameters


def measure(model_name: str, repeats: int, hutchinson: bool) -> list[tuple[str, float, float]]:
    model = build(model_name, torch.device("cpu"))
    params = prunable_parameters(model)
    for p in params.values():
        p.requires_grad_(True)
    data = scoring_data(torch.device("cpu"))

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    jobs: dict[str, Callable[[], object]] = {
        "fisher_diag (EF)": lambda: per_sample_gradient_moments(model, params, data),
        "ggn_diag (exact, C=10)": lambda: ggn_diagonal(model, params, data),
        "fisher_mc_diag m=1": lambda: mc_fisher_diagonal(model, params, data, generator=gen()),
        "fisher_mc_diag m=4": lambda: mc_fisher_diagonal(model, params, data, samples=4, generator=gen()),
    }
    if hutchinson:
        jobs["hutch_diag k=10, T=200"] = lambda: hutchinson_diagonal(
            model, params, data, probes=10, temperature=200.0, generator=gen()
        )
    unit = best_time(lambda: batch_gradient(model, params, data), 3 * repeats)
    rows = [("batch gradient", unit, 1.0)]
    for label, fn in jobs.items():
        t = best_time(fn, 1 if "hutch" in label else repeats)
        rows.append((label, t, t / unit))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per estimator (fastest kept)")
    parser.add_argument("--models", nargs="+", default=["vgg_small", "resnet20"])
    parser.add_argument("--hutchinson", action="store_true", help="also time Hutchinson (slow on CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 100 samples, CPU")
    print(f"{'model':<11} {'estimator':<24} {'seconds':>9} {'× gradient':>11}")
    for name in args.models:
        for label, seconds, ratio in measure(name, args.repeats, args.hutchinson):
            print(f"{name:<11} {label:<24} {seconds:>9.4f} {ratio:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
