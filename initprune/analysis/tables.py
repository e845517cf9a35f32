"""Tables (markdown, CSV, JSON) and plots of the curvature-estimator analysis, written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, atomic_write_text

SHOWN_SPARSITIES = (0.9, 0.99)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def describe(row: dict[str, Any]) -> str:
    """Short name of the estimate of ``row``: ``mc_fisher m=4``, ``hutchinson k=10 independent/prunable``."""
    name = row["estimator"]
    if name == "mc_fisher":
        return f"mc_fisher m={row['count']}"
    if name == "hutchinson":
        return f"hutchinson k={row['count']} {row['probe_mode']}/{row['probe_scope']}"
    return name


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per estimate: relative error, cosine, kept-set overlaps and cost in batched gradients."""
    overlaps = [f"overlap_{kind}_{s}" for kind in ("obd", "taylor") for s in SHOWN_SPARSITIES]
    head = ["model", "warmup", "T", "estimate", "rel. error", "cosine"]
    head += [f"{k.split('_')[1]} @{k.split('_')[2]}" for k in overlaps] + ["cost (× grad)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["warmup"], _fmt(r["temperature"]), describe(r)]
        cells += [_fmt(r["rel_error"]), _fmt(r["cosine"], 4)]
        cells += [_fmt(r[k]) for k in overlaps] + [_fmt(r["cost"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``rows.json``, ``rows.csv`` (every key) and ``report.md`` (main columns) under ``out_dir``."""
    out = Path(out_dir)
    paths = {"json": out / "rows.json", "csv": out / "rows.csv", "markdown": out / "report.md"}
    atomic_write_text(paths["json"], json.dumps(list(rows), indent=1) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(paths["csv"], buffer.getvalue())
    gradient = {(r["model"], r["warmup"], r["temperature"]): r["gradient_seconds"] for r in rows}
    notes = "\n".join(
        f"- {m}, warmup {w}, T={t:g}: one batched gradient = {s:.3f} s" for (m, w, t), s in gradient.items()
    )
    checks = [r for r in rows if r.get("hessian_check_max_rel_dev") is not None]
    check_line = ""
    if checks:
        worst = max(r["hessian_check_max_rel_dev"] for r in checks)
        check_line = f"\ndiag(H) = diag(GGN) checked by exact HVPs: largest relative deviation {worst:.2e}.\n"
    text = (
        "# Curvature estimates against the exact Hessian diagonal\n\n"
        "rel. error = ‖est − exact‖/‖exact‖; obd/taylor @s = fraction of the exact kept set recovered at "
        "sparsity s by ½θ²·est and |θg + ½θ²·est|; cost in units of one batched gradient (same process).\n"
        f"{check_line}\n{notes}\n\n{markdown_table(rows)}"
    )
    atomic_write_text(paths["markdown"], text)
    return paths


def plot_curvature(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """One figure per model, ``curvature_<model>.png``: relative error and kept-set overlap at sparsity
    0.98 (OBD score) against cost, one column per temperature; solid lines without warmup, dashed with."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        temps = list(dict.fromkeys(r["temperature"] for r in mine))
        warmups = list(dict.fromkeys(r["warmup"] for r in mine))
        fig, axes = plt.subplots(2, len(temps), figsize=(6 * len(temps), 8), squeeze=False)
        for col, temp in enumerate(temps):
            for w_index, warmup in enumerate(warmups):
                style = "-" if w_index == 0 else "--"
                sel = [
                    r
                    for r in mine
                    if r["temperature"] == temp and r["warmup"] == warmup and r["estimator"] != "constant"
                ]
                series: dict[str, list[dict[str, Any]]] = {}
                for r in sel:
                    key = r["estimator"]
                    if key == "hutchinson":
                        key = f"hutchinson {r['probe_mode']}/{r['probe_scope']}"
                    series.setdefault(key, []).append(r)
                for i, (key, points) in enumerate(series.items()):
                    color = f"C{i}"
                    costs = [p["cost"] for p in points]
                    errors = [max(p["rel_error"], 1e-6) for p in points]
                    overlap = [p["overlap_obd_0.98"] for p in points]
                    label = f"{key} ({warmup})" if len(warmups) > 1 else key
                    marker = "o" if len(points) > 1 else "*"
                    axes[0, col].plot(costs, errors, style, marker=marker, color=color, label=label)
                    axes[1, col].plot(costs, overlap, style, marker=marker, color=color, label=label)
            axes[0, col].set(xscale="log", yscale="log", title=f"{model}, T = {temp:g}")
            axes[0, col].set(ylabel="relative error vs exact diagonal")
            axes[1, col].set(xscale="log", xlabel="cost (× one batched gradient)")
            axes[1, col].set(ylabel="exact kept set recovered, sparsity 0.98 (½θ²·d)")
            for ax in axes[:, col]:
                ax.grid(True, which="both", alpha=0.3)
        axes[0, -1].legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out / f"curvature_{model}.png"
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths
