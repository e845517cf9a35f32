"""Per-sample squared gradients in batched passes: the engine behind the empirical Fisher diagonal and
every other "sum of squared per-sample Jacobian-vector products" curvature diagonal.

For sample i with logits z_i = f(x_i; θ) and backward vectors v_ic at the logits (c = 1..m, given by an
:data:`OutputVectors` function), the engine returns

    S1 = Σ_i Σ_c J_iᵀ v_ic        and        S2 = Σ_i Σ_c (J_iᵀ v_ic)²,    J_i = ∂z_i/∂θ.

With v_i = ∂ℓ_i/∂z_i (one vector) S2/N is the empirical Fisher diagonal and S1/N the batch gradient;
with the m columns of a square root of ∂²ℓ_i/∂z_i², S2/N is the exact GGN diagonal; with sampled labels,
the Monte-Carlo Fisher diagonal. Samples must not interact (BatchNorm in eval mode).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.func import vjp, vmap

from ..distributed import all_reduce_sums, global_samples
from ..prunable import transposed_linear_types
from .losses import CrossEntropy, Loss
from .memory import chunk_samples, memory_budget, saved_activation_bytes
from .samples import (
    Batch,
    Inputs,
    TensorDict,
    batch_of_one,
    call_model,
    first_input,
    functional_parts,
    input_count,
    iter_chunks,
    run_model,
    slice_inputs,
)

OutputVectors = Callable[[Tensor, Tensor], list[Tensor]]
"""``(logits (B, C), targets (B,)) -> [v_1, ..., v_m]``, each (B, C): backward vectors at the logits.

The function may carry an attribute ``columns``: m, for sizing chunks by memory; without it (or ``None``)
m is taken to be C, one column per logit. A function that keeps state across calls (sampled labels
counted by sample index) carries a ``rewind()`` the engine calls before it starts a pass over."""

METHODS = ("auto", "hooks", "vmap", "loop")


def loss_gradient_vectors(temperature: float = 1.0, loss: Loss | None = None) -> OutputVectors:
    """The one vector v_i = ∂ℓ_i/∂z_i per sample: (softmax(z_i/T) − onehot(y_i)) / T for ℓ_i = CE(z_i/T, y_i);
    for any other ``loss`` the gradient of Σ_i ℓ_i in the outputs by autograd (each ℓ_i depends on its own
    outputs only, so row i of that gradient is ∂ℓ_i/∂z_i)."""

    def vectors(logits: Tensor, targets: Tensor) -> list[Tensor]:
        if loss is None or isinstance(loss, CrossEntropy):
            probs = torch.softmax(logits / temperature, dim=-1)
            return [(probs - F.one_hot(targets, probs.shape[-1]).to(probs.dtype)) / temperature]
        with torch.enable_grad():
            z = logits.detach().requires_grad_(True)
            (v,) = torch.autograd.grad(loss.total(z, targets, temperature), z)
        return [v]

    vectors.columns = 1  # type: ignore[attr-defined]
    return vectors


class _NeedsFallback(Exception):
    """The hook route cannot handle this model (a hooked module was called twice, say)."""


def _hook_supported(module: nn.Module) -> bool:
    if type(module) is nn.Linear or type(module) in transposed_linear_types():
        return True
    if type(module) in (nn.Conv1d, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return False


def weight_owners(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, nn.Module] | None:
    """name → module whose ``weight`` it is, if every parameter is the weight of a hook-supported layer
    and is used by that layer alone.

    A parameter held by several modules (weight tying, ``b.weight = a.weight``) gets None: its per-sample
    gradient is the sum of every use's contribution, which must be formed before it is squared, so such
    models take the exact ``vmap`` route (which differentiates through every use).
    """
    wanted = {id(p): name for name, p in params.items()}
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attr, p in module._parameters.items():
            if p is not None and id(p) in wanted:
                holders.setdefault(id(p), []).append((module, attr))
    owners = {}
    for key, name in wanted.items():
        held = holders.get(key, [])
        if len(held) != 1:
            return None
        module, attr = held[0]
        if attr != "weight" or not _hook_supported(module):
            return None
        owners[name] = module
    return owners


def _conv_patches(module: nn.Conv1d | nn.Conv2d, a: Tensor) -> Tensor:
    """The unfolded input patches of a convolution, per group: (B, groups, Cin/groups · kernel, L)."""
    kernel, stride, padding, dilation = module.kernel_size, module.stride, module.padding, module.dilation
    if isinstance(module, nn.Conv1d):  # a 1-D convolution is a 2-D one of height 1
        a = a.unsqueeze(2)
        kernel, stride, padding, dilation = (1, *kernel), (1, *stride), (0, *padding), (1, *dilation)
    patches = F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, Cin·k, L)
    return patches.reshape(a.shape[0], module.groups, -1, patches.shape[-1])


def _per_group(patches: Tensor, dy: Tensor) -> Tensor:
    """A convolution's output gradient laid out like its patches: (B, groups, Cout/groups, L)."""
    return dy.reshape(patches.shape[0], patches.shape[1], dy.shape[1] // patches.shape[1], -1)


def _conv_per_sample_grads(module: nn.Conv1d | nn.Conv2d, patches: Tensor, dy: Tensor) -> Tensor:
    """Per-sample weight gradients of a convolution from its input patches and output gradient ``dy``.

    ∂/∂W = dY_i · unfold(a_i)ᵀ per group: the convolution as a matrix product over its unfolded input
    patches (Opacus, BackPACK).
    """
    per_sample = torch.einsum("bgol,bgil->bgoi", _per_group(patches, dy), patches)
    return per_sample.reshape(patches.shape[0], *module.weight.shape)


_GROUPED_MAX_WEIGHT_PER_POSITION = 1024

CPU_SLICE_BYTES = 8 * 2**20
"""On the CPU, the largest block of per-sample weight gradients a layer makes at once: about a last-level
cache, so the block is squared while it is still cached (a 2-3× speed-up on VGG-16's wide layers)."""

ACCELERATOR_SLICE_BYTES = 256 * 2**20
"""On an accelerator the same bound only caps memory: few, large blocks keep the kernel launches few."""


def _slice_bytes(device: torch.device) -> int:
    return CPU_SLICE_BYTES if device.type == "cpu" else ACCELERATOR_SLICE_BYTES


CPU_PASS_SAMPLES = 64
"""On the CPU, the most samples one pass takes, whatever the memory budget allows: passes of 64 ran
faster than the budget's larger ones in every measurement of ``docs/results/scoring_cpu/`` (fisher_diag on
VGG-16 1.45 against 1.73 batched gradients in one pass of 100, 1.65 against 1.77 at 1,000 samples in passes
of 321; ResNet-18 1.04 against 1.25; ViT-Small 1.13 against 1.27): the activations of a smaller pass stay
nearer the caches, and a CPU gains nothing from wider kernels beyond a few dozen samples."""

_GRAM_MAX_POSITIONS = 4


def _use_gram_route(module: nn.Conv1d | nn.Conv2d, dy: Tensor) -> bool:
    """Sums of squares from position Gram matrices where the output map has at most
    :data:`_GRAM_MAX_POSITIONS` positions (VGG's 2×2 maps on CIFAR): no per-sample gradient is made."""
    return dy[0, 0].numel() <= _GRAM_MAX_POSITIONS


def _conv_square_sums_gram(module: nn.Conv1d | nn.Conv2d, patches: Tensor, dy: Tensor) -> Tensor:
    """Σ_i g_i² of a convolution without forming g_i, by expanding the square over output positions:

        (g_i)_oj² = (Σ_l dY_iol P_ijl)² = Σ_{l,l'} (dY_iol dY_iol') (P_ijl P_ijl'),

    one matrix product over (i, l, l') of the outer products of each sample's output gradients and of its
    patches. It costs L² multiply-adds per weight and sample against the L of the per-sample route, which
    pays instead to write and read B × weights: for L ≤ 4 this route is several times faster.
    """
    dy = _per_group(patches, dy)
    dy_outer = (dy.unsqueeze(-1) * dy.unsqueeze(-2)).flatten(-2)  # (B, G, O/G, L²)
    patch_outer = (patches.unsqueeze(-1) * patches.unsqueeze(-2)).flatten(-2)  # (B, G, I, L²)
    return torch.einsum("bgoz,bgiz->goi", dy_outer, patch_outer).reshape(module.weight.shape)


def _use_grouped_route(module: nn.Conv1d | nn.Conv2d, dy: Tensor) -> bool:
    """Per-sample gradients by one grouped weight-gradient convolution (batch folded into the groups) when
    the weight is small next to the output positions; by unfolded patches and a batched matrix product
    otherwise. Both are exact; on CPU the grouped route avoids materializing the patches, which dominates
    for wide feature maps with few channels, and loses to it for many channels on small maps."""
    return module.weight.numel() <= _GROUPED_MAX_WEIGHT_PER_POSITION * dy[0, 0].numel()


def _conv_per_sample_grads_grouped(module: nn.Conv1d | nn.Conv2d, a: Tensor, dy: Tensor) -> Tensor:
    """∂/∂W for every sample as the weight gradient of a convolution with B·groups groups."""
    b, weight = a.shape[0], module.weight
    grad_weight = (
        torch.nn.grad.conv1d_weight if isinstance(module, nn.Conv1d) else torch.nn.grad.conv2d_weight
    )
    per_sample = grad_weight(
        a.reshape(1, -1, *a.shape[2:]),
        (b * weight.shape[0], *weight.shape[1:]),
        dy.reshape(1, -1, *dy.shape[2:]),
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=b * module.groups,
    )
    return per_sample.reshape(b, *weight.shape)


def _accumulate(
    module: nn.Module, a: Tensor, dy: Tensor, s1: Tensor | None, s2: Tensor, patches: dict
) -> None:
    """Add Σ_i g_i (unless ``s1`` is None) and Σ_i g_i² of one backward column; ``patches`` caches
    unfolded convolution inputs."""
    linear = isinstance(module, nn.Linear)
    if not linear and not isinstance(module, nn.Conv1d | nn.Conv2d):
        # transformers' Conv1D: y = x W + b with W stored (in, out), the transpose of a Linear weight;
        # its sums are the Linear ones written through transposed views.
        linear, s1, s2 = True, (None if s1 is None else s1.t()), s2.t()
    if linear and a.dim() == 2:
        # Σ_i (dy_i a_iᵀ)² = (dy²)ᵀ(a²): no per-sample tensor is needed.
        if s1 is not None:
            s1 += dy.t() @ a
        s2 += dy.square().t() @ a.square()
        return
    limit = _slice_bytes(a.device)
    if isinstance(module, nn.Conv1d | nn.Conv2d) and _use_gram_route(module, dy):
        unfolded = _cached_patches(module, a, patches)
        if s1 is not None:
            s1 += _conv_sum_of_grads(module, unfolded, dy)
        positions = dy[0, 0].numel()
        per_sample_bytes = (dy[0].numel() + unfolded[0].numel()) * positions * unfolded.element_size()
        step = max(1, limit // per_sample_bytes)
        for lo in range(0, a.shape[0], step):
            s2 += _conv_square_sums_gram(module, unfolded[lo : lo + step], dy[lo : lo + step])
        return
    if linear:  # token inputs: ∂/∂W = Σ_t dy_it a_itᵀ
        a, dy = a.flatten(1, -2), dy.flatten(1, -2)

        def per_sample_grads(lo: int, hi: int) -> Tensor:
            return torch.einsum("bto,bti->boi", dy[lo:hi], a[lo:hi])
    elif _use_grouped_route(module, dy):

        def per_sample_grads(lo: int, hi: int) -> Tensor:
            return _conv_per_sample_grads_grouped(module, a[lo:hi], dy[lo:hi])
    else:
        unfolded = _cached_patches(module, a, patches)

        def per_sample_grads(lo: int, hi: int) -> Tensor:
            return _conv_per_sample_grads(module, unfolded[lo:hi], dy[lo:hi])

    # Per-sample gradients of a slice of samples at a time, at most _slice_bytes of them.
    step = max(1, limit // (module.weight.numel() * module.weight.element_size()))
    for lo in range(0, a.shape[0], step):
        per_sample = per_sample_grads(lo, lo + step)  # a fresh tensor: squared in place
        if a.device.type == "cpu":
            # One fused pass per sample into the sums: a reduction over the block's sample dimension
            # allocates, zero-fills and adds a weight-sized tensor (3-4× the time on VGG-16's 2.4 M-weight
            # layers, whose blocks hold one sample).
            for g in per_sample:
                if s1 is not None:
                    s1.add_(g)
                s2.addcmul_(g, g)
            continue
        if s1 is not None:
            s1 += per_sample.sum(0)
        s2 += per_sample.square_().sum(0)


def _cached_patches(module: nn.Conv1d | nn.Conv2d, a: Tensor, patches: dict) -> Tensor:
    """The unfolded input of ``module``, made once per chunk and shared by the backward columns."""
    key = id(module)
    if key not in patches:
        patches[key] = _conv_patches(module, a)
    return patches[key]


def _conv_sum_of_grads(module: nn.Conv1d | nn.Conv2d, patches: Tensor, dy: Tensor) -> Tensor:
    """Σ_i g_i: the batch weight gradient, as one contraction over samples and positions."""
    return torch.einsum("bgol,bgil->goi", _per_group(patches, dy), patches).reshape(module.weight.shape)


def _square_sums_hooks(
    model: nn.Module,
    owners: Mapping[str, nn.Module],
    batches: Sequence[Batch],
    vectors: OutputVectors,
    chunk_size: int | None,
    sums: bool,
) -> tuple[TensorDict, TensorDict]:
    s1 = {name: torch.zeros_like(m.weight) for name, m in owners.items()} if sums else {}
    s2 = {name: torch.zeros_like(m.weight) for name, m in owners.items()}
    # name → (the layer's input, the gradient edge of its output or None). The gradient is taken at the
    # output's edge, the autograd node that made it: a later in-place operation on the output
    # (ReLU(inplace=True), ``out += identity``) gives the tensor a new node, and a gradient asked for the
    # tensor would be the one at the modified value. (An input modified in place after the layer ran
    # fails in autograd itself, which saved it for the weight gradient.)
    records: dict[str, tuple[Tensor, GradientEdge | None]] = {}

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if name in records:
                raise _NeedsFallback(f"{name} is called more than once per forward")
            edge = get_gradient_edge(output) if output.requires_grad else None
            records[name] = (inputs[0].detach(), edge)

        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in owners.items()]
    try:
        for x, y in iter_chunks(batches, chunk_size):
            records.clear()
            logits = run_model(model, x)
            columns = vectors(logits.detach(), y)
            names = [n for n in owners if n in records and records[n][1] is not None]
            outputs = [records[n][1] for n in names]
            # Convolution patches are unfolded once per chunk and shared by the backward columns.
            patches: dict[int, Tensor] = {}
            for c, v in enumerate(columns):
                # Gradients at the layer outputs only: autograd skips the weight gradients entirely.
                out_grads = torch.autograd.grad(
                    logits, outputs, grad_outputs=v, retain_graph=c < len(columns) - 1, allow_unused=True
                )
                for name, dy in zip(names, out_grads, strict=True):
                    if dy is not None:
                        _accumulate(owners[name], records[name][0], dy, s1.get(name), s2[name], patches)
                    if len(columns) == 1:
                        patches.clear()
    finally:
        for h in handles:
            h.remove()
        records.clear()
    all_reduce_sums(s1, s2)
    return s1, s2


def _has_recurrent(model: nn.Module) -> bool:
    """Whether ``model`` holds an RNN/LSTM/GRU, whose kernels ``torch.func.vmap`` does not batch reliably
    (float64 LSTMs fail, float32 ones fall back to a slow loop)."""
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


def _square_sums_vmap(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    vectors: OutputVectors,
    chunk_size: int | None,
    sums: bool,
) -> tuple[TensorDict, TensorDict]:
    probed, fixed = functional_parts(model, params)

    def one_sample(x: Inputs, v: Tensor) -> tuple[TensorDict, TensorDict]:
        _, pull = vjp(lambda p: call_model(model, {**fixed, **p}, batch_of_one(x)), probed)
        grads = vmap(pull)(v.unsqueeze(1))[0]  # J_iᵀ v_ic for every column c
        return {k: g.sum(0) for k, g in grads.items()}, {k: g.square().sum(0) for k, g in grads.items()}

    s1 = {name: torch.zeros_like(p) for name, p in probed.items()} if sums else {}
    s2 = {name: torch.zeros_like(p) for name, p in probed.items()}
    for x, y in iter_chunks(batches, chunk_size):
        with torch.no_grad():
            columns = torch.stack(list(vectors(run_model(model, x), y)), dim=1)  # (B, m, *logits)
        with warnings.catch_warnings():
            # Exact either way; attention kernels without a batching rule run sample by sample.
            warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
            chunk_sums, chunk_squares = vmap(one_sample)(x, columns)
        for name in s2:
            if sums:
                s1[name] += chunk_sums[name].sum(0)
            s2[name] += chunk_squares[name].sum(0)
    all_reduce_sums(s1, s2)
    return s1, s2


def _square_sums_loop(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    vectors: OutputVectors,
    chunk_size: int | None,
    sums: bool,
) -> tuple[TensorDict, TensorDict]:
    """The reference route: one forward of each sample alone and one backward per column, for modules
    ``torch.func.vmap`` cannot batch (the recurrent layers). The columns of a chunk are made from its
    logits at once, as in the batched routes, so sampled labels do not depend on the route."""
    names = list(params)
    s1 = {name: torch.zeros_like(p) for name, p in params.items()} if sums else {}
    s2 = {name: torch.zeros_like(p) for name, p in params.items()}
    for x, y in iter_chunks(batches, chunk_size):
        logits = [run_model(model, slice_inputs(x, i, i + 1)) for i in range(input_count(x))]
        columns = vectors(torch.cat(logits).detach(), y)
        for i, z in enumerate(logits):
            for c, v in enumerate(columns):
                grads = torch.autograd.grad(
                    z, [params[k] for k in names], v[i : i + 1], retain_graph=c < len(columns) - 1,
                    allow_unused=True,
                )  # fmt: skip
                for name, g in zip(names, grads, strict=True):
                    if g is not None:
                        if sums:
                            s1[name] += g
                        s2[name] += g.square()
    all_reduce_sums(s1, s2)
    return s1, s2


def _patch_bytes(module: nn.Module, input_bytes: int) -> int:
    """Bytes of one sample's unfolded convolution input: kernel-size times the input (an upper bound)."""
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return input_bytes * math.prod(module.kernel_size)
    return 0


def auto_chunk_size(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    vectors: OutputVectors,
    route: str = "auto",
) -> int:
    """Samples per pass of :func:`per_sample_square_sums` within :func:`~initprune.curvature.memory_budget`.

    One sample's bytes, with A the activations autograd saves for it, O the outputs of the hooked layers,
    U their unfolded convolution inputs, P the parameters' bytes and m backward columns
    (``vectors.columns``, default one per logit):

    * hook route: A + 2·O + (ΣU over layers if m > 1, else max U): the forward graph, the layer-output
      gradients with the backward's own, and the patches cached for the columns; beside them a block of
      per-sample gradients and its reduction, each at most max(W, min(c·W, :func:`_slice_bytes`)) for
      the largest weight of W bytes;
    * vmap route: (1 + m)·A + (2m + 2)·P: the graph, its m batched pullbacks, and per-sample gradients
      with their squares.

    On the CPU a pass takes at most :data:`CPU_PASS_SAMPLES` samples.

    ``route``: ``hooks``, ``vmap``, or ``auto`` (hooks where every parameter is a supported layer's
    weight).
    """
    x = batches[0][0]
    device = first_input(x).device
    owners = None if route == "vmap" else weight_owners(model, params)
    watched = set(owners.values()) if owners is not None else set()
    saved, inputs, outputs, logits = saved_activation_bytes(model, x, watch=lambda m: m in watched)
    columns = getattr(vectors, "columns", None) or max(1, logits)
    budget = memory_budget(device)
    if owners is not None:
        patches = [_patch_bytes(m, inputs.get(m, 0)) for m in watched]
        cached = sum(patches) if columns > 1 else max(patches, default=0)
        per_sample = saved + 2 * sum(outputs.get(m, 0) for m in watched) + cached
        # A block of per-sample gradients and its reduction: at most max(W, min(c·W, slice)) bytes each.
        weight = max(m.weight.numel() * m.weight.element_size() for m in watched)
        capped = chunk_samples(budget, per_sample, fixed=2 * max(weight, _slice_bytes(device)))
        chunk = max(capped, chunk_samples(budget, per_sample + 2 * weight, fixed=2 * weight))
    else:
        param_bytes = sum(p.numel() * p.element_size() for p in params.values())
        chunk = chunk_samples(budget, (1 + columns) * saved + (2 * columns + 2) * param_bytes)
    return min(chunk, CPU_PASS_SAMPLES) if device.type == "cpu" else chunk


def per_sample_square_sums(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    vectors: OutputVectors,
    *,
    chunk_size: int | None = None,
    method: str = "auto",
    sums: bool = True,
) -> tuple[TensorDict, TensorDict]:
    """``(S1, S2)`` = (Σ_i Σ_c J_iᵀ v_ic, Σ_i Σ_c (J_iᵀ v_ic)²) over all samples (sums, not means).

    ``sums=False`` skips S1 (returned empty) where only the squares are needed.

    ``method``: ``hooks`` computes per-sample weight gradients of Linear, Conv1d/2d and ``transformers``'
    Conv1D layers from each layer's saved input and output gradient, one batched backward per column
    that skips the weight gradients (as Opacus and BackPACK do); ``vmap`` uses ``torch.func`` and works
    for any module that ``vmap`` can batch; ``loop`` runs each sample alone (exact for every module,
    slow). ``auto`` takes ``hooks`` where every parameter is the weight of a supported layer used by that
    layer alone (and falls back when a layer is called twice in one forward); otherwise ``vmap``, or
    ``loop`` for models with recurrent layers or where ``vmap`` cannot run the model (data-dependent
    control flow, as in a Hugging Face BERT given an attention mask: one warning line says so). The hook
    route stays exact when the model modifies a layer's output in place after the layer
    (``ReLU(inplace=True)``, ``out += identity``): it takes the gradient at the autograd node that made
    the output (its gradient edge), which the in-place operation does not replace.
    A parameter used in several places (weight tying) gets the per-sample
    gradient summed over all its uses before it is squared, on the ``vmap`` and ``loop`` routes. At most
    ``chunk_size`` samples per pass; ``None`` sizes the passes by the device's memory budget
    (:func:`auto_chunk_size`, :func:`~initprune.curvature.set_memory_budget`,
    ``INITPRUNE_MEMORY_BUDGET``; the loop route takes the vmap route's size, an upper bound of its
    memory). With several columns each convolution's unfolded input (kernel-size times its input) is
    kept for the chunk and shared by the columns, so a column costs a backward pass and one batched
    matrix product.
    A layer's per-sample gradients are made a block of samples at a time (:data:`CPU_SLICE_BYTES`, sized
    to a cache, on the CPU; :data:`ACCELERATOR_SLICE_BYTES` elsewhere), so wide layers (VGG-16's
    2.4M-weight convolutions) never hold chunk × weights at once; convolutions with at most
    :data:`_GRAM_MAX_POSITIONS` output positions skip them, through position Gram matrices.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    owners = weight_owners(model, params)
    if method == "hooks" and owners is None:
        raise ValueError("the hooks method needs every parameter to be the weight of a Linear or Conv1d/2d")
    auto = chunk_size is None and len(batches) > 0
    if method in ("auto", "hooks") and owners is not None:
        chunk = auto_chunk_size(model, params, batches, vectors, "hooks") if auto else chunk_size
        try:
            return _square_sums_hooks(model, owners, batches, vectors, chunk, sums)
        except _NeedsFallback:
            if method == "hooks":
                raise
    chunk = auto_chunk_size(model, params, batches, vectors, "vmap") if auto else chunk_size
    if method == "loop" or (method == "auto" and _has_recurrent(model)):
        return _square_sums_loop(model, params, batches, vectors, chunk, sums)
    if method == "vmap":
        return _square_sums_vmap(model, params, batches, vectors, chunk, sums)
    try:
        return _square_sums_vmap(model, params, batches, vectors, chunk, sums)
    except RuntimeError as exc:  # torch.func cannot batch the model: data-dependent control flow, say
        warn_vmap_fallback(model, "per-sample gradients", exc)
    if hasattr(vectors, "rewind"):
        vectors.rewind()  # the failed pass drew columns for its first chunk
    return _square_sums_loop(model, params, batches, vectors, chunk, sums)


def warn_vmap_fallback(model: nn.Module, what: str, exc: BaseException) -> None:
    """The one line that says a computation leaves ``torch.func.vmap`` for the exact per-sample loop."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    warnings.warn(
        f"{what}: torch.func.vmap cannot run {type(model).__name__} ({reason[:160]}); computing them "
        "sample by sample instead (exact, slower)",
        UserWarning,
        stacklevel=3,
    )


def per_sample_gradient_moments(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Sequence[Batch],
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    method: str = "auto",
    gradient: bool = True,
    loss: Loss | None = None,
) -> tuple[TensorDict, TensorDict]:
    """Mean gradient and empirical Fisher diagonal from true per-sample gradients.

    Returns ``(g, F)`` with g = (1/N) Σ_i g_i and F = (1/N) Σ_i g_i ⊙ g_i, g_i = ∇ℓ_i the gradient of
    sample i's own loss ℓ_i = CE(z_i/T, y_i) (or ``loss``: a sequence's mean token loss for
    ``token_cross_entropy``, one sample = one sequence) — not the square of a batch gradient. Both use mean
    reduction over the N samples; with sum reduction F would be N times larger. The empirical Fisher is
    the curvature of the paper's FD, FP and FTS criteria (arXiv 2502.11450). Computed in batched passes
    by :func:`per_sample_square_sums` (``method``, ``chunk_size``: see there).
    ``gradient=False`` skips g (returned empty).
    """
    n = global_samples(batches)
    vectors = loss_gradient_vectors(temperature, loss)
    s1, s2 = per_sample_square_sums(
        model, params, batches, vectors, chunk_size=chunk_size, method=method, sums=gradient
    )
    return {k: v / n for k, v in s1.items()}, {k: v / n for k, v in s2.items()}
