"""Grids of runs: folders per point, skipping finished points, shards, summaries."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from initprune.cli import build_parser, main
from initprune.errors import InitpruneError
from initprune.experiments import RunConfig, build_config, launchers, run_experiment
from initprune.experiments.cache import cacheable, score_key
from initprune.experiments.sweep import grid_points, parse_shard, point_folder, run_sweep, split_grid
from initprune.masks import Mask

from .test_experiments import SMALL


def test_grid_points_are_the_product_in_order():
    points = grid_points({"criterion": ["snip", "grasp"], "seed": [0, 1]})
    assert points == [
        {"criterion": "snip", "seed": 0}, {"criterion": "snip", "seed": 1},
        {"criterion": "grasp", "seed": 0}, {"criterion": "grasp", "seed": 1},
    ]  # fmt: skip
    assert point_folder(points[1]) == "criterion=snip,seed=1"
    with pytest.raises(InitpruneError, match="non-empty list"):
        grid_points({"seed": []})


def test_shards_cover_the_grid_once():
    assert parse_shard(None) == (0, 1)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1-3"):
        with pytest.raises(InitpruneError, match="shard"):
            parse_shard(bad)


def test_sweep_runs_every_point_once_and_summarizes_over_seeds(tmp_path, monkeypatch):
    base = {**SMALL, "epochs": 0.25}
    grid = {"criterion": ["snip", "magnitude"], "seed": [0, 1]}
    calls = []
    real = launchers.run_experiment
    monkeypatch.setattr(launchers, "run_experiment", lambda c, **k: calls.append(c.out) or real(c, **k))
    run_sweep(base, grid, tmp_path, shard="0/2", progress=False)
    assert len(calls) == 2  # points 0 and 2
    rows = run_sweep(base, grid, tmp_path, shard="1/2", progress=False)
    assert len(calls) == 4 and len(set(calls)) == 4
    assert [(r["criterion"], r["seeds"]) for r in rows] == [("snip", 2), ("magnitude", 2)]
    for row in rows:
        assert 0 <= row["test_accuracy_mean"] <= 1 and row["test_accuracy_std"] >= 0
        assert row["test_accuracy_n"] == 2
    run_sweep(base, grid, tmp_path, progress=False)  # everything finished: nothing runs again
    assert len(calls) == 4  # finished points are not even started
    assert all((tmp_path / point_folder(p) / "result.json").exists() for p in grid_points(grid))
    with pytest.raises(InitpruneError, match="other settings"):  # finished points are still checked
        run_sweep({**base, "lr": 0.5}, grid, tmp_path, progress=False)
    assert len(calls) == 4
    table = (tmp_path / "summary.md").read_text()
    assert table.startswith("Accuracy in %, mean ± std over seeds, n shown where < 3.\n\n")
    assert "| criterion | seeds | val_accuracy (%) | test_accuracy (%) | collapsed_runs |" in table
    mean, std = 100 * rows[0]["test_accuracy_mean"], 100 * rows[0]["test_accuracy_std"]
    assert "| snip | 2 | " in table and f"| {mean:.2f} ± {std:.2f} (n=2) | 0 |" in table
    assert len(json.loads((tmp_path / "summary.json").read_text())) == 2


def test_a_sweep_extended_into_its_folder_summarizes_every_grid(tmp_path):
    base = {**SMALL, "epochs": 0.25, "criterion": "magnitude"}
    run_sweep(base, {"seed": [0, 1], "sparsity": [0.5, 0.8]}, tmp_path, progress=False)
    rows = run_sweep(base, {"seed": [2], "sparsity": [0.5]}, tmp_path, progress=False)  # one more seed
    assert [(r["sparsity"], r["seeds"]) for r in rows] == [(0.5, 3), (0.8, 2)]
    accuracies = [
        json.loads((tmp_path / f"seed={seed},sparsity=0.5" / "result.json").read_text())["test_accuracy"]
        for seed in (0, 1, 2)
    ]
    assert rows[0]["test_accuracy_mean"] == pytest.approx(sum(accuracies) / 3, abs=1e-12)
    stored = json.loads((tmp_path / "sweep.json").read_text())
    assert stored["grid"] == {"seed": [2], "sparsity": [0.5]}
    assert stored["grids"] == [{"seed": [0, 1], "sparsity": [0.5, 0.8]}, {"seed": [2], "sparsity": [0.5]}]
    # the first grid again: nothing runs, the list keeps each grid once, the summary is the same
    again = run_sweep(base, {"seed": [0, 1], "sparsity": [0.5, 0.8]}, tmp_path, progress=False)
    assert [(r["sparsity"], r["seeds"]) for r in again] == [(0.5, 3), (0.8, 2)]
    assert len(json.loads((tmp_path / "sweep.json").read_text())["grids"]) == 2
    # other axes, or other base settings, start anew: their summary is their own grid
    rows = run_sweep(base, {"sparsity": [0.5], "seed": [0]}, tmp_path, progress=False)
    assert len(rows) == 1 and rows[0]["seeds"] == 1
    assert json.loads((tmp_path / "sweep.json").read_text())["grids"] == [{"sparsity": [0.5], "seed": [0]}]
    other = tmp_path / "other"
    run_sweep(base, {"seed": [0]}, other, progress=False)
    rows = run_sweep({**base, "sparsity": 0.8}, {"seed": [1]}, other, progress=False)
    assert len(rows) == 1 and rows[0]["seeds"] == 1


def test_sweep_command(tmp_path, capsys):
    args = ["sweep", "--quiet", "--out", str(tmp_path), "--grid", "sparsity=0.5,0.8"]
    for key, value in SMALL.items():
        if not isinstance(value, dict):
            args += [f"--{key.replace('_', '-')}", str(value)]
    args += ["--dataset-options", "input_shape=[1,8,8]", "train_size=400", "test_size=100", "num_classes=4"]
    args += ["--epochs", "0.25", "--model-options", "width=0.25"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| sparsity |" in out and out.count("\n| 0.") == 2
    assert main([*args[:5], "out=x", *args[5:]]) == 2  # 'out' cannot be swept


TINY = {
    "model": "lenet5",
    "dataset": "synthetic",
    "dataset_options": {"input_shape": [1, 28, 28], "train_size": 200, "test_size": 50, "num_classes": 4},
    "val_size": 40,
    "criterion": "snip",
    "scoring_per_class": 3,
    "warmup_batches": 0,
    "batch_size": 64,
    "epochs": 0.25,
    "device": "cpu",
}


def _grid_file(tmp_path, values):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_list_values_of_a_config_file_are_axes():
    values = {"criterion": ["snip", "grasp"], "lr": 0.1, "milestones": [10, 20],
              "betas": [[0.9, 0.99], [0.8, 0.9]], "model-options": [{"width": 1}, {}]}  # fmt: skip
    base, axes = split_grid(values)
    assert base == {"lr": 0.1, "milestones": [10, 20]}  # a flat list is a list setting's one value
    assert axes == {"criterion": ["snip", "grasp"], "betas": [[0.9, 0.99], [0.8, 0.9]],
                    "model_options": [{"width": 1}, {}]}  # fmt: skip


def test_sweep_config_file_combines_with_grid_flags(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(launchers, "run_experiment", lambda c, **k: ran.append(c))
    grid = _grid_file(
        tmp_path, {**TINY, "criterion": ["snip", "magnitude"], "seed": [0, 1], "lr": [0.1, 0.2]}
    )
    out = tmp_path / "sweep"
    assert main(["sweep", "--quiet", "--config", grid, "--out", str(out), "--grid", "sparsity=0.5,0.8",
                 "seed=3", "--lr", "0.05"]) == 0  # fmt: skip
    # file axes in file order (seed replaced by --grid), then the --grid axes; --lr replaces the lr axis
    assert [Path(c.out).name for c in ran][:3] == [
        "criterion=snip,seed=3,sparsity=0.5", "criterion=snip,seed=3,sparsity=0.8",
        "criterion=magnitude,seed=3,sparsity=0.5",
    ]  # fmt: skip
    assert len(ran) == 4 and {c.lr for c in ran} == {0.05} and {c.model for c in ran} == {"lenet5"}


def test_a_none_flag_replaces_a_config_file_axis(tmp_path, monkeypatch):
    """``--warmup-batches none`` with a file whose warmup_batches is an axis [0, 20, null] runs one pass
    (None) for every point, instead of the file's three values."""
    ran = []
    monkeypatch.setattr(launchers, "run_experiment", lambda c, **k: ran.append(c))
    grid = _grid_file(tmp_path, {**TINY, "criterion": ["snip"], "warmup_batches": [0, 20, None]})
    out = tmp_path / "sweep"
    assert main(["sweep", "--quiet", "--config", grid, "--out", str(out), "--grid", "sparsity=0.5,0.8",
                 "--warmup-batches", "none"]) == 0  # fmt: skip
    assert [Path(c.out).name for c in ran] == ["criterion=snip,sparsity=0.5", "criterion=snip,sparsity=0.8"]
    assert {c.warmup_batches for c in ran} == {None}


@pytest.mark.parametrize(
    ("grid", "extra", "message"),
    [
        ({"criterion": ["snip", "nosuch"]}, [], "nosuch"),
        ({"sparsity": [0.5, 0.9], "nosuch_key": [1, 2]}, [], "unknown key 'nosuch_key'"),
        ({"seed": []}, [], "non-empty list"),
        ({}, [], "no axis"),
        ({"sparsity": [0.5]}, ["--grid", "criterion_options=[{probes: 2}]"], "probes"),
        ({"sparsity": [0.5, 1.5]}, [], "1.5"),
        ({"model": "resnet20", "model_options": [{"width": 1}, {"depth": 3}]}, [], "depth"),
    ],
)
def test_a_bad_grid_is_one_line_before_anything_runs(tmp_path, capsys, monkeypatch, grid, extra, message):
    monkeypatch.setattr(launchers, "run_experiment", lambda c, **k: pytest.fail("a point ran"))
    path = _grid_file(tmp_path, {**TINY, **grid})
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", path, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("initprune: error:") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_a_failed_point_is_recorded_and_the_others_run(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("the failing point asks for CUDA, which this machine has")
    path = _grid_file(tmp_path, {**TINY, "device": ["cuda", "cpu"]})
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", path, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "1 point(s) failed" in captured.err
    assert (out / "device=cpu" / "result.json").exists()
    errors = json.loads((out / "errors.json").read_text())
    assert list(errors) == ["device=cuda"] and "CUDA is not available" in errors["device=cuda"]
    rows = json.loads((out / "summary.json").read_text())
    assert [r.get("error", "")[:14] for r in rows] == ["", "InitpruneError"]
    # progress as flushed lines (stdout is not a terminal here): points done / total and the time left
    lines = [line for line in captured.out.splitlines() if "sweep:" in line]
    assert "0 of 2 points already finished" in lines[0]
    assert any("1/2 points (1 failed)" in line and "left" in line for line in lines)
    assert any("2/2 points (1 failed)" in line for line in lines)


def test_cached_scores_give_the_mask_of_an_uncached_run(tmp_path):
    base = {**SMALL, "epochs": 0.25}  # ResNet-20 with a BatchNorm warmup, fisher_pruner
    cache = tmp_path / "cache"
    first = run_experiment(build_config({**base, "sparsity": 0.5, "out": str(tmp_path / "a")}),
                           progress=False, score_cache=cache)  # fmt: skip
    assert first["scores_cached"] is False and len(list(cache.iterdir())) == 1
    config = build_config({**base, "sparsity": 0.9, "lr": 0.1, "out": str(tmp_path / "b")})
    cached = run_experiment(config, progress=False, score_cache=cache)
    assert cached["scores_cached"] is True
    assert cached["scoring_seconds"] == first["scoring_seconds"]  # the cost of the scores it used
    plain = run_experiment(dataclasses.replace(config, out=str(tmp_path / "c")), progress=False)
    assert plain["scores_cached"] is False
    a, b = Mask.load(tmp_path / "b" / "mask.pt"), Mask.load(tmp_path / "c" / "mask.pt")
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert abs(a.sparsity - 0.9) < 1e-3
    assert cached["test_accuracy"] == plain["test_accuracy"]  # and so the same training
    assert json.loads((tmp_path / "b" / "pruning.json").read_text())["scores_cached"] is True

    # an unreadable entry is scored again, never trusted
    (entry,) = cache.iterdir()
    entry.write_bytes(b"garbage")
    again = run_experiment(dataclasses.replace(config, out=str(tmp_path / "d")), progress=False,
                           score_cache=cache)  # fmt: skip
    assert again["scores_cached"] is False
    d = Mask.load(tmp_path / "d" / "mask.pt")
    assert all(torch.equal(d[k], b[k]) for k in b)


def test_the_cache_key_holds_what_scores_depend_on():
    cpu = torch.device("cpu")
    key = score_key(build_config(SMALL), cpu)
    same = {"sparsity": 0.5, "scope": "layerwise", "lr": 0.5, "epochs": 7, "schedule": "step",
            "weight_decay": 0.0, "out": "elsewhere", "device": "auto", "momentum": 0.5}  # fmt: skip
    for name, value in same.items():
        assert score_key(build_config({**SMALL, name: value}), cpu) == key, name
    other = {"seed": 1, "criterion": "snip", "criterion_options": {"temperature": 2.0},
             "model_options": {"width": 0.5}, "include_classifier": True, "exclude_first": True,
             "warmup_batches": 3, "warmup_cumulative": True, "batch_size": 32, "scoring_per_class": 2,
             "scoring_augment": True, "val_size": 40, "data_dir": "/x",
             "dataset_options": {**SMALL["dataset_options"], "data_seed": 3}}  # fmt: skip
    for name, value in other.items():
        assert score_key(build_config({**SMALL, name: value}), cpu) != key, name
    assert score_key(build_config(SMALL), torch.device("cuda")) != key
    # without a warmup the batch size touches no scoring input
    no_warmup = {**SMALL, "warmup_batches": 0}
    assert score_key(build_config({**no_warmup, "batch_size": 32}), cpu) == score_key(
        build_config(no_warmup), cpu
    )


def test_hutchinson_runs_record_their_probe_generator(tmp_path, monkeypatch):
    """pruning.json names the probe generator of a Hutchinson run (which probes its seed drew), and the
    cache keeps scores of another generator apart."""
    from initprune.experiments import cache

    hutch = {"criterion": "hutch_pruner", "criterion_options": {"probes": 2}, "out": str(tmp_path / "h")}
    config = build_config({**TINY, **hutch})
    run_experiment(config, progress=False)
    info = json.loads((tmp_path / "h" / "pruning.json").read_text())
    assert info["probe_generator"] == "splitmix64-counter-v1"
    assert "probe_generator" not in score_key(build_config(SMALL), torch.device("cpu"))
    key = score_key(config, torch.device("cpu"))
    assert key["probe_generator"] == "splitmix64-counter-v1"
    monkeypatch.setattr(cache, "PROBE_GENERATOR", "another-v0")
    assert score_key(config, torch.device("cpu")) != key


def test_iterative_criteria_are_not_cached(tmp_path):
    assert not cacheable(build_config({**TINY, "criterion": "synflow"}))
    assert not cacheable(build_config({**TINY, "criterion": "snip", "rounds": 3}))
    assert cacheable(build_config({**TINY, "criterion": "synflow", "rounds": 1}))
    config = build_config({**TINY, "criterion": "snip", "rounds": 2, "out": str(tmp_path / "r")})
    result = run_experiment(config, progress=False, score_cache=tmp_path / "cache")
    assert result["scores_cached"] is False and not (tmp_path / "cache").exists()
    assert "(rounds > 1, e.g. synflow) score toward the target sparsity and are not cached" in _sweep_help()


def _sweep_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return " ".join(sub.choices["sweep"].format_help().split())


def test_a_sweep_shares_one_scoring_per_criterion_and_seed(tmp_path):
    rows = run_sweep({**TINY, "criterion": "fisher_pruner"}, {"sparsity": [0.5, 0.8, 0.9], "seed": [0, 1]},
                     tmp_path, progress=False)  # fmt: skip
    assert len(rows) == 3 and all(r["seeds"] == 2 for r in rows)
    assert len(list((tmp_path / "score_cache").iterdir())) == 2  # one per seed
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/result.json"))]
    assert sum(r["scores_cached"] for r in results) == 4


def test_other_models_get_their_own_default_options(tmp_path, capsys):
    assert build_config({}).model_options == {"width": 0.25}  # the testbed: VGG-11 at a quarter width
    assert RunConfig().model_options == {"width": 0.25}
    assert build_config({"model": "resnet20"}).model_options == {}
    assert build_config({"model": "vgg11", "model_options": {}}).model_options == {}
    assert build_config({"model": "resnet20", "model_options": {"width": 0.5}}).model_options == {
        "width": 0.5
    }
    assert main(["run", "--model", "lenet5", "--dataset", "synthetic", "--dataset-options",
                 "input_shape=[1,28,28]", "train_size=200", "test_size=50", "num_classes=4", "--val-size",
                 "40", "--criterion", "snip", "--warmup-batches", "0", "--scoring-per-class", "3",
                 "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model_options"] == {}
    # stdout is not a terminal here: one flushed line per stage
    out = capsys.readouterr().out
    stages = [line.split("] ", 1)[1].split(":")[0] for line in out.splitlines() if line.startswith("[")]
    assert stages == ["data", "warmup", "scoring", "scored", "epoch 1", "evaluating", "result"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sweep_progress_is_one_flushed_line_per_point_when_not_on_a_terminal(capsys, monkeypatch):
    from initprune.experiments import sweep

    clock = iter([100.0, 160.0, 280.0])
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: next(clock))
    bar = sweep.SweepProgress(total=5, done=1)
    assert bar.bar is None  # pytest's stderr is not a terminal
    bar.ended("a")  # 60 s for one point, 3 left
    bar.ended("b", error="ValueError: boom\ntraceback")  # 180 s for two points, 2 left
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("sweep: 1 of 5 points already finished")
    assert "2/5 points (0 failed), a done; elapsed 1m00s, about 3m00s left" in lines[1]
    assert "3/5 points (1 failed), b FAILED (ValueError: boom); elapsed 3m00s, about 3m00s left" in lines[2]


def test_sweep_progress_is_a_bar_on_a_terminal(monkeypatch):
    from initprune.experiments import sweep

    terminal = _Terminal()
    monkeypatch.setattr(sweep.sys, "stderr", terminal)
    bar = sweep.SweepProgress(total=4, done=1)
    assert bar.bar is not None and bar.bar.n == 1 and bar.bar.total == 4
    bar.ended("a")
    assert bar.bar.n == 2
    bar.close()
    assert "2/4" in terminal.getvalue()  # the bar, drawn on the terminal


def test_sweep_progress_says_nothing_when_quiet(capsys, monkeypatch):
    from initprune.experiments import sweep

    monkeypatch.setattr(sweep.sys, "stderr", _Terminal())
    bar = sweep.SweepProgress(total=2, done=0, enabled=False)
    bar.ended("a")
    bar.close()
    assert bar.bar is None and capsys.readouterr().out == ""


def test_one_convention_for_means_over_seeds():
    from initprune.experiments.report import _mean_std
    from initprune.experiments.stats import mean_std, mean_std_text

    assert mean_std([0.8]) == (0.8, None) and mean_std_text(0.8744, None, 1) == "87.44 (n=1)"
    mean, std = mean_std([0.87, 0.89])
    assert std == pytest.approx(0.02 / 2**0.5) and mean_std_text(mean, std, 2) == "88.00 ± 1.41 (n=2)"
    assert mean_std_text(*mean_std([0.87, 0.88, 0.89]), 3) == "88.00 ± 1.00"
    # the report's cells are the summary's
    assert _mean_std([0.87, 0.89]) == ("88.00 ± 1.41 (n=2)", pytest.approx(0.88))
