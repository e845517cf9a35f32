"""The per-token loss and callable losses through the curvature engine, against exact references in float64:
the token loss by hand, per-sample gradients from a plain loop, the GGN diagonal from torch.func Hessians of
the loss in the outputs composed with Jacobians, Hessian-vector products and Hutchinson from the full
Hessian."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev

import initprune
from initprune.curvature import (
    batch_gradient,
    ggn_diagonal,
    hessian_vector_product,
    hutchinson_diagonal,
    mc_fisher_diagonal,
    per_sample_gradient_moments,
    rademacher_probes,
)
from initprune.curvature.ggn import sample_model_labels
from initprune.curvature.hvp import probe_seed
from initprune.curvature.losses import TokenCrossEntropy, get_loss
from initprune.errors import InitpruneError

V, L, N = 5, 3, 4  # vocabulary, sequence length, sequences


class TinyLM(nn.Module):
    """Embedding → Linear → tanh → causal running mean → Linear → GELU → Linear (vocabulary logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, 3)
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 4)
        self.head = nn.Linear(4, V)

    def forward(self, x):
        h = torch.tanh(self.fc1(self.embed(x)))
        steps = torch.arange(1, x.shape[1] + 1, dtype=h.dtype, device=h.device).view(1, -1, 1)
        h = h.cumsum(1) / steps  # token t sees tokens 0..t
        return self.head(F.gelu(self.fc2(h)))


def setup(ignore: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyLM().double()
    x = torch.randint(0, V, (N, L))
    y = torch.randint(0, V, (N, L))
    if ignore:
        y[0, 1] = -100  # one ignored token
        y[2, :] = -100  # a sequence with no counted token: loss 0
    params = {n: p for n, p in model.named_parameters() if n in ("fc1.weight", "fc2.weight", "head.weight")}
    return model, params, x, y


def hand_token_loss(logits, y, temperature=1.0):
    """ℓ_i = (1/n_i) Σ_{t counted} −log softmax(z_it/T)[y_it], written with loops."""
    out = []
    for i in range(y.shape[0]):
        terms = [
            -torch.log_softmax(logits[i, t] / temperature, -1)[y[i, t]]
            for t in range(y.shape[1])
            if y[i, t] != -100
        ]
        out.append(torch.stack(terms).mean() if terms else (logits[i] * 0).sum())
    return torch.stack(out)


def sample_losses(model, params, x, y, temperature=1.0):
    """ℓ_i as a function of the probed parameters (a flat list) for torch.func."""
    names = list(params)

    def fn(*values):
        logits = functional_call(model, dict(zip(names, values, strict=True)), (x,))
        return hand_token_loss(logits, y, temperature)

    return names, fn


def test_token_loss_matches_hand_computation_and_temperature_divides_logits():
    torch.manual_seed(1)
    logits = torch.randn(N, L, V, dtype=torch.float64)
    y = torch.randint(0, V, (N, L))
    y[1, 2] = -100
    y[3] = -100
    loss = get_loss("token_cross_entropy")
    for t in (1.0, 3.0):
        got = loss.per_sample(logits, y, t)
        torch.testing.assert_close(got, hand_token_loss(logits, y, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.per_sample(logits, y, 4.0), loss.per_sample(logits / 4.0, y, 1.0))
    assert float(loss.per_sample(logits, y)[3]) == 0.0  # no counted token
    custom = TokenCrossEntropy(ignore_index=0)
    z = torch.zeros(1, 2, V, dtype=torch.float64)
    assert float(custom.per_sample(z, torch.tensor([[0, 2]]))) == pytest.approx(math.log(V))


def test_uniform_model_has_perplexity_of_the_vocabulary():
    logits = torch.zeros(3, 7, 256, dtype=torch.float64)
    y = torch.randint(0, 256, (3, 7))
    mean = get_loss("token_cross_entropy").per_sample(logits, y).mean()
    assert math.exp(float(mean)) == pytest.approx(256.0, rel=1e-12)
    assert float(mean) / math.log(2) == pytest.approx(8.0, rel=1e-12)  # bits per byte


@pytest.mark.parametrize("method", ["hooks", "vmap", "loop"])
def test_token_loss_per_sample_gradients_match_a_plain_loop(method):
    model, params, x, y = setup()
    g, fisher = per_sample_gradient_moments(
        model, params, [(x[:3], y[:3]), (x[3:], y[3:])], temperature=2.0, method=method,
        loss=get_loss("token_cross_entropy"),
    )  # fmt: skip
    names = list(params)
    mean = {n: torch.zeros_like(p) for n, p in params.items()}
    square = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(N):
        logits = model(x[i : i + 1])
        li = hand_token_loss(logits, y[i : i + 1], 2.0)[0]
        grads = torch.autograd.grad(li, [params[n] for n in names], allow_unused=True)
        for n, gi in zip(names, grads, strict=True):
            if gi is not None:
                mean[n] += gi / N
                square[n] += gi.square() / N
    for n in names:
        torch.testing.assert_close(g[n], mean[n], rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(fisher[n], square[n], rtol=1e-10, atol=1e-13)
    assert all(float(square[n].abs().max()) > 1e-4 for n in names)  # the test compares something


def exact_token_ggn(model, params, x, y, temperature):
    """diag((1/N) Σ_i J_iᵀ (∂²ℓ_i/∂z_i²) J_i), the output Hessian from torch.func.hessian of the hand loss."""
    names = list(params)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(N):
        xi, yi = x[i : i + 1], y[i : i + 1]

        def outputs(*values, xi=xi):
            return functional_call(model, dict(zip(names, values, strict=True)), (xi,)).reshape(-1)

        jac = jacrev(outputs, argnums=tuple(range(len(names))))(*[params[n].detach() for n in names])
        z = outputs(*[params[n].detach() for n in names]).detach()
        out_hessian = hessian(lambda flat, yi=yi: hand_token_loss(flat.view(1, L, V), yi, temperature)[0])(z)
        for n, j in zip(names, jac, strict=True):
            j = j.reshape(L * V, -1)
            total[n] += torch.einsum("ap,ab,bp->p", j, out_hessian, j).view_as(total[n]) / N
    return total


@pytest.mark.parametrize("method", ["hooks", "vmap"])
def test_token_ggn_diagonal_matches_output_hessian_composed_with_jacobians(method):
    model, params, x, y = setup()
    got = ggn_diagonal(
        model, params, [(x, y)], temperature=1.5, method=method, loss=get_loss("token_cross_entropy")
    )
    want = exact_token_ggn(model, params, x, y, 1.5)
    for n in params:
        torch.testing.assert_close(got[n], want[n], rtol=1e-9, atol=1e-13)
    assert all(float(want[n].detach().abs().max()) > 1e-4 for n in params)


def test_token_mc_fisher_uses_one_label_per_token_with_exact_scaling():
    model, params, x, y = setup()
    loss = get_loss("token_cross_entropy")
    gen = torch.Generator().manual_seed(3)
    got = mc_fisher_diagonal(model, params, [(x, y)], samples=2, temperature=1.0, generator=gen, loss=loss)
    # The same labels, by hand: F = (1/N) Σ_i (1/m) Σ_s (∇ Σ_{t counted} CE(z_it, ŷ_its) / √n_i)².
    seed = probe_seed(torch.Generator().manual_seed(3))
    with torch.no_grad():
        probs = torch.softmax(model(x), -1)
    labels = sample_model_labels(probs, 2, seed)  # (N, m, L)
    names = list(params)
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(N):
        counted = y[i] != -100
        n_i = max(int(counted.sum()), 1)
        for s in range(2):
            logits = model(x[i : i + 1])[0]
            terms = F.cross_entropy(logits, labels[i, s], reduction="none") * counted
            grads = torch.autograd.grad(terms.sum() / math.sqrt(n_i), [params[k] for k in names])
            for k, g in zip(names, grads, strict=True):
                want[k] += g.square() / (2 * N)
    for k in names:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-14)
    # Unbiased for the GGN diagonal: many draws come close to it.
    many = mc_fisher_diagonal(
        model, params, [(x, y)], samples=3000, generator=torch.Generator().manual_seed(0), loss=loss
    )
    exact = ggn_diagonal(model, params, [(x, y)], loss=loss)
    num = sum(float((many[k] - exact[k]).abs().sum()) for k in names)
    den = sum(float(exact[k].abs().sum()) for k in names)
    assert num / den < 0.1


def test_token_loss_gradient_and_hessian_vector_product_match_full_hessian():
    model, params, x, y = setup()
    loss = get_loss("token_cross_entropy")
    names, fn = sample_losses(model, params, x, y, temperature=2.0)
    values = tuple(params[n].detach() for n in names)
    sizes = [v.numel() for v in values]

    def mean_flat(flat):
        parts = [p.view_as(v) for p, v in zip(flat.split(sizes), values, strict=True)]
        return fn(*parts).mean()

    flat = torch.cat([v.reshape(-1) for v in values])
    full = hessian(mean_flat)(flat)
    grad_ref = torch.func.grad(mean_flat)(flat)
    g = batch_gradient(model, params, [(x[:2], y[:2]), (x[2:], y[2:])], temperature=2.0, loss=loss)
    torch.testing.assert_close(torch.cat([g[n].reshape(-1) for n in names]), grad_ref, rtol=1e-10, atol=1e-14)
    v = {n: torch.randn_like(p) for n, p in params.items()}
    hv = hessian_vector_product(model, params, [(x, y)], v, temperature=2.0, loss=loss)
    want = full @ torch.cat([v[n].reshape(-1) for n in names])
    torch.testing.assert_close(torch.cat([hv[n].reshape(-1) for n in names]), want, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("route", ["vmap", "loop"])
def test_token_hutchinson_matches_its_probes_through_per_sample_hessians(route):
    model, params, x, y = setup()
    loss = get_loss("token_cross_entropy")
    names = list(params)
    got = hutchinson_diagonal(
        model, params, [(x, y)], probes=3, temperature=2.0, generator=torch.Generator().manual_seed(5),
        route=route, loss=loss,
    )  # fmt: skip
    seed = probe_seed(torch.Generator().manual_seed(5))
    shapes = {n: p.shape for n, p in params.items()}
    z = rademacher_probes(shapes, 3, N, seed, torch.device("cpu"), torch.float64)
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    values = tuple(params[n].detach() for n in names)
    sizes = [v.numel() for v in values]
    for i in range(N):
        _, fn = sample_losses(model, params, x[i : i + 1], y[i : i + 1], temperature=2.0)

        def flat_loss(flat, fn=fn):
            return fn(*[p.view_as(v) for p, v in zip(flat.split(sizes), values, strict=True)])[0]

        h_i = hessian(flat_loss)(torch.cat([v.reshape(-1) for v in values]))
        for j in range(3):
            zj = torch.cat([z[n][i, j].reshape(-1) for n in names])
            prod = (zj * (h_i @ zj)).split(sizes)
            for n, part in zip(names, prod, strict=True):
                want[n] += part.view_as(want[n]) / (3 * N)
    for n in names:
        torch.testing.assert_close(got[n], want[n], rtol=1e-9, atol=1e-13)


def test_callable_loss_serves_gradient_criteria_and_is_refused_by_ggn():
    model, params, x, y = setup(ignore=False)
    token = TokenCrossEntropy()

    def my_loss(outputs, targets):
        return token.per_sample(outputs, targets)

    kw = dict(prunable=params, seed=0)
    for crit in ("snip", "fisher_pruner", "hutch_diag"):
        a = initprune.score(model, crit, [(x, y)], loss=my_loss, **kw)
        b = initprune.score(model, crit, [(x, y)], loss="token_cross_entropy", **kw)
        for n in params:
            torch.testing.assert_close(a[n], b[n], rtol=1e-10, atol=1e-15)
    for crit in ("ggn_pruner", "fisher_mc_pruner"):
        with pytest.raises(InitpruneError, match=r"needs the loss's Hessian in the outputs.*my_loss"):
            initprune.score(model, crit, [(x, y)], loss=my_loss, **kw)
    with pytest.raises(InitpruneError, match="unknown loss 'mse'; valid: cross_entropy, token_cross_entropy"):
        initprune.score(model, "snip", [(x, y)], loss="mse", **kw)


def test_token_targets_are_checked_against_the_logits():
    model, params, x, y = setup(ignore=False)
    with pytest.raises(InitpruneError, match=r"1-D tensor of integer class indices.*token_cross_entropy"):
        initprune.score(model, "snip", [(x, y)], prunable=params)
    bad = y.clone()
    bad[1, 2] = V
    with pytest.raises(InitpruneError, match=rf"batch 0, input 1, token 2 has label {V}; valid labels are 0"):
        initprune.score(model, "snip", [(x, bad)], prunable=params, loss="token_cross_entropy")
    with pytest.raises(InitpruneError, match=r"shape \(batch, length\)"):
        initprune.score(model, "snip", [(x, y[:, 0])], prunable=params, loss="token_cross_entropy")


def test_prune_takes_the_token_loss():
    model, _, x, y = setup(ignore=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="path check skipped"):
        mask = initprune.prune(model, "fisher_mc_pruner", [(x, y)], sparsity=0.5, loss="token_cross_entropy")
    assert mask.sparsity == pytest.approx(0.5, abs=0.05)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
