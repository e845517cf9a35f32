"""The study's claim tables: paired differences between criteria (same seed = same initial weights and
scoring samples), with their spread over seeds, from the run folders of the study.

    python docs/results/fashion_mnist/study/claims.py [--study docs/results/fashion_mnist/study]
                                                    [--out docs/results/fashion_mnist/study/report/claims.md]

Reads every finished run below the study's folders (``main``, ``main_dense``, ``warmup``, ``scope``,
``reference_*``, ``epochs15``, ``resnet20``, ``temperature``, ``probes``, ``scoring_samples``, ``pat``)
with ``initprune.experiments.report.collect``, and writes one markdown file. Accuracies are test accuracy
in %; a difference "A − B" is taken per seed and summarised as mean ± std (n) with its range; **agree**
means every seed has the same sign and |mean| exceeds the larger of the two criteria's seed std.
The probes table also gives the Jaccard overlap of kept sets, read from the runs' ``mask.pt`` files
(present where the runs were made; they are not committed).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd

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
    frame["collapsed"] = [
        bool(c) or bool(d)
        for c, d in zip(frame["collapsed_layers"], frame["disconnected_layers"], strict=True)
    ]
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


def accuracies(frame: pd.DataFrame, criterion: str, sparsity: float, **where: Any) -> dict[Any, float]:
    """seed → test accuracy of the runs matching ``criterion``, ``sparsity`` and ``where``."""
    if frame.empty:
        return {}
    rows = frame[(frame["criterion"] == criterion) & (frame["sparsity"] == round(sparsity, 6))]
    for key, value in where.items():
        if key not in rows:
            return {}
        rows = rows[rows[key].map(lambda v, value=value: _same(v, value))]
    return {int(seed): float(acc) for seed, acc in zip(rows["seed"], rows["acc"], strict=True)}


def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None
    return a == b


def paired(a: dict[Any, float], b: dict[Any, float]) -> tuple[str, str]:
    """('mean ± std (n) [min, max]' of a − b over common seeds, verdict)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "–", "no data"
    diffs = [a[s] - b[s] for s in seeds]
    mean = sum(diffs) / len(diffs)
    text = mean_std(diffs) + f" [{min(diffs):+.2f}, {max(diffs):+.2f}]"
    if len(seeds) < 3:
        return text, f"undecided (n={len(seeds)})"
    spread = max(_std([a[s] for s in seeds]), _std([b[s] for s in seeds]))
    same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    if same_sign and abs(mean) > spread:
        return text, "A better, seeds agree" if mean > 0 else "B better, seeds agree"
    return text, "within seed spread"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
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
    rows = []
    for s in sparsities:
        row = [f"{s:g}"]
        for c in criteria:
            acc = accuracies(main, c, s)
            runs = main[(main["criterion"] == c) & (main["sparsity"] == s)]
            coll = int(runs["collapsed"].sum())
            chance = int(((runs["acc"] <= CHANCE) & ~runs["collapsed"]).sum())
            row.append(
                mean_std(list(acc.values()))
                + (f" c{coll}" if coll else "")
                + (f" t{chance}" if chance else "")
            )
        rows.append(row)
    lines += [
        "Test accuracy (%), mean ± std over seeds; `cK`: K runs collapsed (a layer empty, or its kept "
        f"weights on no input-output path); `tK`: K runs not collapsed that stayed at chance "
        f"(≤ {CHANCE:g} %).",
        "",
    ]
    lines += [*table(["sparsity"] + [SHORT[c] for c in criteria], rows), ""]

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
) -> list[str]:
    """Accuracy per (criterion, sparsity) for each value of ``key``, and the difference of each value
    against the first; ``base`` supplies ``base_value``'s runs where the ablation reuses another grid."""
    lines = [f"## {title}", ""]
    if frame.empty:
        return [*lines, "No runs yet.", ""]
    header = ["criterion", "sparsity"] + [f"{key}={v}" for v in values]
    header += [f"{key}={v} − {key}={values[0]}" for v in values[1:]]
    rows = []
    for c in criteria:
        for s in sparsities:
            accs, colls = [], []
            for v in values:
                source = base if (base is not None and v == base_value) else frame
                where = {} if source is base else {key: v}
                acc = accuracies(source, c, s, **where)
                accs.append(acc)
                sub = (
                    source[(source["criterion"] == c) & (source["sparsity"] == round(s, 6))]
                    if len(source)
                    else []
                )
                if len(sub) and source is not base:
                    sub = sub[sub[key].map(lambda x, v=v: _same(x, v))]
                colls.append(int(sub["collapsed"].sum()) if len(sub) else 0)
            row = [SHORT.get(c, c), f"{s:g}"]
            row += [
                mean_std(list(a.values())) + (f" c{k}" if k else "") for a, k in zip(accs, colls, strict=True)
            ]
            row += [" ".join(paired(a, accs[0])) for a in accs[1:]]
            rows.append(row)
    lines += [*table(header, rows), ""]
    if per_layer:
        lines += _layer_density_lines(frame, key, values, criteria, sparsities)
    return lines


def _layer_density_lines(
    frame: pd.DataFrame, key: str, values: list[Any], criteria: list[str], sparsities: list[float]
) -> list[str]:
    lines = ["Smallest per-layer density (%) of each run's mask, mean over seeds, and its layer:", ""]
    rows = []
    for c in criteria:
        for s in sparsities:
            for v in values:
                sub = frame[(frame["criterion"] == c) & (frame["sparsity"] == round(s, 6))]
                sub = sub[sub[key].map(lambda x, v=v: _same(x, v))] if key in sub else sub.iloc[0:0]
                if not len(sub):
                    continue
                mins = [min(d.items(), key=lambda kv: kv[1]) for d in sub["per_layer_density"]]
                layers = sorted({name for name, _ in mins})
                mean_min = 100 * sum(d for _, d in mins) / len(mins)
                rows.append([SHORT.get(c, c), f"{s:g}", str(v), f"{mean_min:.3f}", ", ".join(layers)])
    return lines + table(["criterion", "sparsity", key, "min density", "layer(s)"], rows) + [""]


def probes_section(probes: pd.DataFrame, main: pd.DataFrame) -> list[str]:
    from initprune.masks import Mask

    lines = ["## Hutchinson probes per sample (HP at 0.99)", ""]
    if probes.empty:
        return [*lines, "No runs yet.", ""]
    ggn = main[(main["criterion"] == "ggn_pruner") & (main["sparsity"] == 0.99)] if len(main) else main
    ggn_masks = {}
    for _, run in ggn.iterrows():
        path = Path(run["_folder"]) / "mask.pt"
        if path.exists():
            ggn_masks[int(run["seed"])] = dict(Mask.load(path))
    rows = []
    for k in sorted(set(int(json_probes(o)) for o in probes["criterion_options"])):
        sub = probes[probes["criterion_options"].map(lambda o, k=k: json_probes(o) == k)]
        masks = {}
        for _, run in sub.iterrows():
            path = Path(run["_folder"]) / "mask.pt"
            if path.exists():
                masks[int(run["seed"])] = dict(Mask.load(path))
        to_exact = [jaccard(m, ggn_masks[s]) for s, m in masks.items() if s in ggn_masks]
        seeds = sorted(masks)
        between = [jaccard(masks[a], masks[b]) for i, a in enumerate(seeds) for b in seeds[i + 1 :]]
        rows.append(
            [
                str(k),
                mean_std(list(sub["acc"])),
                mean_std(to_exact) if to_exact else "–",
                mean_std(between) if between else "–",
            ]
        )
    lines += table(["probes", "accuracy", "Jaccard with GGN-OBD (same seed)", "Jaccard between seeds"], rows)
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
    ]
    lines += main_grid_section(main_runs, dense)
    warmup = load(study / "warmup")
    lines += ablation_section(
        "Claim 2: BatchNorm warmup (batches of 512 before scoring; None = one full pass)",
        warmup, "warmup_batches", [0, 20, None],
        ["snip", "grasp", "fisher_pruner", "hutch_pruner", "ggn_pruner"], [0.99, 0.998],
        base=main_runs, base_value=20,
    )  # fmt: skip
    scope = load(study / "scope")
    lines += ablation_section(
        "Scope: global (main grid), layerwise, ERK", scope, "scope", ["global", "layerwise", "erk"],
        ["fisher_pruner", "ggn_pruner", "hutch_pruner"], [0.99, 0.998], base=main_runs, base_value="global",
        per_layer=True,
    )  # fmt: skip
    lines += probes_section(load(study / "probes"), main_runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
