"""``initprune report DIR``: every run below a folder (a sweep, or any folder of runs) as one table of
runs, the paper's tables and its plots.

Writes ``results.csv`` (one row per run: every setting of its ``config.yaml`` and every field of its
``result.json``; the achieved sparsity is ``achieved_sparsity``, the target ``sparsity``), ``report.md``
and PNG plots. Runs are grouped by (model, dataset) and by every other setting that varies between them
(criterion, sparsity and seed aside; an options dict such as ``model_options`` by the options in it that
vary, named ``model_options.norm=...``); each group gets

- test accuracy: rows = sparsity, columns = criteria, cells = mean ± sample std over seeds
  (n shown where < 3), the best mean of each row in bold, and the dense reference (sparsity 0) where
  there is one: the group's own dense runs, or else those of its model and dataset that differ from it
  only in settings of the pruning alone (warmup, scope, rounds, probe seed...), named beside it;
- layer collapse (runs with an empty or disconnected layer / runs) and scoring time per criterion;
- ``accuracy_<group>.png``: test accuracy against the fraction of weights remaining (log scale, error
  bars one std over seeds), small multiples of at most six criteria a panel, legends outside;
- ``zoomed_accuracy_<group>.png``: one panel per sparsity, every seed's accuracy and the mean ± std of
  each criterion, sorted and zoomed to the runs above chance (where 0.5–2 point differences are read);
- ``layer_density_<group>.png``: the density of each layer per criterion at one sparsity
  (``at_sparsity``; default the highest sparsity every criterion of the group reached), at most six
  criteria a panel, a layer some seed left empty marked on the panel's floor;
- ``jaccard_<group>.png``: the Jaccard overlap |A∩B| / |A∪B| of the kept sets of two criteria at that
  sparsity, from the saved masks, averaged over the seeds both have;
- ``val_accuracy_<group>.png``: validation accuracy per epoch (``metrics.jsonl``) of the runs at that
  sparsity, mean over seeds.

A ``result.json`` (or its ``config.yaml``) that cannot be read or lacks a result is named and skipped.
Rewriting a report into the same folder removes the plots of the previous one that it no longer makes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_bytes, atomic_write_text
from ..collapse import run_collapsed
from ..errors import InitpruneError
from .components import component_table
from .config import default_settings
from .paired import Comparison, compare, comparisons_json, comparisons_markdown
from .run import CONFIG, MASK, METRICS, RESULT
from .stats import CONVENTION, mean_std, mean_std_text

REQUIRED = ("model", "dataset", "criterion", "sparsity", "test_accuracy")
# result fields that hold another value than the config.yaml key of the same name
_RENAMED = {
    "sparsity": "achieved_sparsity",
    "criterion_options": "resolved_criterion_options",
    "rounds": "resolved_rounds",
    "device": "resolved_device",
    "train_seed": "resolved_train_seed",
    "probe_seed": "resolved_probe_seed",
}
# settings that are not a group's identity: the table's axes, and where or how a run ran
_NOT_GROUPING = {"criterion", "sparsity", "seed", "out", "device", "data_dir"}
# settings of the pruning alone: a dense run (sparsity 0) keeps every weight whatever they say (the
# BatchNorm statistics of a warmup decay away in training), so it is the dense reference of every
# group of its model and dataset that differs from it in these settings only
_PRUNING_ONLY = {
    "criterion_options", "scope", "rounds", "warmup_batches", "warmup_cumulative", "scoring_per_class",
    "scoring_augment", "include_classifier", "exclude_first", "include_attention", "shortcut_bn_scales",
    "round_schedule", "probe_seed", "layer_densities", "scoring_redraw", "warmup_augment", "warmup_shuffle",
    "scoring_sequences", "round_warmup",
}  # fmt: skip


_MARKERS = "osD^vP*Xh<>p"
_LINES = ("-", "--", "-.", ":")


def _color(i: int) -> Any:
    """A qualitative palette (tab10: ten colours no two of which are shades of one hue); past ten
    criteria the colours repeat, with other markers and line styles (see :func:`_style`)."""
    import matplotlib

    return matplotlib.colormaps["tab10"](i % 10)


def _marker(i: int) -> str:
    return _MARKERS[i % len(_MARKERS)]


def _style(i: int) -> dict[str, Any]:
    """Colour, marker and line of the i-th criterion: no two of the first 60 alike, and hollow markers
    of decreasing size so that criteria with equal values stay visible one inside the other."""
    return {
        "color": _color(i),
        "marker": _marker(i),
        "linestyle": _LINES[(i // 10) % len(_LINES)],
        "markersize": 9 - 2 * (i % 3),
        "markerfacecolor": "none",
        "markeredgewidth": 1.5,
    }


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


def _varying_parts(key: str, values: Any) -> list[tuple[str, Any]]:
    """How a setting that varies within a group of runs names their subgroups: ``(name, labels)`` pairs,
    ``labels`` a series of texts aligned with ``values``. A setting of option dicts (``model_options``,
    ``criterion_options``) is named by the options that vary only, as ``model_options.norm``, so that
    the name (and the plots' file names made from it) says what differs instead of repeating the
    options every run shares; any other setting by its whole value."""
    import pandas as pd

    def is_options(v: Any) -> bool:
        return isinstance(v, dict) or v is None or (isinstance(v, float) and math.isnan(v))

    if not all(is_options(v) for v in values) or not any(isinstance(v, dict) for v in values):
        return [(key, values.map(_setting_text))]
    options = [v if isinstance(v, dict) else {} for v in values]
    parts = []
    for option in sorted({o for d in options for o in d}):
        texts = [_setting_key(d[option]) if option in d else None for d in options]
        if len(set(texts)) > 1:
            labels = [_setting_text(d[option]) if option in d else "default" for d in options]
            parts.append((f"{key}.{option}", pd.Series(labels, index=values.index)))
    return parts


def _as_written(settings: Any) -> Any:
    """``settings`` (a frame of the runs' settings) with each column of integers that pandas made float to
    hold an unset setting (``null``, NaN beside numbers) given back as the integers config.yaml has, so
    that groups are named ``warmup_batches=20``, not ``20.0``, in every group of a report that has a
    ``null`` anywhere. A column of floats, or of integers with no NaN, is left as it is."""
    import pandas as pd

    out = settings.copy()
    for key in out:
        values = out[key]
        if (
            values.dtype.kind == "f"
            and values.isna().any()
            and all(float(v).is_integer() for v in values.dropna())
        ):
            out[key] = pd.Series(
                [None if math.isnan(v) else int(v) for v in values], index=values.index, dtype=object
            )
    return out


def _setting_key(value: Any) -> str:
    """A setting's value as a text that is equal for equal settings (dicts whatever their key order): what
    groups of runs are told apart by."""
    return json.dumps(value, sort_keys=True, default=str)


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
    """``"m ± s"`` with ``(n=k)`` where k < 3 (:mod:`.stats`), and the mean (for picking the best)."""
    mean, std = mean_std(values)
    return mean_std_text(mean, std, len(values), scale, digits), mean


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory where it lies below it, as given otherwise: a report
    names its folder and its comparison families the same wherever the repository is (a script may pass
    absolute paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_report(
    root: str | Path,
    out: str | Path | None = None,
    *,
    at_sparsity: float | None = None,
    warn: Callable[[str], None] | None = None,
    comparisons: Sequence[Comparison] = (),
    correction: str = "holm",
    alpha: float = 0.05,
) -> Path:
    """Read every run below ``root`` and write ``results.csv``, ``report.md`` and the plots to ``out``
    (default ``root``); ``warn`` receives one line per skipped file. Returns the path of report.md.

    ``comparisons`` (:mod:`initprune.experiments.paired`) add a section of paired comparisons to
    report.md and write them with their per-seed differences to ``comparisons.json``; ``correction``
    (holm, bonferroni or none) and ``alpha`` decide their verdicts."""
    import pandas as pd

    rows, skipped = collect(root)
    for line in skipped:
        (warn or print)(line)
    if not rows:
        raise InitpruneError(f"no results below {str(root)!r}: no readable {RESULT}")
    compared = compare(rows, comparisons, correction=correction, alpha=alpha) if comparisons else []
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
    named = _as_written(frame[[k for k in config_keys if k in frame]])
    for _, members in frame.groupby("_group", sort=False):
        settings = named.loc[members.index]
        varying = [
            k
            for k in config_keys
            if k not in _NOT_GROUPING and k in settings and settings[k].map(_setting_key).nunique() > 1
        ]
        for k in varying:
            for name, labels in _varying_parts(k, settings[k]):
                frame.loc[members.index, "_group"] += labels.map(lambda v, name=name: f", {name}={v}")

    lines = [
        f"# Report of {shown_path(root)}",
        "",
        f"{len(frame)} runs, {frame['_group'].nunique()} group(s).",
    ]
    if skipped:
        lines += ["", "Skipped:", *[f"- {line}" for line in skipped]]
    if compared:
        lines += ["", *comparisons_markdown(compared)]
        atomic_write_text(out / "comparisons.json", comparisons_json(compared))
    shared = _shared_dense(frame, named, config_keys)
    for group, members in frame.groupby("_group", sort=False):
        lines += _group_section(str(group), members, out, at_sparsity, shared.get(str(group)))
    path = out / "report.md"
    previous = _linked_plots(path)
    atomic_write_text(path, "\n".join(lines) + "\n")
    for name in previous - _linked_plots(path):
        (out / name).unlink(missing_ok=True)
    return path


def _linked_plots(report: Path) -> set[str]:
    """The plots a report.md shows (``![stem](name.png)``, files beside it). Rewriting a report removes
    those of the previous one it no longer makes (groups renamed or gone), so the folder holds no stale
    plot; files the report did not link are never touched."""
    if not report.is_file():
        return set()
    return set(re.findall(r"^!\[[^\]]*\]\(([^()/\\]+\.png)\)$", report.read_text(), flags=re.MULTILINE))


def _shared_dense(frame: Any, named: Any, config_keys: list[str]) -> dict[str, tuple[Any, str]]:
    """For each group of pruned runs without dense runs of its own: the dense runs (sparsity 0) of its model
    and dataset that differ from it only in :data:`_PRUNING_ONLY` settings, and the text naming those
    settings as the dense runs have them (``warmup_batches=0``). Groups no dense run matches are absent."""
    sparsity = frame["sparsity"].astype(float)
    keys = [k for k in config_keys if k in named and k not in _NOT_GROUPING and k not in _PRUNING_ONLY]
    text = named.apply(lambda col: col.map(_setting_key))
    pair = frame["model"].astype(str) + "\x00" + frame["dataset"].astype(str)
    shared: dict[str, tuple[Any, str]] = {}
    for group, members in frame.groupby("_group", sort=False):
        if (sparsity[members.index] == 0.0).any():
            continue
        first = members.index[0]
        same = (pair == pair[first]) & (sparsity == 0.0)
        for k in keys:
            same &= text[k] == text.at[first, k]
        dense = frame[same]
        if not len(dense):
            continue
        settings = named.loc[dense.index]
        differing = []
        for k in sorted(_PRUNING_ONLY & set(settings)):
            values = set(text.loc[dense.index, k])
            if values != {text.at[first, k]}:
                shown = sorted({_setting_text(v) for v in settings[k]}, key=str)
                differing.append(f"{k}={'/'.join(map(str, shown))}")
        shared[str(group)] = (dense, ", ".join(differing))
    return shared


def _group_section(
    group: str, runs: Any, out: Path, at_sparsity: float | None, shared_dense: tuple[Any, str] | None = None
) -> list[str]:
    """One group's tables and plots; ``shared_dense`` (dense runs, the pruning settings they ran with) is
    the dense reference of a group that has no dense run of its own (:func:`_shared_dense`)."""
    slug = _slug(group)
    runs = runs.assign(sparsity=runs["sparsity"].astype(float))
    dense = runs[runs["sparsity"] == 0.0]
    pruned = runs[runs["sparsity"] > 0.0]
    criteria = list(dict.fromkeys(pruned["criterion"]))
    sparsities = sorted(set(pruned["sparsity"]))
    lines = ["", f"## {group}", ""]
    lines.append(f"Test accuracy (%), {CONVENTION}; the best of each row in bold.")
    differing = ""
    if not len(dense) and shared_dense is not None:
        dense, differing = shared_dense
    if len(dense):
        text, _ = _mean_std(list(dense["test_accuracy"].astype(float)))
        if differing:
            text += f", the dense runs with {differing} (a setting of the pruning alone)"
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
            bad = sum(run_collapsed(run) for run in sel.to_dict("records"))
            cells.append(f"{bad}/{len(sel)}" if len(sel) else "")
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    lines += component_table(pruned, criteria, sparsities)

    lines += [
        "",
        "Scoring time (s), over the scorings computed (runs that reused a cached scoring aside).",
        "",
    ]
    lines += ["| criterion | seconds | scorings | runs reusing one |", "|---|---|---|---|"]
    for c in criteria:
        sel = pruned[pruned["criterion"] == c]
        cached = [bool(v) and v == v for v in _col(sel, "scores_cached")]  # NaN: an older run, computed
        # a run without a recorded time (a result.json written by hand or by an older version) is left out
        seconds = [math.nan if v is None else float(v) for v in _col(sel, "scoring_seconds")]
        computed = [s for s, hit in zip(seconds, cached, strict=True) if not hit and not math.isnan(s)]
        known = computed or [s for s in seconds if not math.isnan(s)]
        text = _mean_std(known, scale=1.0, digits=2)[0] if known else "–"
        lines.append(f"| {c} | {text} | {len(computed)} | {sum(cached)} |")

    if not sparsities:
        return lines
    at = _pick_sparsity(pruned, criteria, at_sparsity)
    plots = [_plot_accuracy(group, pruned, dense, criteria, out / f"accuracy_{slug}.png")]
    plots.append(_plot_accuracy_zoom(group, pruned, dense, out / f"zoomed_accuracy_{slug}.png"))
    if "test_perplexity" in pruned and pruned["test_perplexity"].notna().any():
        path = out / f"perplexity_{slug}.png"
        plots.append(_plot_accuracy(group, pruned, dense, criteria, path, metric="test_perplexity"))
    if at is not None:
        at_runs = pruned[pruned["sparsity"] == at]
        plots.append(_plot_layer_density(group, at_runs, at, out / f"layer_density_{slug}.png"))
        plots.append(_plot_jaccard(group, at_runs, at, out / f"jaccard_{slug}.png"))
        plots.append(_plot_val_accuracy(group, at_runs, at, out / f"val_accuracy_{slug}.png"))
    lines.append("")
    lines += [f"![{p.stem}]({p.name})" for p in plots if isinstance(p, Path)]
    lines += [f"- Not plotted: {p}." for p in plots if isinstance(p, str)]
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


PANEL_LINES = 6
_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "tinyimagenet": 200,
            "imagenet": 1000}  # fmt: skip


def _chance(runs: Any) -> float:
    """Test accuracy (%) at or below which a run has not learned: 1.1 × 100/C for the group's C classes
    (0 where C is unknown: no run is set aside)."""
    options = runs["dataset_options"].iloc[0] if "dataset_options" in runs else {}
    classes = options.get("num_classes") if isinstance(options, dict) else None
    classes = classes or _CLASSES.get(str(runs["dataset"].iloc[0]))
    return 110.0 / classes if classes else 0.0


"""Most lines a plot panel holds; more criteria make small multiples of this many each."""


def _panels(criteria: list[str]) -> list[list[str]]:
    """``criteria`` in consecutive chunks of at most :data:`PANEL_LINES`, sizes as even as possible."""
    count = max(1, math.ceil(len(criteria) / PANEL_LINES))
    size = math.ceil(len(criteria) / count)
    return [criteria[i : i + size] for i in range(0, len(criteria), size)]


def _grid(plt: Any, panels: int, width: float = 5.2, height: float = 3.4) -> tuple[Any, list[Any]]:
    ncols = min(2, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 1.8, height * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def _plot_accuracy(
    group: str, pruned: Any, dense: Any, criteria: list[str], path: Path, metric: str = "test_accuracy"
) -> Path:
    """Test accuracy (or ``metric``: ``test_perplexity``) against the fraction remaining: small multiples
    of at most six criteria, each panel zoomed to its means (runs at chance aside) so that 0.5–2 point
    differences show; legends outside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    accuracy = "accuracy" in metric
    scale, label = (100.0, "test accuracy (%)") if accuracy else (1.0, metric.replace("_", " "))
    chance = _chance(pruned) if accuracy else -math.inf
    stats = {
        c: pruned[pruned["criterion"] == c].groupby("sparsity")[metric].agg(["mean", "std"]) for c in criteria
    }
    dense_mean = scale * dense[metric].astype(float).mean() if len(dense) else None
    remaining = sorted({1 - s for s in pruned["sparsity"]})
    chunks = _panels(criteria)
    fig, axes = _grid(plt, len(chunks))
    for k, (ax, chunk) in enumerate(zip(axes, chunks, strict=True)):
        means = [scale * m for c in chunk for m in stats[c]["mean"] if scale * m > chance]
        for c in chunk:
            i = criteria.index(c)
            ax.errorbar(1 - stats[c].index.to_numpy(), scale * stats[c]["mean"],
                        yerr=scale * stats[c]["std"].fillna(0.0), capsize=3, label=c,
                        **_style(i))  # fmt: skip
        if dense_mean is not None:
            ax.axhline(dense_mean, color="k", ls="--", label="dense")
            means.append(dense_mean)
        means = [m for m in means if math.isfinite(m)]
        if means:
            pad = 1.5 if accuracy else 0.05 * (max(means) - min(means)) + 0.05
            ax.set_ylim(min(means) - pad, max(means) + pad)
        ax.set(xscale="log", xlabel="fraction of weights remaining", ylabel=label)
        ax.set_xticks(remaining, [f"{r:.3g}" for r in remaining])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title(f"criteria {k + 1}/{len(chunks)}" if len(chunks) > 1 else "", fontsize=8)
    zoom = "axes from the lowest mean above chance" if accuracy else "lower is better"
    fig.suptitle(f"{group}: mean ± std over seeds; {zoom}", fontsize=9)
    return _save(plt, fig, path)


def _plot_accuracy_zoom(group: str, pruned: Any, dense: Any, path: Path) -> Path:
    """One panel per sparsity: every criterion's per-seed accuracies (dots) and mean ± std (bar), sorted
    by mean and zoomed to the runs above chance, where differences of 0.5–2 points are read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sparsities = sorted(set(pruned["sparsity"]))
    fig, axes = _grid(plt, len(sparsities), width=4.6, height=0.28 * pruned["criterion"].nunique() + 1.2)
    dense_mean = 100 * dense["test_accuracy"].astype(float).mean() if len(dense) else None
    for ax, sp in zip(axes, sparsities, strict=True):
        runs = pruned[pruned["sparsity"] == sp]
        accs = {c: [100 * float(v) for v in sel["test_accuracy"]] for c, sel in runs.groupby("criterion")}
        order = sorted(accs, key=lambda c: sum(accs[c]) / len(accs[c]))
        above = [v for values in accs.values() for v in values if v > _chance(pruned)]
        low = min(above) - 0.5 if above else 0.0
        high = max(above) + 0.5 if above else 100.0
        for y, c in enumerate(order):
            values = accs[c]
            shown = [v for v in values if v >= low]
            if shown:
                mean = sum(shown) / len(shown)
                std = (
                    math.sqrt(sum((v - mean) ** 2 for v in shown) / (len(shown) - 1)) if len(shown) > 1 else 0
                )
                ax.errorbar([mean], [y], xerr=[std], fmt="|", color="k", capsize=3, markersize=10)
                ax.scatter(shown, [y] * len(shown), s=14, color="C0", alpha=0.7, zorder=3)
            if len(shown) < len(values):
                ax.annotate(f"{len(values) - len(shown)} at chance", (low, y), fontsize=6, va="center",
                            xytext=(2, 0), textcoords="offset points", color="C3")  # fmt: skip
        if dense_mean is not None and low <= dense_mean <= high + 2:
            ax.axvline(dense_mean, color="k", ls="--", lw=0.8)
            high = max(high, dense_mean + 0.3)
        ax.set_xlim(low, high)
        ax.set_yticks(range(len(order)), order, fontsize=7)
        ax.set_title(f"sparsity {sp:g}", fontsize=9)
        ax.set_xlabel("test accuracy (%)")
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"{group}: each seed (dot), mean ± std (bar); zoomed to the runs above chance", fontsize=9)
    return _save(plt, fig, path)


def _plot_layer_density(group: str, at_runs: Any, at: float, path: Path) -> Path | str:
    """Per-layer density per criterion at one sparsity: small multiples of at most six criteria, every
    layer on the axis, an empty layer drawn as ✕ on the panel's floor; legends outside the data."""
    densities = at_runs[["criterion", "per_layer_density"]].dropna()
    if densities.empty:
        return f"per-layer density at sparsity {at:g}: no run there records it"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(densities["per_layer_density"].iloc[0])
    order = list(dict.fromkeys(densities["criterion"]))
    means = {
        c: [sum(d.get(layer, math.nan) for d in sel["per_layer_density"]) / len(sel) for layer in layers]
        for c, sel in densities.groupby("criterion", sort=False)
    }
    positive = [v for row in means.values() for v in row if v > 0]
    floor = min(positive) / 3 if positive else 1e-4
    chunks = _panels(order)
    fig, axes = _grid(plt, len(chunks), width=max(5.2, 0.3 * len(layers)))
    for ax, chunk in zip(axes, chunks, strict=True):
        for c in chunk:
            i = order.index(c)
            values = means[c]
            ax.plot(range(len(layers)), [max(v, floor) for v in values], label=c, **_style(i))
            runs = densities[densities["criterion"] == c]["per_layer_density"]
            empty = [x for x, layer in enumerate(layers) if any(d.get(layer) == 0 for d in runs)]
            if empty:
                ax.scatter(empty, [floor] * len(empty), marker="x", s=60, color=_color(i), zorder=3)
        ax.axhline(floor, color="grey", lw=0.6, ls=":")
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
        ax.set(yscale="log", ylabel="density (kept / weights)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(
        f"{group}: per-layer density at {at:g}, mean over seeds (✕ on the dotted floor: a layer some seed "
        "left empty)",
        fontsize=9,
    )
    return _save(plt, fig, path)


def jaccard(a: dict[str, Any], b: dict[str, Any]) -> float:
    """|A∩B| / |A∪B| of two masks' kept sets (1 where both keep nothing)."""
    both = sum(int((a[k] & b[k]).sum()) for k in a)
    either = sum(int((a[k] | b[k]).sum()) for k in a)
    return both / either if either else 1.0


def _plot_jaccard(group: str, at_runs: Any, at: float, path: Path) -> Path | str:
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
        return (
            f"kept-set overlap at sparsity {at:g}: the masks (mask.pt) of {len(names)} "
            f"{'criterion' if len(names) == 1 else 'criteria'} there, of at least 2 needed"
        )
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


def _plot_val_accuracy(group: str, at_runs: Any, at: float, path: Path) -> Path | str:
    """Validation accuracy against the epochs trained (a fractional run's last point at its fraction),
    mean over seeds; a plot where no criterion has two evaluations is not drawn."""
    curves: dict[str, dict[float, list[float]]] = {}
    for _, run in at_runs.iterrows():
        folder = Path(run["_folder"])
        if not (folder / METRICS).exists():
            continue
        try:
            records = [json.loads(line) for line in (folder / METRICS).read_text().splitlines() if line]
        except (OSError, ValueError):
            continue
        trained = _number(run.get("epochs"))
        for r in records:
            if r.get("val_accuracy") is not None:
                epoch = float(r["epoch"]) if trained is None else min(float(r["epoch"]), trained)
                by_epoch = curves.setdefault(run["criterion"], {})
                by_epoch.setdefault(epoch, []).append(r["val_accuracy"])
    if not curves:
        return f"validation accuracy per epoch at sparsity {at:g}: no run there has per-epoch metrics"
    if all(len(by_epoch) < 2 for by_epoch in curves.values()):
        when = sorted({e for by_epoch in curves.values() for e in by_epoch})
        return (
            f"validation accuracy per epoch at sparsity {at:g}: every run was evaluated once, after "
            f"{' or '.join(f'{e:g}' for e in when)} epoch(s); the accuracy table has those numbers"
        )
    plt, (fig, ax) = _figure()
    for i, (c, by_epoch) in enumerate(curves.items()):
        epochs = sorted(by_epoch)
        mean = [100 * sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
        ax.plot(epochs, mean, label=c, **_style(i))
    ax.set(xlabel="epochs trained", ylabel="validation accuracy (%)", title=f"{group}: sparsity {at:g}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


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
