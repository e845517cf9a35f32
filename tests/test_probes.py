"""The counter-based Rademacher generator: exact values against a plain-integer reference, independence from
chunking, and balance and pairwise-independence statistics over 10⁷ draws.

For ±1 variables, pairwise independence is balance plus zero correlation: the joint law of two signs is
fixed by their means and E[z z']. Each statistic below is a sum of n terms ±1 that are, under a sound
generator, independent and balanced, so it has standard error √n; the tests allow 6σ (a false alarm about
once in 5·10⁸ per statistic) and are checked to fail on a generator without its mixing steps.
"""

from __future__ import annotations

import math

import pytest
import torch

from initprune.curvature import probes as probes_module
from initprune.curvature import rademacher_probes
from initprune.curvature.probes import GAMMA, PROBE_GENERATOR, mix64, probe_seed, row_length

CPU = torch.device("cpu")
SIGMAS = 6.0


def reference_sign(seed: int, sample: int, probe: int, element: int) -> int:
    """z_ije of the module docstring, in plain Python integers modulo 2⁶⁴."""
    a = mix64(mix64(seed) + (sample + 1) * GAMMA)
    k = mix64(a + (probe + 1) * GAMMA)
    word = mix64(k + (element // 64 + 1) * GAMMA)
    return 1 if (word >> (element % 64)) & 1 else -1


def flat(z: dict[str, torch.Tensor]) -> torch.Tensor:
    """(count, probes, P): the probes of every parameter, concatenated in order."""
    return torch.cat([t.reshape(t.shape[0], t.shape[1], -1) for t in z.values()], dim=-1)


def test_mix64_is_splitmix64():
    """The first outputs of SplitMix64 seeded with 0 and 1234567 (Vigna's splitmix64.c): state += γ, then
    the finalizer."""
    assert [mix64(n * GAMMA) for n in (1, 2, 3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]
    assert mix64(1234567 + GAMMA) == 0x599ED017FB08FC85


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("seed", [0, 1234, 2**63 + 5, -3])
def test_probes_are_the_signs_of_the_reference_hash(dtype, seed):
    """Every sign of every sample, probe and element (across word and parameter boundaries) equals the
    plain-integer reference, for a start offset, float dtypes, and seeds beyond int64 (taken modulo 2⁶⁴)."""
    shapes = {"a": torch.Size([3, 50]), "b": torch.Size([17]), "c": torch.Size([2, 2, 3])}
    z = rademacher_probes(shapes, 4, 3, seed, CPU, dtype, start=7)
    assert [t.shape for t in z.values()] == [torch.Size([3, 4, *s]) for s in shapes.values()]
    assert all(t.dtype == dtype for t in z.values())
    expected = torch.tensor(
        [[[reference_sign(seed, 7 + i, j, e) for e in range(179)] for j in range(4)] for i in range(3)],
        dtype=dtype,
    )
    assert torch.equal(flat(z), expected)


def test_probes_do_not_depend_on_chunking_or_the_number_of_probes():
    shapes = {"a": torch.Size([5, 30]), "b": torch.Size([70])}
    whole = flat(rademacher_probes(shapes, 6, 9, 11, CPU, torch.float64))
    parts = [
        flat(rademacher_probes(shapes, 6, n, 11, CPU, torch.float64, start=s)) for s, n in ((0, 4), (4, 5))
    ]
    assert torch.equal(torch.cat(parts), whole)
    # the first k probes of a sample are the same whatever the number drawn
    assert torch.equal(flat(rademacher_probes(shapes, 2, 9, 11, CPU, torch.float64)), whole[:, :2])
    # another seed, sample or probe gives other signs
    assert not torch.equal(flat(rademacher_probes(shapes, 6, 9, 12, CPU, torch.float64)), whole)
    assert not torch.equal(whole[0], whole[1]) and not torch.equal(whole[0, 0], whole[0, 1])


def test_a_generator_supplies_the_base_seed_with_one_draw():
    gen = torch.Generator().manual_seed(3)
    shapes = {"a": torch.Size([40])}
    z = rademacher_probes(shapes, 2, 3, gen, CPU, torch.float32)
    seed = probe_seed(torch.Generator().manual_seed(3))
    assert torch.equal(z["a"], rademacher_probes(shapes, 2, 3, seed, CPU, torch.float32)["a"])
    assert not torch.equal(z["a"], rademacher_probes(shapes, 2, 3, gen, CPU, torch.float32)["a"])


def test_probes_drawn_into_a_buffer_are_views_of_it(monkeypatch):
    """A reused buffer (rows padded to 64 signs) gives the same probes; a block of fewer words than a row
    too."""
    shapes = {"a": torch.Size([3, 5]), "b": torch.Size([17])}
    z = rademacher_probes(shapes, 4, 3, 1234, CPU, torch.float32, start=7)
    assert row_length(32) == 64 and row_length(64) == 64 and row_length(65) == 128
    buffer = torch.full((4 * 3 * 64 + 5,), 7.0)
    monkeypatch.setattr(probes_module, "CPU_BLOCK_WORDS", 1)
    again = rademacher_probes(shapes, 4, 3, 1234, CPU, torch.float32, start=7, out=buffer)
    assert all(torch.equal(again[k], z[k]) for k in z)
    assert again["a"].untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
    with pytest.raises(ValueError, match="at least 768 elements"):
        rademacher_probes(shapes, 4, 3, 1234, CPU, torch.float32, out=buffer[:100])
    with pytest.raises(ValueError, match=r"torch\.float64 buffer"):
        rademacher_probes(shapes, 4, 3, 1234, CPU, torch.float64, out=buffer)


def test_probe_generator_is_named():
    assert PROBE_GENERATOR == "splitmix64-counter-v1"


# ------------------------------------------------------------------------------------------ statistics


def _within(total: float, n: int) -> bool:
    """|Σ of n independent balanced ±1| ≤ 6 standard errors (√n)."""
    return abs(total) <= SIGMAS * math.sqrt(n)


def _statistics(seed: int) -> dict[str, bool]:
    """Whether each balance and correlation statistic of 10⁷ signs (10 samples × 10 probes × 10⁵ elements)
    is within 6σ of zero."""
    shape = {"w": torch.Size([100_000])}
    z = rademacher_probes(shape, 10, 10, seed, CPU, torch.float64)["w"]  # (10, 10, 10^5)
    shifted = rademacher_probes(shape, 10, 10, seed, CPU, torch.float64, start=10)["w"]
    other_seed = rademacher_probes(shape, 10, 10, seed + 1, CPU, torch.float64)["w"]
    ok = {"balance": _within(float(z.sum()), z.numel())}
    # every bit position of the hashed words, and every byte value's bit, on its own
    by_bit = z[..., :99_968].reshape(-1, 64).sum(0)
    ok["bits"] = all(_within(float(s), z.numel() // 64) for s in by_bit)
    # neighbours within a word and within a byte, the next byte, the same bit of the next word
    for lag in (1, 7, 8, 63, 64, 65, 640):
        products = z[..., lag:] * z[..., :-lag]
        ok[f"lag {lag}"] = _within(float(products.sum()), products.numel())
    pairs = {
        "probes": z[:, 1:] * z[:, :-1],
        "samples": z[1:] * z[:-1],
        "samples and probes": z[1:, 1:] * z[:-1, :-1],
        "next samples": z * shifted,
        "seeds": z * other_seed,
    }
    for name, products in pairs.items():
        ok[name] = _within(float(products.sum()), products.numel())
    return ok


@pytest.mark.parametrize("seed", [0, 987654321])
def test_probes_are_balanced_and_pairwise_independent_over_ten_million_draws(seed):
    failed = [name for name, good in _statistics(seed).items() if not good]
    assert not failed, f"statistics beyond {SIGMAS}σ: {failed}"


def test_the_statistics_reject_a_generator_without_mixing(monkeypatch):
    """Without the finalizer the words are a Weyl sequence k + (w+1)γ: its low bits alternate and its
    neighbouring words and samples are correlated, which the statistics must see."""
    monkeypatch.setattr(probes_module, "_mix", lambda z: z)
    failed = {name for name, good in _statistics(0).items() if not good}
    assert {"lag 64", "samples"} <= failed
