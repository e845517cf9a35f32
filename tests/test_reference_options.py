"""The reference code's remaining behaviours as named options, never defaults: the warmup over augmented,
unshuffled training data, the unshuffled training loader and the CIFAR-10/TinyImageNet std constants."""

from __future__ import annotations

import pytest
import torch

from initprune import InitpruneError
from initprune.data import check_dataset_settings
from initprune.data.base import Source
from initprune.data.dataset import DatasetSplits
from initprune.data.registry import REFERENCE_STD, REGISTRY, _reference_std
from initprune.experiments import build_config, run_experiment
from initprune.experiments.cache import score_key

SMALL = {
    "model": "lenet5",
    "dataset": "synthetic",
    "dataset_options": {
        "input_shape": [1, 12, 12],
        "train_size": 200,
        "test_size": 50,
        "num_classes": 3,
        "augmentation": "flip",
    },
    "val_size": 40,
    "criterion": "snip",
    "sparsity": 0.8,
    "warmup_batches": 1,
    "scoring_per_class": 2,
    "batch_size": 40,
    "epochs": 0.2,
    "device": "cpu",
}


def _loader_calls(monkeypatch, tmp_path, **changes):
    calls = []
    original = DatasetSplits.loader

    def spy(self, split, **kwargs):
        calls.append((split, kwargs))
        return original(self, split, **kwargs)

    monkeypatch.setattr(DatasetSplits, "loader", spy)
    run_experiment(build_config({**SMALL, "out": str(tmp_path / "run"), **changes}), progress=False)
    train = [kw for split, kw in calls if split == "train"]
    warmup = [kw for kw in train if "augment" in kw]  # the training's loader leaves augment to the split
    training = [kw for kw in train if "augment" not in kw]
    assert len(warmup) == len(training) == 1
    return warmup[0], training[0]


def test_defaults_shuffle_and_leave_the_warmup_unaugmented(monkeypatch, tmp_path):
    warmup, training = _loader_calls(monkeypatch, tmp_path)
    assert warmup["shuffle"] is True and warmup["augment"] is False
    assert training["shuffle"] is True


def test_reference_warmup_and_training_order(monkeypatch, tmp_path):
    warmup, training = _loader_calls(
        monkeypatch, tmp_path, warmup_augment=True, warmup_shuffle=False, train_shuffle=False
    )
    assert warmup["shuffle"] is False and warmup["augment"] is True
    assert training["shuffle"] is False


def test_unshuffled_training_sees_the_file_order(tmp_path):
    config = build_config({**SMALL, "train_shuffle": False, "out": str(tmp_path / "a")})
    from initprune.data import load_dataset

    splits = load_dataset("synthetic", val_size=40, **SMALL["dataset_options"])
    loader = splits.loader("train", batch_size=40, shuffle=config.train_shuffle, augment=False, seed=3)
    first = [y for _, y in loader]
    loader.set_epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in loader], strict=True))
    assert torch.equal(torch.cat(first), splits.train_targets.to(torch.cat(first).device))


def test_warmup_options_key_the_score_cache_only_when_set():
    device = torch.device("cpu")
    base = score_key(build_config(SMALL), device)
    assert not {"warmup_augment", "warmup_shuffle", "train_shuffle"} & set(base)
    assert score_key(build_config({**SMALL, "train_shuffle": False}), device) == base
    assert score_key(build_config({**SMALL, "warmup_augment": True}), device)["warmup_augment"] is True
    assert score_key(build_config({**SMALL, "warmup_shuffle": False}), device)["warmup_shuffle"] is False
    with pytest.raises(InitpruneError, match="warmup_shuffle must be true or false"):
        build_config({**SMALL, "warmup_shuffle": "no"})


def test_reference_std_constants():
    assert REGISTRY["cifar10"].options["reference_std"] is False
    assert REGISTRY["tinyimagenet"].options["reference_std"] is False
    check_dataset_settings("cifar10", reference_std=True)
    with pytest.raises(InitpruneError, match="reference_std of 'cifar10' must be true or false"):
        check_dataset_settings("cifar10", reference_std="yes")
    with pytest.raises(InitpruneError, match=r"unknown option.*reference_std"):
        check_dataset_settings("cifar100", reference_std=True)

    def source():
        return Source(train=None, test=None, num_classes=10, input_shape=(3, 32, 32), mean=(0.5,) * 3,
                      std=(0.25, 0.25, 0.25), augmentation="crop_flip")  # fmt: skip

    assert _reference_std(source(), "cifar10", False).std == (0.25, 0.25, 0.25)
    assert _reference_std(source(), "cifar10", True).std == (0.2023, 0.1994, 0.2010)
    assert (
        _reference_std(source(), "tinyimagenet", True).std
        == REFERENCE_STD["tinyimagenet"]
        == (0.276, 0.269, 0.282)
    )
