"""The main table of a fortunes study (README's first table), from its committed run folders.

    python docs/results/fortunes/main_table.py lm      # test perplexity, lower is better
    python docs/results/fortunes/main_table.py topic   # test accuracy (%), higher is better

Rows are sparsities, columns the criteria of the grid; each cell is the mean ± std over the seeds that
have finished (n shown where it is below 3), the best mean of each row in bold, `qkK` where K of the
cell's runs left the attention's q and k projections of every block empty (the attention is then a
uniform average over the prefix), and `∅K` where K of them left some other layer empty (an attention
output or MLP projection: the block then adds nothing through it). The dense reference
(``<study>/dense``) is given above the table. The table is printed and written to
``<study>/main_table.md``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from initprune.atomic import atomic_write_text
from initprune.experiments.report import collect
from initprune.experiments.stats import mean_std, mean_std_text

HERE = Path(__file__).resolve().parent
SHORT = {
    "random": "random", "magnitude": "magnitude", "grad_norm": "GN", "snip": "SNIP", "grasp": "GraSP",
    "fisher_diag": "FD", "fisher_pruner": "FP", "fisher_taylor": "FTS", "hutch_diag": "HD",
    "hutch_pruner": "HP", "hutch_taylor": "HTS", "fisher_mc_pruner": "MC-OBD", "ggn_pruner": "GGN-OBD",
    "synflow": "SynFlow",
}  # fmt: skip
METRIC = {"lm": ("test_perplexity", 1.0, False), "topic": ("test_accuracy", 100.0, True)}
"""study -> (metric, scale, higher is better)"""


def qk_empty(run: dict[str, Any]) -> bool:
    """Whether the run kept no weight of any block's attention q and k projections."""
    density = run.get("per_layer_density") or {}
    qk = [v for k, v in density.items() if k.endswith(("attn.q.weight", "attn.k.weight"))]
    return bool(qk) and all(v == 0 for v in qk)


def other_empty(run: dict[str, Any]) -> bool:
    """Whether the run kept no weight of some layer other than the attention's q and k projections."""
    density = run.get("per_layer_density") or {}
    return any(v == 0 for k, v in density.items() if not k.endswith(("attn.q.weight", "attn.k.weight")))


def cell(values: list[float], scale: float) -> tuple[str, float]:
    """``mean ± std`` in units of ``1 / scale`` (``(n=K)`` where K < 3), and the mean."""
    mean, std = mean_std(values)
    return mean_std_text(mean, std, len(values), scale=scale), mean


def main_table(study: str) -> list[str]:
    metric, scale, higher = METRIC[study]
    rows, _ = collect(HERE / study / "main")
    dense = collect(HERE / study / "dense")[0] if (HERE / study / "dense").is_dir() else []  # not run yet
    criteria = list(dict.fromkeys(r["criterion"] for r in sorted(rows, key=lambda r: r["run"])))
    order = [c for c in SHORT if c in criteria] + [c for c in criteria if c not in SHORT]
    sparsities = sorted({float(r["sparsity"]) for r in rows})
    lines = []
    if dense:
        values = [float(r[metric]) for r in dense]
        by_seed = sorted(dense, key=lambda r: r["seed"])
        seeds = ", ".join(f"{r['seed']}: {float(r[metric]) * scale:.2f}" for r in by_seed)
        lines.append(f"Dense reference: {cell(values, scale)[0]} (seeds {seeds}).")
        lines.append("")
    lines += [
        "| sparsity | " + " | ".join(SHORT.get(c, c) for c in order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for s in sparsities:
        cells, means = [], []
        for c in order:
            runs = [r for r in rows if r["criterion"] == c and math.isclose(float(r["sparsity"]), s)]
            values = [float(r[metric]) for r in runs if r.get(metric) is not None]
            if not values:
                cells.append("")
                means.append(math.nan)
                continue
            k = sum(qk_empty(r) for r in runs)
            other = sum(other_empty(r) for r in runs)
            text, mean = cell(values, scale)
            cells.append(text + (f" qk{k}" if k else "") + (f" ∅{other}" if other else ""))
            means.append(mean)
        finite = [m for m in means if not math.isnan(m)]
        best = (max if higher else min)(finite)
        cells = [f"**{t}**" if m == best else t for t, m in zip(cells, means, strict=True)]
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(METRIC))
    args = parser.parse_args()
    lines = main_table(args.study)
    command = f"python docs/results/fortunes/main_table.py {args.study}"
    text = f"<!-- made by `{command}` -->\n" + "\n".join(lines) + "\n"
    atomic_write_text(HERE / args.study / "main_table.md", text)
    print(text, end="")


if __name__ == "__main__":
    main()
