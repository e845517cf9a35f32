"""Grids of runs: every combination of the swept settings (criteria × sparsities × seeds × ...), each run
in a folder of its own (finished runs skipped, interrupted ones resumed), and a summary table.

A grid comes from ``--grid KEY=V1,V2`` flags and from a config file whose list values are axes. Every
point is checked before the first one runs. Points that differ only in the sparsity, the scope or the
training settings share one scoring through the sweep's score cache (:mod:`.cache`).

Shards split a grid across processes or machines: shard i of n runs the points whose index is i mod n,
so ``CUDA_VISIBLE_DEVICES=i initprune sweep ... --shard i/n`` on each of n GPUs covers the grid once.
A Ray cluster runs the grid as one task per point (:mod:`.launchers`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..collapse import run_collapsed
from ..data import datasets
from ..errors import InitpruneError, unknown_choice
from ..models import check_model_options
from ..scores import get_criterion
from ..train_config import TrainConfig
from .cache import CACHE_DIR
from .config import RunConfig, build_config, normalize_keys
from .grid import grid_points, parse_shard, point_folder, value_label
from .launchers import LAUNCHERS
from .run import RESULT, run_experiment
from .stats import CONVENTION, mean_std, mean_std_text

SUMMARY_FIELDS = (
    "sparsity", "val_accuracy", "test_accuracy", "collapsed_layers", "disconnected_layers",
    "scoring_seconds", "scores_cached", "train_seconds",
)  # fmt: skip
# Runs with a per-token loss (language models) also report these, in nats per token and per byte.
TOKEN_FIELDS = ("val_perplexity", "test_perplexity", "test_bits_per_byte")
ERRORS = "errors.json"
SWEEP = "sweep.json"  # the base settings and every grid run into the folder


def _sequence_keys() -> set[str]:
    """Settings whose single value is itself a list (``betas``, ``milestones``)."""
    hints = {**typing.get_type_hints(TrainConfig), **typing.get_type_hints(RunConfig)}
    return {k for k, hint in hints.items() if typing.get_origin(hint) is tuple}


def split_grid(values: Mapping[str, Any], source: str = "the sweep's settings") -> tuple[dict, dict]:
    """(base settings, grid axes) of a mapping whose list values are axes. A setting whose value is a
    list (``milestones``) is an axis when given a list of lists."""
    values = normalize_keys(values, source)
    sequences = _sequence_keys()
    base, axes = {}, {}
    for key, value in values.items():
        if isinstance(value, (list, tuple)) and (
            key not in sequences or all(isinstance(v, (list, tuple)) for v in value)
        ):
            axes[key] = list(value)
        else:
            base[key] = value
    return base, axes


def validate_point(config: RunConfig) -> None:
    """Check what a run would only find out when it starts: the criterion and its options, the model and
    its option names, the dataset and its option names. (The device is checked where the run runs.)"""
    crit = get_criterion(config.criterion)
    crit.check_options(dict(config.criterion_options))
    check_model_options(config.model, config.model_options)
    if config.dataset not in datasets():
        raise unknown_choice("dataset", config.dataset, datasets())


def sweep_configs(
    base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], out: str | Path
) -> list[tuple[dict[str, Any], RunConfig]]:
    """(grid point, its RunConfig) for every point, each checked; each run writes to
    ``out/<point folder>``. A bad point is an error before any point runs."""
    grid = normalize_keys(grid, "the grid")
    base = normalize_keys(base, "the base settings")
    if "out" in grid:
        raise InitpruneError("'out' cannot be swept: each grid point gets a folder of its own")
    if not grid:
        raise InitpruneError(
            "the grid has no axis and so no points: give --grid KEY=V1,V2 or a list value in --config"
        )
    configs, folders = [], {}
    for point in grid_points(grid):
        folder = point_folder(point)
        where = f"grid point {folder}"
        if folder in folders:
            raise InitpruneError(f"grid points {folders[folder]} and {point} share the folder {folder!r}")
        folders[folder] = point
        config = build_config({**base, **point, "out": str(Path(out) / folder)}, where)
        try:
            validate_point(config)
        except InitpruneError as exc:
            raise InitpruneError(f"{where}: {exc}") from None
        configs.append((point, config))
    return configs


def is_finished(config: RunConfig) -> bool:
    return (Path(config.out or "") / RESULT).exists()


class SweepProgress:
    """Points done / total and the time left: a bar on a terminal, else one flushed line per point.

    Time left = (seconds since start / points finished since start) × points left."""

    def __init__(self, total: int, done: int, enabled: bool = True):
        self.total, self.done, self.failed, self.finished_here = total, done, 0, 0
        self.start = time.perf_counter()
        self.enabled = enabled
        self.bar = (
            tqdm(total=total, initial=done, desc="sweep", unit="point", position=0, dynamic_ncols=True)
            if enabled and sys.stderr.isatty()
            else None
        )
        self.line(f"{done} of {total} points already finished")

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"sweep: {text}")
        else:
            print(f"[{time.strftime('%H:%M:%S')}] sweep: {text}", flush=True)

    def started(self, folder: str) -> None:
        self.line(f"starting {folder}")

    def ended(self, folder: str, error: str | None = None) -> None:
        self.done += 1
        self.finished_here += 1
        self.failed += error is not None
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.finished_here * (self.total - self.done)
        if self.bar is not None:
            self.bar.update()
        status = f"FAILED ({error.splitlines()[0] if error else ''})" if error else "done"
        self.line(
            f"{self.done}/{self.total} points ({self.failed} failed), {folder} {status}; "
            f"elapsed {_duration(elapsed)}, about {_duration(left)} left"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}h" if hours else "") + f"{rest // 60}m{rest % 60:02d}s"


def run_sweep(
    base: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    out: str | Path,
    *,
    shard: str | None = None,
    progress: bool = True,
    score_cache: bool = True,
    launcher: str = "local",
    ray_options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run this shard's grid points (skipping finished ones) and write ``out/summary.{md,csv,json}`` over
    every point finished so far, of the earlier grids run into ``out`` with the same base settings and axes
    and of this one (``out/sweep.json`` lists them: a sweep extended by more seeds summarizes them all); a
    failed point is recorded with its error (``errors.json`` and the summary) and does not stop the
    others. ``score_cache``: share the scores of single-round criteria across points in
    ``out/score_cache``. ``launcher``: ``local`` (one point after the other in this process) or ``ray``
    (one Ray task per point; ``ray_options`` as for :func:`initprune.experiments.launchers.run_ray`).
    ``progress`` prints points done / total and the time left, and shows the runs' bars. Returns the
    summary rows."""
    if launcher not in LAUNCHERS:
        raise unknown_choice("launcher", launcher, LAUNCHERS)
    index, count = parse_shard(shard)
    configs = sweep_configs(base, grid, out)
    out = Path(out)
    mine = [(p, c) for i, (p, c) in enumerate(configs) if i % count == index]
    todo = [(p, c) for p, c in mine if not is_finished(c)]
    for _, config in mine:
        if is_finished(config):  # returns its result, or refuses a folder made with other settings
            run_experiment(config, progress=False)
    out.mkdir(parents=True, exist_ok=True)
    grids, earlier = _grids_run(out, base, grid)
    atomic_write_text(
        out / SWEEP, json.dumps({"base": _as_json(dict(base)), "grid": grids[-1], "grids": grids}, indent=2)
    )
    tracker = SweepProgress(len(mine), len(mine) - len(todo), enabled=progress)
    try:
        errors = LAUNCHERS[launcher](
            todo,
            cache=out / CACHE_DIR if score_cache else None,
            progress=tracker,
            **dict(ray_options or {}),
        )
    finally:
        tracker.close()
    _record_errors(out, mine, errors)
    everything = _union([*earlier, configs])
    rows = summarize(everything, list(configs[0][0]), errors=_load_errors(out))
    write_summary(rows, out)
    return rows


def _as_json(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists), so settings compare with a stored sweep.json."""
    return json.loads(json.dumps(value))


def _grids_run(
    out: Path, base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]
) -> tuple[list[dict], list[list[tuple[dict, RunConfig]]]]:
    """(every grid run into ``out`` with these base settings and these axes (in this order), this one
    last; the points of the earlier ones): a sweep extended with more seeds or sparsities into the same
    folder summarizes all its points. A grid with other base settings or other axes starts the list anew;
    an earlier grid that no longer makes valid points (a criterion since renamed) is left out."""
    try:
        stored = json.loads((out / SWEEP).read_text())
    except (OSError, ValueError):
        stored = {}
    grid = _as_json(dict(grid))
    earlier: list = []
    if isinstance(stored, dict) and stored.get("base") == _as_json(dict(base)):
        earlier = stored.get("grids") or [stored.get("grid")]
    kept, points = [], []
    for earlier_grid in earlier:
        if not isinstance(earlier_grid, dict) or list(earlier_grid) != list(grid) or earlier_grid == grid:
            continue
        try:
            points.append(sweep_configs(base, earlier_grid, out))
        except (InitpruneError, TypeError, ValueError):
            continue
        kept.append(earlier_grid)
    return [*kept, grid], points


def _union(grids: Sequence[Sequence[tuple[dict, RunConfig]]]) -> list[tuple[dict, RunConfig]]:
    """The points of every grid, each folder once, in the order of the grids."""
    union: dict[str, tuple[dict, RunConfig]] = {}
    for configs in grids:
        for point, config in configs:
            union.setdefault(point_folder(point), (point, config))
    return list(union.values())


def _record_errors(out: Path, points: Sequence[tuple[dict, RunConfig]], errors: Mapping[str, str]) -> None:
    """errors.json: {point folder: error} of the points that failed and are not finished since."""
    known = _load_errors(out)
    for point, config in points:
        folder = point_folder(point)
        if folder in errors:
            known[folder] = errors[folder]
        elif is_finished(config):
            known.pop(folder, None)
    atomic_write_text(out / ERRORS, json.dumps(known, indent=2) + "\n")


def _load_errors(out: Path) -> dict[str, str]:
    try:
        return dict(json.loads((out / ERRORS).read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def summarize(
    configs: Sequence[tuple[dict[str, Any], RunConfig]],
    keys: Sequence[str],
    errors: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per finished grid point, then mean and std over seeds where ``seed`` is swept; then one
    row per failed point with its ``error``."""
    rows, failed = [], []
    errors = errors or {}
    for point, config in configs:
        path = Path(config.out or "") / RESULT
        if path.exists():
            result = json.loads(path.read_text())
            row = {**point, **{f: result.get(f) for f in SUMMARY_FIELDS}}
            row.update({f: result[f] for f in TOKEN_FIELDS if f in result})  # language models
            rows.append(row)
        elif point_folder(point) in errors:
            failed.append({**point, "error": errors[point_folder(point)]})
    if "seed" not in keys:
        return rows + failed
    groups: dict[tuple, list[dict[str, Any]]] = {}
    others = [k for k in keys if k != "seed"]
    for row in rows:
        groups.setdefault(tuple(value_label(row[k]) for k in others), []).append(row)
    aggregated = []
    for members in groups.values():
        entry = {k: members[0][k] for k in others}
        entry["seeds"] = len(members)
        for f in ("val_accuracy", "test_accuracy", *(f for f in TOKEN_FIELDS if f in members[0])):
            values = [m[f] for m in members if m.get(f) is not None]
            entry[f"{f}_mean"], entry[f"{f}_std"] = mean_std(values) if values else (None, None)
            entry[f"{f}_n"] = len(values)
        entry["collapsed_runs"] = sum(run_collapsed(m) for m in members)
        aggregated.append(entry)
    return aggregated + failed


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, list):
        return ";".join(map(str, value)) or "-"
    if isinstance(value, str):
        return value.replace("|", "/").replace("\n", " ")
    return "" if value is None else str(value)


def _accuracy_cells(row: Mapping[str, Any]) -> dict[str, str]:
    """A row of summary.md: accuracies as in ``initprune report`` (:mod:`.stats`), the rest as they are."""
    cells: dict[str, str] = {}
    for key, value in row.items():
        name = key.removesuffix("_mean")
        if name in ("val_accuracy", "test_accuracy") and key != name:
            n = row.get(f"{name}_n", 0)
            cells[f"{name} (%)"] = "" if value is None else mean_std_text(value, row.get(f"{name}_std"), n)
        elif key in ("val_accuracy", "test_accuracy"):
            cells[f"{key} (%)"] = "" if value is None else mean_std_text(value, None, 1)
        elif not key.endswith(("_accuracy_std", "_accuracy_n")):
            cells[key] = _cell(value)
    return cells


def write_summary(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """``summary.json``, ``summary.csv`` (fractions, std over seeds null for one seed) and ``summary.md``
    (accuracies in %, mean ± std over seeds, n shown where < 3, as in ``initprune report``) in ``out``,
    atomically."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    atomic_write_text(out / "summary.json", json.dumps(list(rows), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([[_cell(row.get(c)) for c in columns] for row in rows])
    atomic_write_text(out / "summary.csv", buffer.getvalue())
    md_rows = [_accuracy_cells(row) for row in rows]
    md_columns = list(dict.fromkeys(k for row in md_rows for k in row))
    lines = [f"Accuracy in %, {CONVENTION}.", ""]
    lines += ["| " + " | ".join(md_columns) + " |", "|" + "---|" * len(md_columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in md_columns) + " |" for row in md_rows]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
