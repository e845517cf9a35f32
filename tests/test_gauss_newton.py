"""The GGN and Monte-Carlo Fisher diagonals against exact references (torch.func Hessians and Jacobians)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

import initprune
from initprune.curvature import batch_gradient, per_sample
from initprune.curvature.ggn import ggn_diagonal, mc_fisher_diagonal, sample_model_labels
from initprune.errors import InitpruneError
from initprune.prunable import prunable_parameters

C = 4


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x):
        return torch.relu(x + self.inner(x))


def mlp(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    return nn.Sequential(nn.Linear(6, 7), act(), nn.Linear(7, 5), act(), nn.Linear(5, C))


def layernorm_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 7), nn.LayerNorm(7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, C)
    )


def residual_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), Residual(5), Residual(5), nn.Linear(5, C))


def conv_net() -> nn.Module:
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 3, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, C),
    )
    bn = net[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.3, 0.3)
    return net


NETS = {"mlp_relu": (mlp, (6,)), "conv_bn_maxpool": (conv_net, (2, 4, 4)), "residual": (residual_net, (6,))}
SMOOTH = {"mlp_gelu": (lambda: mlp(nn.GELU), (6,)), "layernorm": (layernorm_net, (6,))}


def build(factory, shape, n: int = 9, seed: int = 0):
    torch.manual_seed(seed)
    model = factory().double().eval()
    x = torch.randn(n, *shape, dtype=torch.float64)
    y = torch.randint(0, C, (n,))
    return model, [(x, y)]


def weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}


def hessian_diag(model, params, batches, temperature):
    """diag(∇²L) of the mean loss L = (1/N) Σ CE(z_i/T, y_i), from torch.func.hessian."""
    x, y = batches[0]
    fixed = {n: t.detach() for n, t in [*model.named_parameters(), *model.named_buffers()] if n not in params}

    def loss(p):
        logits = functional_call(model, {**fixed, **p}, (x,))
        return nn.functional.cross_entropy(logits / temperature, y)

    h = hessian(loss)({k: v.detach() for k, v in params.items()})
    return {k: h[k][k].reshape(v.numel(), v.numel()).diagonal().reshape(v.shape) for k, v in params.items()}


def jacobians(model, params, batches):
    """Per-sample logit Jacobians J_i (name → (N, C, *shape)) and logits (N, C)."""
    x, _ = batches[0]
    fixed = {n: t.detach() for n, t in [*model.named_parameters(), *model.named_buffers()] if n not in params}
    detached = {k: v.detach() for k, v in params.items()}
    jac, logits = [], []
    for xi in x:
        f = lambda p, xi=xi: functional_call(model, {**fixed, **p}, (xi.unsqueeze(0),))[0]  # noqa: E731
        jac.append(jacrev(f)(detached))
        logits.append(f(detached))
    return {k: torch.stack([j[k] for j in jac]) for k in params}, torch.stack(logits)


def ggn_reference(model, params, batches, temperature):
    """diag((1/N) Σ_i J_iᵀ Λ_i J_i), Λ_i = (diag(p) − ppᵀ)/T², from explicit Jacobians."""
    jac, logits = jacobians(model, params, batches)
    p = torch.softmax(logits / temperature, -1)
    lam = (torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)) / temperature**2
    return {k: torch.einsum("nc...,ncd,nd...->...", j, lam, j) / len(logits) for k, j in jac.items()}


def fisher_reference(model, params, batches, temperature):
    """(1/N) Σ_i Σ_c p_ic (J_iᵀ(p_i − e_c)/T)², the exact true-Fisher diagonal, by a loop over classes."""
    jac, logits = jacobians(model, params, batches)
    p = torch.softmax(logits / temperature, -1)
    out = {k: torch.zeros_like(v) for k, v in params.items()}
    for c in range(C):
        v = (p - torch.nn.functional.one_hot(torch.tensor(c), C).double()) / temperature
        for k, j in jac.items():
            g = torch.einsum("nc...,nc->n...", j, v)
            out[k] += (p[:, c].reshape(-1, *[1] * (g.dim() - 1)) * g.square()).sum(0)
    return {k: v / len(logits) for k, v in out.items()}


def rel(a: dict, b: dict) -> float:
    num = sum((a[k] - b[k]).square().sum() for k in b)
    den = sum(b[k].square().sum() for k in b)
    return float((num / den).sqrt())


@pytest.mark.parametrize("temperature", [1.0, 200.0])
@pytest.mark.parametrize("name", list(NETS))
def test_ggn_equals_hessian_diagonal_on_piecewise_linear_nets(name, temperature):
    model, batches = build(*NETS[name])
    params = weights(model)
    ggn = ggn_diagonal(model, params, batches, temperature=temperature)
    exact = hessian_diag(model, params, batches, temperature)
    reference = ggn_reference(model, params, batches, temperature)
    for k in params:
        torch.testing.assert_close(ggn[k], exact[k], rtol=1e-5, atol=1e-12 * float(exact[k].abs().max()))
        torch.testing.assert_close(ggn[k], reference[k], rtol=1e-5, atol=1e-12 * float(exact[k].abs().max()))
    assert rel(ggn, exact) < 1e-8


def test_ggn_equals_hessian_diagonal_for_biases_too():
    model, batches = build(*NETS["mlp_relu"])
    params = dict(model.named_parameters())  # biases are not hook-supported: the vmap route runs
    ggn = ggn_diagonal(model, params, batches)
    assert rel(ggn, hessian_diag(model, params, batches, 1.0)) < 1e-8


@pytest.mark.parametrize("name", list(SMOOTH))
def test_ggn_differs_from_hessian_on_smooth_nets(name):
    model, batches = build(*SMOOTH[name])
    params = weights(model)
    ggn = ggn_diagonal(model, params, batches)
    assert rel(ggn, ggn_reference(model, params, batches, 1.0)) < 1e-8
    assert rel(ggn, hessian_diag(model, params, batches, 1.0)) > 0.3  # measured 0.80 (GELU), 0.96 (LN)


def test_ggn_scales_like_inverse_temperature_squared():
    model, batches = build(*NETS["mlp_relu"])
    params = weights(model)
    # For T → ∞, p → uniform and T² diag(GGN) tends to a limit: T=1e3 and T=1e4 agree after scaling.
    a = {k: v * 1e6 for k, v in ggn_diagonal(model, params, batches, temperature=1e3).items()}
    b = {k: v * 1e8 for k, v in ggn_diagonal(model, params, batches, temperature=1e4).items()}
    assert rel(a, b) < 1e-2


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_true_fisher_equals_ggn(temperature):
    model, batches = build(*NETS["conv_bn_maxpool"])
    params = weights(model)
    fisher = fisher_reference(model, params, batches, temperature)
    assert rel(ggn_diagonal(model, params, batches, temperature=temperature), fisher) < 1e-10


def mc(model, params, batches, *, seed: int, **kw):
    return mc_fisher_diagonal(model, params, batches, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_mc_fisher_is_unbiased(temperature):
    model, batches = build(*NETS["mlp_relu"], n=6)
    params = weights(model)
    exact = fisher_reference(model, params, batches, temperature)
    runs = [mc(model, params, batches, seed=s, samples=1, temperature=temperature) for s in range(400)]
    mean = {k: torch.stack([r[k] for r in runs]).mean(0) for k in params}
    single = sum(rel(r, exact) for r in runs) / len(runs)
    assert rel(mean, exact) < 0.1 < single  # 400 draws: about single / 20


def test_mc_fisher_error_falls_like_inverse_sqrt_samples():
    model, batches = build(*NETS["residual"], n=6)
    params = weights(model)
    exact = ggn_diagonal(model, params, batches)
    err = {
        m: sum(rel(mc(model, params, batches, seed=s, samples=m), exact) for s in range(8)) / 8
        for m in (4, 64)
    }
    ratio = err[4] / err[64]  # √16 = 4 expected
    assert 2.5 < ratio < 6.5, err
    assert err[64] < 0.2


def test_mc_fisher_seeding():
    model, batches = build(*NETS["conv_bn_maxpool"])
    params = weights(model)
    a = mc(model, params, batches, seed=5, samples=2)
    b = mc(model, params, batches, seed=5, samples=2)
    c = mc(model, params, batches, seed=6, samples=2)
    assert all(torch.equal(a[k], b[k]) for k in params)
    assert any(not torch.equal(a[k], c[k]) for k in params)


def test_sample_model_labels_follows_the_distribution():
    probs = torch.tensor([[0.1, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    labels = sample_model_labels(probs, 20000, torch.Generator().manual_seed(0))
    freq = torch.stack([torch.bincount(row, minlength=4) for row in labels]).double() / 20000
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


@pytest.mark.parametrize("name", ["conv_bn_maxpool", "residual"])
@pytest.mark.parametrize("conv_route", ["grouped", "unfold", "gram"])
@pytest.mark.parametrize("slice_bytes", [None, 1], ids=["whole", "sliced"])
def test_hooks_and_vmap_agree(monkeypatch, name, conv_route, slice_bytes):
    """Several backward columns per chunk share the unfolded patches; per-sample gradients are made at
    once or one sample at a time."""
    limit = 10**9 if conv_route == "grouped" else 0
    monkeypatch.setattr(per_sample, "_GROUPED_MAX_WEIGHT_PER_POSITION", limit)
    monkeypatch.setattr(per_sample, "_GRAM_MAX_POSITIONS", 10**9 if conv_route == "gram" else 0)
    if slice_bytes is not None:
        monkeypatch.setattr(per_sample, "CPU_SLICE_BYTES", slice_bytes)
    model, batches = build(*NETS[name])
    params = weights(model)
    for fn, kw in ((ggn_diagonal, {}), (mc, {"seed": 1, "samples": 3})):
        hooks = fn(model, params, batches, method="hooks", temperature=3.0, **kw)
        vm = fn(model, params, batches, method="vmap", temperature=3.0, **kw)
        assert rel(hooks, vm) < 1e-10


def test_batch_splitting_does_not_change_results():
    model, batches = build(*NETS["conv_bn_maxpool"], n=10)
    params = weights(model)
    (x, y) = batches[0]
    split = [(x[:3], y[:3]), (x[3:], y[3:])]
    for fn, kw in ((ggn_diagonal, {}), (mc, {"seed": 2, "samples": 2})):
        whole = fn(model, params, batches, chunk_size=None, **kw)
        for other in (fn(model, params, split, **kw), fn(model, params, batches, chunk_size=4, **kw)):
            assert rel(other, whole) < 1e-12


# ----------------------------------------------------------------------------------------------------
# criteria


def test_registered():
    names = set(initprune.criteria())
    wanted = {
        "ggn_diag",
        "ggn_pruner",
        "ggn_taylor",
        "fisher_mc_diag",
        "fisher_mc_pruner",
        "fisher_mc_taylor",
    }
    assert wanted <= names
    assert initprune.get_criterion("fisher_mc_diag").options == {
        "samples": 1,
        "temperature": 1.0,
        "chunk_size": None,
    }
    assert initprune.get_criterion("ggn_diag").options == {"temperature": 1.0, "chunk_size": None}


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_criteria_formulas(temperature):
    model, batches = build(*NETS["conv_bn_maxpool"])
    params = prunable_parameters(model)
    theta = {k: p.detach() for k, p in params.items()}
    g = batch_gradient(model, params, batches, temperature=temperature)
    ggn = ggn_diagonal(model, params, batches, temperature=temperature)
    fmc = mc(model, params, batches, seed=7, samples=3, temperature=temperature)
    expected = {
        "ggn_diag": ggn,
        "ggn_pruner": {k: 0.5 * theta[k] ** 2 * ggn[k] for k in params},
        "ggn_taylor": {k: (theta[k] * g[k] + 0.5 * theta[k] ** 2 * ggn[k]).abs() for k in params},
        "fisher_mc_diag": fmc,
        "fisher_mc_pruner": {k: 0.5 * theta[k] ** 2 * fmc[k] for k in params},
        "fisher_mc_taylor": {k: (theta[k] * g[k] + 0.5 * theta[k] ** 2 * fmc[k]).abs() for k in params},
    }
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, want in expected.items():
        opts = {"samples": 3} if "mc" in name else {}
        got = initprune.score(model, name, batches, seed=7, temperature=temperature, **opts)
        assert set(got) == set(params)
        assert rel(got, want) < 1e-10, name
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not model.training


def test_ggn_taylor_gradient_is_the_batch_gradient():
    model, batches = build(*NETS["mlp_relu"])
    params = prunable_parameters(model)
    x, y = batches[0]
    loss = nn.functional.cross_entropy(model(x) / 5.0, y)
    g = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    ggn = ggn_diagonal(model, params, batches, temperature=5.0)
    want = {k: (p.detach() * g[k] + 0.5 * p.detach() ** 2 * ggn[k]).abs() for k, p in params.items()}
    assert rel(initprune.score(model, "ggn_taylor", batches, temperature=5.0), want) < 1e-10


@pytest.mark.parametrize(
    "name, options",
    [
        ("fisher_mc_diag", {"samples": 0}),
        ("fisher_mc_pruner", {"samples": 1.5}),
        ("fisher_mc_taylor", {"temperature": -1.0}),
        ("ggn_diag", {"temperature": 0.0}),
        ("ggn_pruner", {"samples": 2}),
        ("ggn_taylor", {"probes": 3}),
    ],
)
def test_bad_options_error(name, options):
    model, batches = build(*NETS["mlp_relu"])
    with pytest.raises(InitpruneError):
        initprune.score(model, name, batches, **options)


def test_data_required():
    model, _ = build(*NETS["mlp_relu"])
    with pytest.raises(InitpruneError, match="needs scoring data"):
        initprune.score(model, "ggn_diag")
