"""Mask properties: exact kept counts, threshold separation, ties, scopes, collapse, saving."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from initprune import InitpruneError, LayerCollapseWarning, Mask, make_mask
from initprune.masks import erk_densities, top_k_mask


def _scores(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(8, 3, 3, 3, generator=g),
        "b.weight": torch.randn(16, 8, 3, 3, generator=g),
        "c.weight": torch.randn(10, 16, generator=g),
    }


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.98, 0.999])
def test_global_keeps_exactly_round_density_n_and_threshold_separates(sparsity):
    scores = _scores()
    mask = make_mask(scores, sparsity, "global", warn=False)
    n = sum(s.numel() for s in scores.values())
    assert mask.num_kept == max(1, round((1 - sparsity) * n))
    assert mask.num_total == n
    kept = torch.cat([scores[k][mask[k]] for k in scores])
    pruned = torch.cat([scores[k][~mask[k]] for k in scores])
    if pruned.numel() and kept.numel():
        assert kept.min() >= pruned.max()
    assert mask.sparsity == pytest.approx(1 - mask.num_kept / n)
    assert mask.density == pytest.approx(mask.num_kept / n)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.999])
def test_layerwise_keeps_the_same_fraction_in_each_layer(sparsity):
    scores = _scores()
    mask = make_mask(scores, sparsity, "layerwise", warn=False)
    for name, s in scores.items():
        assert int(mask[name].sum()) == max(1, round((1 - sparsity) * s.numel()))
        if (~mask[name]).any():
            assert s[mask[name]].min() >= s[~mask[name]].max()
    assert mask.collapsed() == []


def test_global_keeps_at_least_one_weight():
    mask = make_mask({"w": torch.randn(10)}, 0.999, warn=False)
    assert mask.num_kept == 1


def test_ties_are_broken_deterministically_by_index():
    flat = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5, 2.0])
    keep = top_k_mask(flat, 3)
    assert keep.tolist() == [False, True, True, True, False, False]
    mask = make_mask({"w": torch.ones(4, 5)}, 0.5, warn=False)
    assert mask["w"].reshape(-1).tolist() == [True] * 10 + [False] * 10


def test_erk_allocation_matches_the_target_density_and_caps_layers():
    shapes = {"a": torch.Size([8, 3, 3, 3]), "b": torch.Size([64, 64, 3, 3]), "c": torch.Size([10, 64])}
    densities = erk_densities(shapes, 0.1)
    total = sum(math.prod(s) for s in shapes.values())
    kept = sum(densities[n] * math.prod(s) for n, s in shapes.items())
    assert kept == pytest.approx(0.1 * total)
    assert all(0 < d <= 1 for d in densities.values())
    assert densities["a"] >= densities["c"] > densities["b"]  # small layers denser
    assert densities["b"] < 0.1 < densities["c"]
    dense = erk_densities(shapes, 0.9)
    assert dense["a"] == 1.0  # capped, the rest take up the budget
    assert sum(dense[n] * math.prod(s) for n, s in shapes.items()) == pytest.approx(0.9 * total)
    scores = {n: torch.randn(s) for n, s in shapes.items()}
    mask = make_mask(scores, 0.9, "erk", warn=False)
    assert abs(mask.num_kept - round(0.1 * total)) <= len(shapes)
    for n, s in shapes.items():
        assert int(mask[n].sum()) == max(1, round(densities[n] * math.prod(s)))


def test_previous_mask_only_shrinks():
    scores = _scores()
    first = make_mask(scores, 0.5, warn=False)
    # scores that favour exactly the weights pruned before must not revive them
    inverted = {k: -v for k, v in scores.items()}
    second = make_mask(inverted, 0.8, previous=first, warn=False)
    for k in scores:
        assert not (second[k] & ~first[k]).any()
    assert second.num_kept == round(0.2 * first.num_total)


def test_collapse_warns_and_is_listed():
    scores = {"small.weight": torch.full((4,), -1.0), "big.weight": torch.ones(100)}
    with pytest.warns(LayerCollapseWarning, match="small.weight"):
        mask = make_mask(scores, 0.5)
    assert mask.collapsed() == ["small.weight"]
    assert mask.per_layer() == {"small.weight": 0.0, "big.weight": pytest.approx(52 / 100)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_mask(scores, 0.5, "layerwise")  # no collapse: no warning


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_bad_sparsity_is_named(bad):
    with pytest.raises(InitpruneError, match="sparsity"):
        make_mask(_scores(), bad)


def test_bad_scope_lists_valid_ones():
    with pytest.raises(InitpruneError, match=r"'blockwise'.*erk, global, layerwise"):
        make_mask(_scores(), 0.5, "blockwise")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_name_the_parameter(bad):
    scores = _scores()
    scores["b.weight"][3, 1, 0, 0] = bad
    with pytest.raises(InitpruneError, match=r"'b.weight'.*1 NaN or infinite"):
        make_mask(scores, 0.5)


def test_apply_zeroes_only_pruned_weights_and_checks_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = make_mask({"0.weight": torch.randn(3, 4)}, 0.5, warn=False)
    mask.apply(model)
    w = model[0].weight.detach()
    assert (w[~mask["0.weight"]] == 0).all()
    assert torch.equal(w[mask["0.weight"]], before["0.weight"][mask["0.weight"]])
    for k in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(model.state_dict()[k], before[k])
    with pytest.raises(InitpruneError, match="not parameters"):
        Mask({"nope.weight": torch.ones(3, 4, dtype=torch.bool)}).apply(model)
    with pytest.raises(InitpruneError, match="shape"):
        Mask({"0.weight": torch.ones(4, 3, dtype=torch.bool)}).apply(model)


def test_save_and_load_round_trip_atomically(tmp_path):
    mask = make_mask(_scores(), 0.9, warn=False)
    path = tmp_path / "sub" / "mask.pt"
    mask.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["mask.pt"]  # no temporary file left
    loaded = Mask.load(path)
    assert list(loaded) == list(mask)
    for k in mask:
        assert torch.equal(loaded[k], mask[k])
    payload = torch.load(path, weights_only=True)  # readable without pickle
    assert payload["format"] == "initprune.mask"


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(InitpruneError, match="does not exist"):
        Mask.load(tmp_path / "none.pt")
    torch.save({"a": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(InitpruneError, match="not an initprune mask"):
        Mask.load(tmp_path / "other.pt")


def test_saved_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    path = tmp_path / "mask.pt"
    make_mask(_scores(), 0.5, warn=False).save(path)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
