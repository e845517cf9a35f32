"""Grids of runs: every combination of the swept settings (criteria × sparsities × seeds × ...), each run
in a folder of its own (finished runs skipped, interrupted ones resumed), and a summary table.

Shards split a grid across processes or machines: shard i of n runs the points whose index is i mod n,
so ``CUDA_VISIBLE_DEVICES=i initprune sweep ... --shard i/n`` on each of n GPUs covers the grid once.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import InitpruneError
from .config import RunConfig, build_config, normalize_keys
from .run import RESULT, run_experiment

SUMMARY_FIELDS = (
    "sparsity", "val_accuracy", "test_accuracy", "collapsed_layers", "disconnected_layers",
    "scoring_seconds", "train_seconds",
)  # fmt: skip


def _label(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (the last key varies fastest)."""
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], (list, tuple)) or not grid[key]:
            raise InitpruneError(f"grid key {key!r} needs a non-empty list of values, got {grid[key]!r}")
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def point_folder(point: Mapping[str, Any]) -> str:
    """The run folder of one grid point: ``key=value`` parts joined by commas."""
    return ",".join(f"{k}={_label(v)}" for k, v in point.items()) or "run"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n; None → (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InitpruneError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise InitpruneError(f"shard {text!r} needs 0 <= i < n")
    return index, count


def sweep_configs(
    base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], out: str | Path
) -> list[tuple[dict[str, Any], RunConfig]]:
    """(grid point, its RunConfig) for every point; each run writes to ``out/<point folder>``."""
    grid = normalize_keys(grid, "the grid")
    base = normalize_keys(base, "the base settings")
    if "out" in grid:
        raise InitpruneError("'out' cannot be swept: each grid point gets a folder of its own")
    return [
        (point, build_config({**base, **point, "out": str(Path(out) / point_folder(point))}, "the sweep"))
        for point in grid_points(grid)
    ]


def run_sweep(
    base: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    out: str | Path,
    *,
    shard: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run this shard's grid points (skipping finished ones) and write ``out/summary.{md,csv,json}`` over
    every point finished so far; ``progress`` prints each point as it starts and shows the runs' bars.
    Returns the summary rows."""
    index, count = parse_shard(shard)
    configs = sweep_configs(base, grid, out)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        Path(out) / "sweep.json", json.dumps({"base": dict(base), "grid": dict(grid)}, indent=2)
    )
    for i, (point, config) in enumerate(configs):
        if i % count == index:
            if progress:
                print(f"[{i + 1}/{len(configs)}] {point_folder(point)}", flush=True)
            run_experiment(config, progress=progress)
    rows = summarize(configs, list(configs[0][0]))  # the grid's keys, as sweep_configs normalized them
    write_summary(rows, Path(out))
    return rows


def summarize(
    configs: Sequence[tuple[dict[str, Any], RunConfig]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per finished grid point, then mean and std over seeds where ``seed`` is swept."""
    rows = []
    for point, config in configs:
        path = Path(config.out or "") / RESULT
        if path.exists():
            result = json.loads(path.read_text())
            rows.append({**point, **{f: result.get(f) for f in SUMMARY_FIELDS}})
    if "seed" not in keys:
        return rows
    groups: dict[tuple, list[dict[str, Any]]] = {}
    others = [k for k in keys if k != "seed"]
    for row in rows:
        groups.setdefault(tuple(_label(row[k]) for k in others), []).append(row)
    aggregated = []
    for members in groups.values():
        entry = {k: members[0][k] for k in others}
        entry["seeds"] = len(members)
        for f in ("val_accuracy", "test_accuracy"):
            values = [m[f] for m in members if m[f] is not None]
            entry[f"{f}_mean"] = statistics.fmean(values) if values else None
            entry[f"{f}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        entry["collapsed_runs"] = sum(
            bool(m["collapsed_layers"] or m["disconnected_layers"]) for m in members
        )
        aggregated.append(entry)
    return aggregated


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, list):
        return ";".join(map(str, value)) or "-"
    return "" if value is None else str(value)


def write_summary(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """``summary.json``, ``summary.csv`` and ``summary.md`` in ``out``, atomically."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    atomic_write_text(out / "summary.json", json.dumps(list(rows), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([[_cell(row.get(c)) for c in columns] for row in rows])
    atomic_write_text(out / "summary.csv", buffer.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
