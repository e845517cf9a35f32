"""BatchNorm warmup again before every round of an iterative schedule (``round_warmup``)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from initprune import InitpruneError, prune, warmup_bn
from initprune.experiments import build_config, run_experiment
from initprune.experiments import run as run_module
from initprune.experiments.config import settings_hash
from initprune.masks import make_mask
from initprune.pruning import round_densities
from initprune.scores import score

from .conftest import tiny_convnet
from .test_experiments import SMALL as EXPERIMENT

BN = (1, 5)  # the BatchNorm layers of tiny_convnet
SPARSITY = 0.6  # 3 rounds, no layer emptied


def _data(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 6, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, n, 4)]


def _stats(model) -> list[torch.Tensor]:
    return [t.clone() for i in BN for t in (model[i].running_mean, model[i].running_var)]


def _seen_by_each_round(monkeypatch, model, **kwargs) -> list[list[torch.Tensor]]:
    """The BatchNorm statistics the model holds when each round's scoring starts."""
    import initprune.pruning as pruning

    seen = []
    real = pruning.score

    def spy(m, *a, **kw):
        seen.append(_stats(m))
        return real(m, *a, **kw)

    monkeypatch.setattr(pruning, "score", spy)
    prune(model, "magnitude", _data(), sparsity=SPARSITY, rounds=3, warmup_batches=2, **kwargs)
    return seen


def test_each_later_round_scores_with_the_statistics_of_the_network_pruned_so_far(monkeypatch):
    torch.manual_seed(0)
    model = tiny_convnet()
    with torch.no_grad():  # magnitudes far apart per layer, so the rounds prune the BatchNorm inputs unevenly
        model[0].weight.mul_(torch.linspace(0.1, 3.0, 4).view(4, 1, 1, 1))
    reference = copy.deepcopy(model)
    warm = _data(seed=1)
    seen = _seen_by_each_round(monkeypatch, model, warmup_data=warm, round_warmup_batches=2)

    # By hand: warm up, then per round score, mask, zero the pruned weights, and warm up again.
    warmup_bn(reference, warm, batches=2)
    expected, mask = [_stats(reference)], None
    params = {n: p for n, p in reference.named_parameters() if n in ("0.weight", "4.weight", "8.weight")}
    for t, density in enumerate(round_densities(SPARSITY, 3)):
        mask = make_mask(score(reference, "magnitude", prunable=params), 1 - density, "global", previous=mask)
        mask.apply(reference)
        if t < 2:
            warmup_bn(reference, warm, batches=2)
            expected.append(_stats(reference))
    assert len(seen) == 3
    for t, (got, want) in enumerate(zip(seen, expected, strict=True)):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f"round {t}")
    # the pruned network's statistics are not the first warmup's: the test would see a missing rewarm
    assert not all(torch.allclose(a, b, rtol=1e-3) for a, b in zip(seen[2], seen[0], strict=True))


def test_without_round_warmup_every_round_scores_with_the_first_warmups_statistics(monkeypatch):
    torch.manual_seed(0)
    seen = _seen_by_each_round(monkeypatch, tiny_convnet(), warmup_data=_data(seed=1))
    assert len(seen) == 3
    for later in seen[1:]:
        assert all(torch.equal(a, b) for a, b in zip(later, seen[0], strict=True))
    assert not torch.equal(seen[0][0], torch.zeros(4))  # the first warmup ran


def test_round_warmup_uses_the_scoring_data_when_no_warmup_data_is_given(monkeypatch):
    torch.manual_seed(0)
    model = tiny_convnet()
    reference = copy.deepcopy(model)
    seen = _seen_by_each_round(monkeypatch, model, round_warmup_batches=1)
    warmup_bn(reference, _data(), batches=2)
    params = {n: p for n, p in reference.named_parameters() if n in ("0.weight", "4.weight", "8.weight")}
    mask = make_mask(
        score(reference, "magnitude", prunable=params), 1 - round_densities(SPARSITY, 3)[0], "global"
    )
    mask.apply(reference)
    warmup_bn(reference, _data(), batches=1)
    for a, b in zip(seen[1], _stats(reference), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"round_warmup_batches": -1},
            r"round_warmup_batches must be an integer >= 0 or None \(one pass\), got -1",
        ),
        ({"round_warmup_batches": 1.5}, r"round_warmup_batches must be an integer >= 0 or None"),
        ({"round_warmup_batches": True}, r"round_warmup_batches must be an integer >= 0 or None"),
    ],
)
def test_prune_rejects_a_bad_round_warmup(kwargs, message):
    with pytest.raises(InitpruneError, match=message):
        prune(tiny_convnet(), "snip", _data(), sparsity=0.5, rounds=2, **kwargs)


def test_round_warmup_of_a_data_free_criterion_needs_data():
    with pytest.raises(InitpruneError, match=r"BatchNorm warmup needs data: .* or round_warmup_batches=0"):
        prune(
            tiny_convnet(), "synflow", sparsity=0.5, rounds=2, input_shape=(2, 6, 6), round_warmup_batches=1
        )


SMALL = {**EXPERIMENT, "rounds": 3, "epochs": 0.2}  # a tiny ResNet-20 run on synthetic data, 3 rounds


def test_a_run_with_round_warmup_passes_its_warmup_to_every_round_and_records_it(tmp_path, monkeypatch):
    calls = []
    real = run_module.prune

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(run_module, "prune", spy)
    for flag in (True, False):
        config = build_config({**SMALL, "round_warmup": flag, "out": str(tmp_path / str(flag))})
        result = run_experiment(config, progress=False)
        assert calls[-1]["round_warmup_batches"] == (2 if flag else 0)
        assert (
            calls[-1]["warmup_data"] is not None and calls[-1]["warmup_batches"] == 0
        )  # the first is the run's
        stored = json.loads((tmp_path / str(flag) / "result.json").read_text())
        assert stored.get("round_warmup", False) is flag and result.get("round_warmup", False) is flag


def test_round_warmup_off_leaves_the_identity_of_earlier_runs_alone():
    settings = build_config(SMALL).to_dict()
    assert settings["round_warmup"] is False
    earlier = {k: v for k, v in settings.items() if k != "round_warmup"}
    assert settings_hash(settings) == settings_hash(earlier)
    assert settings_hash({**settings, "round_warmup": True}) != settings_hash(earlier)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"warmup_batches": 0}, "round_warmup runs the BatchNorm warmup .* but it is 0: set warmup_batches"),
        ({"prune_after_training": True}, "but prune_after_training scores without one"),
        (
            {"round_warmup": "yes"},
            r"round_warmup must be true or false \(a YAML boolean, unquoted\), got 'yes'",
        ),
    ],
)
def test_a_config_whose_round_warmup_cannot_run_is_refused(changes, message):
    with pytest.raises(InitpruneError, match=message):
        build_config({**SMALL, "round_warmup": True, **changes})
