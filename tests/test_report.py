"""`initprune report`: the table of runs, the paper-style tables against hand-computed statistics, the plots,
and skipped files."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
import torch
import yaml

from initprune.cli import main
from initprune.experiments.report import collect, jaccard
from initprune.masks import Mask

# test accuracy of (criterion, sparsity) per seed; the dense reference runs at sparsity 0
ACCURACY = {
    ("snip", 0.5): [0.80, 0.82, 0.81],
    ("snip", 0.9): [0.70, 0.74],
    ("hutch_pruner", 0.5): [0.79, 0.83, 0.80],
    ("hutch_pruner", 0.9): [0.75, 0.77],
    ("dense", 0.0): [0.90, 0.92],
}
LAYERS = {"a.weight": (4, 5), "b.weight": (3, 4)}


def _mask(seed: int, criterion: str) -> Mask:
    gen = torch.Generator().manual_seed(seed * 7 + len(criterion))
    return Mask({name: torch.rand(shape, generator=gen) < 0.3 for name, shape in LAYERS.items()})


def _write_run(folder, criterion, sparsity, seed, accuracy):
    folder.mkdir(parents=True)
    config = {"model": "lenet5", "model_options": {}, "dataset": "fashion_mnist", "criterion": criterion,
              "sparsity": sparsity, "seed": seed, "lr": 0.1, "out": str(folder)}  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    mask = _mask(seed, criterion)
    mask.save(folder / "mask.pt")
    result = {"model": "lenet5", "dataset": "fashion_mnist", "criterion": criterion,
              "sparsity": sparsity + 0.001,
              "target_sparsity": sparsity, "test_accuracy": accuracy, "val_accuracy": accuracy - 0.01,
              "per_layer_density": mask.per_layer(), "collapsed_layers": ["b.weight"] if seed == 1 else [],
              "disconnected_layers": [], "scoring_seconds": 2.0 + seed, "scores_cached": False,
              "criterion_options": {"temperature": 1.0}, "seed": seed, "out": str(folder)}  # fmt: skip
    (folder / "result.json").write_text(json.dumps(result))
    epochs = [{"epoch": 1, "val_accuracy": accuracy - 0.1}, {"epoch": 2, "val_accuracy": accuracy - 0.01}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for (criterion, sparsity), values in ACCURACY.items():
        for seed, accuracy in enumerate(values):
            _write_run(root / f"{criterion}-{sparsity}-{seed}", criterion, sparsity, seed, accuracy)
    return root


def _cell(values):
    text = f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"
    return text + (f" (n={len(values)})" if len(values) < 3 else "")


def test_report_tables_and_plots(runs, tmp_path, capsys):
    (runs / "broken").mkdir()
    (runs / "broken" / "result.json").write_text('{"model": "lenet5", "crit')
    (runs / "partial").mkdir()
    (runs / "partial" / "result.json").write_text(json.dumps({"model": "lenet5", "criterion": "snip"}))
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped {runs / 'broken' / 'result.json'}: not valid JSON" in err
    assert (
        f"skipped {runs / 'partial' / 'result.json'}: partial: lacks dataset, sparsity, test_accuracy" in err
    )

    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == sum(map(len, ACCURACY.values()))
    for column in ("run", "model_options", "lr", "sparsity", "achieved_sparsity", "test_accuracy",
                   "per_layer_density", "resolved_criterion_options", "scoring_seconds"):  # fmt: skip
        assert column in table[0]
    row = next(r for r in table if r["run"] == "snip-0.9-1")
    assert float(row["sparsity"]) == 0.9 and float(row["achieved_sparsity"]) == pytest.approx(0.901)
    assert json.loads(row["per_layer_density"]) == _mask(1, "snip").per_layer()

    report = (out / "report.md").read_text()
    assert "## lenet5 on fashion_mnist" in report
    assert f"Dense reference (sparsity 0): {_cell(ACCURACY['dense', 0.0])}." in report
    line5 = next(line for line in report.splitlines() if line.startswith("| 0.5 | 0.5 |"))
    line9 = next(line for line in report.splitlines() if line.startswith("| 0.9 | 0.1 |"))
    snip, hutch = _cell(ACCURACY["snip", 0.5]), _cell(ACCURACY["hutch_pruner", 0.5])
    assert line5 == f"| 0.5 | 0.5 | {hutch} | **{snip}** |"  # columns in the order the folders sort
    snip, hutch = _cell(ACCURACY["snip", 0.9]), _cell(ACCURACY["hutch_pruner", 0.9])
    assert line9 == f"| 0.9 | 0.1 | **{hutch}** | {snip} |"
    assert "| 0.5 | 1/3 | 1/3 |" in report  # seed 1 collapsed a layer
    seconds = [2.0, 3.0, 4.0, 2.0, 3.0]  # 2 + seed
    assert f"| snip | {statistics.fmean(seconds):.2f} ± {statistics.stdev(seconds):.2f} | 5 | 0 |" in report
    assert "broken" in report and "partial" in report
    for name in ("accuracy", "layer_density", "jaccard", "val_accuracy"):
        path = out / f"{name}_lenet5_on_fashion_mnist.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({path.name})" in report


def test_groups_split_on_other_varying_settings(runs, tmp_path):
    _write_run(runs / "other-lr", "snip", 0.5, 0, 0.5)
    config = yaml.safe_load((runs / "other-lr" / "config.yaml").read_text())
    (runs / "other-lr" / "config.yaml").write_text(yaml.safe_dump({**config, "lr": 0.5}))
    rows, _ = collect(runs)
    assert len(rows) == sum(map(len, ACCURACY.values())) + 1
    assert main(["report", str(runs), "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## lenet5 on fashion_mnist, lr=0.1" in report and "## lenet5 on fashion_mnist, lr=0.5" in report


def test_a_setting_absent_from_an_older_config_means_its_default(runs, tmp_path):
    """Runs made before a setting existed lack it in config.yaml; they group with runs that hold its
    default, and apart from runs that set it otherwise."""
    from initprune.experiments.config import default_settings

    assert default_settings()["prune_after_training"] is False
    for name, value in (("newer", False), ("other", True)):
        _write_run(runs / name, "snip", 0.5, 7, 0.6)
        config = yaml.safe_load((runs / name / "config.yaml").read_text())
        (runs / name / "config.yaml").write_text(yaml.safe_dump({**config, "prune_after_training": value}))
    rows, _ = collect(runs)
    assert {r["prune_after_training"] for r in rows if r["run"] != "other"} == {False}
    assert main(["report", str(runs), "--out", str(tmp_path / "r")]) == 0
    groups = [
        line for line in (tmp_path / "r" / "report.md").read_text().splitlines() if line.startswith("## ")
    ]
    assert groups == [
        "## lenet5 on fashion_mnist, prune_after_training=False",
        "## lenet5 on fashion_mnist, prune_after_training=True",
    ]


def test_an_unset_setting_is_named_null_in_a_group(runs, tmp_path):
    """``warmup_batches: null`` (one full pass) beside numbers: the group says null, not nan, and the
    numbers stay the integers of config.yaml (20, not the 20.0 of a column that pandas made float to
    hold the NaN)."""
    for name, value in (("full-pass", None), ("twenty", 20)):
        _write_run(runs / name, "snip", 0.5, 7, 0.6)
        config = yaml.safe_load((runs / name / "config.yaml").read_text())
        (runs / name / "config.yaml").write_text(yaml.safe_dump({**config, "warmup_batches": value}))
    assert main(["report", str(runs), "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## lenet5 on fashion_mnist, warmup_batches=null" in report
    assert "## lenet5 on fashion_mnist, warmup_batches=20\n" in report
    assert "=nan" not in report and "=20.0" not in report


def test_integers_stay_integers_in_a_group_whose_own_runs_all_set_them(tmp_path):
    """The NaN that makes pandas turn a column float may come from another model's runs: the groups of a
    model whose runs all set the integer are named by it as written too (``warmup_batches=0``, ``=20``)."""
    root = tmp_path / "own"  # no run without the setting beside them
    for name, model, value in (("none", "lenet5", 0), ("twenty", "lenet5", 20), ("pass", "vgg11", None)):
        _write_run(root / name, "snip", 0.5, 7, 0.6)
        config = yaml.safe_load((root / name / "config.yaml").read_text())
        (root / name / "config.yaml").write_text(
            yaml.safe_dump({**config, "model": model, "warmup_batches": value})
        )
        result = json.loads((root / name / "result.json").read_text())
        (root / name / "result.json").write_text(json.dumps({**result, "model": model}))
    assert main(["report", str(root), "--out", str(tmp_path / "r")]) == 0
    groups = [
        line for line in (tmp_path / "r" / "report.md").read_text().splitlines() if line.startswith("## ")
    ]
    assert "## lenet5 on fashion_mnist, warmup_batches=0" in groups
    assert "## lenet5 on fashion_mnist, warmup_batches=20" in groups
    assert not any("20.0" in g or "=0.0" in g for g in groups)


def test_option_dicts_name_groups_by_the_options_that_vary(runs, tmp_path):
    """Runs that differ in one model option are grouped and named by that option alone
    (``model_options.norm=...``), not by the whole dict that repeats every shared option; a run that
    leaves an option out gets the model's default, named so."""
    for name, options in (
        ("bn", {"width": 0.25, "norm": "batchnorm"}),
        ("ln", {"width": 0.25, "norm": "layernorm"}),
    ):
        for seed in range(2):
            _write_run(runs / f"{name}-{seed}", "snip", 0.5, seed, 0.6)
            config = yaml.safe_load((runs / f"{name}-{seed}" / "config.yaml").read_text())
            (runs / f"{name}-{seed}" / "config.yaml").write_text(
                yaml.safe_dump({**config, "model_options": options})
            )
    out = tmp_path / "r"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    groups = [line for line in report.splitlines() if line.startswith("## ")]
    prefix = "## lenet5 on fashion_mnist, "
    assert sorted(groups) == [
        prefix + "model_options.norm=batchnorm, model_options.width=0.25",
        prefix + "model_options.norm=default, model_options.width=default",
        prefix + "model_options.norm=layernorm, model_options.width=0.25",
    ]
    plots = sorted(p.name for p in out.glob("accuracy_*.png"))
    assert plots == [
        "accuracy_lenet5_on_fashion_mnist__model_options.norm_batchnorm__model_options.width_0.25.png",
        "accuracy_lenet5_on_fashion_mnist__model_options.norm_default__model_options.width_default.png",
        "accuracy_lenet5_on_fashion_mnist__model_options.norm_layernorm__model_options.width_0.25.png",
    ]


def test_rewriting_a_report_removes_the_plots_it_no_longer_makes(runs, tmp_path):
    """A group renamed between two reports into one folder leaves no stale plot behind; a file the
    report never linked stays."""
    out = tmp_path / "r"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    before = {p.name for p in out.glob("*.png")}
    assert "accuracy_lenet5_on_fashion_mnist.png" in before
    (out / "mine.png").write_bytes(b"not the report's")
    for config_path in runs.glob("*/config.yaml"):
        config = yaml.safe_load(config_path.read_text())
        config_path.write_text(
            yaml.safe_dump({**config, "lr": 0.5 if "snip" in config_path.parent.name else 0.1})
        )
    assert main(["report", str(runs), "--out", str(out)]) == 0
    after = {p.name for p in out.glob("*.png")}
    assert "accuracy_lenet5_on_fashion_mnist.png" not in after
    assert {
        "accuracy_lenet5_on_fashion_mnist__lr_0.1.png",
        "accuracy_lenet5_on_fashion_mnist__lr_0.5.png",
    } <= after
    assert all("__lr_" in name for name in after - {"mine.png"})  # every plot of the first report is gone
    assert (out / "mine.png").read_bytes() == b"not the report's"


def test_long_group_names_make_short_distinct_file_names(runs, tmp_path):
    """A group that differs in many settings has a name of hundreds of characters; its plots still get
    a file name under the 255-byte limit, and two such groups that differ only at the end get two."""
    settings = {f"setting_{i:02d}_with_a_long_name": f"value_{i}" for i in range(12)}
    for lr in (0.1, 0.5):
        for seed in range(2):
            folder = runs / f"long-{lr}-{seed}"
            _write_run(folder, "snip", 0.5, seed, 0.6)
            config = yaml.safe_load((folder / "config.yaml").read_text())
            (folder / "config.yaml").write_text(yaml.safe_dump({**config, **settings, "zz_lr": lr}))
    out = tmp_path / "r"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    groups = [line for line in report.splitlines() if line.startswith("## ")]
    long_groups = [line for line in groups if "zz_lr=0.1" in line or "zz_lr=0.5" in line]
    assert len(long_groups) == 2 and all(len(line) > 300 for line in long_groups)
    plots = sorted(p.name for p in out.glob("accuracy_*.png"))
    assert len(plots) == 3  # the group of the other runs and the two long ones
    assert all(len(name.encode()) < 255 for name in plots)
    assert all(f"]({name})" in report for name in plots)


def test_jaccard_of_kept_sets():
    a = {"w": torch.tensor([True, True, False, False]), "v": torch.tensor([True])}
    b = {"w": torch.tensor([False, True, True, False]), "v": torch.tensor([True])}
    assert jaccard(a, b) == 2 / 4  # kept by both: w[1], v; by either: w[0..2], v
    assert jaccard(a, a) == 1.0


def test_report_bad_input_is_one_line(tmp_path, runs, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere' is not a folder" in capsys.readouterr().err
    assert main(["report", str(runs), "--out", str(tmp_path / "o"), "--at-sparsity", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "0.7" in err and "[0.0, 0.5, 0.9]" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # checked before anything is written
    assert main(["report", str(runs), "--out", str(tmp_path / "o"), "--at-sparsity", "0.5"]) == 0


def test_plot_styles_are_distinct_for_every_criterion():
    from initprune.experiments.report import _style

    styles = [_style(i) for i in range(60)]
    keys = {(s["color"], s["marker"], s["linestyle"]) for s in styles}
    assert len(keys) == 60
    first = [s["color"] for s in styles[:10]]
    assert len(set(first)) == 10  # no colour twice among ten criteria (tab20 paired two blues)
    assert all(s["markerfacecolor"] == "none" for s in styles)  # equal values stay visible


def test_sub_epoch_runs_skip_the_per_epoch_plot_with_a_line(runs, tmp_path):
    for folder in runs.iterdir():
        config = yaml.safe_load((folder / "config.yaml").read_text())
        (folder / "config.yaml").write_text(yaml.safe_dump({**config, "epochs": 0.25}))
        (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_accuracy": 0.5}) + "\n")
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert not (out / "val_accuracy_lenet5_on_fashion_mnist.png").exists()
    assert (
        "- Not plotted: validation accuracy per epoch at sparsity 0.9: every run was evaluated once, "
        "after 0.25 epoch(s); the accuracy table has those numbers." in report
    )
    assert (out / "accuracy_lenet5_on_fashion_mnist.png").exists()


def test_collapse_table_counts_a_missing_field_as_no_layer(runs, tmp_path):
    """Runs written before ``disconnected_layers`` existed lack the field: the table of runs holds NaN there,
    which is truthy, and must still count as no layer cut off."""
    for seed in (0, 2):
        path = runs / f"snip-0.5-{seed}" / "result.json"
        result = json.loads(path.read_text())
        del result["disconnected_layers"]
        path.write_text(json.dumps(result))
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    assert "| 0.5 | 1/3 | 1/3 |" in (out / "report.md").read_text()  # only seed 1 emptied a layer


def test_the_report_names_its_folder_relative_to_the_working_directory(runs, tmp_path, monkeypatch):
    """Given as an absolute path below the working directory, the folder is named relative to it (as a
    committed report should name it); a folder elsewhere keeps the path it was given."""
    monkeypatch.chdir(runs.parent)
    assert main(["report", str(runs.resolve()), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").read_text().splitlines()[0] == f"# Report of {runs.name}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", str(runs.resolve()), "--out", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / "report.md").read_text().splitlines()[0] == f"# Report of {runs.resolve()}"


def _set(folder, **settings):
    config = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump({**config, **settings}))


def test_dense_runs_are_the_reference_of_groups_differing_in_pruning_settings_alone(runs, tmp_path):
    """The dense runs (warmup 0 here) are the reference of the warmup-20 group too, named so; a group that
    differs in a training setting (lr) gets none of them, and a dense run of its own wins over shared ones."""
    for folder in runs.iterdir():
        _set(folder, warmup_batches=0)
    for seed, accuracy in enumerate([0.60, 0.62, 0.64]):
        _write_run(runs / f"warm-{seed}", "snip", 0.5, seed, accuracy)
        _set(runs / f"warm-{seed}", warmup_batches=20)
        _write_run(runs / f"lr-{seed}", "snip", 0.5, seed, accuracy)
        _set(runs / f"lr-{seed}", warmup_batches=20, lr=0.5)
    _write_run(runs / "lr-dense", "dense", 0.0, 0, 0.5)
    _set(runs / "lr-dense", warmup_batches=20, lr=0.5)
    assert main(["report", str(runs), "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    sections = {s.splitlines()[0]: s for s in report.split("\n## ")[1:]}
    dense = _cell(ACCURACY["dense", 0.0])
    assert sorted(sections) == [
        "lenet5 on fashion_mnist, lr=0.1, warmup_batches=0",
        "lenet5 on fashion_mnist, lr=0.1, warmup_batches=20",
        "lenet5 on fashion_mnist, lr=0.5, warmup_batches=20",
    ]
    own = sections["lenet5 on fashion_mnist, lr=0.1, warmup_batches=0"]
    assert f"Dense reference (sparsity 0): {dense}.\n" in own
    shared = sections["lenet5 on fashion_mnist, lr=0.1, warmup_batches=20"]
    assert (
        f"Dense reference (sparsity 0): {dense}, the dense runs with warmup_batches=0 "
        "(a setting of the pruning alone)." in shared
    )
    other_lr = sections["lenet5 on fashion_mnist, lr=0.5, warmup_batches=20"]
    assert "Dense reference (sparsity 0): 50.00 (n=1).\n" in other_lr
    assert dense not in other_lr
