"""Memory budgets: how many samples one batched pass of a curvature engine may take on the device at hand.

The batched engines (per-sample squared gradients, Hutchinson) are fastest with as many samples per pass as
memory allows, and fail when a pass does not fit. They size their chunks as

    chunk = max(1, ⌊(budget − fixed) / per_sample⌋)

with ``per_sample`` the bytes one more sample adds to a pass (estimated from the model, see
:func:`saved_activation_bytes`) and ``budget`` from :func:`memory_budget`, in this order of precedence:

1. :func:`set_memory_budget` (process-wide; ``None`` restores the default),
2. the environment variable ``INITPRUNE_MEMORY_BUDGET`` (bytes, or a number with a unit: ``512MiB``,
   ``4GiB``, ``2G``),
3. the device's free memory × :data:`DEVICE_MEMORY_FRACTION`: on CUDA ``torch.cuda.mem_get_info`` plus what
   PyTorch's caching allocator holds unused; on the CPU ``MemAvailable`` from ``/proc/meminfo``, at most
   :data:`CPU_BUDGET_CAP` (larger passes gain nothing on a CPU); elsewhere :data:`FALLBACK_BUDGET_BYTES`.

A chunk of one sample is always allowed, so a budget below one sample's need runs sample by sample.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import InitpruneError
from .samples import Inputs, call_model, input_count, slice_inputs

MEMORY_BUDGET_ENV = "INITPRUNE_MEMORY_BUDGET"
"""Environment variable that sets the budget in bytes (``4GiB``, ``512MiB``, ``2e9`` are accepted)."""

DEVICE_MEMORY_FRACTION = 0.5
"""Share of the device's free memory a pass may plan for: the per-sample estimates are approximate, and
the model, the caller's tensors and allocator fragmentation need the rest."""

CPU_BUDGET_CAP = 4 * 2**30
"""Largest automatic budget on the CPU: beyond a few hundred samples per pass a CPU runs no faster."""

FALLBACK_BUDGET_BYTES = 2 * 2**30
"""Budget on devices whose free memory cannot be read."""

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20}
_UNITS.update({"g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40})

_override: int | None = None


def parse_bytes(value: str | int) -> int:
    """``"4GiB"`` → 4·2³⁰, ``"500MB"`` → 5·10⁸, ``"2G"`` → 2·2³⁰, ``"1e9"`` → 10⁹, ``1024`` → 1024."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise InitpruneError(
                f"invalid memory budget {value!r}; give bytes as a number, optionally with a unit "
                "(B, KiB, MiB, GiB, TiB; KB, MB, GB, TB; K, M, G, T as binary)"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size < 1:
        raise InitpruneError(f"invalid memory budget {value!r}; it must be at least 1 byte")
    return size


def set_memory_budget(budget: int | str | None) -> None:
    """Set the bytes one batched pass of the curvature engines may use, for the whole process (it takes
    precedence over ``INITPRUNE_MEMORY_BUDGET``); ``None`` restores the automatic, device-aware budget."""
    global _override
    _override = None if budget is None else parse_bytes(budget)


def _cpu_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_budget(device: torch.device | str) -> int:
    """Bytes one batched pass may use on ``device``: the override, the environment variable, or the
    device's free memory × :data:`DEVICE_MEMORY_FRACTION` (see the module docstring)."""
    if _override is not None:
        return _override
    if os.environ.get(MEMORY_BUDGET_ENV, "").strip():
        return parse_bytes(os.environ[MEMORY_BUDGET_ENV])
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + cached) * DEVICE_MEMORY_FRACTION)
    if device.type == "cpu":
        available = _cpu_available_bytes()
        if available is None:
            return FALLBACK_BUDGET_BYTES
        return min(CPU_BUDGET_CAP, int(available * DEVICE_MEMORY_FRACTION))
    return FALLBACK_BUDGET_BYTES


def chunk_samples(budget: int, per_sample: int, fixed: int = 0) -> int:
    """max(1, ⌊(budget − fixed) / per_sample⌋): the samples a pass may take."""
    return max(1, (budget - fixed) // max(1, per_sample))


class ActivationSizes(NamedTuple):
    """Per-sample sizes from one forward (see :func:`saved_activation_bytes`)."""

    saved: int
    """Bytes autograd saves for the backward pass."""
    inputs: dict[nn.Module, int]
    """Bytes of each watched module's input."""
    outputs: dict[nn.Module, int]
    """Bytes of each watched module's output."""
    logits: int
    """Elements of the model's output."""


def saved_activation_bytes(
    model: nn.Module, x: Inputs, *, watch: Callable[[nn.Module], bool] | None = None
) -> ActivationSizes:
    """Per-sample sizes of a differentiating forward pass, measured on the first samples of ``x``: the bytes
    autograd saves for the backward pass, and the bytes of the inputs and outputs of the modules for which
    ``watch`` is true.

    Parameters and buffers that autograd saves are not counted (they do not grow with the chunk). The
    forward runs on copies of the buffers, so BatchNorm statistics are not updated.
    """
    # Two samples where there are, so that BatchNorm in training mode can run; sizes are per sample.
    one = slice_inputs(x, 0, 2)
    count = input_count(one)
    # Leaves that require grad even where the caller's parameters do not, so that autograd saves what a
    # differentiating pass saves; detached views share the parameters' storage and are not counted.
    state = {name: p.detach().requires_grad_(p.is_floating_point()) for name, p in model.named_parameters()}
    state.update({name: b.clone() for name, b in model.named_buffers()})
    constant = {t.untyped_storage().data_ptr() for t in state.values()}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in constant:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    inputs: dict[nn.Module, int] = {}
    outputs: dict[nn.Module, int] = {}

    def record(module: nn.Module, args: tuple, output: object) -> None:
        if args and torch.is_tensor(args[0]):
            inputs[module] = args[0].numel() * args[0].element_size() // count
        if torch.is_tensor(output):
            outputs[module] = output.numel() * output.element_size() // count

    handles = [m.register_forward_hook(record) for m in model.modules() if watch is not None and watch(m)]
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = call_model(model, state, one)
    finally:
        for h in handles:
            h.remove()
    size = logits.numel() // count if torch.is_tensor(logits) else 0
    return ActivationSizes(-(-sum(storages.values()) // count), inputs, outputs, size)
