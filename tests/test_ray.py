"""The Ray launcher: a small grid on a local Ray instance with 2 CPUs, one point failing on purpose; a rerun
skips the finished points; without Ray, `--launcher ray` says how to install it."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from initprune.cli import main
from initprune.experiments.sweep import point_folder, run_sweep

from .test_sweep import TINY


def test_without_ray_the_launcher_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    args = ["sweep", "--out", str(tmp_path), "--launcher", "ray", "--grid", "sparsity=0.5,0.9"]
    args += ["--model", "lenet5", "--dataset", "synthetic"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pip install 'initprune[ray]'" in err and err.count("\n") == 1
    assert main([*args[:4], "local", *args[5:], "--ray-address", "auto"]) == 2
    assert "--ray-address is an option of --launcher ray" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_a_grid_on_a_local_ray_instance(ray_instance, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("the failing point asks for CUDA, which this machine has")
    grid = {"sparsity": [0.5, 0.9], "device": ["cpu", "cuda"]}  # the CUDA points fail on purpose
    base = {**TINY, "criterion": "fisher_pruner"}
    rows = run_sweep(base, grid, tmp_path, launcher="ray", ray_options={"retries": 1, "cpus_per_run": 1})
    finished = [r for r in rows if "error" not in r]
    failed = [r for r in rows if "error" in r]
    assert [(r["sparsity"], r["device"]) for r in finished] == [(0.5, "cpu"), (0.9, "cpu")]
    assert [(r["sparsity"], r["device"]) for r in failed] == [(0.5, "cuda"), (0.9, "cuda")]
    assert all("CUDA is not available" in r["error"] for r in failed)
    errors = json.loads((tmp_path / "errors.json").read_text())
    assert sorted(errors) == ["sparsity=0.5,device=cuda", "sparsity=0.9,device=cuda"]
    # the local launcher's layout: a folder per point, the summary, the shared scoring
    results = [json.loads((tmp_path / point_folder(p) / "result.json").read_text()) for p in
               ({"sparsity": 0.5, "device": "cpu"}, {"sparsity": 0.9, "device": "cpu"})]  # fmt: skip
    assert [r["scores_cached"] for r in results] == [False, True]
    assert len(list((tmp_path / "score_cache").iterdir())) == 1
    assert "| error |" in (tmp_path / "summary.md").read_text()
    capsys.readouterr()

    # a rerun (after the driver was killed, say) starts only the points not finished
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/result.json")}
    rows = run_sweep(base, grid, tmp_path, launcher="ray", ray_options={"retries": 0})
    out = capsys.readouterr().out
    assert "2 of 4 points already finished" in out and "submitted 1 of 2 points" in out
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/result.json")} == stamps
    assert sum("error" in r for r in rows) == 2
