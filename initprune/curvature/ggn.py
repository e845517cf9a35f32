"""Exact Gauss-Newton and Monte-Carlo Fisher diagonals, built on the per-sample square-sum engine.

For cross-entropy on tempered logits, ℓ_i = CE(z_i/T, y_i) with z_i = f(x_i; θ) and p_i = softmax(z_i/T),
the curvature of the loss in the logits is

    Λ_i = ∂²ℓ_i/∂z_i² = (diag(p_i) − p_i p_iᵀ) / T²,

which does not depend on the label. Two diagonals follow from it without any Hessian-vector product:

* the **generalized Gauss-Newton** (GGN) diagonal, diag((1/N) Σ_i J_iᵀ Λ_i J_i), computed exactly from the
  C columns of a square root of Λ_i (C backward passes; Schraudolph 2002, Martens 2014; the "DiagGGN" of
  BackPACK, Dangel et al. 2020);
* the **true Fisher** diagonal, E_{ŷ ~ p_i}[(∇ CE(z_i/T, ŷ))²], estimated by Monte Carlo with labels
  sampled from the model (BackPACK's "DiagGGNMC", Kunstner et al. 2019 on why it is not the empirical
  Fisher). Since E_ŷ[(p − e_ŷ)(p − e_ŷ)ᵀ] = diag(p) − ppᵀ, the true Fisher of the tempered model equals the
  GGN at every T, so this is an unbiased, cheaper estimate of the same diagonal.

The Hessian of the mean loss splits as H = GGN + (1/N) Σ_i Σ_k (∂ℓ_i/∂z_ik) ∇²_θ z_ik. In a network that
is piecewise linear in each single weight (ReLU, max-pool, eval-mode BatchNorm, residual sums, linear and
convolution layers) every z_ik is linear in each weight along its own axis, so ∂²z_ik/∂θ_p² = 0 almost
everywhere and **diag(H) = diag(GGN) exactly** (the off-diagonal blocks still differ). With GELU, tanh,
LayerNorm or attention the second term's diagonal is not zero and the two differ.

Both estimators use **mean reduction** over the N samples of all batches (with sum reduction they would be
N times larger) and scale like **1/T²** with the temperature (through Λ_i, plus the change of p_i with T).
Samples must not interact: call them with BatchNorm in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import global_samples, sample_start
from ..errors import InitpruneError
from .hvp import probe_seed, sample_seed
from .losses import CrossEntropy, Loss
from .per_sample import OutputVectors, per_sample_square_sums
from .samples import Batch, TensorDict

__all__ = [
    "ggn_diagonal",
    "ggn_vectors",
    "mc_fisher_diagonal",
    "mc_fisher_vectors",
    "sample_model_labels",
]


def _check_temperature(temperature: float) -> float:
    value = float(temperature)
    if not value > 0.0 or not math.isfinite(value):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return value


class _GGNColumns(Sequence[Tensor]):
    """The K·C columns of a square root of block-diagonal output Hessians, made one at a time when the
    engine asks for them (a per-token loss has L·C of them: too many to hold at once).

    Column (k, c) is zero outside block k, where it is √w_ik √p_ikc (e_c − p_ik) / T.
    """

    def __init__(self, probs: Tensor, weights: Tensor, temperature: float, shape: torch.Size) -> None:
        self.probs, self.root = probs, probs.sqrt() * weights.sqrt().unsqueeze(-1)
        self.temperature, self.shape = temperature, shape
        self.eye = torch.eye(probs.shape[-1], dtype=probs.dtype, device=probs.device)

    def __len__(self) -> int:
        return self.probs.shape[1] * self.probs.shape[2]

    def __getitem__(self, index: int) -> Tensor:  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(index)
        k, c = divmod(index, self.probs.shape[2])
        column = torch.zeros_like(self.probs)
        column[:, k] = self.root[:, k, c : c + 1] * (self.eye[c] - self.probs[:, k]) / self.temperature
        return column.view(self.shape)


def ggn_vectors(temperature: float = 1.0, loss: Loss | None = None) -> OutputVectors:
    """The columns of S_i = (diag(√p_i) − p_i √p_iᵀ) / T, a square root of Λ_i: S_i S_iᵀ = Λ_i.

    Column c is √p_ic (e_c − p_i) / T (S Sᵀ = (diag(p) − 2ppᵀ + ppᵀ Σ_c p_c)/T² = Λ since Σ_c p_c = 1).
    For a ``loss`` that is a weighted sum of softmax cross-entropies over K blocks
    (:meth:`~initprune.curvature.losses.Loss.softmax_terms`; ``token_cross_entropy``: the L tokens, weight
    1/n_i for a counted token, 0 otherwise), Λ_i is block-diagonal and its root has K·C columns, column
    (k, c) being √w_ik √p_ikc (e_c − p_ik) / T in block k.
    """
    temperature = _check_temperature(temperature)
    kind = CrossEntropy() if loss is None else loss

    def vectors(logits: Tensor, targets: Tensor) -> Sequence[Tensor]:
        probs, weights = kind.softmax_terms(logits, targets, temperature)
        return _GGNColumns(probs, weights, temperature, logits.shape)

    return vectors


def ggn_diagonal(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    method: str = "auto",
    loss: Loss | None = None,
) -> TensorDict:
    """Exact diagonal of the generalized Gauss-Newton matrix of the mean loss.

    G = (1/N) Σ_i J_iᵀ Λ_i J_i,   Λ_i = ∂²ℓ_i/∂z² = (diag(p_i) − p_i p_iᵀ)/T²,   p_i = softmax(z_i/T),

    for ℓ_i = CE(z_i/T, y_i), J_i = ∂z_i/∂θ. With S_i S_iᵀ = Λ_i (:func:`ggn_vectors`),
    diag(G) = (1/N) Σ_i Σ_c (J_iᵀ s_ic)², one sum of squared per-sample Jacobian-vector products per
    column: C backward passes (about C + 1 batched gradients with the forward), no Hessian-vector product
    and no randomness. Labels are not used (Λ_i does not depend on them).

    For networks piecewise linear in each weight (ReLU, max-pool, eval-mode BatchNorm, residual sums),
    diag(∇²L) = diag(G) exactly; the GGN is also the true Fisher of the tempered model at every T. Mean
    reduction (sum reduction: N times larger); diag(G) ∝ 1/T² up to the change of p with T. ``method``
    and ``chunk_size``: see :func:`initprune.per_sample.per_sample_square_sums`.

    ``loss="token_cross_entropy"`` (ℓ_i the mean of the n_i counted token losses of sequence i):
    Λ_i = blockdiag_t (diag(p_it) − p_it p_itᵀ) / (n_i T²), so the root has L·C columns and the exact
    diagonal costs L·C backward passes per chunk (C + 1 gradients per token: 257 for bytes), which is why
    ``fisher_mc_*`` is its scalable stand-in. A callable loss has no closed-form Λ_i: an error.
    """
    n = global_samples(batches)
    _, squares = per_sample_square_sums(
        model, params, batches, ggn_vectors(temperature, _hessian_loss(loss)), chunk_size=chunk_size,
        method=method, sums=False,
    )  # fmt: skip
    return {name: s / n for name, s in squares.items()}


def _hessian_loss(loss: Loss | None) -> Loss:
    kind = CrossEntropy() if loss is None else loss
    if not kind.has_output_hessian:
        raise InitpruneError(
            f"loss {kind.name!r} has no closed-form output Hessian: the exact GGN and Monte-Carlo Fisher "
            "criteria need cross_entropy or token_cross_entropy (the gradient-only criteria, fisher_* and "
            "hutch_*, take any per-sample loss)"
        )
    return kind


def sample_model_labels(
    probs: Tensor, samples: int, seed: int | torch.Generator, *, start: int = 0
) -> Tensor:
    """ŷ_is ~ Categorical(probs_i), ``samples`` draws per row i: a (B, samples) integer tensor; for probs
    (B, K, C) (one distribution per token) a (B, samples, K) tensor, K·samples draws per row.

    Inverse-CDF sampling from uniforms; row i (global sample index ``start + i``) draws them from a
    generator seeded by a mix of the base ``seed`` and that index, so the labels of a sample depend
    neither on how the samples are split into batches or chunks nor on how they are split across
    processes. A ``torch.Generator`` given as ``seed`` supplies the base seed (one draw).
    """
    if isinstance(seed, torch.Generator):
        seed = probe_seed(seed)
    gen = torch.Generator(device=probs.device)
    draws = []
    blocks = probs.shape[1:-1]
    count = samples * blocks.numel()
    for i in range(start, start + probs.shape[0]):
        gen.manual_seed(sample_seed(seed, i))
        draws.append(torch.rand(count, generator=gen, device=probs.device, dtype=torch.float64))
    uniforms = (
        torch.stack(draws).to(probs.device) if draws else probs.new_zeros((0, count), dtype=torch.float64)
    ).view(probs.shape[0], samples, *blocks)
    cdf = probs.detach().double().cumsum(-1)
    labels = (uniforms.unsqueeze(-1) >= cdf.unsqueeze(1)).sum(-1)
    return labels.clamp_(max=probs.shape[-1] - 1)


def mc_fisher_vectors(
    temperature: float, samples: int, generator: torch.Generator, loss: Loss | None = None
) -> OutputVectors:
    """m = ``samples`` columns (p_i − onehot(ŷ_is)) / (T √m), ŷ_is ~ Categorical(p_i), p_i = softmax(z_i/T).

    For a weighted sum of K softmax cross-entropies (``token_cross_entropy``: w_ik = 1/n_i on counted
    tokens) one label is drawn per block and column s is √w_ik (p_ik − onehot(ŷ_iks)) / (T √m) in every
    block k; the draws of different blocks are independent, so E[v vᵀ] = Λ_i (block-diagonal).

    The labels are sampled when the engine calls it, outside of any vmap, by global sample index under a
    base seed drawn once from ``generator``: the engine calls it once per chunk, in sample order, and the
    function counts the samples it has seen (from this rank's first global index under torchrun); its
    ``rewind()`` starts the count again, for a pass that restarts on another route.
    """
    temperature = _check_temperature(temperature)
    if int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    scale = temperature * math.sqrt(samples)
    seed, seen = probe_seed(generator), [sample_start()]
    kind = CrossEntropy() if loss is None else loss

    def vectors(logits: Tensor, targets: Tensor) -> list[Tensor]:
        probs, weights = kind.softmax_terms(logits, targets, temperature)  # (B, K, C), (B, K)
        labels = sample_model_labels(probs, int(samples), seed, start=seen[0])  # (B, m, K)
        seen[0] += probs.shape[0]
        root = weights.sqrt().unsqueeze(-1)
        return [
            (root * (probs - F.one_hot(labels[:, s], probs.shape[-1]).to(probs.dtype)) / scale).view(
                logits.shape
            )
            for s in range(int(samples))
        ]

    first = seen[0]

    def rewind() -> None:
        seen[0] = first  # a pass restarted on another route draws the same labels again

    vectors.columns = int(samples)  # type: ignore[attr-defined]
    vectors.rewind = rewind  # type: ignore[attr-defined]
    return vectors


def mc_fisher_diagonal(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    *,
    samples: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator,
    chunk_size: int | None = None,
    method: str = "auto",
    loss: Loss | None = None,
) -> TensorDict:
    """Monte-Carlo estimate of the true Fisher diagonal with labels sampled from the model.

    F̂ = (1/N) Σ_i (1/m) Σ_{s=1..m} g_is ⊙ g_is,   g_is = ∇_θ CE(z_i/T, ŷ_is) = J_iᵀ (p_i − e_ŷ_is)/T,
    ŷ_is ~ Categorical(p_i = softmax(z_i/T)), m = ``samples`` independent draws per data point.

    E[F̂] = (1/N) Σ_i Σ_c p_ic (J_iᵀ(p_i − e_c)/T)² = diag(GGN) (:func:`ggn_diagonal`), the true Fisher,
    which in piecewise-linear networks is also diag(∇²L); unlike the empirical Fisher
    (``per_sample_gradient_moments``) it does not use the data labels. Its variance falls like 1/m, and
    it costs m backward passes (m = 1: the cost of the empirical Fisher). Mean reduction (sum reduction:
    N times larger); ∝ 1/T² up to the change of p with T. The same ``generator`` state gives the same
    labels, independently of how the samples are split into batches or chunks.

    ``loss="token_cross_entropy"``: one label per token and draw (:func:`mc_fisher_vectors`), still m
    backward passes whatever the sequence length; unbiased for the token loss's GGN diagonal. A callable
    loss: an error.
    """
    n = global_samples(batches)
    vectors = mc_fisher_vectors(temperature, samples, generator, _hessian_loss(loss))
    _, squares = per_sample_square_sums(
        model, params, batches, vectors, chunk_size=chunk_size, method=method, sums=False
    )
    return {name: s / n for name, s in squares.items()}
