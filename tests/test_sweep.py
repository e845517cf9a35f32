"""Grids of runs: folders per point, skipping finished points, shards, summaries."""

from __future__ import annotations

import json

import pytest

from initprune.cli import main
from initprune.errors import InitpruneError
from initprune.experiments import launchers
from initprune.experiments.sweep import grid_points, parse_shard, point_folder, run_sweep

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
    run_sweep(base, grid, tmp_path, progress=False)  # everything finished: nothing runs again
    assert len(calls) == 4  # finished points are not even started
    assert all((tmp_path / point_folder(p) / "result.json").exists() for p in grid_points(grid))
    table = (tmp_path / "summary.md").read_text()
    assert table.startswith("| criterion | seeds | val_accuracy_mean")
    assert len(json.loads((tmp_path / "summary.json").read_text())) == 2


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
