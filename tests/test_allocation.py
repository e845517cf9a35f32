"""Per-layer densities from elsewhere (``layer_densities``, ``--layer-densities FILE|RUN_DIR``): exact
counts per layer, the criterion's ranking inside each layer, transplants from a run, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from initprune import InitpruneError, make_mask, prune
from initprune.allocation import read_layer_densities
from initprune.errors import LayerCollapseWarning
from initprune.experiments import build_config, run_experiment

SHAPES = {"a.weight": (8, 5), "b.weight": (6, 8), "c.weight": (4, 6)}


def _scores(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.rand(shape, generator=gen, dtype=torch.float64) for name, shape in SHAPES.items()}


def test_each_layer_keeps_its_count_of_its_largest_scores():
    scores = _scores()
    densities = {"a.weight": 0.5, "b.weight": 0.125, "c.weight": 0.0}
    kept = 20 + 6 + 0
    with pytest.warns(LayerCollapseWarning, match="given layer densities"):
        mask = make_mask(scores, 1 - kept / 112, layer_densities=densities)
    assert {n: int(m.sum()) for n, m in mask.items()} == {"a.weight": 20, "b.weight": 6, "c.weight": 0}
    for name, keep in mask.items():
        if keep.any() and not keep.all():  # the kept scores of a layer are its largest
            assert scores[name][keep].min() > scores[name][~keep].max()
    assert mask.collapsed() == ["c.weight"]


def test_a_transplant_reproduces_the_source_counts_with_another_ranking():
    source = make_mask(_scores(1), 0.8, "global")
    target = make_mask(_scores(2), source.sparsity, layer_densities=source.per_layer())
    assert target.per_layer() == source.per_layer()
    assert any(not torch.equal(source[n], target[n]) for n in SHAPES)  # filled by the other scores


@pytest.mark.parametrize(
    ("densities", "sparsity", "message"),
    [
        ({"a.weight": 0.5, "b.weight": 0.5}, 0.5, "missing prunable layer.*c.weight.*prunable layers are"),
        ({**dict.fromkeys(SHAPES, 0.5), "d.weight": 0.5}, 0.5, "not prunable here d.weight"),
        ({**dict.fromkeys(SHAPES, 0.5), "a.weight": 1.5}, 0.5, r"must be in \[0, 1\]"),
        (dict.fromkeys(SHAPES, 0.5), 0.9, "make sparsity 0.500000, but sparsity 0.9 was asked for"),
        (dict.fromkeys(SHAPES, 0.0), 0.9, "keep no weight"),
    ],
)
def test_bad_layer_densities_are_refused(densities, sparsity, message):
    with pytest.raises(InitpruneError, match=message):
        make_mask(_scores(), sparsity, layer_densities=densities)


def test_reading_files_and_run_folders(tmp_path):
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"a.weight": 0.5, "b.weight": 1}))
    assert read_layer_densities(tmp_path / "d.yaml") == {"a.weight": 0.5, "b.weight": 1.0}
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"per_layer_density": {"a.weight": 0.25}, "sparsity": 0.75}))
    assert read_layer_densities(run) == {"a.weight": 0.25}
    assert read_layer_densities(run / "result.json") == {"a.weight": 0.25}
    (tmp_path / "bad.json").write_text(json.dumps({"a.weight": -0.1}))
    with pytest.raises(InitpruneError, match=r"layer 'a.weight' has density -0.1.*\[0, 1\]"):
        read_layer_densities(tmp_path / "bad.json")
    (tmp_path / "text.yaml").write_text(yaml.safe_dump({"a.weight": "half"}))
    with pytest.raises(InitpruneError, match="'half'"):
        read_layer_densities(tmp_path / "text.yaml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitpruneError, match=r"has no result\.json"):
        read_layer_densities(tmp_path / "empty")
    with pytest.raises(InitpruneError, match="does not exist"):
        read_layer_densities(tmp_path / "nowhere.yaml")


def test_prune_checks_before_changing_the_model():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InitpruneError, match="missing prunable layer"):
        prune(model, "magnitude", sparsity=0.5, layer_densities={"0.weight": 0.5})
    with pytest.raises(InitpruneError, match="one-shot"):
        prune(model, "magnitude", sparsity=0.5, rounds=3, layer_densities={"0.weight": 0.5, "2.weight": 0.5})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    given = {"0.weight": 0.25, "2.weight": 0.6875}  # 10 of 40 and 33 of 48 weights
    mask = prune(model, "magnitude", sparsity=1 - 43 / 88, layer_densities=given)
    assert mask.per_layer() == {"0.weight": 0.25, "2.weight": 0.6875}


SMALL = {
    "model": "lenet5",
    "dataset": "synthetic",
    "dataset_options": {"input_shape": [1, 12, 12], "train_size": 200, "test_size": 50, "num_classes": 3},
    "val_size": 40,
    "sparsity": 0.9,
    "warmup_batches": 0,
    "scoring_per_class": 2,
    "batch_size": 50,
    "epochs": 0.2,
    "device": "cpu",
}


def test_a_run_takes_another_runs_allocation(tmp_path):
    source = run_experiment(
        build_config({**SMALL, "criterion": "snip", "out": str(tmp_path / "snip")}), progress=False
    )
    config = build_config(
        {
            **SMALL,
            "criterion": "magnitude",
            "layer_densities": str(tmp_path / "snip"),
            "out": str(tmp_path / "t"),
        }
    )
    result = run_experiment(config, progress=False)
    assert result["per_layer_density"] == source["per_layer_density"]
    assert result["layer_densities_source"] == str(tmp_path / "snip")
    assert result["layer_densities_given"] == source["per_layer_density"]
    plain = build_config({**SMALL, "criterion": "magnitude"})
    assert config.settings_hash() != plain.settings_hash()
    with pytest.raises(InitpruneError, match="synflow prunes in 100 rounds by default; set rounds: 1"):
        run_experiment(
            build_config(
                {
                    **SMALL,
                    "criterion": "synflow",
                    "layer_densities": str(tmp_path / "snip"),
                    "out": str(tmp_path / "sf"),
                }
            ),
            progress=False,
        )
    assert not (tmp_path / "sf").exists()
    with pytest.raises(InitpruneError, match="one-shot"):
        build_config({**SMALL, "criterion": "snip", "rounds": 5, "layer_densities": "x.yaml"})
