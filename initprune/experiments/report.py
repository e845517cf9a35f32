"""``initprune report DIR``: every run below a folder (a sweep, or any folder of runs) as one table of
runs, the paper's tables and its plots.

Writes ``results.csv`` (one row per run: every setting of its ``config.yaml`` and every field of its
``result.json``; the achieved sparsity is ``achieved_sparsity``, the target ``sparsity``), ``report.md``
and PNG plots. Runs are grouped by (model, dataset) and by every other setting that varies between them
(criterion, sparsity and seed aside); each group gets

- test accuracy: rows = sparsity, columns = criteria, cells = mean ± sample std over seeds
  (n shown where < 3), the best mean of each row in bold, and the dense reference (sparsity 0) where
  there is one;
- layer collapse (runs with an empty or disconnected layer / runs) and scoring time per criterion;
- ``accuracy_<group>.png``: test accuracy against the fraction of weights remaining (log scale, error
  bars one std over seeds);
- ``layer_density_<group>.png``: the density of each layer per criterion at one sparsity
  (``at_sparsity``; default the highest sparsity every criterion of the group reached);
- ``jaccard_<group>.png``: the Jaccard overlap |A∩B| / |A∪B| of the kept sets of two criteria at that
  sparsity, from the saved masks, averaged over the seeds both have;
- ``val_accuracy_<group>.png``: validation accuracy per epoch (``metrics.jsonl``) of the runs at that
  sparsity, mean over seeds.

A ``result.json`` (or its ``config.yaml``) that cannot be read or lacks a result is named and skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import InitpruneError
from .config import default_settings
from .run import CONFIG, MASK, METRICS, RESULT

REQUIRED = ("model", "dataset", "criterion", "sparsity", "test_accuracy")
# result fields that hold another value than the config.yaml key of the same name
_RENAMED = {
    "sparsity": "achieved_sparsity",
    "criterion_options": "resolved_criterion_options",
    "rounds": "resolved_rounds",
    "device": "resolved_device",
}
# settings that are not a group's identity: the table's axes, and where or how a run ran
_NOT_GROUPING = {"criterion", "sparsity", "seed", "out", "device", "data_dir"}


_MARKERS = "osD^vP*Xh<>p"


def _color(i: int) -> Any:
    """Twenty distinct colours (the paper's grids have up to fifteen criteria per plot)."""
    import matplotlib

    return matplotlib.colormaps["tab20"](i % 20)


def _marker(i: int) -> str:
    return _MARKERS[i % len(_MARKERS)]


def _read_run(path: Path, root: Path) -> dict[str, Any]:
    """One run's row; raises ValueError saying what is wrong with its files."""
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(result, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ValueError(f"partial: lacks {', '.join(missing)}")
    config: dict[str, Any] = {}
    config_path = path.parent / CONFIG
    if config_path.exists():
        try:
            config = yaml.safe_load(config_path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"its {CONFIG} is not valid YAML ({exc})") from None
        if not isinstance(config, dict):
            raise ValueError(f"its {CONFIG} is not a mapping")
    if config:
        # a setting added after the run was made is absent from its config.yaml and means its default
        # (the behaviour before the setting existed), so older and newer runs of one grid group together
        config = {**{k: v for k, v in default_settings().items() if k not in ("out", "device")}, **config}
    row: dict[str, Any] = {"run": str(path.parent.relative_to(root)) if path.parent != root else "."}
    row.update(config)
    for key, value in result.items():
        row[_RENAMED.get(key, key)] = value
    row.setdefault("sparsity", result.get("target_sparsity", result["sparsity"]))
    row["_config_keys"] = sorted(config)
    row["_folder"] = str(path.parent)  # where its mask and metrics are, wherever the run was made
    return row


def collect(root: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows of every readable run below ``root``, lines naming each skipped file and why)."""
    root = Path(root)
    if not root.is_dir():
        raise InitpruneError(f"{str(root)!r} is not a folder")
    rows, skipped = [], []
    for path in sorted(root.rglob(RESULT)):
        try:
            rows.append(_read_run(path, root))
        except ValueError as exc:
            skipped.append(f"skipped {path}: {exc}")
    return rows, skipped


def _setting_text(value: Any) -> Any:
    """A setting's value in a group's name; an unset setting (``null`` in config.yaml, NaN once pandas has
    read it beside numbers) as ``null``."""
    return "null" if value is None or (isinstance(value, float) and math.isnan(value)) else _cell_text(value)


def _cell_text(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value


_SLUG_MAX = 100
"""Longest file-name part made from a group's name: a group that differs in many settings gets a name
of hundreds of characters, past the 255 bytes a file name may have."""


def _slug(text: str) -> str:
    """``text`` as a file-name part; past ``_SLUG_MAX`` characters, its head and a hash of the whole,
    so that distinct long names stay distinct."""
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in text).strip("_")
    if len(slug) <= _SLUG_MAX:
        return slug
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{slug[: _SLUG_MAX - 11].rstrip('_')}_{digest}"


def _mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> tuple[str, float]:
    """``"m ± s"`` with ``(n=k)`` where k < 3, and the mean (for picking the best)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    text = f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if n > 1 else "")
    return text + (f" (n={n})" if n < 3 else ""), mean


def write_report(
    root: str | Path,
    out: str | Path | None = None,
    *,
    at_sparsity: float | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Read every run below ``root`` and write ``results.csv``, ``report.md`` and the plots to ``out``
    (default ``root``); ``warn`` receives one line per skipped file. Returns the path of report.md."""
    import pandas as pd

    rows, skipped = collect(root)
    for line in skipped:
        (warn or print)(line)
    if not rows:
        raise InitpruneError(f"no results below {str(root)!r}: no readable {RESULT}")
    present = sorted({float(r["sparsity"]) for r in rows})
    if at_sparsity is not None and float(at_sparsity) not in present:
        raise InitpruneError(f"no run at sparsity {at_sparsity:g}; sparsities present: {present}")
    out = Path(out) if out is not None else Path(root)
    out.mkdir(parents=True, exist_ok=True)

    frame = pd.DataFrame(rows)
    config_keys = sorted({k for r in rows for k in r["_config_keys"]})
    table = frame.drop(columns=["_config_keys", "_folder"])
    buffer = io.StringIO()
    table.apply(lambda col: col.map(_cell_text)).to_csv(buffer, index=False)
    atomic_write_text(out / "results.csv", buffer.getvalue())

    # a group: one (model, dataset) and one value of every other setting that varies between its runs
    frame["_group"] = frame["model"].astype(str) + " on " + frame["dataset"].astype(str)
    for _, members in frame.groupby("_group", sort=False):
        varying = [
            k
            for k in config_keys
            if k not in _NOT_GROUPING
            and k in members
            and members[k].map(lambda v: json.dumps(v, sort_keys=True, default=str)).nunique() > 1
        ]
        for k in varying:
            frame.loc[members.index, "_group"] += members[k].map(lambda v, k=k: f", {k}={_setting_text(v)}")

    lines = [f"# Report of {root}", "", f"{len(frame)} runs, {frame['_group'].nunique()} group(s)."]
    if skipped:
        lines += ["", "Skipped:", *[f"- {line}" for line in skipped]]
    for group, members in frame.groupby("_group", sort=False):
        lines += _group_section(str(group), members, out, at_sparsity)
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _group_section(group: str, runs: Any, out: Path, at_sparsity: float | None) -> list[str]:
    slug = _slug(group)
    runs = runs.assign(sparsity=runs["sparsity"].astype(float))
    dense = runs[runs["sparsity"] == 0.0]
    pruned = runs[runs["sparsity"] > 0.0]
    criteria = list(dict.fromkeys(pruned["criterion"]))
    sparsities = sorted(set(pruned["sparsity"]))
    lines = ["", f"## {group}", ""]
    lines.append(
        "Test accuracy (%), mean ± std over seeds (n shown where < 3); the best of each row in bold."
    )
    if len(dense):
        text, _ = _mean_std(list(dense["test_accuracy"].astype(float)))
        lines += ["", f"Dense reference (sparsity 0): {text}."]
    lines += ["", "| sparsity | remaining | " + " | ".join(criteria) + " |"]
    lines.append("|---|---|" + "---|" * len(criteria))
    for s in sparsities:
        cells, means = [], []
        for c in criteria:
            values = list(pruned[(pruned["sparsity"] == s) & (pruned["criterion"] == c)]["test_accuracy"])
            values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
            text, mean = _mean_std(values) if values else ("", -math.inf)
            cells.append(text)
            means.append(mean)
        best = max(means)
        cells = [f"**{t}**" if m == best and t else t for t, m in zip(cells, means, strict=True)]
        lines.append(f"| {s:g} | {1 - s:.3g} | " + " | ".join(cells) + " |")
    lines += _perplexity_table(dense, pruned, criteria, sparsities)

    lines += ["", "Layer collapse: runs with a layer left empty or cut off from input or output / runs.", ""]
    lines += ["| sparsity | " + " | ".join(criteria) + " |", "|---|" + "---|" * len(criteria)]
    for s in sparsities:
        cells = []
        for c in criteria:
            sel = pruned[(pruned["sparsity"] == s) & (pruned["criterion"] == c)]
            pairs = zip(_col(sel, "collapsed_layers"), _col(sel, "disconnected_layers"), strict=True)
            bad = sum(bool(a) or bool(b) for a, b in pairs)
            cells.append(f"{bad}/{len(sel)}" if len(sel) else "")
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "Scoring time (s), over the scorings computed (runs that reused a cached scoring aside).",
        "",
    ]
    lines += ["| criterion | seconds | scorings | runs reusing one |", "|---|---|---|---|"]
    for c in criteria:
        sel = pruned[pruned["criterion"] == c]
        cached = [bool(v) and v == v for v in _col(sel, "scores_cached")]  # NaN: an older run, computed
        computed = [float(v) for v, hit in zip(sel["scoring_seconds"], cached, strict=True) if not hit]
        text, _ = _mean_std(computed or [float(v) for v in sel["scoring_seconds"]], scale=1.0, digits=2)
        lines.append(f"| {c} | {text} | {len(computed)} | {sum(cached)} |")

    if not sparsities:
        return lines
    at = _pick_sparsity(pruned, criteria, at_sparsity)
    plots = [_plot_accuracy(group, pruned, dense, criteria, out / f"accuracy_{slug}.png")]
    if at is not None:
        at_runs = pruned[pruned["sparsity"] == at]
        plots.append(_plot_layer_density(group, at_runs, at, out / f"layer_density_{slug}.png"))
        plots.append(_plot_jaccard(group, at_runs, at, out / f"jaccard_{slug}.png"))
        plots.append(_plot_val_accuracy(group, at_runs, at, out / f"val_accuracy_{slug}.png"))
    lines.append("")
    lines += [f"![{p.stem}]({p.name})" for p in plots if p is not None]
    return lines


def _col(frame: Any, name: str) -> list[Any]:
    return list(frame[name]) if name in frame else [None] * len(frame)


def _pick_sparsity(pruned: Any, criteria: list[str], at_sparsity: float | None) -> float | None:
    present = set(pruned["sparsity"])
    if at_sparsity is not None:
        return float(at_sparsity) if float(at_sparsity) in present else None

    def everyone(s: float) -> bool:
        return all(((pruned["sparsity"] == s) & (pruned["criterion"] == c)).any() for c in criteria)

    common = [s for s in sorted(present) if everyone(s)]
    return common[-1] if common else max(present)


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(7, 4.5))


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _plot_accuracy(group: str, pruned: Any, dense: Any, criteria: list[str], path: Path) -> Path:
    plt, (fig, ax) = _figure()
    for i, c in enumerate(criteria):
        stats = pruned[pruned["criterion"] == c].groupby("sparsity")["test_accuracy"].agg(["mean", "std"])
        remaining = 1 - stats.index.to_numpy()
        errors = 100 * stats["std"].fillna(0.0)
        ax.errorbar(
            remaining,
            100 * stats["mean"],
            yerr=errors,
            marker=_marker(i),
            capsize=3,
            color=_color(i),
            label=c,
        )
    if len(dense):
        ax.axhline(100 * dense["test_accuracy"].astype(float).mean(), color="k", ls="--", label="dense")
    ax.set(xscale="log", xlabel="fraction of weights remaining", ylabel="test accuracy (%)", title=group)
    from matplotlib.ticker import NullFormatter

    remaining = sorted({1 - s for s in pruned["sparsity"]})
    ax.set_xticks(remaining, [f"{r:.3g}" for r in remaining])  # the grid's own fractions, not 2×10⁻²
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _plot_layer_density(group: str, at_runs: Any, at: float, path: Path) -> Path | None:
    densities = at_runs[["criterion", "per_layer_density"]].dropna()
    if densities.empty:
        return None
    plt, (fig, ax) = _figure()
    layers = list(densities["per_layer_density"].iloc[0])
    for i, (c, sel) in enumerate(densities.groupby("criterion", sort=False)):
        mean = [sum(d.get(layer, math.nan) for d in sel["per_layer_density"]) / len(sel) for layer in layers]
        ax.plot(range(len(layers)), mean, marker=_marker(i), color=_color(i), label=c)
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
    ax.set(yscale="log", ylabel="density (kept / weights)", title=f"{group}: per-layer density at {at:g}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def jaccard(a: dict[str, Any], b: dict[str, Any]) -> float:
    """|A∩B| / |A∪B| of two masks' kept sets (1 where both keep nothing)."""
    both = sum(int((a[k] & b[k]).sum()) for k in a)
    either = sum(int((a[k] | b[k]).sum()) for k in a)
    return both / either if either else 1.0


def _plot_jaccard(group: str, at_runs: Any, at: float, path: Path) -> Path | None:
    from ..masks import Mask

    masks: dict[str, dict[Any, Any]] = {}
    for _, run in at_runs.iterrows():
        folder = Path(run["_folder"])
        if not (folder / MASK).exists():
            continue
        try:
            masks.setdefault(run["criterion"], {})[run.get("seed")] = dict(Mask.load(folder / MASK))
        except Exception:  # an unreadable mask leaves its run out of the overlap
            continue
    names = list(masks)
    if len(names) < 2:
        return None
    matrix = [[math.nan] * len(names) for _ in names]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            seeds = set(masks[a]) & set(masks[b])
            pairs = [(masks[a][s], masks[b][s]) for s in seeds]
            values = [jaccard(x, y) for x, y in pairs if set(x) == set(y)]
            matrix[i][j] = sum(values) / len(values) if values else math.nan
    plt, (fig, ax) = _figure()
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            if not math.isnan(matrix[i][j]):
                ax.text(
                    j,
                    i,
                    f"{matrix[i][j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="k" if matrix[i][j] > 0.6 else "w",
                )
    fig.colorbar(image, ax=ax, label="Jaccard overlap of kept weights")
    ax.set_title(f"{group}: kept-set overlap at sparsity {at:g}")
    return _save(plt, fig, path)


def _plot_val_accuracy(group: str, at_runs: Any, at: float, path: Path) -> Path | None:
    curves: dict[str, dict[int, list[float]]] = {}
    for _, run in at_runs.iterrows():
        folder = Path(run["_folder"])
        if not (folder / METRICS).exists():
            continue
        try:
            records = [json.loads(line) for line in (folder / METRICS).read_text().splitlines() if line]
        except (OSError, ValueError):
            continue
        for r in records:
            if r.get("val_accuracy") is not None:
                by_epoch = curves.setdefault(run["criterion"], {})
                by_epoch.setdefault(int(r["epoch"]), []).append(r["val_accuracy"])
    if not curves:
        return None
    plt, (fig, ax) = _figure()
    for i, (c, by_epoch) in enumerate(curves.items()):
        epochs = sorted(by_epoch)
        mean = [100 * sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
        ax.plot(epochs, mean, marker=_marker(i), color=_color(i), label=c)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"{group}: sparsity {at:g}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _perplexity_table(dense: Any, pruned: Any, criteria: list[str], sparsities: list[float]) -> list[str]:
    """Runs with a per-token loss (language models): test perplexity, mean ± std over seeds, the lowest
    (best) of each row in bold; nothing for runs without one (accuracy is their measure)."""
    if "test_perplexity" not in pruned or pruned["test_perplexity"].isna().all():
        return []
    lines = [
        "",
        "Test perplexity (per byte; lower is better), mean ± std over seeds; the best of each row in bold.",
    ]
    if len(dense) and "test_perplexity" in dense:
        text, _ = _mean_std([float(v) for v in dense["test_perplexity"]], scale=1.0, digits=2)
        lines += ["", f"Dense reference (sparsity 0): {text}."]
    lines += [
        "",
        "| sparsity | remaining | " + " | ".join(criteria) + " |",
        "|---|---|" + "---|" * len(criteria),
    ]
    for s in sparsities:
        cells, means = [], []
        for c in criteria:
            values = pruned[(pruned["sparsity"] == s) & (pruned["criterion"] == c)]["test_perplexity"]
            values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
            text, mean = _mean_std(values, scale=1.0, digits=2) if values else ("", math.inf)
            cells.append(text)
            means.append(mean)
        best = min(means)
        cells = [f"**{t}**" if m == best and t else t for t, m in zip(cells, means, strict=True)]
        lines.append(f"| {s:g} | {1 - s:.3g} | " + " | ".join(cells) + " |")
    return lines
