"""Batch gradients, Hessian-vector products and the Hutchinson Hessian diagonal.

Every function takes a model, a dict ``params`` (name → parameter, the weights to differentiate), and
``batches``: a sequence of ``(inputs, targets)`` pairs on the model's device. The loss is the cross-entropy
of ``logits / temperature`` (or the ``loss`` given, :mod:`~initprune.curvature.losses`) with **mean
reduction over all N samples of all batches**,
``L = (1/N) Σ_i ℓ_i``; batches of any sizes give the same result. Per-sample quantities assume the
samples do not interact (BatchNorm in eval mode), which the scoring entry point guarantees.

None of these functions changes the model's parameters, buffers or flags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vjp, vmap

from ..distributed import all_reduce_sums, global_samples, sample_start
from ..progress import progress_bar
from .losses import Loss
from .memory import FALLBACK_BUDGET_BYTES, chunk_samples, memory_budget, saved_activation_bytes
from .per_sample import warn_vmap_fallback
from .probes import probe_seed, rademacher_probes, row_length
from .probes import sample_seed as sample_seed  # the per-sample seeds of the sampled labels (ggn)
from .samples import (
    Batch,
    Inputs,
    TensorDict,
    call_model,
    first_input,
    functional_parts,
    input_count,
    iter_chunks,
    per_sample_loss_fn,
    run_model,
    scaled_loss,
    slice_inputs,
)


def batch_gradient(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    *,
    temperature: float = 1.0,
    loss: Loss | None = None,
) -> TensorDict:
    """g = ∇L, the gradient of the mean loss over all N samples. Mean reduction: g = (1/N) Σ_i ∇ℓ_i.

    ``loss``: the per-sample loss (:mod:`~initprune.curvature.losses`; None: cross-entropy), here and in
    every estimator of this module."""
    n = global_samples(batches)
    names = list(params)
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for x, y in batches:
        value = scaled_loss(run_model(model, x), y, temperature, loss=loss) / n
        grads = torch.autograd.grad(value, [params[k] for k in names], allow_unused=True)
        for name, g in zip(names, grads, strict=True):
            if g is not None:
                total[name] += g
    all_reduce_sums(total)
    return total


def hessian_vector_product(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    vector: Mapping[str, Tensor],
    *,
    temperature: float = 1.0,
    loss: Loss | None = None,
) -> TensorDict:
    """H v with H = ∇²L the Hessian of the mean loss w.r.t. ``params`` (Pearlmutter's double backward).

    Mean reduction: H v = (1/N) Σ_i H_i v. Used by GraSP with v = g.
    """
    n = global_samples(batches)
    names = list(params)
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for x, y in batches:
        value = scaled_loss(run_model(model, x), y, temperature, loss=loss) / n
        grads = torch.autograd.grad(value, [params[k] for k in names], create_graph=True, allow_unused=True)
        dot = sum(
            (g * vector[k]).sum()
            for k, g in zip(names, grads, strict=True)
            if g is not None and g.requires_grad
        )
        if not torch.is_tensor(dot):
            continue  # the loss is linear in every parameter of this batch: H v = 0
        hv = torch.autograd.grad(dot, [params[k] for k in names], allow_unused=True)
        for name, h in zip(names, hv, strict=True):
            if h is not None:
                total[name] += h
    all_reduce_sums(total)
    return total


# ----------------------------------------------------------------------------------------------------
# Hutchinson


HVP_METHODS = ("jvp", "vjp")
"""How :func:`hutchinson_diagonal` takes Hessian-vector products: forward-over-reverse or
reverse-over-reverse."""

HUTCHINSON_ROUTES = ("auto", "vmap", "loop")
"""How :func:`hutchinson_diagonal` runs the per-sample products: ``vmap`` batches the samples of a pass and
their probes; ``loop`` takes each sample alone, its k products by double backward through one shared
gradient graph; ``auto`` takes ``loop`` when a pass holds one sample or the model has recurrent layers, and
``vmap`` otherwise."""

HUTCHINSON_CHUNK_BYTES = FALLBACK_BUDGET_BYTES
"""The budget of a Hutchinson chunk on a device whose free memory cannot be read; elsewhere chunks are
sized by :func:`~initprune.curvature.memory_budget` (see :func:`hutchinson_chunk_size`)."""

HUTCHINSON_PROBE_COPIES = 5
"""Parameter-sized tensors per probe and sample at a chunk's peak: the probe (drawn into a reused buffer), its
HVP and their product, and the batched route's copies of them."""

HUTCHINSON_CPU_CHUNK_BYTES = 48 * 2**20
"""On the CPU, the most bytes of probes (samples × probes × probed parameters) one batched pass takes: the
batched route's per-sample tensors then stay near the caches. With 10 probes per sample at 100 samples
(``docs/results/scoring_cpu/``) the small VGG took 53.5 batched gradients in chunks of 8 (47 MB of probes)
against 69.4 in the 66 its memory budget allowed, at an eighth of the memory, and ResNet-20 37.8 in
chunks of 4 against 50.8 in 36."""

HUTCHINSON_ACTIVATION_COPIES = 3
"""Activation-sized tensors per probe and sample: the double backward's batched intermediates."""


def hutchinson_chunk_size(
    model: nn.Module, probed: Mapping[str, Tensor], batches: Sequence[Batch], probes: int
) -> int:
    """Samples per batched Hutchinson pass within :func:`~initprune.curvature.memory_budget`.

    One sample with k probes needs about k · (5·P + 3·A) bytes, P the probed parameters' bytes and A the
    activations autograd saves for one sample (:func:`~initprune.curvature.memory.saved_activation_bytes`).
    On the CPU a chunk's probes (c · k · P bytes) are also kept within :data:`HUTCHINSON_CPU_CHUNK_BYTES`,
    so that a chunk's parameter-sized tensors stay near the caches: larger chunks only run slower there
    (and a network whose probes of one sample exceed it takes the loop route).
    """
    param_bytes = sum(p.numel() * p.element_size() for p in probed.values())
    x = batches[0][0]
    saved = saved_activation_bytes(model, x).saved
    per_probe = HUTCHINSON_PROBE_COPIES * param_bytes + HUTCHINSON_ACTIVATION_COPIES * saved
    device = first_input(x).device
    chunk = chunk_samples(memory_budget(device), probes * per_probe)
    if device.type == "cpu":
        chunk = min(chunk, chunk_samples(HUTCHINSON_CPU_CHUNK_BYTES, probes * param_bytes))
    return chunk


def hutchinson_route(model: nn.Module, chunk_size: int | None, method: str = "vjp") -> str:
    """The route ``route="auto"`` takes (see :func:`hutchinson_diagonal`): ``loop`` for passes of one sample
    or models with recurrent layers (with reverse-over-reverse products), else ``vmap``."""
    one_at_a_time = chunk_size == 1 or any(isinstance(m, nn.RNNBase) for m in model.modules())
    return "loop" if one_at_a_time and method == "vjp" else "vmap"


def hutchinson_diagonal(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    *,
    probes: int = 10,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    chunk_size: int | None = None,
    probe_params: Mapping[str, Tensor] | None = None,
    progress: bool = False,
    method: str = "vjp",
    route: str = "auto",
    loss: Loss | None = None,
) -> TensorDict:
    """Hutchinson estimate of diag(H), with independent probes per sample.

    ĥ = (1/(kN)) Σ_i Σ_{j=1..k} z_ij ⊙ (H_i z_ij), z_ij Rademacher, H_i = ∇²ℓ_i; E[ĥ] = diag(H) for the
    mean loss L = (1/N) Σ ℓ_i (with sum reduction it would be N times larger). The variance of coordinate
    p is (1/(kN²)) Σ_i Σ_{q≠p} (H_i)_pq²: the off-diagonal energy of the probed block (Hutchinson 1989;
    the paper's HD, arXiv 2502.11450 §3).

    The probes z_ij are drawn by :func:`~initprune.curvature.probes.rademacher_probes`, a counter-based
    generator keyed by (seed, global sample index i, probe j, element): the same ``seed`` (an int) gives the
    same probes on every device, for every chunking and process count; a ``generator`` instead supplies the
    base seed with one draw (:func:`~initprune.curvature.probes.probe_seed`; the draw, and so the probes,
    depend on the generator's device).

    The probes span ``probe_params`` (default: ``params``, the prunable weights, which is unbiased with
    less variance); pass every parameter to probe the full Hessian as the paper's reference code does. The
    result is returned for ``params`` only.

    ``route="vmap"`` computes all per-sample Hessian-vector products of a chunk in one batched pass,
    ``vmap`` over samples and probes of an exact HVP: ``method="vjp"`` (default) reverse-over-reverse,
    by ``vjp`` of ``grad``, whose gradient graph is shared by the k probes; ``method="jvp"``
    forward-over-reverse, H_i z = ∂_ε ∇ℓ_i(θ + εz) by ``jvp`` of ``grad``. Both give the same numbers up
    to rounding. On the CPU forward-over-reverse takes about 5 % less CPU time on ResNet-20 and a small
    VGG but 1.25-1.6× the memory, and PyTorch lacks forward-mode derivatives for some layers (the CPU
    LSTM), hence the default.
    A chunk of c samples holds about c·k copies of the probed parameters at once; ``chunk_size=None``
    picks the largest c that fits the device's memory budget (:func:`hutchinson_chunk_size`;
    :func:`~initprune.curvature.set_memory_budget` or ``INITPRUNE_MEMORY_BUDGET`` override it), on the
    CPU at most :data:`HUTCHINSON_CPU_CHUNK_BYTES` of probes.

    ``route="loop"`` takes the samples one at a time: one gradient graph per sample, reused by its k
    double-backward products (the reference code's loop, with the same probes as the batched route).
    ``route="auto"`` (default) takes the loop when a pass holds a single sample, where vmap has no samples
    to batch and only widens every weight k-fold (on the CPU the vmap route measured 1.4-2.5× slower than
    the loop on VGG-16, ResNet-18 and ViT-Small, see ``docs/results/scoring_cpu/``), and for models with
    recurrent layers, which vmap does not batch reliably; otherwise ``vmap``, and the loop where ``vmap``
    cannot run the model (data-dependent control flow, as in a Hugging Face BERT given an attention
    mask: one warning line says so). Every route draws the same probes (per global sample index) and
    gives the same numbers up to rounding.
    """
    if (generator is None) == (seed is None):
        raise ValueError(
            "give the probes' seed as exactly one of generator (a torch.Generator) and seed (an int)"
        )
    probe_params = dict(params if probe_params is None else probe_params)
    missing = set(params) - set(probe_params)
    if missing:
        raise ValueError(f"probe_params must include every parameter to score; missing {sorted(missing)}")
    probed, fixed = functional_parts(model, probe_params)
    loss_fn = per_sample_loss_fn(model, fixed, temperature, loss)
    wanted = list(params)

    if method not in HVP_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(HVP_METHODS)}")
    if route not in HUTCHINSON_ROUTES:
        raise ValueError(f"unknown route {route!r}; valid: {', '.join(HUTCHINSON_ROUTES)}")
    if route == "loop" and method != "vjp":
        raise ValueError("the loop route takes Hessian-vector products by double backward (method='vjp')")

    shapes = {name: p.shape for name, p in probed.items()}
    device, dtype = next(iter(probed.values())).device, next(iter(probed.values())).dtype
    if chunk_size is None and batches:
        chunk_size = hutchinson_chunk_size(model, probed, batches, probes)
    chosen = hutchinson_route(model, chunk_size, method) if route == "auto" else route
    chunks = list(iter_chunks(batches, chunk_size))
    if seed is None:
        seed = probe_seed(generator)

    def run(route: str) -> TensorDict:
        if route == "loop":
            chunk_sums = _loop_chunk_sums(model, probed, fixed, wanted, temperature, loss)
        else:
            chunk_sums = _vmap_chunk_sums(loss_fn, probed, wanted, method)
        total = {name: torch.zeros_like(probed[name]) for name in wanted}
        start = sample_start()
        largest = max((input_count(x) for x, _ in chunks), default=0)
        probed_size = row_length(sum(p.numel() for p in probed.values()))
        buffer = torch.empty(largest * probes * probed_size, device=device, dtype=dtype)
        for x, y in progress_bar(chunks, desc="Hutchinson", enabled=progress):
            count = input_count(x)
            z = rademacher_probes(shapes, probes, count, seed, device, dtype, start=start, out=buffer)
            start += count
            for name, value in chunk_sums(x, y, z).items():
                total[name] += value
        return total

    if route == "auto" and chosen == "vmap":
        try:
            total = run("vmap")
        except RuntimeError as exc:  # torch.func cannot batch the model: data-dependent control flow, say
            warn_vmap_fallback(model, "Hutchinson Hessian-vector products", exc)
            total = run("loop")
    else:
        total = run(chosen)
    all_reduce_sums(total)
    n = global_samples(batches)
    return {name: t / (probes * n) for name, t in total.items()}


ChunkSums = Callable[[Inputs, Tensor, TensorDict], TensorDict]
"""``(x, y, z) -> name → Σ_i Σ_j z_ij ⊙ (H_i z_ij)`` over the samples of one chunk;
z: name → (c, k, *shape)."""


def _vmap_chunk_sums(loss: Callable, probed: TensorDict, wanted: list[str], method: str) -> ChunkSums:
    """All per-sample Hessian-vector products of a chunk in one batched pass: vmap over samples and probes."""

    def one_sample(x: Inputs, y: Tensor, z: TensorDict) -> TensorDict:
        def gradient(p: TensorDict) -> TensorDict:
            return grad(loss)(p, x, y)

        if method == "jvp":
            # H_i z = d/dε ∇ℓ_i(θ + εz): the probes are tangents of one primal pass shared by all k.
            hz = vmap(lambda t: jvp(gradient, (probed,), (t,))[1])(z)
        else:
            _, hvp = vjp(gradient, probed)
            hz = vmap(hvp)(z)[0]  # H_i z_ij for the k probes, sharing one gradient graph
        return {name: (z[name] * hz[name]).sum(0) for name in wanted}

    batched = vmap(one_sample)

    def sums(x: Inputs, y: Tensor, z: TensorDict) -> TensorDict:
        return {name: value.sum(0) for name, value in batched(x, y, z).items()}

    return sums


def _loop_chunk_sums(
    model: nn.Module,
    probed: TensorDict,
    fixed: TensorDict,
    wanted: list[str],
    temperature: float,
    loss_kind: Loss | None = None,
) -> ChunkSums:
    """The samples of a chunk one at a time: per sample one gradient graph at batch size 1 (Pearlmutter's
    double backward), reused by its k probes. Exact for every module autograd differentiates twice, with
    one probe's product alive at a time."""
    names = list(probed)

    def sums(x: Inputs, y: Tensor, z: TensorDict) -> TensorDict:
        total = {name: torch.zeros_like(probed[name]) for name in wanted}
        for i in range(input_count(x)):
            leaves = {name: p.detach().requires_grad_(True) for name, p in probed.items()}
            with torch.enable_grad():
                logits = call_model(model, {**fixed, **leaves}, slice_inputs(x, i, i + 1))
                loss = scaled_loss(logits, y[i : i + 1], temperature, loss=loss_kind)
                grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
                used = [
                    (k, g) for k, g in zip(names, grads, strict=True) if g is not None and g.requires_grad
                ]
                if not used:
                    continue  # the loss is linear in every probed parameter: H_i = 0
                outputs = [g for _, g in used]
                for j in range(z[names[0]].shape[1]):
                    # H_i z = ∇(g_i · z) = J_{g_i}ᵀ z (H_i symmetric): z enters as the cotangent of the
                    # gradient, without a dot-product node whose backward would scale z again per layer.
                    hz = torch.autograd.grad(
                        outputs,
                        list(leaves.values()),
                        grad_outputs=[z[k][i, j] for k, _ in used],
                        retain_graph=True,
                        allow_unused=True,
                    )
                    for name, h in zip(names, hz, strict=True):
                        if h is not None and name in total:
                            total[name].addcmul_(z[name][i, j], h)
        return total

    return sums
