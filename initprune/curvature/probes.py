"""Random probes drawn by hashing a counter: Rademacher (±1) signs keyed by (seed, global sample index, probe
index, element), computed in tensor ops on the device.

Sign e of probe j of sample i under base seed s is one bit of a SplitMix64 output (Steele, Lea and Flood
2014; the finalizer of Vigna's ``splitmix64.c``)::

    mix(z)   = z ⊕ (z ≫ 30); z ·= 0xBF58476D1CE4E5B9; z ⊕= z ≫ 27; z ·= 0x94D049BB133111EB; z ⊕ (z ≫ 31)
    a_i      = mix(mix(s) + (i + 1)·γ)                      the sample's key
    k_ij     = mix(a_i + (j + 1)·γ)                         the probe's key
    word_ijw = mix(k_ij + (w + 1)·γ)                        the w-th output of SplitMix64 started at k_ij
    z_ije    = +1 if bit (e mod 64) of word_ij⌊e/64⌋ is set, else −1

with γ = 0x9E3779B97F4A7C15, arithmetic modulo 2⁶⁴ and ≫ a logical shift. Bit b of a word is bit
(b mod 8) of its byte ⌊b/8⌋ (byte 0 the least significant). On a tensor this is int64 arithmetic, which
wraps like unsigned arithmetic modulo 2⁶⁴, with the logical shift emulated by an arithmetic shift and a
mask; one hashed word gives 64 signs, which a 256-row table turns into the probe's dtype, 8 at a time.

Every sign is a pure function of its key, so the probes are the same on every device, for every chunking of
the samples and every number of processes, and a draw costs about one write of the probe. The probes of
this generator are :data:`PROBE_GENERATOR`; the ones of initprune's earlier releases (a
``torch.Generator`` per sample) differ, so the Hutchinson estimates of a given seed moved within their noise.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch
from torch import Tensor

TensorDict = dict[str, Tensor]

PROBE_GENERATOR = "splitmix64-counter-v1"
"""The name and version of the probe generator, recorded with every Hutchinson result (``pruning.json``)."""

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """The int64 with the bits of the unsigned 64-bit ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


GAMMA = 0x9E3779B97F4A7C15
_GAMMA = _signed(GAMMA)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)

SIGNS_PER_WORD = 64

CPU_BLOCK_WORDS = 2**15
"""Hashed words per block on the CPU: the block's words and byte indices (0.4 MiB) stay in cache while
they are turned into 2 M signs."""

ACCELERATOR_BLOCK_WORDS = 2**22
"""On an accelerator a block only bounds the scratch memory (160 MiB); few blocks keep launches few."""


def mix64(z: int) -> int:
    """The SplitMix64 finalizer on a Python int (the reference of :func:`_mix`)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _srl(z: Tensor, shift: int) -> Tensor:
    """Logical right shift of int64 ``z``: the arithmetic shift with the sign bits masked off."""
    return (z >> shift) & ((1 << (64 - shift)) - 1)


def _mix(z: Tensor) -> Tensor:
    """:func:`mix64` elementwise on an int64 tensor, in place (products wrap modulo 2⁶⁴)."""
    z ^= _srl(z, 30)
    z *= _M1
    z ^= _srl(z, 27)
    z *= _M2
    z ^= _srl(z, 31)
    return z


def probe_keys(seed: int, start: int, count: int, probes: int, device: torch.device) -> Tensor:
    """k_ij for the samples ``start, ..., start + count - 1`` and probes ``0, ..., probes - 1``: an int64
    (count, probes) tensor on ``device``."""
    base = _signed(mix64(seed))
    i = torch.arange(start + 1, start + count + 1, dtype=torch.int64, device=device)
    samples = _mix(i * _GAMMA + base)
    j = torch.arange(1, probes + 1, dtype=torch.int64, device=device)
    return _mix(samples[:, None] + j * _GAMMA)


def _sign_table(device: torch.device, dtype: torch.dtype) -> Tensor:
    """(256, 8): row v holds the signs of the 8 bits of byte v, least significant first."""
    bits = (torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1
    return (bits * 2 - 1).to(dtype)


def _byte_indices(words: Tensor) -> Tensor:
    """The 8 bytes of every word, least significant first, as int32 indices: (n,) → (8n,)."""
    if sys.byteorder == "little" or words.device.type != "cpu":
        return words.view(torch.uint8).to(torch.int32)
    shifts = torch.arange(0, 64, 8, device=words.device)
    return ((words[:, None] >> shifts) & 255).to(torch.int32).reshape(-1)


def row_length(size: int) -> int:
    """Elements of one probe in a buffer of :func:`rademacher_probes`: ``size`` rounded up to 64."""
    return -(-size // SIGNS_PER_WORD) * SIGNS_PER_WORD


def probe_seed(generator: torch.Generator) -> int:
    """The base seed of a set of probes: one 63-bit draw from ``generator`` (a single read-back)."""
    draw = torch.empty((), dtype=torch.int64, device=generator.device).random_(generator=generator)
    return int(draw)


def sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample ``index`` under base ``seed`` (SplitMix64 finalizer)."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


def rademacher_probes(
    shapes: Mapping[str, torch.Size],
    probes: int,
    count: int,
    seed: int | torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
    *,
    start: int = 0,
    out: Tensor | None = None,
) -> TensorDict:
    """Independent Rademacher (±1) probes of the samples ``start, ..., start + count - 1``:
    name → (count, probes, *shape).

    Sign e of probe j of sample i (e indexing the parameters of ``shapes`` flattened and concatenated in
    order) is a hash of (seed, i, j, e), see the module docstring: the probes depend neither on the device
    nor on how the samples are chunked or split across processes, and the first k probes of a sample are
    the same whatever the number of probes drawn. A ``torch.Generator`` given as ``seed`` supplies the
    base seed (:func:`probe_seed`); an int is used modulo 2⁶⁴.

    ``out``: a 1-D buffer of at least count · probes · :func:`row_length` (P) elements (P = the
    parameters' total size) to draw into, reused across calls (on the CPU a fresh allocation of this size
    costs as much again as the drawing, in page faults); the returned tensors are views of it.
    """
    if isinstance(seed, torch.Generator):
        seed = probe_seed(seed)
    device = torch.device(device)
    sizes = [torch.Size(s).numel() for s in shapes.values()]
    row = row_length(sum(sizes))
    total = count * probes * row
    if out is None:
        flat = torch.empty(total, device=device, dtype=dtype)
    else:
        if out.dim() != 1 or out.numel() < total or out.dtype != dtype or out.device != device:
            raise ValueError(f"out must be a 1-D {dtype} buffer of at least {total} elements on {device}")
        flat = out[:total]
    words_per_row = row // SIGNS_PER_WORD
    keys = probe_keys(seed, start, count, probes, device).reshape(-1)
    table = _sign_table(device, dtype)
    signs = flat.view(-1, 8)
    block = CPU_BLOCK_WORDS if device.type == "cpu" else ACCELERATOR_BLOCK_WORDS
    total_words = keys.numel() * words_per_row
    for lo in range(0, total_words, block):
        index = torch.arange(lo, min(lo + block, total_words), dtype=torch.int64, device=device)
        words = _mix(keys[index // words_per_row] + (index % words_per_row + 1) * _GAMMA)
        torch.index_select(table, 0, _byte_indices(words), out=signs[lo * 8 : (lo + len(index)) * 8])
    rows = flat.view(count, probes, row)
    parts = rows[..., : sum(sizes)].split(sizes, dim=-1)
    return {
        name: part.reshape(count, probes, *shape)
        for (name, shape), part in zip(shapes.items(), parts, strict=True)
    }
