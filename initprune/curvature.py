"""Pure curvature estimators: batch gradients, Hessian-vector products, per-sample squared gradients
(the empirical Fisher diagonal) and the Hutchinson Hessian diagonal.

Every function takes a model, a dict ``params`` (name → parameter, the weights to differentiate), and
``batches``: a sequence of ``(inputs, targets)`` pairs on the model's device. The loss is the cross-entropy
of ``logits / temperature`` with **mean reduction over all N samples of all batches**,
``L = (1/N) Σ_i ℓ_i``; batches of any sizes give the same result. Per-sample quantities assume the
samples do not interact (BatchNorm in eval mode), which the scoring entry point guarantees.

None of these functions changes the model's parameters, buffers or flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vjp, vmap

Batch = tuple[Tensor, Tensor]
TensorDict = dict[str, Tensor]


def num_samples(batches: Sequence[Batch]) -> int:
    """Total number of samples N over all batches."""
    return sum(int(x.shape[0]) for x, _ in batches)


def iter_chunks(batches: Sequence[Batch], chunk_size: int | None) -> Iterator[Batch]:
    """Yield the samples of ``batches`` in order, in pieces of at most ``chunk_size`` samples."""
    for x, y in batches:
        if chunk_size is None or x.shape[0] <= chunk_size:
            yield x, y
            continue
        for start in range(0, x.shape[0], chunk_size):
            yield x[start : start + chunk_size], y[start : start + chunk_size]


def scaled_loss(logits: Tensor, targets: Tensor, temperature: float, reduction: str = "sum") -> Tensor:
    """Cross-entropy of ``logits / temperature``."""
    return F.cross_entropy(logits / temperature, targets, reduction=reduction)


def batch_gradient(
    model: nn.Module, params: Mapping[str, Tensor], batches: Sequence[Batch], *, temperature: float = 1.0
) -> TensorDict:
    """g = ∇L, the gradient of the mean loss over all N samples. Mean reduction: g = (1/N) Σ_i ∇ℓ_i."""
    n = num_samples(batches)
    names = list(params)
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for x, y in batches:
        loss = scaled_loss(model(x), y, temperature) / n
        grads = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True)
        for name, g in zip(names, grads, strict=True):
            if g is not None:
                total[name] += g
    return total


def hessian_vector_product(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    vector: Mapping[str, Tensor],
    *,
    temperature: float = 1.0,
) -> TensorDict:
    """H v with H = ∇²L the Hessian of the mean loss w.r.t. ``params`` (Pearlmutter's double backward).

    Mean reduction: H v = (1/N) Σ_i H_i v. Used by GraSP with v = g.
    """
    n = num_samples(batches)
    names = list(params)
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for x, y in batches:
        loss = scaled_loss(model(x), y, temperature) / n
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=True, allow_unused=True)
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
    return total


# ----------------------------------------------------------------------------------------------------
# Per-sample squared gradients (empirical Fisher diagonal)


class _NeedsFallback(Exception):
    """The hook route cannot handle this model (a hooked module was called twice, say)."""


def _hook_supported(module: nn.Module) -> bool:
    if type(module) is nn.Linear:
        return True
    if type(module) in (nn.Conv1d, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return False


def _conv_per_sample_grads(module: nn.Conv1d | nn.Conv2d, a: Tensor, dy: Tensor) -> Tensor:
    """Per-sample weight gradients of a convolution from its input ``a`` and output gradient ``dy``.

    ∂ℓ_i/∂W = dY_i · unfold(a_i)ᵀ per group: the convolution as a matrix product over its unfolded
    input patches (Opacus, BackPACK).
    """
    kernel, stride, padding, dilation = module.kernel_size, module.stride, module.padding, module.dilation
    if isinstance(module, nn.Conv1d):  # a 1-D convolution is a 2-D one of height 1
        a, dy = a.unsqueeze(2), dy.unsqueeze(2)
        kernel, stride, padding, dilation = (1, *kernel), (1, *stride), (0, *padding), (1, *dilation)
    b, groups = a.shape[0], module.groups
    patches = F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, Cin·k, L)
    patches = patches.reshape(b, groups, -1, patches.shape[-1])
    dy = dy.reshape(b, groups, dy.shape[1] // groups, -1)
    return torch.einsum("bgol,bgil->bgoi", dy, patches).reshape(b, *module.weight.shape)


def _per_sample_moments_hooks(
    model: nn.Module,
    owners: Mapping[str, nn.Module],
    batches: Sequence[Batch],
    temperature: float,
    chunk_size: int | None,
) -> tuple[TensorDict, TensorDict]:
    sums = {name: torch.zeros_like(m.weight) for name, m in owners.items()}
    squares = {name: torch.zeros_like(m.weight) for name, m in owners.items()}
    records: dict[str, tuple[Tensor, Tensor]] = {}

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if name in records:
                raise _NeedsFallback(f"{name} is called more than once per forward")
            records[name] = (inputs[0].detach(), output)

        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in owners.items()]
    try:
        for x, y in iter_chunks(batches, chunk_size):
            records.clear()
            loss = scaled_loss(model(x), y, temperature)  # sum over the chunk: dY holds per-sample grads
            names = [n for n in owners if n in records and records[n][1].requires_grad]
            out_grads = torch.autograd.grad(loss, [records[n][1] for n in names], allow_unused=True)
            for name, dy in zip(names, out_grads, strict=True):
                if dy is None:
                    continue
                module, a = owners[name], records[name][0]
                if isinstance(module, nn.Linear) and a.dim() == 2:
                    # Σ_i (dy_i a_iᵀ)² = (dy²)ᵀ(a²): no per-sample tensor needed.
                    sums[name] += dy.t() @ a
                    squares[name] += dy.square().t() @ a.square()
                    continue
                if isinstance(module, nn.Linear):  # tokens: ∂ℓ_i/∂W = Σ_t dy_it a_itᵀ
                    per_sample = torch.einsum("bto,bti->boi", dy.flatten(1, -2), a.flatten(1, -2))
                else:
                    per_sample = _conv_per_sample_grads(module, a, dy)
                sums[name] += per_sample.sum(0)
                squares[name] += per_sample.square().sum(0)
    finally:
        for h in handles:
            h.remove()
        records.clear()
    return sums, squares


def _functional_parts(model: nn.Module, params: Mapping[str, Tensor]) -> tuple[TensorDict, TensorDict]:
    """(the tensors to differentiate, detached copies of everything else the model holds)."""
    probed = {name: p.detach() for name, p in params.items()}
    fixed = {n: t.detach() for n, t in model.named_parameters() if n not in params}
    fixed.update({n: t.detach() for n, t in model.named_buffers()})
    return probed, fixed


def _per_sample_loss_fn(model: nn.Module, fixed: TensorDict, temperature: float) -> Callable:
    def loss(p: TensorDict, x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, {**fixed, **p}, (x.unsqueeze(0),))
        return scaled_loss(logits, y.unsqueeze(0), temperature)

    return loss


def _per_sample_moments_vmap(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    temperature: float,
    chunk_size: int | None,
) -> tuple[TensorDict, TensorDict]:
    probed, fixed = _functional_parts(model, params)
    per_sample_grad = vmap(grad(_per_sample_loss_fn(model, fixed, temperature)), in_dims=(None, 0, 0))
    sums = {name: torch.zeros_like(p) for name, p in probed.items()}
    squares = {name: torch.zeros_like(p) for name, p in probed.items()}
    for x, y in iter_chunks(batches, chunk_size):
        grads = per_sample_grad(probed, x, y)
        for name, g in grads.items():
            sums[name] += g.sum(0)
            squares[name] += g.square().sum(0)
    return sums, squares


def per_sample_gradient_moments(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    *,
    temperature: float = 1.0,
    chunk_size: int | None = 64,
    method: str = "auto",
) -> tuple[TensorDict, TensorDict]:
    """Mean gradient and empirical Fisher diagonal from true per-sample gradients.

    Returns ``(g, F)`` with g = (1/N) Σ_i g_i and F = (1/N) Σ_i g_i ⊙ g_i, g_i = ∇ℓ_i the gradient of
    sample i's own loss — not the square of a batch gradient. Both use mean reduction over the N samples;
    with sum reduction F would be N times larger. The empirical Fisher is the curvature of the paper's FD,
    FP and FTS criteria (arXiv 2502.11450, §3).

    ``method``: ``hooks`` computes per-sample weight gradients of Linear and Conv1d/2d layers from each
    layer's saved input and output gradient in one batched backward pass that skips the weight
    gradients (Opacus, BackPACK); ``vmap`` uses ``torch.func.vmap(grad(...))`` and works for any module;
    ``auto`` takes ``hooks`` where every parameter is the weight of a supported layer. Memory is bounded by
    ``chunk_size`` samples per pass.
    """
    if method not in ("auto", "hooks", "vmap"):
        raise ValueError(f"unknown method {method!r}; valid: auto, hooks, vmap")
    n = num_samples(batches)
    owners = _weight_owners(model, params)
    if method == "hooks" and owners is None:
        raise ValueError("the hooks method needs every parameter to be the weight of a Linear or Conv1d/2d")
    sums = squares = None
    if method != "vmap" and owners is not None:
        try:
            sums, squares = _per_sample_moments_hooks(model, owners, batches, temperature, chunk_size)
        except _NeedsFallback:
            if method == "hooks":
                raise
    if sums is None or squares is None:
        sums, squares = _per_sample_moments_vmap(model, params, batches, temperature, chunk_size)
    return {k: v / n for k, v in sums.items()}, {k: v / n for k, v in squares.items()}


def _weight_owners(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, nn.Module] | None:
    """name → module whose ``weight`` it is, if every parameter is the weight of a hook-supported layer."""
    owners = {}
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        name = f"{module_name}.weight" if module_name else "weight"
        if name in params and params[name] is weight:
            if not _hook_supported(module):
                return None
            owners[name] = module
    return owners if len(owners) == len(params) else None


# ----------------------------------------------------------------------------------------------------
# Hutchinson


def rademacher_probes(
    shapes: Mapping[str, torch.Size],
    probes: int,
    count: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> TensorDict:
    """``count`` samples' independent Rademacher (±1) probes: name → (count, probes, *shape).

    Drawn sample by sample in a fixed order, so the probes of sample i do not depend on how the samples
    are chunked.
    """
    sizes = [torch.Size(s).numel() for s in shapes.values()]
    flat = torch.stack(
        [torch.randint(0, 2, (probes, sum(sizes)), generator=generator, device=device) for _ in range(count)]
    ).to(dtype)
    flat = flat.mul_(2).sub_(1)
    parts = flat.split(sizes, dim=-1)
    return {
        name: part.reshape(count, probes, *shape)
        for (name, shape), part in zip(shapes.items(), parts, strict=True)
    }


def hutchinson_diagonal(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    *,
    probes: int = 10,
    temperature: float = 1.0,
    generator: torch.Generator,
    chunk_size: int | None = 16,
    probe_params: Mapping[str, Tensor] | None = None,
) -> TensorDict:
    """Hutchinson estimate of diag(H), with independent probes per sample.

    ĥ = (1/(kN)) Σ_i Σ_{j=1..k} z_ij ⊙ (H_i z_ij), z_ij Rademacher, H_i = ∇²ℓ_i; E[ĥ] = diag(H) for the
    mean loss L = (1/N) Σ ℓ_i (with sum reduction it would be N times larger). The variance of coordinate
    p is (1/(kN²)) Σ_i Σ_{q≠p} (H_i)_pq²: the off-diagonal energy of the probed block (Hutchinson 1989;
    the paper's HD, arXiv 2502.11450 §3).

    The probes span ``probe_params`` (default: ``params``, the prunable weights, which is unbiased with
    less variance); pass every parameter to probe the full Hessian as the paper's reference code does. The
    result is returned for ``params`` only.

    All per-sample Hessian-vector products of a chunk are computed in one batched pass:
    ``vmap`` over samples of a reverse-over-reverse HVP whose gradient graph is shared by the k probes.
    """
    probe_params = dict(params if probe_params is None else probe_params)
    missing = set(params) - set(probe_params)
    if missing:
        raise ValueError(f"probe_params must include every parameter to score; missing {sorted(missing)}")
    probed, fixed = _functional_parts(model, probe_params)
    loss = _per_sample_loss_fn(model, fixed, temperature)
    wanted = list(params)

    def one_sample(x: Tensor, y: Tensor, z: TensorDict) -> TensorDict:
        _, hvp = vjp(lambda p: grad(loss)(p, x, y), probed)
        hz = vmap(hvp)(z)[0]  # H_i z_ij for the k probes, sharing one gradient graph
        return {name: (z[name] * hz[name]).sum(0) for name in wanted}

    batched = vmap(one_sample)
    shapes = {name: p.shape for name, p in probed.items()}
    device, dtype = next(iter(probed.values())).device, next(iter(probed.values())).dtype
    total = {name: torch.zeros_like(probed[name]) for name in wanted}
    for x, y in iter_chunks(batches, chunk_size):
        z = rademacher_probes(shapes, probes, x.shape[0], generator, device, dtype)
        for name, value in batched(x, y, z).items():
            total[name] += value.sum(0)
    n = num_samples(batches)
    return {name: t / (probes * n) for name, t in total.items()}
