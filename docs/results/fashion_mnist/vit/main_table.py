"""The ViT study's main tables (README's first tables), from its committed run folders.

    python docs/results/fashion_mnist/vit/main_table.py

Two tables, rows = variant (LayerNorm control; BatchNorm with warmup 0, 20 batches, one pass) × sparsity,
columns = the criteria of the grid:

1. test accuracy (%), mean ± std over the seeds that have finished (n shown where it is below 3), the best
   mean of each row in bold, and ``∅k`` where k of the cell's runs have a layer left empty or cut off
   (``collapsed_layers``, ``disconnected_layers``);
2. the components emptied: each component (``patch_embed``, ``qkv``, ``proj``, ``fc1``, ``fc2``, ``head``:
   :func:`initprune.experiments.components.layer_component` without its ``blocks.*`` prefix) with at least
   one empty layer in some run, as ``component k/n`` (k of the cell's n runs), – where no run emptied any.

The dense reference of each variant (``dense/``) is given above them. Where the longer check has run
(``LONG=1 run.sh``: ``long_batchnorm/``, ``long_layernorm/``, ``long_dense/``, seed 0, 6 epochs), a third
table gives each of its runs beside the same point of the grid (seed 0, 2 epochs), as ``2 ep → 6 ep``.
The tables are printed and written to ``main_table.md`` beside this script.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from initprune.atomic import atomic_write_text
from initprune.collapse import run_collapsed
from initprune.experiments.components import component_densities
from initprune.experiments.report import collect
from initprune.experiments.stats import mean_std, mean_std_text

HERE = Path(__file__).resolve().parent
SHORT = {
    "random": "random", "magnitude": "magnitude", "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow",
    "fisher_pruner": "FP", "hutch_pruner": "HP", "ggn_pruner": "OBD",
}  # fmt: skip
VARIANTS = [("layernorm", "LayerNorm", None), ("batchnorm", "BN, no warmup", 0),
            ("batchnorm", "BN, warmup 20", 20), ("batchnorm", "BN, one pass", "pass")]  # fmt: skip
"""(norm, label, warmup_batches: 0, 20, or "pass" for one pass over the training data = null)"""


def variant_of(run: dict[str, Any]) -> str | None:
    """The label of the run's variant (None for a run of none of them)."""
    norm = (run.get("model_options") or {}).get("norm", "layernorm")
    warmup = run.get("warmup_batches")
    warmup = "pass" if warmup is None else int(warmup)
    for v_norm, label, v_warmup in VARIANTS:
        if norm == v_norm and (v_norm == "layernorm" or warmup == v_warmup):
            return label
    return None


def emptied_components(run: dict[str, Any]) -> list[str]:
    """The components (``qkv``, ``fc1``, ``patch_embed`` ...) with at least one empty layer in the run."""
    parts = component_densities(run.get("per_layer_density") or {})
    return [name.removeprefix("blocks.*.").removeprefix("attn.") for name, (_, k) in parts.items() if k]


@functools.cache
def runs_in(folder: str) -> tuple[dict[str, Any], ...]:
    """The finished runs below this study's ``folder`` (read once; none where it does not exist)."""
    return tuple(collect(HERE / folder)[0]) if (HERE / folder).is_dir() else ()


def main_tables() -> list[str]:
    rows, dense = runs_in("batchnorm") + runs_in("layernorm"), runs_in("dense")
    criteria = [c for c in SHORT if any(r["criterion"] == c for r in rows)]
    sparsities = sorted({float(r["sparsity"]) for r in rows})
    lines = []
    for _, label, _ in VARIANTS[:2]:
        values = [float(r["test_accuracy"]) for r in dense if variant_of(r) == label]
        if values:
            name = "LayerNorm" if label == "LayerNorm" else "BatchNorm"
            mean, std = mean_std(values)
            lines.append(f"Dense {name}: {mean_std_text(mean, std, len(values))}.  ")
    if lines:
        lines.append("")
    header = "| variant | sparsity | " + " | ".join(SHORT[c] for c in criteria) + " |"
    rule = "|---|---|" + "---|" * len(criteria)
    accuracy, parts = [header, rule], [header, rule]
    for _, label, _ in VARIANTS:
        for s in sparsities:
            cells, means, emptied = [], [], []
            for c in criteria:
                runs = [r for r in rows if variant_of(r) == label and r["criterion"] == c
                        and math.isclose(float(r["sparsity"]), s)]  # fmt: skip
                values = [float(r["test_accuracy"]) for r in runs]
                if not values:
                    cells.append("")
                    means.append(-math.inf)
                    emptied.append("")
                    continue
                mean, std = mean_std(values)
                k = sum(run_collapsed(r) for r in runs)
                cells.append(mean_std_text(mean, std, len(values)) + (f" ∅{k}" if k else ""))
                means.append(mean)
                counts: dict[str, int] = {}
                for r in runs:
                    for name in emptied_components(r):
                        counts[name] = counts.get(name, 0) + 1
                emptied.append(", ".join(f"{n} {k}/{len(runs)}" for n, k in counts.items()) or "–")
            if not any(cells):
                continue
            best = max(means)
            cells = [f"**{t}**" if m == best and t else t for t, m in zip(cells, means, strict=True)]
            accuracy.append(f"| {label} | {s:g} | " + " | ".join(cells) + " |")
            parts.append(f"| {label} | {s:g} | " + " | ".join(emptied) + " |")
    lines += ["Test accuracy (%), mean ± std over seeds; ∅k: k runs with a layer emptied or cut off.", ""]
    lines += accuracy
    lines += ["", "Components emptied (k of n runs left at least one of the component's layers empty).", ""]
    lines += parts
    return lines


def _cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return "–"
    return f"{100 * float(run['test_accuracy']):.2f}" + (" ∅" if run_collapsed(run) else "")


def long_table() -> list[str]:
    """The longer check (seed 0, 6 epochs) beside the grid's seed-0 run of the same point (2 epochs)."""
    long = runs_in("long_batchnorm") + runs_in("long_layernorm")
    long_dense = runs_in("long_dense")
    if not long and not long_dense:
        return []
    short = [r for r in runs_in("batchnorm") + runs_in("layernorm") if int(r["seed"]) == 0]
    short_dense = [r for r in runs_in("dense") if int(r["seed"]) == 0]
    criteria = [c for c in SHORT if any(r["criterion"] == c for r in long)]
    sparsities = sorted({float(r["sparsity"]) for r in long})

    def find(runs: Sequence[dict[str, Any]], label: str, c: str | None, s: float) -> dict[str, Any] | None:
        return next((r for r in runs if variant_of(r) == label and (c is None or r["criterion"] == c)
                     and math.isclose(float(r["sparsity"]), s)), None)  # fmt: skip

    lines = ["", "Longer check (seed 0): test accuracy (%) after 2 epochs (the grid) → 6 epochs; ∅: a layer "
             "emptied or cut off.", ""]  # fmt: skip
    lines += ["| variant | sparsity | dense | " + " | ".join(SHORT[c] for c in criteria) + " |"]
    lines += ["|---|---|---|" + "---|" * len(criteria)]
    for _, label, _ in VARIANTS:
        dense_label = "LayerNorm" if label == "LayerNorm" else "BN, no warmup"  # dense runs have no warmup
        before, after = find(short_dense, dense_label, None, 0.0), find(long_dense, dense_label, None, 0.0)
        dense = f"{_cell(before)} → {_cell(after)}"
        for s in sparsities:
            cells = [
                f"{_cell(find(short, label, c, s))} → {_cell(find(long, label, c, s))}" for c in criteria
            ]
            if all(cell.endswith("→ –") for cell in cells):
                continue
            lines.append(f"| {label} | {s:g} | {dense} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    lines = main_tables() + long_table()
    command = "python docs/results/fashion_mnist/vit/main_table.py"
    text = f"<!-- made by `{command}` -->\n" + "\n".join(lines) + "\n"
    atomic_write_text(HERE / "main_table.md", text)
    print(text, end="")


if __name__ == "__main__":
    main()
