"""Every criterion against a reference written from its formula, and the rules of `score`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initprune
from initprune import InitpruneError, make_mask, score
from initprune.curvature import hutchinson_diagonal
from initprune.prunable import prunable_parameters

from .conftest import tiny_convnet
from .reference import cat, exact_hessian, mean_loss_fn, per_sample_grads, split

PAPER_CRITERIA = {
    "random",
    "magnitude",
    "grad_norm",
    "snip",
    "grasp",
    "synflow",
    "fisher_diag",
    "fisher_pruner",
    "fisher_taylor",
    "hutch_diag",
    "hutch_pruner",
    "hutch_taylor",
}
DATA_FREE = {"random", "magnitude", "synflow"}


def _run(model, name, data, **options):
    return score(model, name, None if name in DATA_FREE else data, input_shape=(2, 6, 6), **options)


def test_registry_lists_every_paper_criterion_with_a_description():
    listed = initprune.criteria()
    assert PAPER_CRITERIA <= set(listed)
    assert all(isinstance(d, str) and d for d in listed.values())
    assert initprune.get_criterion("synflow").default_rounds == 100
    assert initprune.get_criterion("snip").default_rounds == 1
    assert initprune.get_criterion("grasp").options["temperature"] == 200.0
    assert initprune.get_criterion("hutch_diag").options == {
        "probes": 10,
        "temperature": 200.0,
        "chunk_size": None,
        "probe_scope": "prunable",
    }
    assert initprune.get_criterion("fisher_diag").options["temperature"] == 1.0


def _batch_grad(model, names, x, y, temperature):
    loss, flat, shapes, sizes = mean_loss_fn(model.eval(), names, x, y, temperature)
    return split(torch.func.grad(loss)(flat), names, shapes, sizes)


def test_grad_norm_and_snip_match_the_formula(convnet, conv_data):
    names = list(prunable_parameters(convnet))
    x, y = cat(conv_data)
    g = _batch_grad(convnet, names, x, y, 1.0)
    params = dict(convnet.named_parameters())
    gn, sn = score(convnet, "grad_norm", conv_data), score(convnet, "snip", conv_data)
    assert list(gn) == names
    for n in names:
        torch.testing.assert_close(gn[n], g[n].abs(), rtol=1e-8, atol=1e-15)
        torch.testing.assert_close(sn[n], (params[n].detach() * g[n]).abs(), rtol=1e-8, atol=1e-15)


def test_grasp_is_theta_times_hessian_gradient_at_temperature_200(convnet, conv_data):
    names = list(prunable_parameters(convnet))
    x, y = cat(conv_data)
    g = _batch_grad(convnet, names, x, y, 200.0)
    h = exact_hessian(convnet, names, x, y, 200.0)
    _, _, shapes, sizes = mean_loss_fn(convnet, names, x, y, 200.0)
    hg = split(h @ torch.cat([g[n].reshape(-1) for n in names]), names, shapes, sizes)
    params = dict(convnet.named_parameters())
    got = score(convnet, "grasp", conv_data)
    for n in names:
        ref = params[n].detach() * hg[n]
        torch.testing.assert_close(got[n], ref, rtol=1e-6, atol=1e-18)
    # signed, keep-largest θ⊙Hg: the negated score would keep the complement
    assert any((got[n] < 0).any() for n in names) and any((got[n] > 0).any() for n in names)


def test_synflow_matches_the_path_norm_of_an_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    w = [model[i].weight.detach().double().abs().requires_grad_() for i in (0, 2, 4)]
    b = [model[i].bias.detach().double().abs() for i in (0, 2, 4)]
    ones = torch.ones(5, dtype=torch.float64)
    r = (w[2] @ (w[1] @ (w[0] @ ones + b[0]) + b[1]) + b[2]).sum()  # R = 1ᵀ f(1; |θ|)
    grads = torch.autograd.grad(r, w)
    got = score(model, "synflow", input_shape=(5,), include_classifier=True)
    for name, wi, gi in zip(("0.weight", "2.weight", "4.weight"), w, grads, strict=True):
        torch.testing.assert_close(got[name], (wi * gi).detach(), rtol=1e-12, atol=0)
    assert got["0.weight"].dtype == torch.float64


def test_fisher_criteria_compose_the_per_sample_fisher(convnet, conv_data):
    params = prunable_parameters(convnet)
    names = list(params)
    x, y = cat(conv_data)
    grads = per_sample_grads(convnet.eval(), names, x, y)
    fisher = {n: sum(g[n].square() for g in grads) / len(grads) for n in names}
    g = {n: sum(gi[n] for gi in grads) / len(grads) for n in names}
    theta = {n: p.detach() for n, p in params.items()}
    refs = {
        "fisher_diag": fisher,
        "fisher_pruner": {n: 0.5 * theta[n] ** 2 * fisher[n] for n in names},
        "fisher_taylor": {n: (theta[n] * g[n] + 0.5 * theta[n] ** 2 * fisher[n]).abs() for n in names},
    }
    for crit, ref in refs.items():
        got = score(convnet, crit, conv_data)
        for n in names:
            torch.testing.assert_close(got[n], ref[n], rtol=1e-6, atol=1e-18)


def test_hutchinson_criteria_compose_the_hutchinson_diagonal(convnet, conv_data):
    params = prunable_parameters(convnet)
    names = list(params)
    x, y = cat(conv_data)
    convnet.eval()
    diag = hutchinson_diagonal(convnet, params, conv_data, probes=10, temperature=200.0, seed=7)
    g = _batch_grad(convnet, names, x, y, 200.0)
    theta = {n: p.detach() for n, p in params.items()}
    refs = {
        "hutch_diag": diag,
        "hutch_pruner": {n: 0.5 * theta[n] ** 2 * diag[n] for n in names},
        "hutch_taylor": {n: (theta[n] * g[n] + 0.5 * theta[n] ** 2 * diag[n]).abs() for n in names},
    }
    for crit, ref in refs.items():
        got = score(convnet, crit, conv_data, seed=7)
        for n in names:
            torch.testing.assert_close(got[n], ref[n], rtol=1e-6, atol=1e-20)


def test_magnitude_and_random():
    torch.manual_seed(0)
    model = tiny_convnet()
    mag = score(model, "magnitude")
    for n, p in prunable_parameters(model).items():
        assert torch.equal(mag[n], p.detach().abs())
    a = score(model, "random", seed=3)
    b = score(model, "random", seed=3)
    c = score(model, "random", seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


@pytest.mark.parametrize("name", sorted(PAPER_CRITERIA))
def test_scoring_never_changes_the_model(name, conv_data):
    torch.manual_seed(0)
    model = tiny_convnet().double()
    model.train()
    model[4].eval()  # a mixed mode must come back as it was
    model[8].bias.requires_grad_(False)
    params_before = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers_before = {k: v.clone() for k, v in model.named_buffers()}
    flags = {k: v.requires_grad for k, v in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    options = {"probes": 2} if name.startswith("hutch") else {}
    scores = _run(model, name, conv_data, **options)
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), params_before[k]), k
        assert v.requires_grad == flags[k], k
        assert v.grad is None, k
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers_before[k]), k
    assert [m.training for m in model.modules()] == modes
    assert set(scores) == set(prunable_parameters(model))
    for n, s in scores.items():
        assert s.shape == params_before[n].shape and torch.isfinite(s).all()


@pytest.mark.parametrize("name", ["random", "hutch_diag", "hutch_taylor"])
def test_same_seed_same_mask_different_seed_different(name, conv_data):
    torch.manual_seed(0)
    model = tiny_convnet().double()
    options = {"probes": 2} if name.startswith("hutch") else {}
    masks = [make_mask(_run(model, name, conv_data, seed=s, **options), 0.7, warn=False) for s in (1, 1, 2)]
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
    assert not all(torch.equal(masks[0][n], masks[2][n]) for n in masks[0])


def test_scoring_runs_in_eval_mode_with_running_statistics(conv_data):
    """Per-sample quantities are defined in eval mode: a model left in train mode scores the same."""
    torch.manual_seed(0)
    model = tiny_convnet().double()
    evaluated = score(model.eval(), "fisher_diag", conv_data)
    trained = score(model.train(), "fisher_diag", conv_data)
    assert all(torch.equal(evaluated[n], trained[n]) for n in evaluated)


def test_unknown_criterion_suggests_the_nearest(conv_data):
    with pytest.raises(
        InitpruneError, match=r"unknown criterion 'snipp'; did you mean 'snip'\? \(`initprune criteria`"
    ):
        score(tiny_convnet(), "snipp", conv_data)


def test_data_dependent_criterion_without_data():
    with pytest.raises(InitpruneError, match="'fisher_diag' needs scoring data"):
        score(tiny_convnet(), "fisher_diag")


def test_options_a_criterion_does_not_take_are_an_error(conv_data):
    with pytest.raises(
        InitpruneError, match=r"'snip' does not take option\(s\) 'probes'; valid: temperature"
    ):
        score(tiny_convnet().double(), "snip", conv_data, probes=10)
    with pytest.raises(InitpruneError, match=r"'magnitude' does not take option.*valid: none"):
        score(tiny_convnet(), "magnitude", temperature=2.0)
    with pytest.raises(
        InitpruneError, match=r"option probe_scope='some' is invalid; valid: one of prunable, all"
    ):
        score(tiny_convnet().double(), "hutch_diag", conv_data, probe_scope="some")


def test_model_without_prunable_parameters():
    with pytest.raises(InitpruneError, match="no prunable parameters"):
        score(nn.Sequential(nn.Linear(3, 2)), "magnitude")  # only a classifier
    with pytest.raises(InitpruneError, match="no prunable parameters"):
        score(nn.Sequential(nn.BatchNorm1d(3)), "magnitude")


def test_prunable_selection_by_module_type():
    model = tiny_convnet()
    assert list(prunable_parameters(model)) == ["0.weight", "4.weight", "8.weight"]
    assert list(prunable_parameters(model, include_classifier=True))[-1] == "10.weight"
    assert list(prunable_parameters(model, exclude_first=True)) == ["4.weight", "8.weight"]


def test_synflow_needs_an_input_shape():
    with pytest.raises(InitpruneError, match="input_shape"):
        score(tiny_convnet(), "synflow")


def test_single_batch_pair_is_accepted(conv_data):
    model = tiny_convnet().double()
    x, y = cat(conv_data)
    a = score(model, "snip", (x, y))
    b = score(model, "snip", conv_data)
    assert all(torch.allclose(a[n], b[n], rtol=1e-10, atol=1e-18) for n in a)


def test_temperature_scales_the_loss(convnet, conv_data):
    names = list(prunable_parameters(convnet))
    x, y = cat(conv_data)
    got = score(convnet, "grad_norm", conv_data, temperature=5.0)
    ref = _batch_grad(convnet, names, x, y, 5.0)
    assert all(torch.allclose(got[n], ref[n].abs(), rtol=1e-8, atol=1e-15) for n in names)
    plain = score(convnet, "grad_norm", conv_data)
    assert not all(torch.allclose(got[n], plain[n]) for n in names)
