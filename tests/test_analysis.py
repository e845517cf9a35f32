"""The curvature-estimator analysis on a tiny BatchNorm/max-pool network (float64)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from initprune.analysis import analyze_curvature, plot_curvature, write_report
from initprune.analysis.curvature import kept_overlap, relative_error


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 12),
        nn.ReLU(),
        nn.Linear(12, 5),
    ).double()


@pytest.fixture(scope="module")
def result():
    model = tiny_net()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 1, 6, 6, dtype=torch.float64, generator=gen)
    batches = [(x, torch.arange(20) % 5)]
    warm = [torch.randn(8, 1, 6, 6, dtype=torch.float64, generator=gen) * 2 + 1 for _ in range(3)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = analyze_curvature(
        model, batches, warmup_data=warm, seed=0, temperatures=(1.0, 200.0), mc_samples=(1, 4, 16, 64),
        probes=(1, 10, 100), hessian_check=3, label="tiny",
    )  # fmt: skip
    return model, before, rows


def pick(rows, **where):
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def test_rows_shape_and_model_untouched(result):
    model, before, rows = result
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.training and all(p.requires_grad for p in model.parameters())
    keys = {"model", "warmup", "temperature", "estimator", "count", "probe_mode", "probe_scope", "rel_error"}
    keys |= {"cosine", "seconds", "cost", "gradient_seconds", "hessian_check_max_rel_dev"}
    keys |= {f"overlap_{k}_{s}" for k in ("obd", "taylor") for s in (0.9, 0.95, 0.98, 0.99)}
    assert all(set(r) == keys for r in rows)
    assert {r["warmup"] for r in rows} == {"none", "3 batches"}
    # per (warmup, T): exact + EF + constant + 4 MC + 3 probe counts × 2 modes × 2 scopes
    assert len(rows) == 2 * 2 * (1 + 1 + 1 + 4 + 3 * 4)
    assert all(r["cost"] > 0 and r["seconds"] > 0 for r in rows if r["estimator"] != "constant")


def test_exact_rows(result):
    _, _, rows = result
    for r in pick(rows, estimator="ggn_exact"):
        assert r["rel_error"] == 0.0 and r["cosine"] == pytest.approx(1.0)
        assert all(r[f"overlap_{k}_{s}"] == 1.0 for k in ("obd", "taylor") for s in (0.9, 0.99))
        assert r["hessian_check_max_rel_dev"] < 1e-8  # diag(H) = diag(GGN) on a ReLU/BN/max-pool net


def test_errors_fall_with_more_draws(result):
    _, _, rows = result
    for warmup in ("none", "3 batches"):
        for t in (1.0, 200.0):
            mc = {
                r["count"]: r["rel_error"]
                for r in pick(rows, estimator="mc_fisher", warmup=warmup, temperature=t)
            }
            assert mc[64] < mc[1] / 3
            for mode in ("independent", "shared"):
                for scope in ("prunable", "all"):
                    sel = pick(
                        rows, estimator="hutchinson", probe_mode=mode, probe_scope=scope, warmup=warmup
                    )
                    err = {r["count"]: r["rel_error"] for r in sel if r["temperature"] == t}
                    assert err[100] < err[1] / 3, (warmup, t, mode, scope, err)


def test_overlap_and_error_helpers():
    a = torch.arange(100, dtype=torch.float64)
    assert kept_overlap(a, a, 0.9) == 1.0
    assert kept_overlap(-a, a, 0.9) == 0.0
    assert relative_error(a, a) == 0.0


def test_report_files(result, tmp_path):
    _, _, rows = result
    paths = write_report(rows, tmp_path)
    assert json.loads(paths["json"].read_text()) == rows
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    text = paths["markdown"].read_text()
    assert "hutchinson k=100 shared/all" in text and "mc_fisher m=64" in text
    (png,) = plot_curvature(rows, tmp_path)
    assert png.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*tmp*"))


def test_analyze_curvature_command(tmp_path, capsys):
    from initprune.cli import main

    out = tmp_path / "report"
    argv = ["analyze", "curvature", "--model", "lenet5", "--dataset", "synthetic", "--samples", "1",
            "--warmup-batches", "0", "--probes", "1", "--mc-samples", "1", "--temperatures", "1",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "curvature_lenet5.png",
        "report.md",
        "rows.csv",
        "rows.json",
    ]
    rows = json.loads((out / "rows.json").read_text())
    assert {r["temperature"] for r in rows} == {1.0}
    assert {r["count"] for r in rows if r["estimator"] == "hutchinson"} == {1}
    assert main([*argv[:3], "vgg7", *argv[4:]]) == 2
    assert "unknown model 'vgg7'" in capsys.readouterr().err


def test_analyze_curvature_writes_under_runs_by_default(tmp_path, monkeypatch):
    from initprune.cli import main

    monkeypatch.chdir(tmp_path)  # run from a repository root, it must not overwrite docs/results
    argv = ["analyze", "curvature", "--model", "lenet5", "--dataset", "synthetic", "--samples", "1",
            "--warmup-batches", "0", "--probes", "1", "--mc-samples", "1", "--temperatures", "1"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "runs" / "curvature" / "lenet5-synthetic" / "report.md").exists()
    assert not (tmp_path / "docs").exists()
