"""The study's claim tables: paired differences between criteria (same seed = same initial weights and
scoring samples), with their spread over seeds, from the run folders of the study.

    python docs/results/fashion_mnist/study/claims.py [--study docs/results/fashion_mnist/study]
                                                    [--out docs/results/fashion_mnist/study/report/claims.md]

Reads every finished run below the study's folders (``main``, ``main_dense``, ``warmup``, ``scope``,
``reference_*``, ``epochs15``, ``resnet20``, ``resnet20_warmup``, ``temperature``, ``probes``,
``scoring_samples``, ``pat``, ``noise_floor``, ``converged``, ``converged_resnet20``, ``transplant``,
``iterative``) with ``initprune.experiments.report.collect``, and writes one markdown file.
Accuracies are test accuracy in %; a difference "A − B" is taken per seed and summarised as its mean, the
paired 95 % t-interval and n (``initprune.stats``), with a verdict from the paired t-test's
p-value adjusted by Holm's method for the number of comparisons in the file (:func:`decide`).
The probes table also gives the Jaccard overlap of kept sets, read from the runs' ``mask.pt`` files where
they are present (they are not committed) and kept in ``probes_jaccard.json`` (committed) for the rest;
the ResNet-20 table gives each run's empty and cut-off layers and the number of input-output paths its
mask keeps, from ``mask.pt`` likewise, kept in ``resnet20_paths.json``.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from initprune.atomic import atomic_write_text
from initprune.collapse import run_collapsed
from initprune.experiments.report import collect, jaccard

SHORT = {
    "random": "random",
    "magnitude": "magnitude",
    "grad_norm": "GN",
    "snip": "SNIP",
    "grasp": "GraSP",
    "synflow": "SynFlow",
    "fisher_diag": "FD",
    "fisher_pruner": "FP",
    "fisher_taylor": "FTS",
    "hutch_diag": "HD",
    "hutch_pruner": "HP",
    "hutch_taylor": "HTS",
    "ggn_pruner": "GGN-OBD",
    "ggn_taylor": "GGN-TS",
    "fisher_mc_pruner": "MC-OBD",
}
HUTCHINSON = ["hutch_diag", "hutch_pruner", "hutch_taylor"]
FIRST_ORDER = ["grad_norm", "snip"]
CURVATURE = ["fisher_pruner", "ggn_pruner"]
"""The second-order criteria of the converged runs besides Hutchinson's: empirical-Fisher and exact OBD."""
SECOND_ORDER = ["fisher_diag", "fisher_pruner", "fisher_taylor", "hutch_diag", "hutch_pruner", "hutch_taylor"]
HIGH = [0.98, 0.99, 0.995, 0.998]
COMMAND = "docs/results/fashion_mnist/study/claims.py"
CHANCE = 11.0
"""Test accuracy (%) at or below which a 10-class run has not learned."""


def load(folder: Path) -> pd.DataFrame:
    if not folder.is_dir():
        return pd.DataFrame()
    rows, _ = collect(folder)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["acc"] = 100.0 * frame["test_accuracy"].astype(float)
    frame["collapsed"] = [run_collapsed(row) for row in rows]
    frame["sparsity"] = frame["sparsity"].astype(float).round(6)
    return frame


def mean_std(values: list[float]) -> str:
    n = len(values)
    if n == 0:
        return "–"
    mean = sum(values) / n
    if n == 1:
        return f"{mean:.2f} (n=1)"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return f"{mean:.2f} ± {std:.2f}" + (f" (n={n})" if n < 3 else "")


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _runs(frame: pd.DataFrame, criterion: str, sparsity: float, **where: Any) -> pd.DataFrame:
    """The runs of ``frame`` matching ``criterion``, ``sparsity`` and ``where`` (key=value)."""
    if frame is None or frame.empty:
        return pd.DataFrame()
    rows = frame[(frame["criterion"] == criterion) & (frame["sparsity"] == round(sparsity, 6))]
    for key, value in where.items():
        if key not in rows:
            return rows.iloc[0:0]
        rows = rows[rows[key].map(lambda v, value=value: _same(v, value))]
    return rows


def _cell(runs: pd.DataFrame) -> str:
    """'mean ± std' of the runs' accuracy with cK (collapsed) and tK (at chance, not collapsed)."""
    if runs.empty:
        return "–"
    coll = int(runs["collapsed"].sum())
    chance = int(((runs["acc"] <= CHANCE) & ~runs["collapsed"]).sum())
    return mean_std(list(runs["acc"])) + (f" c{coll}" if coll else "") + (f" t{chance}" if chance else "")


def _seed_acc(runs: pd.DataFrame) -> dict[Any, float]:
    return (
        {int(seed): float(acc) for seed, acc in zip(runs["seed"], runs["acc"], strict=True)}
        if len(runs)
        else {}
    )


def accuracies(frame: pd.DataFrame, criterion: str, sparsity: float, **where: Any) -> dict[Any, float]:
    """seed → test accuracy of the runs matching ``criterion``, ``sparsity`` and ``where``."""
    return _seed_acc(_runs(frame, criterion, sparsity, **where))


def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None
    return a == b


# Every paired comparison of the file, in the order made: its verdict waits for the correction over all.
_COMPARISONS: list[dict[str, Any]] = []
_COUNT_TOKEN = "\x00count\x00"
"""Where the file says how many comparisons it makes, intervals exclude 0 and verdicts are decided
(filled in by :func:`decide`)."""
ALPHA = 0.05
CORRECTION = "holm"
PRIMARY = "primary"
"""The family of claim 1's confirmatory test, fixed before seeds 7 and 99 ran (:func:`primary_section`):
converged VGG-11 at 0.99, HD − SynFlow and HP − SynFlow over seeds 0, 42, 123, 7, 99, Holm over these
two. Every other comparison is exploratory and corrected over all of them together."""
EXPLORATORY = "exploratory"
PRIMARY_PAIRS = (("hutch_diag", "synflow"), ("hutch_pruner", "synflow"))
PRIMARY_SPARSITY = 0.99
NOISE: dict[str, float] = {}
"""The measured noise floor (points): ``training`` (std over data orders of one mask) and ``probes`` (std
over probe draws of HP on one initialization), from ``noise_floor/``, once its runs are there."""


def paired(
    a: dict[Any, float],
    b: dict[Any, float],
    labels: tuple[str, str] = ("A better", "B better"),
    family: str = EXPLORATORY,
) -> tuple[str, str]:
    """('mean [95 % interval] n=k (per-seed min, max)' of a − b over the seeds both have, verdict).

    The interval is the paired t-interval of ``initprune.stats.paired_stats``; the verdict
    (held: ``labels[0]``, not held: ``labels[1]``, or undecided) is filled in by :func:`decide` once every
    comparison of the file is made, from the p-values adjusted by Holm's method for the number of
    comparisons in its ``family``: :data:`PRIMARY` (the test of claim 1 fixed in advance) or
    :data:`EXPLORATORY` (every other comparison of the file)."""
    from initprune.stats import paired_stats

    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "–", "no data"
    diffs = [a[s] - b[s] for s in seeds]
    stats = paired_stats(diffs)
    if stats.n < 2:
        text = f"{stats.mean:+.2f} n=1"
    else:
        text = f"{stats.mean:+.2f} [{stats.low:+.2f}, {stats.high:+.2f}] n={stats.n}"
        text += f" ({min(diffs):+.2f} to {max(diffs):+.2f})"
    token = f"\x00{len(_COMPARISONS)}\x00"
    _COMPARISONS.append({"stats": stats, "labels": labels, "token": token, "family": family})
    return text, token


def decide(text: str) -> str:
    """``text`` with every verdict token replaced: Holm-adjusted p < α gives the direction's label, else
    undecided; an effect smaller than the measured training noise (std over data orders) says so."""
    from initprune.stats import adjust

    families: dict[str, list[int]] = {}
    for i, c in enumerate(_COMPARISONS):
        families.setdefault(c["family"], []).append(i)
    adjusted = [0.0] * len(_COMPARISONS)
    for members in families.values():
        for i, p in zip(
            members, adjust([_COMPARISONS[i]["stats"].p for i in members], CORRECTION), strict=True
        ):
            adjusted[i] = p
    floor = NOISE.get("training")
    decided = Counter()
    for c, p in zip(_COMPARISONS, adjusted, strict=True):
        stats = c["stats"]
        if stats.n >= 2 and p < ALPHA and stats.mean != 0:
            verdict = c["labels"][0] if stats.mean > 0 else c["labels"][1]
            decided[c["family"]] += 1
        else:
            verdict = "undecided"
        over = (
            f", Holm over the {len(families[PRIMARY])} of the primary test" if c["family"] == PRIMARY else ""
        )
        verdict += f" (p̃ {p:.2g}{over})" if stats.n >= 2 else " (n=1)"
        if stats.mean == 0.0 and (stats.n < 2 or stats.std == 0.0):
            verdict += ", the same accuracy on every seed"  # two runs at chance: says nothing of noise
        elif floor is not None and abs(stats.mean) < floor:
            verdict += f", below the training noise ({floor:.2f})"
        text = text.replace(c["token"], verdict)
    exploratory = [c for c in _COMPARISONS if c["family"] == EXPLORATORY]
    excluding = sum(c["stats"].n >= 2 and (c["stats"].low > 0 or c["stats"].high < 0) for c in exploratory)
    count = (
        f"{len(exploratory)} exploratory comparisons in this file: {excluding} paired 95 % intervals "
        f"exclude 0, {decided[EXPLORATORY]} comparisons are decided after Holm's correction over the "
        f"{len(exploratory)}."
    )
    if PRIMARY in families:
        count += (
            f" The primary test of claim 1 (its {len(families[PRIMARY])} comparisons, Holm over them alone): "
            f"{decided[PRIMARY]} decided."
        )
    return text.replace(_COUNT_TOKEN, count)


def ranking(means: dict[str, float]) -> str:
    """``A (86.3) > B (85.5) = C (85.5)``: best first, "=" where the rounded means tie."""
    order = sorted(means, key=lambda k: -means[k])
    text = ""
    for i, k in enumerate(order):
        if i:
            text += " = " if f"{means[k]:.1f}" == f"{means[order[i - 1]]:.1f}" else " > "
        text += f"{k} ({means[k]:.1f})"
    return text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:  # a section whose runs have started but not yet paired
        return ["No rows yet: the runs this table compares have not finished."]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def best_of(frame: pd.DataFrame, criteria: list[str], sparsity: float) -> tuple[str | None, dict[Any, float]]:
    best, best_mean, best_acc = None, -1.0, {}
    for c in criteria:
        acc = accuracies(frame, c, sparsity)
        if acc and sum(acc.values()) / len(acc) > best_mean:
            best, best_mean, best_acc = c, sum(acc.values()) / len(acc), acc
    return best, best_acc


def accuracy_table(frame: pd.DataFrame, criteria: list[str]) -> list[str]:
    """Test accuracy per sparsity (rows) and criterion (columns), mean ± std over seeds with cK/tK; the
    best mean of each row in bold."""
    rows = []
    for s in sorted(set(frame["sparsity"])):
        runs = [_runs(frame, c, s) for c in criteria]
        means = [float(r["acc"].mean()) if len(r) else -math.inf for r in runs]
        best = max(means)
        rows.append(
            [f"{s:g}"]
            + [
                f"**{_cell(r)}**" if m == best and len(r) else _cell(r)
                for r, m in zip(runs, means, strict=True)
            ]
        )
    return [
        "Test accuracy (%), mean ± std over seeds, the best mean of each row in bold; `cK`: K runs "
        "collapsed (a layer empty, or its kept weights on no input-output path); `tK`: K runs not "
        f"collapsed that stayed at chance (≤ {CHANCE:g} %).",
        "",
        *table(["sparsity"] + [SHORT.get(c, c) for c in criteria], rows),
        "",
    ]


def main_grid_section(main: pd.DataFrame, dense: pd.DataFrame) -> list[str]:
    lines = ["## Main grid: VGG-11 (width 0.25), Fashion-MNIST, 2 epochs", ""]
    if main.empty:
        return [*lines, "No runs yet.", ""]
    seeds = sorted(set(int(s) for s in main["seed"]))
    lines.append(f"Seeds present: {', '.join(map(str, seeds))}; runs: {len(main)}.")
    if not dense.empty:
        lines.append(f"Dense reference: {mean_std(list(dense['acc']))} %.")
    lines.append("")
    criteria = [c for c in SHORT if c in set(main["criterion"])]
    sparsities = sorted(set(main["sparsity"]))
    lines += accuracy_table(main, criteria)
    lines += ["### Claim 1: the Hutchinson criteria match or beat every other criterion at high sparsity", ""]
    lines += [
        "Best Hutchinson criterion (by mean) against the best of all others, and HP against each of the "
        "others; A − B per seed.",
        "",
    ]
    rows = []
    others = [c for c in criteria if c not in HUTCHINSON]
    for s in HIGH:
        h, h_acc = best_of(main, HUTCHINSON, s)
        o, o_acc = best_of(main, others, s)
        if h is None or o is None:
            continue
        text, verdict = paired(h_acc, o_acc)
        rows.append([f"{s:g}", SHORT[h], SHORT[o], text, verdict])
    lines += table(["sparsity", "A: best Hutchinson", "B: best other", "A − B (points)", "verdict"], rows)
    lines.append("")
    rows = []
    for s in HIGH:
        hp = accuracies(main, "hutch_pruner", s)
        for c in others:
            text, verdict = paired(hp, accuracies(main, c, s))
            rows.append([f"{s:g}", SHORT[c], text, verdict])
    lines += [*table(["sparsity", "B", "HP − B (points)", "verdict"], rows), ""]

    lines += ["### Claim 3: second-order beats first-order", ""]
    lines += ["Each second-order criterion against the better (by mean) of GN and SNIP at that sparsity.", ""]
    rows = []
    for s in sorted(set(sparsities)):
        f, f_acc = best_of(main, FIRST_ORDER, s)
        if f is None:
            continue
        for c in [*SECOND_ORDER, "ggn_pruner", "ggn_taylor", "fisher_mc_pruner"]:
            text, verdict = paired(accuracies(main, c, s), f_acc)
            rows.append([f"{s:g}", SHORT[c], SHORT[f], text, verdict])
    lines += table(["sparsity", "A: second-order", "B: best first-order", "A − B (points)", "verdict"], rows)
    lines.append("")
    return lines


def ablation_section(
    title: str,
    frame: pd.DataFrame,
    key: str,
    values: list[Any],
    criteria: list[str],
    sparsities: list[float],
    base: pd.DataFrame | None = None,
    base_value: Any = None,
    per_layer: bool = False,
    plot: Path | None = None,
) -> list[str]:
    """Accuracy per (criterion, sparsity) for each value of ``key``, and the difference of each value
    against the first; ``base`` supplies ``base_value``'s runs where the ablation reuses another grid.
    With ``plot``, also a PNG of every seed's accuracy and the mean ± std, linked from the section."""
    lines = [f"## {title}", ""]
    if frame.empty:
        return [*lines, "No runs yet.", ""]

    def runs_of(c: str, s: float, v: Any) -> pd.DataFrame:
        if base is not None and _same(v, base_value):
            return _runs(base, c, s)
        return _runs(frame, c, s, **{key: v})

    header = ["criterion", "sparsity"] + [f"{key}={v}" for v in values]
    header += [f"{key}={v} − {key}={values[0]}" for v in values[1:]]
    rows = []
    for c in criteria:
        for s in sparsities:
            cells = [runs_of(c, s, v) for v in values]
            accs = [_seed_acc(r) for r in cells]
            row = [SHORT.get(c, c), f"{s:g}"] + [_cell(r) for r in cells]
            row += [" ".join(paired(a, accs[0])) for a in accs[1:]]
            rows.append(row)
    lines += [*table(header, rows), ""]
    if plot is not None:
        groups = {
            f"{key}={v}": {(c, s): _seed_acc(runs_of(c, s, v)) for c in criteria for s in sparsities}
            for v in values
        }
        accuracy_plot(groups, criteria, sparsities, plot, title)
        lines += [f"![{title}]({plot.name})", ""]
    if per_layer:
        lines += _layer_density_lines(runs_of, key, values, criteria, sparsities)
    return lines


def seed_accuracies(
    frame: pd.DataFrame, criteria: list[str], sparsities: list[float]
) -> dict[tuple[str, float], dict[Any, float]]:
    """(criterion, sparsity) -> seed -> test accuracy: one group of :func:`accuracy_plot`."""
    return {(c, s): _seed_acc(_runs(frame, c, s)) for c in criteria for s in sparsities}


def accuracy_plot(
    groups: dict[str, dict[tuple[str, float], dict[Any, float]]],
    criteria: list[str],
    sparsities: list[float],
    path: Path,
    title: str,
) -> None:
    """Small multiples, one panel per sparsity (at most 12 inches wide a row, so never a strip): for each
    criterion, each group's per-seed test accuracies (dots) and their mean ± std (bar), side by side. Each
    panel is zoomed to the accuracies above chance (the 0.5–2 point differences stay visible); runs at
    chance are drawn as a ▼ on the panel's floor with their count. The legend sits outside the panels.
    Written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from initprune.atomic import atomic_write_bytes

    panel = 1.0 + 0.5 * len(criteria) * max(1, len(groups))
    ncols = max(1, min(len(sparsities), int(12 // panel)))
    nrows = math.ceil(len(sparsities) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.6 + panel * ncols, 0.9 + 2.9 * nrows), squeeze=False)
    width = 0.8 / max(len(groups), 1)
    for k, s in enumerate(sparsities):
        ax = axes[k // ncols][k % ncols]
        above = [v for accs in groups.values() for c in criteria for v in accs.get((c, s), {}).values()
                 if v > CHANCE]  # fmt: skip
        low = min(above) - 1.0 if above else 0.0
        high = max(above) + 1.0 if above else 100.0
        for g, accs in enumerate(groups.values()):
            color = f"C{g}"
            for i, c in enumerate(criteria):
                values = list(accs.get((c, s), {}).values())
                if not values:
                    continue
                x = i - 0.4 + width * (g + 0.5)
                shown = [v for v in values if v >= low]
                if shown:
                    mean = sum(shown) / len(shown)
                    ax.errorbar(
                        [x], [mean], yerr=[_std(shown)], fmt="_", color=color, markersize=12, capsize=3
                    )
                    ax.scatter([x] * len(shown), shown, s=12, color=color, alpha=0.7)
                hidden = len(values) - len(shown)
                if hidden:
                    ax.scatter([x], [low], marker="v", s=30, color=color, clip_on=False)
                    ax.annotate(f"{hidden}", (x, low), xytext=(3, 2), textcoords="offset points", fontsize=6)
        ax.set_xticks(range(len(criteria)), [SHORT.get(c, c) for c in criteria], rotation=30, fontsize=8)
        ax.set_title(f"sparsity {s:g}", fontsize=9)
        ax.set_ylim(low, high)
        ax.grid(axis="y", alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel("test accuracy (%)")
    for k in range(len(sparsities), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    # one entry per group, whether or not any of its runs is above chance in the first panel
    handles = [
        Line2D([], [], marker="o", linestyle="", color=f"C{g}", markersize=4) for g in range(len(groups))
    ]
    labels = list(groups)
    note = f"\nbars: mean ± std of the runs above chance; ▼ n: n runs at chance (≤ {CHANCE:g} %)"
    fig.suptitle(title + note, fontsize=9)
    if len(groups) > 1:
        fig.legend(handles, labels, loc="lower center", ncol=len(groups), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if len(groups) > 1 else 0, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _layer_density_lines(
    runs_of: Any, key: str, values: list[Any], criteria: list[str], sparsities: list[float]
) -> list[str]:
    """Per (criterion, sparsity, value): the first layer's density and the smallest layer density, mean
    over seeds - where a global threshold moves the weights."""
    lines = [
        "Per-layer density (%) of the masks, mean over seeds: the first prunable layer's, and the smallest "
        "(with its layer):",
        "",
    ]
    rows = []
    for c in criteria:
        for s in sparsities:
            for v in values:
                sub = runs_of(c, s, v)
                if sub.empty:
                    continue
                densities = list(sub["per_layer_density"])
                first = [next(iter(d.values())) for d in densities]
                mins = [min(d.items(), key=lambda kv: kv[1]) for d in densities]
                layers = sorted({name for name, _ in mins})
                rows.append(
                    [
                        SHORT.get(c, c),
                        f"{s:g}",
                        str(v),
                        f"{100 * sum(first) / len(first):.2f}",
                        f"{100 * sum(d for _, d in mins) / len(mins):.3f}",
                        ", ".join(layers),
                    ]
                )
    header = ["criterion", "sparsity", key, "first layer", "smallest", "smallest layer(s)"]
    return lines + table(header, rows) + [""]


def reference_section(study: Path, main: pd.DataFrame, plot: Path | None = None) -> list[str]:
    """Each behaviour of the paper's reference code against initprune's default on the same seeds."""
    lines = [
        "## What the paper's reference code does differently",
        "",
        "Each reproduction option (alone, then all at once) against the main grid's run of the same "
        "criterion, sparsity and seed. `protocol` and `all` train on all 60,000 training images and report "
        "the best epoch's test accuracy, so part of their difference is the selection on the test set.",
        "",
    ]
    variants = [
        ("grasp_reference", "GraSP: keep the largest −θ⊙Hg, all parameters, T = 1", ["grasp"]),
        ("schedule", "SynFlow: schedule read as sparsity", ["synflow"]),
        ("probe_all", "Hutchinson probes every parameter", ["hutch_pruner"]),
        ("init", "PyTorch default init + conv biases", ["grasp", "synflow", "hutch_pruner"]),
        ("protocol", "all training images, best epoch on test", ["grasp", "synflow", "hutch_pruner"]),
        ("all_grasp", "all of the above", ["grasp"]),
        ("all_synflow", "all of the above", ["synflow"]),
        ("all_hutch_pruner", "all of the above", ["hutch_pruner"]),
        ("warmup_pass", "alone: warmup of one pass in file order", ["grasp", "synflow", "hutch_pruner"]),
        ("no_shuffle", "alone: the training loader does not shuffle", ["grasp", "synflow", "hutch_pruner"]),
    ]
    rows, together = [], {}
    for folder, what, criteria in variants:
        frame = load(study / f"reference_{folder}")
        for c in criteria:
            for s in (0.99, 0.998):
                ref = _runs(frame, c, s)
                if folder.startswith("all_"):
                    together[(c, s)] = ref
                if ref.empty:
                    continue
                ours = _runs(main, c, s)
                text, verdict = paired(
                    _seed_acc(ref), _seed_acc(ours), ("reference better", "initprune better")
                )
                rows.append([folder, what, SHORT[c], f"{s:g}", _cell(ours), _cell(ref), text, verdict])
    if not rows:
        return [*lines, "No runs yet.", ""]
    header = [
        "variant",
        "behaviour",
        "criterion",
        "sparsity",
        "initprune",
        "reference",
        "ref − initprune",
        "verdict",
    ]
    lines += [*table(header, rows), ""]
    rank_rows = []
    for s in (0.99, 0.998):
        for name, source in (("initprune", None), ("reference (all)", together)):
            means = {}
            for c in ("grasp", "synflow", "hutch_pruner"):
                runs = _runs(main, c, s) if source is None else source.get((c, s), pd.DataFrame())
                if not runs.empty:
                    means[c] = float(runs["acc"].mean())
            if means:
                rank_rows.append([f"{s:g}", name, ranking({SHORT[c]: m for c, m in means.items()})])
    lines += [
        "Ranking by mean test accuracy (%):",
        "",
        *table(["sparsity", "setting", "ranking"], rank_rows),
        "",
    ]
    if plot is not None:
        criteria, sparsities = ["grasp", "synflow", "hutch_pruner"], [0.99, 0.998]
        groups = {
            "initprune (main grid)": seed_accuracies(main, criteria, sparsities),
            "every reference-code behaviour": {key: _seed_acc(runs) for key, runs in together.items()},
        }
        title = "The paper's reference-code behaviours, all at once, against initprune's"
        accuracy_plot(groups, criteria, sparsities, plot, title)
        lines += [f"![{title}]({plot.name})", ""]
    return lines


EPOCHS15_CRITERIA = ("random", "magnitude", "snip", "fisher_pruner", "hutch_pruner", "ggn_pruner")


def epochs15_section(
    study: Path,
    main: pd.DataFrame,
    folder: str = "epochs15",
    criteria: tuple[str, ...] = EPOCHS15_CRITERIA,
    network: str = "",
) -> list[str]:
    """Seed 0 at 0.99 after 2 (``main``) and after 15 epochs (``folder``): does the ranking hold?"""
    lines = [f"## Does the ranking at 0.99 hold with 15 epochs{network}? (seed 0)", ""]
    long, dense = load(study / folder), load(study / f"{folder}_dense")
    if long.empty:
        return [*lines, "No runs yet.", ""]
    short_acc = {c: _seed_acc(_runs(main, c, 0.99)).get(0) for c in criteria}
    long_acc = {c: _seed_acc(_runs(long, c, 0.99)).get(0) for c in criteria}

    def ranks(acc: dict[str, float | None]) -> dict[str, int]:
        known = sorted((c for c in acc if acc[c] is not None), key=lambda c: -acc[c])
        return {c: i + 1 for i, c in enumerate(known)}

    r2, r15 = ranks(short_acc), ranks(long_acc)
    rows = [
        [
            SHORT[c],
            "–" if short_acc[c] is None else f"{short_acc[c]:.2f}",
            str(r2.get(c, "–")),
            "–" if long_acc[c] is None else f"{long_acc[c]:.2f}",
            str(r15.get(c, "–")),
        ]
        for c in criteria
    ]
    lines += table(["criterion", "2 epochs", "rank", "15 epochs", "rank"], rows)
    if not dense.empty:
        lines += ["", f"Dense after 15 epochs: {mean_std(list(dense['acc']))} %."]
    return [*lines, ""]


def resnet20_section(study: Path, frame: pd.DataFrame, plot: Path) -> list[str]:
    """ResNet-20's runs (``frame``, the ``resnet20`` grid) against its dense runs, HP against each
    criterion, and the layers each mask cuts."""
    lines = ["## Second architecture: ResNet-20 (width 0.5, BatchNorm)", ""]
    dense = load(study / "resnet20_dense")
    if frame.empty:
        return [*lines, "No runs yet.", ""]
    if not dense.empty:
        lines += [f"Dense reference: {mean_std(list(dense['acc']))} %.", ""]
    criteria = [c for c in SHORT if c in set(frame["criterion"])]
    lines += accuracy_table(frame, criteria)
    sparsities = sorted(set(frame["sparsity"]))
    groups = {"ResNet-20": seed_accuracies(frame, criteria, sparsities)}
    accuracy_plot(groups, criteria, sparsities, plot, "ResNet-20 (width 0.5) on Fashion-MNIST, 2 epochs")
    lines += ["", f"![ResNet-20 accuracy]({plot.name})", ""]
    rows = []
    for s in sparsities:
        hp = _seed_acc(_runs(frame, "hutch_pruner", s))
        for c in criteria:
            if c != "hutch_pruner":
                rows.append([f"{s:g}", SHORT[c], *paired(hp, _seed_acc(_runs(frame, c, s)))])
    lines += [*table(["sparsity", "B", "HP − B (points)", "verdict"], rows), ""]
    return [*lines, *layer_damage_table(frame, criteria, study / "resnet20_paths.json")]


def noise_floor_section(study: Path, main: pd.DataFrame) -> list[str]:
    """How far one mask moves with the data order alone (``noise_floor/train``: train_seed 0..4) and HP
    with its probes alone (``noise_floor/probe``: probe_seed 0..4), at 0.99, seed 0; sets :data:`NOISE`."""
    lines = ["## The noise floor (0.99, seed 0)", ""]
    train, probe = load(study / "noise_floor" / "train"), load(study / "noise_floor" / "probe")
    if train.empty and probe.empty:
        return [*lines, "No runs yet (`noise_floor.sh`).", ""]
    lines += [
        "One mask per criterion (seed 0: initialization, scoring samples, probes) trained with 5 data "
        "orders (`train_seed`), and HP scored with 5 probe draws (`probe_seed`) on the seed-0 "
        "initialization and trained with the seed-0 order. Std over the draws (points); an effect below "
        "the training noise is marked in every table of this file.",
        "",
    ]
    rows, variances = [], []
    for c in ("hutch_pruner", "snip", "synflow"):
        accs = list(_runs(train, c, 0.99)["acc"]) if not train.empty else []
        if len(accs) > 1:
            variances.append(_std(accs) ** 2)
        same = _runs(train, c, 0.99, train_seed=0)
        reproduced = _seed_acc(_runs(main, c, 0.99)).get(0)
        check = "–"
        if reproduced is not None and not same.empty:
            check = f"{float(same['acc'].iloc[0]) - reproduced:+.2f}"
        rows.append(
            [SHORT[c], "data order", mean_std(accs), f"{_std(accs):.2f}" if len(accs) > 1 else "–", check]
        )
    accs = list(_runs(probe, "hutch_pruner", 0.99)["acc"]) if not probe.empty else []
    rows.append(["HP", "probes", mean_std(accs), f"{_std(accs):.2f}" if len(accs) > 1 else "–", "–"])
    if variances:
        NOISE["training"] = math.sqrt(sum(variances) / len(variances))
    if len(accs) > 1:
        NOISE["probes"] = _std(accs)
    header = ["criterion", "redrawn", "accuracy", "std", "train_seed 0 − main grid seed 0"]
    lines += table(header, rows)
    found = ", ".join(f"{k} {v:.2f}" for k, v in NOISE.items())
    lines += ["", f"Noise floor (std, points; training pooled over the three criteria): {found or '–'}.", ""]
    return lines


def converged_section(study: Path, folder: str, criteria: list[str], title: str, plot: Path) -> list[str]:
    """The 15-epoch runs (``folder``, lr warmup of one epoch): accuracy, dense, the claim-1 comparisons
    (best Hutchinson against the best other, HP and HD against each other criterion) and claim 3's (FP and
    exact OBD against SNIP)."""
    lines = [f"## {title}", ""]
    frame, dense = load(study / folder), load(study / f"{folder}_dense")
    if frame.empty:
        return [*lines, f"No runs yet (`{folder}.sh`).", ""]
    if not dense.empty:
        lines += [f"Dense reference: {mean_std(list(dense['acc']))} %.", ""]
    present = [c for c in criteria if c in set(frame["criterion"])]
    sparsities = sorted(set(frame["sparsity"]))
    lines += accuracy_table(frame, present)
    accuracy_plot({title: seed_accuracies(frame, present, sparsities)}, present, sparsities, plot, title)
    lines += [f"![{title}]({plot.name})", ""]
    hutch = [c for c in present if c in HUTCHINSON]
    others = [c for c in present if c not in HUTCHINSON]
    primary = folder == "converged"  # holds claim 1's primary test (primary_section)
    rows = []
    for s in sparsities:
        h, h_acc = best_of(frame, hutch, s)
        o, o_acc = best_of(frame, others, s)
        if h is not None and o is not None:
            rows.append(
                [f"{s:g}", f"best Hutchinson ({SHORT[h]})", f"best other ({SHORT[o]})", *paired(h_acc, o_acc)]
            )
        for a in hutch:
            for b in present:
                if primary and s == PRIMARY_SPARSITY and (a, b) in PRIMARY_PAIRS:
                    continue  # the primary test's (primary_section), not corrected with these
                if b != a and not (b in hutch and present.index(b) < present.index(a)):
                    acc_a, acc_b = accuracies(frame, a, s), accuracies(frame, b, s)
                    rows.append([f"{s:g}", SHORT[a], SHORT[b], *paired(acc_a, acc_b)])
        for a in (c for c in present if c in CURVATURE and c not in hutch):  # claim 3 (Hutchinson's: above)
            for b in (c for c in present if c in FIRST_ORDER):
                rows.append(
                    [f"{s:g}", SHORT[a], SHORT[b], *paired(accuracies(frame, a, s), accuracies(frame, b, s))]
                )
    header = ["sparsity", "A", "B", "A − B (points) [95 % interval] n", "verdict"]
    if primary:
        lines += [
            f"HD − SynFlow and HP − SynFlow at {PRIMARY_SPARSITY:g} are the primary test of claim 1 "
            "([above](#claim-1-the-primary-test)); the rest are exploratory.",
            "",
        ]
    return [*lines, *table(header, rows), ""]


def primary_section(study: Path) -> list[str]:
    """Claim 1's confirmatory test, fixed before seeds 7 and 99 ran: converged VGG-11 (15 epochs, lr warmup
    of 1 epoch) at 0.99, HD − SynFlow and HP − SynFlow over every seed, Holm-corrected over these two
    alone (:data:`PRIMARY`)."""
    lines = [
        "## Claim 1: the primary test",
        "",
        "Fixed before seeds 7 and 99 ran: converged VGG-11 (`converged/`, 15 epochs, lr warmup of 1 epoch) "
        f"at {PRIMARY_SPARSITY:g}, each Hutchinson criterion against SynFlow (the best other criterion there "
        "after 15 epochs on seeds 0, 42, 123) over every seed, Holm-corrected over these two comparisons "
        "alone. `A better`: claim 1 held against SynFlow; `B better`: not held; undecided: neither "
        "difference is told from 0 at this n. Every other comparison in this file is exploratory.",
        "",
    ]
    frame = load(study / "converged")
    if frame.empty:
        return [*lines, "No runs yet (`converged.sh`).", ""]
    rows = [
        [SHORT[a], SHORT[b], *paired(
            accuracies(frame, a, PRIMARY_SPARSITY), accuracies(frame, b, PRIMARY_SPARSITY), family=PRIMARY
        )]
        for a, b in PRIMARY_PAIRS
    ]  # fmt: skip
    header = ["A", "B", "A − B (points) [95 % interval] n", "verdict"]
    return [*lines, *table(header, rows), ""]


def _densities_source(run: pd.Series) -> str:
    if run.get("scope") == "erk" and not isinstance(run.get("layer_densities"), str):
        return "ERK"
    source = str(run.get("layer_densities"))
    return (
        "HP" if "criterion=hutch_pruner" in source else "SynFlow" if "criterion=synflow" in source else source
    )


def transplant_section(study: Path, main: pd.DataFrame) -> list[str]:
    """Each layer's density from HP, SynFlow or ERK, filled by magnitude, random, exact OBD and HP."""
    lines = ["## The mechanism: allocation transplant", ""]
    frame = load(study / "transplant")
    if frame.empty:
        return [*lines, "No runs yet (`transplant.sh`).", ""]
    frame["densities"] = [_densities_source(r) for _, r in frame.iterrows()]
    fills = [c for c in ("magnitude", "random", "ggn_pruner", "hutch_pruner") if c in set(frame["criterion"])]
    sources = [d for d in ("HP", "SynFlow", "ERK") if d in set(frame["densities"])]
    sparsities = sorted(set(frame["sparsity"]))
    lines += [
        "Test accuracy (%) after 2 epochs, mean ± std over seeds: rows = whose per-layer densities, "
        "columns = what ranks the weights within each layer. If the allocation decides the high-sparsity "
        "end, the rows of one allocation rank together whatever fills them. `own` is the allocation's own "
        "criterion with its own ranking (the main grid).",
        "",
    ]
    header = ["sparsity", "densities"] + [SHORT[c] for c in fills] + ["own"]
    rows = []
    for s in sparsities:
        for d in sources:
            sub = frame[frame["densities"] == d]
            own = {"HP": "hutch_pruner", "SynFlow": "synflow"}.get(d)
            rows.append([f"{s:g}", d] + [_cell(_runs(sub, c, s)) for c in fills]
                        + [_cell(_runs(main, own, s)) if own else "–"])  # fmt: skip
    lines += [*table(header, rows), ""]
    rows = []
    for s in sparsities:
        for c in fills:
            by = {d: _seed_acc(_runs(frame[frame["densities"] == d], c, s)) for d in sources}
            for i, a in enumerate(sources):
                for b in sources[i + 1 :]:
                    rows.append([f"{s:g}", SHORT[c], a, b, *paired(by[a], by[b])])
    header = [
        "sparsity",
        "filled by",
        "A: densities",
        "B: densities",
        "A − B (points) [95 % interval] n",
        "verdict",
    ]
    lines += [
        "Does the allocation decide (same fill, other densities):",
        "",
        *table(header, rows),
        "",
        "Does the ranking within layers matter (same densities, each fill against the allocation's own "
        "mask from the main grid):",
        "",
    ]
    rows = []
    for s in sparsities:
        for d in sources:
            own = {"HP": "hutch_pruner", "SynFlow": "synflow"}.get(d)
            if own is None:
                continue
            own_acc = _seed_acc(_runs(main, own, s))
            for c in fills:
                fill = _seed_acc(_runs(frame[frame["densities"] == d], c, s))
                rows.append([f"{s:g}", d, SHORT[c], *paired(fill, own_acc)])
    header = ["sparsity", "densities", "filled by", "fill − own mask (points) [95 % interval] n", "verdict"]
    return [*lines, *table(header, rows), ""]


def iterative_section(study: Path, main: pd.DataFrame, plots: Path) -> list[str]:
    """FP, exact OBD and HP in 1 (main grid), 10 and 100 rounds, against SynFlow's 100 rounds; each round
    with the first warmup's BatchNorm statistics (``iterative``, the pipeline's default) and with the warmup
    run again before every later round (``iterative_round_warmup``); the two against each other."""
    criteria = ["fisher_pruner", "ggn_pruner", "hutch_pruner"]
    frames = {False: load(study / "iterative"), True: load(study / "iterative_round_warmup")}
    lines: list[str] = []
    for rewarm, title, plot in (
        (False, "Beyond the paper: iterative curvature (rounds of SynFlow's schedule; 1: the main grid)",
         plots / "iterative.png"),
        (True, "Iterative curvature, the BatchNorm warmup run again before every round (`--round-warmup`)",
         plots / "iterative_round_warmup.png"),
    ):  # fmt: skip
        lines += ablation_section(
            title, frames[rewarm], "rounds", [None, 10, 100], criteria, [0.995, 0.998], base=main,
            base_value=None, per_layer=True, plot=plot,
        )  # fmt: skip
    if frames[False].empty and frames[True].empty:
        return lines
    lines += [
        "Each iterative mask against SynFlow's (the main grid, 100 rounds), and the round warmup against "
        "the first warmup's statistics (same criterion, rounds and seed):",
        "",
    ]
    rows = []
    for s in (0.995, 0.998):
        synflow = accuracies(main, "synflow", s)
        for c in criteria:
            for r in (10, 100):
                stale = accuracies(frames[False], c, s, rounds=r)
                fresh = accuracies(frames[True], c, s, rounds=r)
                rows.append(
                    [f"{s:g}", SHORT[c], str(r), *paired(stale, synflow), *paired(fresh, synflow),
                     *paired(fresh, stale, ("round warmup better", "first warmup better"))]
                )  # fmt: skip
    header = [
        "sparsity", "criterion", "rounds", "first warmup − SynFlow (points) [95 % interval] n", "verdict",
        "round warmup − SynFlow", "verdict", "round warmup − first warmup", "verdict",
    ]  # fmt: skip
    return [*lines, *table(header, rows), ""]


def _stage(name: str) -> str:
    """'layer2.0.shortcut.0.weight' -> 'layer2 shortcut'; 'layer3.1.conv2.weight' -> 'layer3';
    'conv1.weight' -> 'stem'; 'fc.weight' -> 'fc'."""
    parts = name.split(".")
    if not parts[0].startswith("layer"):
        return {"conv1": "stem"}.get(parts[0], parts[0])
    return f"{parts[0]} shortcut" if "shortcut" in parts else parts[0]


def layer_damage_table(frame: pd.DataFrame, criteria: list[str], cache: Path) -> list[str]:
    """Per run of a residual network: which layers the mask empties or cuts off, and whether the whole
    network keeps an input-output path (the number R of such paths, counted as
    ``initprune.collapse.paths_through_weights`` does, from the run's ``mask.pt``; kept in ``cache``
    because masks are not committed). On a ResNet an empty or cut-off layer inside a residual branch
    removes that branch, and the identity shortcut still carries the signal: `cK` counts layers there,
    not failed networks."""
    lines = [
        "Layers a mask empties (E) or cuts off (D: kept weights on no input-output path; D includes E), by "
        "stage, per seed; `paths` is the number of input-output paths the masked network keeps (0: the "
        "network is cut; average pooling weights each path by 1/area, so it need not be an integer). "
        "Residual stages hold 6 convolutions (`layerK`), the downsampling stages also a "
        "1×1 projection (`layerK shortcut`). A cut-off convolution inside a residual branch takes that "
        "branch out; the identity shortcut still carries the signal, so a run with D > 0 can train.",
        "",
    ]
    paths = network_paths(frame, cache)
    rows = []
    for s in sorted(set(frame["sparsity"])):
        for c in criteria:
            for _, run in _runs(frame, c, s).sort_values("seed").iterrows():
                empty, cut = list(run["collapsed_layers"]), list(run["disconnected_layers"])
                stages = Counter(_stage(name) for name in cut)
                where = ", ".join(f"{k} {v}" for k, v in stages.items()) or "–"
                r = paths.get(Path(run["_folder"]))
                rows.append([
                    f"{s:g}", SHORT[c], str(int(run["seed"])), f"{run['acc']:.2f}", str(len(empty)),
                    str(len(cut)), where, "?" if r is None else f"{r:.3g}",
                ])  # fmt: skip
    header = ["sparsity", "criterion", "seed", "accuracy", "E", "D", "cut off, by stage", "paths"]
    return [*lines, *table(header, rows), ""]


def network_paths(frame: pd.DataFrame, cache: Path) -> dict[Path, float]:
    """Number of input-output paths of each run's masked network (``paths_through_weights``), from its
    ``mask.pt`` and its model (a 10-class network on 1×28×28 inputs, the testbed's), every weight the mask
    does not cover counted as kept; kept in ``cache`` for the runs whose masks are absent
    (:func:`values_from_masks`)."""
    import torch

    from initprune.collapse import paths_through_weights
    from initprune.masks import Mask
    from initprune.models import create_model

    def count(run: pd.Series) -> Callable[[], float] | None:
        folder = Path(run["_folder"])
        if not (folder / "mask.pt").exists():
            return None
        options = run["model_options"] if isinstance(run["model_options"], dict) else {}
        model = create_model(run["model"], num_classes=10, in_channels=1, **options)
        # the weights the mask leaves out (the classifier) count every path once, as kept weights do;
        # with their random initial magnitudes the count would change with each model built here
        whole = {n: torch.ones_like(w, dtype=torch.bool) for n, w in model.named_parameters() if w.dim() > 1}
        return lambda: paths_through_weights(model, {**whole, **Mask.load(folder / "mask.pt")}, (1, 28, 28))[
            0
        ]

    runs = {Path(run["_folder"]): run for _, run in frame.iterrows()}
    values = values_from_masks(cache, {_folder_key(f): count(run) for f, run in runs.items()})
    return {f: values[_folder_key(f)] for f in runs if _folder_key(f) in values}


def pat_section(study: Path, main: pd.DataFrame) -> list[str]:
    """Prune after training (global magnitude) next to the best criterion at initialization."""
    lines = ["## Prune after training (PaT): the reference the paper measures against", ""]
    pat = load(study / "pat")
    if pat.empty:
        return [*lines, "No runs yet.", ""]
    lines += [
        "Dense training for 2 epochs, global magnitude pruning, 2 epochs of retraining with the mask, "
        "against the best pruning-at-initialization criterion (by mean) of the main grid and HP.",
        "",
    ]
    criteria = [c for c in SHORT if c in set(main["criterion"])]
    rows = []
    for s in sorted(set(pat["sparsity"])):
        after = _runs(pat, "magnitude", s)
        best, best_acc = best_of(main, criteria, s)
        hp = _runs(main, "hutch_pruner", s)
        row = [f"{s:g}", _cell(after)]
        row += [f"{SHORT[best]} {mean_std(list(best_acc.values()))}" if best else "–"]
        row += [
            " ".join(paired(_seed_acc(after), best_acc)),
            _cell(hp),
            " ".join(paired(_seed_acc(after), _seed_acc(hp))),
        ]
        rows.append(row)
    header = ["sparsity", "PaT (magnitude)", "best PaI", "PaT − best PaI", "HP", "PaT − HP"]
    return [*lines, *table(header, rows), ""]


def _folder_key(folder: Path) -> str:
    """A run folder as the study's caches name it: its grid folder and its own name."""
    return f"{folder.parent.name}/{folder.name}"


def values_from_masks(cache: Path, wanted: dict[str, Callable[[], float] | None]) -> dict[str, float]:
    """name -> value, computed by ``wanted[name]`` where it is given (the runs' ``mask.pt`` files are
    present) and read from ``cache`` otherwise. ``mask.pt`` is not committed, so every value computed
    here is also kept in ``cache``, a small JSON committed with the study (written atomically)."""
    import json

    stored = json.loads(cache.read_text()) if cache.exists() else {}
    for name, compute in wanted.items():
        if compute is not None:
            stored[name] = compute()
    if stored:
        atomic_write_text(cache, json.dumps(dict(sorted(stored.items())), indent=1) + "\n")
    return {name: float(stored[name]) for name in wanted if name in stored}


def mask_jaccards(pairs: list[tuple[Path, Path]], cache: Path) -> dict[tuple[Path, Path], float]:
    """Jaccard overlap of the kept sets of each pair of run folders, from their ``mask.pt`` files; kept in
    ``cache`` (keyed by the two folders) for the pairs whose masks are absent (:func:`values_from_masks`)."""
    from initprune.masks import Mask

    masks: dict[Path, dict] = {}

    def mask(folder: Path) -> dict:
        if folder not in masks:
            masks[folder] = dict(Mask.load(folder / "mask.pt"))
        return masks[folder]

    def overlap(a: Path, b: Path) -> Callable[[], float] | None:
        if not ((a / "mask.pt").exists() and (b / "mask.pt").exists()):
            return None
        return lambda: jaccard(mask(a), mask(b))

    names = {(a, b): f"{_folder_key(a)} | {_folder_key(b)}" for a, b in pairs}
    values = values_from_masks(cache, {name: overlap(a, b) for (a, b), name in names.items()})
    return {pair: values[name] for pair, name in names.items() if name in values}


def probes_section(
    probes: pd.DataFrame, main: pd.DataFrame, ggn_t200: pd.DataFrame, cache: Path
) -> list[str]:
    lines = [
        "## Hutchinson probes per sample (HP at 0.99)",
        "",
        "Jaccard overlap of the kept sets with the exact OBD mask of the same seed: at T = 1 (`ggn_pruner`, "
        "main grid) and at T = 200 (`temperature_ggn`), the temperature HP uses, so the diagonal HP "
        "estimates; and between seeds. A seed sets the initial weights, the scoring samples and the "
        "probes, so the between-seed overlap of the exact OBD masks (last rows, no probes) is what remains "
        "without probe noise.",
        "",
    ]
    if probes.empty:
        return [*lines, "No runs yet.", ""]

    def by_seed(frame: pd.DataFrame) -> dict[int, Path]:
        return {int(r["seed"]): Path(r["_folder"]) for _, r in frame.iterrows()}

    ggn = _runs(main, "ggn_pruner", 0.99)
    t200 = _runs(ggn_t200, "ggn_pruner", 0.99, temperature=200.0)
    exact = {"T=1": by_seed(ggn), "T=200": by_seed(t200)}
    groups: list[tuple[str, pd.DataFrame]] = [
        (str(k), probes[probes["criterion_options"].map(lambda o, k=k: json_probes(o) == k)])
        for k in sorted(set(int(json_probes(o)) for o in probes["criterion_options"]))
    ]
    groups += [("exact OBD, T = 1 (`ggn_pruner`)", ggn), ("exact OBD, T = 200", t200)]
    pairs = []
    for _, sub in groups:
        runs = by_seed(sub)
        for ref in exact.values():
            pairs += [(f, ref[s]) for s, f in runs.items() if s in ref and f != ref[s]]
        seeds = sorted(runs)
        pairs += [(runs[a], runs[b]) for i, a in enumerate(seeds) for b in seeds[i + 1 :]]
    counts = [(label, by_seed(sub)) for label, sub in groups if label.isdigit()]
    count_pairs = [(a, b) for i, a in enumerate(counts) for b in counts[i + 1 :]]
    pairs += [(ra[s], rb[s]) for (_, ra), (_, rb) in count_pairs for s in ra if s in rb]
    overlap = mask_jaccards(pairs, cache)
    rows = []
    for label, sub in groups:
        runs = by_seed(sub)
        seeds = sorted(runs)
        row = [label, mean_std(list(sub["acc"]))]
        for ref in exact.values():
            found = [overlap[(f, ref[s])] for s, f in runs.items() if (f, ref.get(s)) in overlap]
            row.append(mean_std(found) if found else "–")
        between = [overlap[(runs[a], runs[b])] for i, a in enumerate(seeds) for b in seeds[i + 1 :]
                   if (runs[a], runs[b]) in overlap]  # fmt: skip
        rows.append([*row, mean_std(between) if between else "–"])
    header = [
        "probes",
        "accuracy",
        "Jaccard with exact OBD, T = 1",
        "with exact OBD, T = 200",
        "between seeds",
    ]
    lines += table(header, rows)
    rows = []
    for (la, ra), (lb, rb) in count_pairs:
        found = [overlap[(ra[s], rb[s])] for s in ra if s in rb and (ra[s], rb[s]) in overlap]
        if found:
            rows.append([f"{la} and {lb}", mean_std(found), f"{min(found):.3f}–{max(found):.3f}"])
    if rows:
        lines += [
            "",
            "Between probe counts, same seed (Jaccard of the kept sets). Probes are drawn per sample index, "
            "so a run with more probes reuses the draws of one with fewer: the overlap follows the share "
            "of common draws (1/3, 1/10, 1/30), not a convergence toward the exact mask.",
            "",
            *table(["probes", "Jaccard", "range over seeds"], rows),
        ]
    return [*lines, ""]


def json_probes(options: Any) -> int:
    if isinstance(options, str):
        import json

        options = json.loads(options) if options else {}
    return int((options or {}).get("probes", 10))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", default="docs/results/fashion_mnist/study")
    parser.add_argument("--out", default=None, help="default: STUDY/report/claims.md")
    args = parser.parse_args()
    study = Path(args.study)
    out = Path(args.out) if args.out else study / "report" / "claims.md"
    main_runs, dense = load(study / "main"), load(study / "main_dense")
    lines = [
        "# Claims of the paper, measured",
        "",
        f"Made by `python {COMMAND}`.",
        "",
        "A − B is taken per seed (a seed fixes the initial weights, the scoring samples and the data order) "
        "and given as its mean, the paired 95 % t-interval and n, then the range of the per-seed "
        "differences. Verdict: the two-sided paired t-test's p-value adjusted by Holm's method for the "
        "number of comparisons of its family (p̃, given with each verdict): the two of claim 1's primary "
        "test, fixed in advance, or every other comparison in this file; `A better` (the claim A > B "
        f"held) or `B better` (not held) where p̃ < {ALPHA:g}, undecided otherwise; with n = 1 nothing is "
        "decided. The best criterion of a family is picked by its mean, which favours it slightly.",
        "",
        _COUNT_TOKEN,
        "",
    ]
    figures = out.parent
    figures.mkdir(parents=True, exist_ok=True)
    lines += noise_floor_section(study, main_runs)
    lines += primary_section(study)
    lines += main_grid_section(main_runs, dense)
    warmup = load(study / "warmup")
    lines += ablation_section(
        "Claim 2: BatchNorm warmup (batches of 512 before scoring; None = one full pass)",
        warmup, "warmup_batches", [0, 20, None],
        ["snip", "grasp", "fisher_pruner", "hutch_pruner", "ggn_pruner"], [0.99, 0.998],
        base=main_runs, base_value=20, per_layer=True, plot=figures / "warmup.png",
    )  # fmt: skip
    scope = load(study / "scope")
    lines += ablation_section(
        "Scope: global (main grid), layerwise, ERK", scope, "scope", ["global", "layerwise", "erk"],
        ["fisher_pruner", "ggn_pruner", "hutch_pruner"], [0.99, 0.998], base=main_runs, base_value="global",
        per_layer=True, plot=figures / "scope.png",
    )  # fmt: skip
    lines += reference_section(study, main_runs, figures / "reference.png")
    lines += epochs15_section(study, main_runs)
    resnet20 = load(study / "resnet20")
    lines += resnet20_section(study, resnet20, figures / "resnet20.png")
    lines += epochs15_section(
        study, resnet20, "resnet20_epochs15",
        ("hutch_pruner", "synflow", "snip", "magnitude"), " on ResNet-20",
    )  # fmt: skip
    lines += ablation_section(
        "Claim 2 on ResNet-20: BatchNorm warmup of 20 batches (`resnet20`) and none",
        load(study / "resnet20_warmup"), "warmup_batches", [20, 0],
        ["snip", "fisher_pruner", "hutch_pruner", "ggn_pruner"], [0.99, 0.998],
        base=resnet20, base_value=20, per_layer=True, plot=figures / "resnet20_warmup.png",
    )  # fmt: skip
    lines += ablation_section(
        "Temperature: Hutchinson criteria at T = 200 (their default, the main grid) and T = 1",
        load(study / "temperature_hutch"), "temperature", [200.0, 1.0], ["hutch_pruner", "hutch_taylor"],
        [0.99, 0.998], base=main_runs, base_value=200.0, plot=figures / "temperature_hutch.png",
    )  # fmt: skip
    temperature_ggn = load(study / "temperature_ggn")
    lines += ablation_section(
        "Temperature: exact OBD at T = 1 (its default, the main grid) and T = 200",
        temperature_ggn, "temperature", [1.0, 200.0], ["ggn_pruner"], [0.99, 0.998],
        base=main_runs, base_value=1.0,
    )  # fmt: skip
    lines += probes_section(load(study / "probes"), main_runs, temperature_ggn, study / "probes_jaccard.json")
    lines += ablation_section(
        "Scoring samples per class (10: the main grid)", load(study / "scoring_samples"),
        "scoring_per_class", [10, 1, 50], ["fisher_pruner", "hutch_pruner"], [0.99],
        base=main_runs, base_value=10, plot=figures / "scoring_samples.png",
    )  # fmt: skip
    lines += pat_section(study, main_runs)
    converged = [
        "random",
        "magnitude",
        "snip",
        "synflow",
        "hutch_diag",
        "hutch_pruner",
        "fisher_pruner",
        "ggn_pruner",
    ]
    lines += converged_section(
        study, "converged", converged, "Converged: VGG-11, 15 epochs, lr warmup of 1 epoch",
        figures / "converged.png",
    )  # fmt: skip
    lines += converged_section(
        study, "converged_resnet20", ["hutch_pruner", "synflow", "snip"],
        "Converged: ResNet-20 (width 0.5), 15 epochs, lr warmup of 1 epoch",
        figures / "converged_resnet20.png",
    )  # fmt: skip
    lines += transplant_section(study, main_runs)
    lines += iterative_section(study, main_runs, figures)
    atomic_write_text(out, decide("\n".join(lines)) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
