"""The prune pipeline and the BatchNorm warmup."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

import initprune
from initprune import InitpruneError, LayerCollapseWarning, prune, warmup_bn
from initprune.pruning import round_densities

from .conftest import tiny_convnet


def _data(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 6, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[:6], y[:6]), (x[6:], y[6:])]


def test_round_densities_are_exponential_and_end_at_the_target():
    d = round_densities(0.99, 100)
    assert len(d) == 100
    assert d[-1] == pytest.approx(0.01)
    assert d[0] == pytest.approx(0.01 ** (1 / 100))
    assert all(a > b for a, b in itertools.pairwise(d))
    assert round_densities(0.9, 1) == [pytest.approx(0.1)]


def test_prune_leaves_the_model_pruned_and_non_prunable_parameters_dense():
    torch.manual_seed(0)
    model = tiny_convnet()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    mask = prune(model, "snip", _data(), sparsity=0.8)
    assert mask.num_kept == round(0.2 * mask.num_total)
    named = dict(model.named_parameters())
    for name in mask:
        assert (named[name].detach()[~mask[name]] == 0).all()
        assert torch.equal(named[name].detach()[mask[name]], before[name][mask[name]])
    for name in ("0.bias", "1.weight", "1.bias", "5.weight", "8.bias", "10.weight", "10.bias"):
        assert torch.equal(named[name].detach(), before[name]), name
    assert "10.weight" not in mask  # the classifier stays dense by default


def test_iterative_masks_only_shrink_and_rounds_follow_the_schedule(monkeypatch):
    import initprune.pruning as pruning

    seen = []
    real = pruning.make_mask

    def recording(scores, sparsity, scope, **kw):
        mask = real(scores, sparsity, scope, **kw)
        seen.append(mask)
        return mask

    monkeypatch.setattr(pruning, "make_mask", recording)
    torch.manual_seed(0)
    model = tiny_convnet()
    final = prune(model, "synflow", sparsity=0.95, rounds=10, input_shape=(2, 6, 6))
    assert len(seen) == 10 and seen[-1] is final
    for t, (prev, cur) in enumerate(itertools.pairwise(seen)):
        for k in cur:
            assert not (cur[k] & ~prev[k]).any(), f"round {t + 1} revived weights of {k}"
    for mask, density in zip(seen, round_densities(0.95, 10), strict=True):
        assert mask.num_kept == round(density * mask.num_total)


@pytest.mark.filterwarnings("ignore::initprune.LayerCollapseWarning")
def test_synflow_defaults_to_100_rounds(monkeypatch):
    import initprune.pruning as pruning

    calls = []
    real = pruning.score
    monkeypatch.setattr(pruning, "score", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    prune(tiny_convnet(), "synflow", sparsity=0.9, input_shape=(2, 6, 6))
    assert len(calls) == 100
    calls.clear()
    prune(tiny_convnet(), "magnitude", sparsity=0.9)
    assert len(calls) == 1


def test_same_seed_gives_the_identical_mask():
    masks = []
    for seed in (5, 5, 6):
        torch.manual_seed(0)
        masks.append(prune(tiny_convnet(), "hutch_pruner", _data(), sparsity=0.9, probes=2, seed=seed))
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    assert not all(torch.equal(masks[0][k], masks[2][k]) for k in masks[0])


def test_prune_warns_on_collapse_and_lists_it():
    torch.manual_seed(0)
    model = tiny_convnet()
    with torch.no_grad():
        model[8].weight.mul_(1e-6)  # the smallest layer by magnitude
    with pytest.warns(LayerCollapseWarning, match="8.weight"):
        mask = prune(model, "magnitude", sparsity=0.9)
    assert mask.collapsed() == ["8.weight"]


def test_prune_with_warmup_updates_batchnorm_before_scoring(monkeypatch):
    import initprune.pruning as pruning

    torch.manual_seed(0)
    model = tiny_convnet()
    stats = []
    real = pruning.score

    def spy(m, *a, **kw):
        stats.append(m[1].running_mean.clone())
        return real(m, *a, **kw)

    monkeypatch.setattr(pruning, "score", spy)
    prune(model, "snip", _data(), sparsity=0.5, warmup_batches=2)
    assert not torch.equal(stats[0], torch.zeros(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.0}, "sparsity must be in"),
        ({"sparsity": 0.5, "scope": "row"}, r"unknown scope 'row'; valid: erk, global, layerwise"),
        ({"sparsity": 0.5, "rounds": 0}, "rounds must be a positive integer"),
        ({"sparsity": 0.5, "probes": 3}, r"'snip' does not take option\(s\) 'probes'"),
    ],
)
def test_prune_rejects_bad_input(kwargs, message):
    with pytest.raises(InitpruneError, match=message):
        prune(tiny_convnet(), "snip", _data(), **kwargs)


def test_prune_without_data_for_a_data_dependent_criterion():
    with pytest.raises(InitpruneError, match="needs scoring data"):
        prune(tiny_convnet(), "hutch_diag", sparsity=0.5)


class _Stats(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_warmup_bn_cumulative_equals_the_mean_of_batch_statistics():
    # float64: BatchNorm's running average and the mean below sum in other orders; in float64 that is
    # ~1e-16 relative, so a tolerance of 1e-10 is tight against any wrong weighting of the batches.
    torch.manual_seed(0)
    model = _Stats().double().eval()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    data = _data(18)
    data = [(x.double(), y) for x, y in data] + [
        (torch.randn(6, 2, 6, 6, dtype=torch.float64), torch.zeros(6, dtype=torch.long))
    ]
    used = warmup_bn(model, data, cumulative=True)
    assert used == 3
    with torch.no_grad():
        acts = [model.conv(x) for x, _ in data]
    means = torch.stack([a.mean((0, 2, 3)) for a in acts]).mean(0)
    variances = torch.stack([a.var((0, 2, 3), unbiased=True) for a in acts]).mean(0)
    torch.testing.assert_close(model.bn.running_mean, means, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.bn.running_var, variances, rtol=1e-10, atol=1e-12)
    assert not model.training and model.bn.momentum == 0.1
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())


def test_warmup_bn_warns_when_the_data_has_fewer_batches_than_asked():
    model = _Stats()
    with pytest.warns(
        UserWarning, match=r"warmup_bn: 100 batches asked for, but the data holds 2: warmed up on 2"
    ):
        assert warmup_bn(model, _data(), batches=100) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warmup_bn(model, _data(), batches=2) == 2 and warmup_bn(model, _data()) == 2


def test_warmup_bn_momentum_batches_and_zero():
    torch.manual_seed(0)
    model = _Stats().double()  # float64: the expected mean below sums in another order than BatchNorm
    data = [(x.double(), y) for x, y in _data()]
    assert warmup_bn(model, data, batches=0) == 0
    assert torch.equal(model.bn.running_mean, torch.zeros(3, dtype=torch.float64))
    assert warmup_bn(model, data, batches=1) == 1
    with torch.no_grad():
        expected = 0.1 * model.conv(data[0][0]).mean((0, 2, 3))
    torch.testing.assert_close(model.bn.running_mean, expected, rtol=1e-10, atol=1e-12)
    assert model.training  # mode restored
    with pytest.raises(InitpruneError, match="warmup batches"):
        warmup_bn(model, data, batches=-1)


def test_public_api_names():
    for name in ("criteria", "score", "make_mask", "Mask", "warmup_bn", "prune", "LayerCollapseWarning"):
        assert hasattr(initprune, name)
