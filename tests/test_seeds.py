"""Seeds apart: ``train_seed`` trains one mask with several data orders, ``probe_seed`` redraws the
criterion's probes on one initialization; neither changes the settings hash of a run that leaves it unset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from initprune import InitpruneError
from initprune.experiments import build_config, load_config_file, run_experiment
from initprune.experiments.cache import score_key
from initprune.masks import Mask

ROOT = Path(__file__).resolve().parent.parent
SMALL = {
    "model": "lenet5",
    "dataset": "synthetic",
    "dataset_options": {"input_shape": [1, 12, 12], "train_size": 240, "test_size": 60, "num_classes": 3},
    "val_size": 40,
    "criterion": "hutch_pruner",
    "criterion_options": {"probes": 2},
    "sparsity": 0.8,
    "warmup_batches": 0,
    "scoring_per_class": 2,
    "batch_size": 32,
    "epochs": 1,
    "device": "cpu",
}


def _run(out: Path, **changes):
    config = build_config({**SMALL, "out": str(out), **changes})
    result = run_experiment(config, progress=False)
    mask = dict(Mask.load(out / "mask.pt"))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return config, result, mask, history


def _same_masks(a, b) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_one_mask_trained_with_several_data_orders(tmp_path):
    base_config, base, base_mask, base_history = _run(tmp_path / "default")
    _, same, same_mask, same_history = _run(tmp_path / "explicit", train_seed=0)
    _, other, other_mask, other_history = _run(tmp_path / "order5", train_seed=5)
    assert base["train_seed"] == 0 and other["train_seed"] == 5 and other["seed"] == 0
    # the mask and the pruned initialization are those of seed 0 whatever the data order
    assert _same_masks(base_mask, other_mask) and _same_masks(base_mask, same_mask)
    init = [
        torch.load(tmp_path / n / "pruned_init.pt", weights_only=True)["model"] for n in ("default", "order5")
    ]
    assert all(torch.equal(init[0][k], init[1][k]) for k in init[0])
    # train_seed = seed is the default's training exactly; another order trains differently
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "settings_hash")} for r in base_history]
    assert strip == [
        {k: v for k, v in r.items() if k not in ("seconds", "settings_hash")} for r in same_history
    ]
    assert other_history[0]["train_loss"] != base_history[0]["train_loss"]
    assert base["test_accuracy"] == same["test_accuracy"]
    # an unset train_seed leaves the settings hash as it was; a set one is another run
    assert load_config_file(tmp_path / "default" / "config.yaml")["train_seed"] is None
    assert base_config.settings_hash() == build_config({**SMALL, "out": "x"}).settings_hash()
    assert build_config({**SMALL, "train_seed": 5}).settings_hash() != base_config.settings_hash()


def test_probe_seed_redraws_probes_on_one_initialization(tmp_path):
    _, base, base_mask, _ = _run(tmp_path / "default", epochs=0.1)
    _, _, same_mask, _ = _run(tmp_path / "p0", epochs=0.1, probe_seed=0)
    _, other, other_mask, _ = _run(tmp_path / "p7", epochs=0.1, probe_seed=7)
    assert _same_masks(base_mask, same_mask) and not _same_masks(base_mask, other_mask)
    assert other["probe_seed"] == 7 and base["probe_seed"] == 0 and other["seed"] == 0
    # the initialization is seed 0's: the weights both masks keep start equal
    inits = [
        torch.load(tmp_path / n / "pruned_init.pt", weights_only=True)["model"] for n in ("default", "p7")
    ]
    for name, keep in base_mask.items():
        both = keep & other_mask[name]
        assert torch.equal(inits[0][name][both], inits[1][name][both])


def test_probe_seed_keys_the_score_cache_only_when_set():
    device = torch.device("cpu")
    base = score_key(build_config(SMALL), device)
    assert "probe_seed" not in base and "train_seed" not in base
    assert score_key(build_config({**SMALL, "train_seed": 3}), device) == base
    assert score_key(build_config({**SMALL, "probe_seed": 3}), device)["probe_seed"] == 3


@pytest.mark.parametrize("key", ["train_seed", "probe_seed"])
@pytest.mark.parametrize("value", [-1, 2**64, "3", 1.5])
def test_bad_seeds_are_refused(key, value):
    with pytest.raises(InitpruneError, match=key):
        build_config({**SMALL, key: value})


def test_committed_runs_keep_their_settings_hash():
    records = sorted((ROOT / "docs").rglob("run.json"))
    assert len(records) > 100
    for path in records:
        record = json.loads(path.read_text())
        settings = record["settings"]
        assert build_config(settings, str(path)).settings_hash() == record["settings_hash"], path
