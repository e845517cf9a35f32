"""The curvature estimators against exact references on tiny models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initprune.curvature import (
    batch_gradient,
    hessian_vector_product,
    hutchinson_diagonal,
    per_sample,
    per_sample_gradient_moments,
    rademacher_probes,
)
from initprune.curvature.probes import probe_seed
from initprune.curvature.samples import functional_parts
from initprune.prunable import prunable_parameters

from .reference import cat, exact_hessian, exact_hessian_diag, mean_loss_fn, per_sample_grads, rel_err, split


def _eval_params(model: nn.Module, include_classifier: bool = True) -> dict[str, nn.Parameter]:
    model.eval()
    return prunable_parameters(model, include_classifier=include_classifier)


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
@pytest.mark.parametrize("method", ["hooks-grouped", "hooks-unfold", "hooks-gram", "vmap"])
@pytest.mark.parametrize("temperature", [1.0, 7.0])
@pytest.mark.parametrize("slice_bytes", [None, 1], ids=["whole", "sliced"])
def test_empirical_fisher_equals_per_sample_loop(
    request, monkeypatch, model_name, method, temperature, slice_bytes
):
    """The three convolution routes of the hook engine (grouped weight gradient, unfolded patches,
    position Gram matrices) and vmap, with each layer's per-sample gradients made at once or one sample at
    a time."""
    if slice_bytes is not None:
        monkeypatch.setattr(per_sample, "CPU_SLICE_BYTES", slice_bytes)
    if method.startswith("hooks"):
        limit = 10**9 if method == "hooks-grouped" else 0
        monkeypatch.setattr(per_sample, "_GROUPED_MAX_WEIGHT_PER_POSITION", limit)
        monkeypatch.setattr(per_sample, "_GRAM_MAX_POSITIONS", 10**9 if method == "hooks-gram" else 0)
        method = "hooks"
    model = request.getfixturevalue(model_name)
    data = request.getfixturevalue("mlp_data" if model_name == "mlp" else "conv_data")
    params = _eval_params(model)
    x, y = cat(data)
    grads = per_sample_grads(model, list(params), x, y, temperature)
    n = x.shape[0]
    ref_f = {k: sum(g[k].square() for g in grads) / n for k in params}
    ref_g = {k: sum(g[k] for g in grads) / n for k in params}
    g, fisher = per_sample_gradient_moments(model, params, data, temperature=temperature, method=method)
    for k in params:
        torch.testing.assert_close(fisher[k], ref_f[k], rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(g[k], ref_g[k], rtol=1e-5, atol=1e-12)
    # the square of the batch gradient is a different (wrong) quantity: make sure the test can tell
    assert rel_err({k: ref_g[k].square() for k in params}, ref_f) > 0.1


@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_empirical_fisher_independent_of_batching(convnet, conv_data, chunk_size):
    params = _eval_params(convnet)
    x, y = cat(conv_data)
    whole = per_sample_gradient_moments(convnet, params, [(x, y)], chunk_size=None)[1]
    ones = per_sample_gradient_moments(convnet, params, [(x[i : i + 1], y[i : i + 1]) for i in range(6)])[1]
    chunked = per_sample_gradient_moments(convnet, params, conv_data, chunk_size=chunk_size)[1]
    for k in params:
        torch.testing.assert_close(ones[k], whole[k], rtol=1e-10, atol=0)
        torch.testing.assert_close(chunked[k], whole[k], rtol=1e-10, atol=0)


class _TokenNet(nn.Module):
    """Linear layers on token inputs (B, T, D) and a strided, dilated Conv1d: the other hook routes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).transpose(1, 2)  # (B, L, 4)
        return self.head(torch.tanh(self.mix(h)).mean(1))


@pytest.mark.parametrize("route", ["grouped", "unfold", "gram"])
@pytest.mark.parametrize("slice_bytes", [None, 1], ids=["whole", "sliced"])
def test_empirical_fisher_token_linear_and_conv1d_hooks_match_loop(monkeypatch, route, slice_bytes):
    monkeypatch.setattr(per_sample, "_GROUPED_MAX_WEIGHT_PER_POSITION", 10**9 if route == "grouped" else 0)
    monkeypatch.setattr(per_sample, "_GRAM_MAX_POSITIONS", 10**9 if route == "gram" else 0)
    if slice_bytes is not None:
        monkeypatch.setattr(per_sample, "CPU_SLICE_BYTES", slice_bytes)
    torch.manual_seed(0)
    model = _TokenNet().double()
    params = _eval_params(model)
    x = torch.randn(5, 3, 9, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    grads = per_sample_grads(model, list(params), x, y)
    ref = {k: sum(g[k].square() for g in grads) / 5 for k in params}
    fisher = per_sample_gradient_moments(model, params, [(x, y)], method="hooks")[1]
    for k in params:
        torch.testing.assert_close(fisher[k], ref[k], rtol=1e-6, atol=1e-14)


class _SharedLayerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.layer(torch.tanh(self.layer(x)))))


def test_layer_called_twice_falls_back_to_vmap():
    torch.manual_seed(0)
    model = _SharedLayerNet().double()
    params = _eval_params(model)
    x, y = torch.randn(4, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    grads = per_sample_grads(model, list(params), x, y)
    ref = {k: sum(g[k].square() for g in grads) / 4 for k in params}
    fisher = per_sample_gradient_moments(model, params, [(x, y)])[1]
    for k in params:
        torch.testing.assert_close(fisher[k], ref[k], rtol=1e-6, atol=1e-14)


def test_batch_gradient_and_hvp_match_torch_func(convnet, conv_data):
    params = _eval_params(convnet)
    names = list(params)
    x, y = cat(conv_data)
    loss, flat, shapes, sizes = mean_loss_fn(convnet, names, x, y, 3.0)
    ref_g = split(torch.func.grad(loss)(flat), names, shapes, sizes)
    g = batch_gradient(convnet, params, conv_data, temperature=3.0)
    hv = hessian_vector_product(convnet, params, conv_data, g, temperature=3.0)
    h = exact_hessian(convnet, names, x, y, 3.0)
    ref_hv = split(h @ torch.cat([ref_g[k].reshape(-1) for k in names]), names, shapes, sizes)
    for k in names:
        torch.testing.assert_close(g[k], ref_g[k], rtol=1e-8, atol=1e-14)
        torch.testing.assert_close(hv[k], ref_hv[k], rtol=1e-6, atol=1e-14)


def _per_sample_hessians(model, names, x, y, temperature):
    return [exact_hessian(model, names, x[i : i + 1], y[i : i + 1], temperature) for i in range(x.shape[0])]


@pytest.mark.parametrize(("method", "route"), [("jvp", "vmap"), ("vjp", "vmap"), ("vjp", "loop")])
@pytest.mark.parametrize(("temperature", "probe_all"), [(1.0, False), (200.0, False), (1.0, True)])
def test_hutchinson_equals_formula_with_the_same_probes(
    convnet, conv_data, temperature, probe_all, method, route
):
    """ĥ = (1/(kN)) Σ_i Σ_j z_ij ⊙ (H_i z_ij), with H_i from torch.func.hessian and the same z_ij, by
    forward-over-reverse and reverse-over-reverse Hessian-vector products, batched and one sample at a time.

    With ``probe_all`` the probes span every parameter (BatchNorm and biases too) and H_i is the full
    per-sample Hessian; the estimate is read off on the prunable weights.
    """
    params = _eval_params(convnet)
    probe_params = dict(convnet.named_parameters()) if probe_all else params
    names, probed_names = list(params), list(probe_params)
    x, y = cat(conv_data)
    k = 3
    est = hutchinson_diagonal(
        convnet,
        params,
        conv_data,
        probes=k,
        temperature=temperature,
        chunk_size=4,
        generator=torch.Generator().manual_seed(5),
        probe_params=probe_params,
        method=method,
        route=route,
    )
    probed, _ = functional_parts(convnet, probe_params)
    z = rademacher_probes(
        {n: p.shape for n, p in probed.items()},
        k,
        x.shape[0],
        torch.Generator().manual_seed(5),
        torch.device("cpu"),
        torch.float64,
    )
    flat_z = torch.cat([z[n].reshape(x.shape[0], k, -1) for n in probed_names], dim=-1)  # (N, k, P)
    hessians = _per_sample_hessians(convnet, probed_names, x, y, temperature)
    total = sum((flat_z[i] * (flat_z[i] @ hessians[i].T)).sum(0) for i in range(x.shape[0]))
    _, _, shapes, sizes = mean_loss_fn(convnet, probed_names, x, y, temperature)
    ref = split(total / (k * x.shape[0]), probed_names, shapes, sizes)
    assert set(est) == set(names)
    for n in names:
        torch.testing.assert_close(est[n], ref[n], rtol=1e-6, atol=1e-16)


def test_hutchinson_probes_do_not_depend_on_chunking_or_route(convnet, conv_data):
    params = _eval_params(convnet)
    runs = [
        hutchinson_diagonal(
            convnet,
            params,
            conv_data,
            probes=2,
            chunk_size=c,
            route=route,
            generator=torch.Generator().manual_seed(1),
        )
        for c in (1, 4, None)
        for route in ("auto", "vmap", "loop")
    ]
    for other in runs[1:]:
        for n in params:
            torch.testing.assert_close(other[n], runs[0][n], rtol=1e-10, atol=1e-18)


def test_hutchinson_takes_an_int_seed_or_a_generator(convnet, conv_data):
    """An int seed is the probes' base seed itself (the same on every device); a generator supplies one
    with a draw; exactly one of them is given."""
    params = _eval_params(convnet)
    by_seed = hutchinson_diagonal(
        convnet, params, conv_data, probes=2, seed=probe_seed(torch.Generator().manual_seed(4))
    )
    by_generator = hutchinson_diagonal(
        convnet, params, conv_data, probes=2, generator=torch.Generator().manual_seed(4)
    )
    for n in params:
        assert torch.equal(by_seed[n], by_generator[n])
    other = hutchinson_diagonal(convnet, params, conv_data, probes=2, seed=5)
    assert any(not torch.equal(other[n], by_seed[n]) for n in params)
    for kwargs in ({}, {"seed": 1, "generator": torch.Generator()}):
        with pytest.raises(ValueError, match="exactly one of generator"):
            hutchinson_diagonal(convnet, params, conv_data, probes=2, **kwargs)


def test_hutchinson_auto_route_loops_when_a_pass_holds_one_sample(monkeypatch, convnet, conv_data):
    """``auto`` takes the loop for single-sample passes and vmap otherwise (spied, not timed)."""
    from initprune.curvature import hvp

    taken = []
    for name in ("_loop_chunk_sums", "_vmap_chunk_sums"):
        real = getattr(hvp, name)
        monkeypatch.setattr(hvp, name, lambda *a, _real=real, _name=name: taken.append(_name) or _real(*a))
    params = _eval_params(convnet)
    for c in (1, 4):
        hutchinson_diagonal(convnet, params, conv_data, probes=2, chunk_size=c, generator=torch.Generator())
    hutchinson_diagonal(
        convnet, params, conv_data, probes=2, chunk_size=1, method="jvp", generator=torch.Generator()
    )
    assert taken == ["_loop_chunk_sums", "_vmap_chunk_sums", "_vmap_chunk_sums"]


def test_hutchinson_rejects_an_unknown_route_and_a_forward_mode_loop(convnet, conv_data):
    params = _eval_params(convnet)
    with pytest.raises(ValueError, match="unknown route 'batched'; valid: auto, vmap, loop"):
        hutchinson_diagonal(convnet, params, conv_data, route="batched", generator=torch.Generator())
    with pytest.raises(ValueError, match="double backward"):
        hutchinson_diagonal(
            convnet, params, conv_data, route="loop", method="jvp", generator=torch.Generator()
        )


def test_hutchinson_converges_to_exact_diagonal_like_one_over_sqrt_probes(mlp, mlp_data):
    params = _eval_params(mlp)
    x, y = cat(mlp_data)
    exact = exact_hessian_diag(mlp, list(params), x, y, 1.0)

    def error(k: int, seeds: int = 6) -> float:
        errs = [
            rel_err(
                hutchinson_diagonal(
                    mlp, params, mlp_data, probes=k, generator=torch.Generator().manual_seed(s)
                ),
                exact,
            )
            for s in range(seeds)
        ]
        return sum(errs) / len(errs)

    e4, e64, e1024, e16384 = error(4), error(64), error(1024), error(16384, seeds=2)
    assert 2.5 < e4 / e64 < 6.5  # √16 = 4
    assert 2.5 < e64 / e1024 < 6.5
    assert e16384 < 0.1
    # a sign or scale error would leave an error near 2 or far from 0
    flipped = {k: -v for k, v in exact.items()}
    assert rel_err(flipped, exact) == pytest.approx(2.0)


@pytest.mark.parametrize("probe_all", [False, True])
def test_hutchinson_variance_is_off_diagonal_energy_of_the_probed_block(mlp, mlp_data, probe_all):
    """Var ĥ_p = (1/(kN²)) Σ_i Σ_{q≠p} (H_i)_pq², q over the probed parameters.

    Probing every parameter adds the cross terms with biases to this sum, so it never has less variance.
    """
    params = _eval_params(mlp)
    probe_params = dict(mlp.named_parameters()) if probe_all else params
    names, probed_names = list(params), list(probe_params)
    x, y = cat(mlp_data)
    n, k = x.shape[0], 2
    hessians = _per_sample_hessians(mlp, probed_names, x, y, 1.0)
    predicted_all = sum((h.square().sum(1) - torch.diagonal(h).square()) for h in hessians) / (k * n * n)
    _, _, shapes, sizes = mean_loss_fn(mlp, probed_names, x, y, 1.0)
    predicted = split(predicted_all, probed_names, shapes, sizes)
    draws = [
        hutchinson_diagonal(
            mlp,
            params,
            mlp_data,
            probes=k,
            probe_params=probe_params,
            generator=torch.Generator().manual_seed(s),
        )
        for s in range(80)
    ]
    observed = sum(float(torch.stack([d[m] for d in draws]).var(0).sum()) for m in names)
    expected = sum(float(predicted[m].sum()) for m in names)
    assert 0.75 < observed / expected < 1.25
