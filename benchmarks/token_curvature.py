"""Cost of the curvature diagonals of a byte-level language model, in units of one batched gradient.

    python benchmarks/token_curvature.py [--threads N] [--repeats 3] [--sequences 8] [--lengths 8 16]

``transformer_lm`` at the size of the text study (dim 64, depth 2, 4 heads; vocabulary 256) in eval mode,
``--sequences`` random byte sequences of each length in ``--lengths``, loss ``token_cross_entropy``. For
each length it times one batched gradient of the mean loss (the unit), the empirical Fisher diagonal
(FD), the Monte-Carlo Fisher with one label per token (MC), Hutchinson with one probe per sequence
(T = 200) and the exact GGN diagonal, which needs one backward pass per (token, class) column: L × 256
of them, so its ratio grows in proportion to L (the printed ``GGN / (L·C)`` is the cost of one column in
gradients). Fastest of ``--repeats`` runs after one warm-up; the GGN runs once.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from common import best_time
from torch.nn.attention import SDPBackend, sdpa_kernel

from initprune.curvature import batch_gradient, hutchinson_diagonal, per_sample_gradient_moments
from initprune.curvature.ggn import ggn_diagonal, mc_fisher_diagonal
from initprune.curvature.losses import get_loss
from initprune.models import create_model
from initprune.prunable import prunable_parameters
from initprune.scores import scoring_mode


def once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("transformer_lm", 256, dim=64, depth=2, heads=4, max_len=max(args.lengths))
    params = prunable_parameters(model)
    loss = get_loss("token_cross_entropy")
    print(f"transformer_lm dim 64 depth 2, {sum(p.numel() for p in params.values())} prunable weights, "
          f"{args.sequences} sequences, {torch.get_num_threads()} threads")  # fmt: skip
    print("| L | gradient (s) | FD | MC (m=1) | Hutchinson (1 probe) | exact GGN | GGN / (L·C) |")
    print("|---|---|---|---|---|---|---|")
    for length in args.lengths:
        x = torch.randint(0, 256, (args.sequences, length))
        y = torch.randint(0, 256, (args.sequences, length))
        data = [(x, y)]
        gen = torch.Generator()

        def gradient(data=data):
            return batch_gradient(model, params, data, loss=loss)

        def fisher(data=data):
            return per_sample_gradient_moments(model, params, data, loss=loss)

        def mc_fisher(data=data, gen=gen):
            return mc_fisher_diagonal(model, params, data, generator=gen, loss=loss)

        def hutchinson(data=data, gen=gen):
            return hutchinson_diagonal(
                model, params, data, probes=1, temperature=200.0, generator=gen, loss=loss
            )

        def ggn_exact(data=data):
            return ggn_diagonal(model, params, data, loss=loss)

        # the math attention kernel, as initprune.score picks for second-order criteria (double backward)
        with scoring_mode(model, params), sdpa_kernel(SDPBackend.MATH):
            unit = best_time(gradient, args.repeats)
            fd = best_time(fisher, args.repeats)
            mc = best_time(mc_fisher, args.repeats)
            hutch = best_time(hutchinson, args.repeats)
            ggn = once(ggn_exact)
        columns = length * 256
        print(
            f"| {length} | {unit:.4f} | {fd / unit:.1f} | {mc / unit:.1f} | {hutch / unit:.1f} | "
            f"{ggn / unit:.0f} | {ggn / unit / columns:.2f} |"
        )


if __name__ == "__main__":
    main()
