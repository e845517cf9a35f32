"""Memory budgets of the batched curvature engines: where the budget comes from, the chunks it gives, and
that results and peak memory follow it."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import initprune
from initprune.curvature import (
    MEMORY_BUDGET_ENV,
    auto_chunk_size,
    ggn_diagonal,
    hutchinson_chunk_size,
    hutchinson_diagonal,
    memory,
    memory_budget,
    per_sample,
    per_sample_gradient_moments,
    set_memory_budget,
)
from initprune.curvature.ggn import ggn_vectors
from initprune.curvature.per_sample import loss_gradient_vectors
from initprune.errors import InitpruneError
from initprune.prunable import prunable_parameters


@pytest.fixture(autouse=True)
def _automatic_budget(monkeypatch):
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    set_memory_budget(None)
    yield
    set_memory_budget(None)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), (4096, 4096), ("4GiB", 4 * 2**30), ("2G", 2 * 2**30), ("500MB", 5 * 10**8),
     ("1.5 MiB", 3 * 2**19), ("1e9", 10**9), ("16k", 16 * 2**10)],
)  # fmt: skip
def test_budget_sizes_are_parsed(text, size):
    assert memory.parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "lots", "4 parsecs", "-1", "0", "0.1"])
def test_a_bad_budget_names_the_value_and_the_units(text):
    with pytest.raises(InitpruneError, match="invalid memory budget") as err:
        set_memory_budget(text)
    assert repr(text) in str(err.value) or text in ("0", "0.1")


def test_the_override_takes_precedence_over_the_environment_over_the_device(monkeypatch):
    automatic = memory_budget("cpu")
    assert 0 < automatic <= memory.CPU_BUDGET_CAP
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "3MiB")
    assert memory_budget("cpu") == 3 * 2**20
    set_memory_budget(12345)
    assert memory_budget("cpu") == 12345
    set_memory_budget(None)
    assert memory_budget("cpu") == 3 * 2**20
    monkeypatch.delenv(MEMORY_BUDGET_ENV)
    assert memory_budget("cpu") == automatic


def test_the_cpu_budget_is_half_of_available_memory_up_to_a_cap(monkeypatch):
    monkeypatch.setattr(memory, "_cpu_available_bytes", lambda: 2 * 2**30)
    assert memory_budget("cpu") == 2**30
    monkeypatch.setattr(memory, "_cpu_available_bytes", lambda: 10**15)
    assert memory_budget("cpu") == memory.CPU_BUDGET_CAP
    monkeypatch.setattr(memory, "_cpu_available_bytes", lambda: None)
    assert memory_budget("cpu") == memory.FALLBACK_BUDGET_BYTES


def test_saved_activations_count_per_sample_tensors_only():
    """A Linear saves its input (and ReLU its output); the weight is not counted; buffers are untouched."""
    model = nn.Sequential(nn.Linear(7, 300), nn.ReLU(), nn.BatchNorm1d(300), nn.Linear(300, 2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = memory.saved_activation_bytes(model, torch.randn(5, 7), watch=lambda m: isinstance(m, nn.Linear))
    assert 300 * 4 * 2 <= sizes.saved <= 300 * 4 * 6 + 7 * 4  # the weights alone would be 2 400 floats
    assert sizes.inputs[model[3]] == 300 * 4 and sizes.outputs[model[0]] == 300 * 4
    assert sizes.logits == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _spy_chunks(monkeypatch, module) -> list:
    sizes = []
    original = module.iter_chunks

    def spy(batches, chunk_size):
        sizes.append(chunk_size)
        return original(batches, chunk_size)

    monkeypatch.setattr(module, "iter_chunks", spy)
    return sizes


def test_chunks_grow_with_the_budget(monkeypatch, convnet, conv_data):
    """The memory model; the CPU's cap on the per-sample engine's passes is lifted here."""
    monkeypatch.setattr(per_sample, "CPU_PASS_SAMPLES", 10**9)
    params = prunable_parameters(convnet.eval())
    chunks = []
    for budget in (1, 10**5, 10**6, 10**9):
        set_memory_budget(budget)
        chunks.append(
            (
                auto_chunk_size(convnet, params, conv_data, loss_gradient_vectors()),
                auto_chunk_size(convnet, params, conv_data, ggn_vectors()),
                hutchinson_chunk_size(convnet, params, conv_data, 10),
            )
        )
    assert chunks[0] == (1, 1, 1)
    # the vmap route holds per-sample gradients of every column: fewer samples per pass than the hooks
    assert auto_chunk_size(convnet, params, conv_data, ggn_vectors(), "vmap") < chunks[-1][1]
    for small, large in itertools.pairwise(chunks):
        assert all(a <= b for a, b in zip(small, large, strict=True))
    assert all(c > 100 for c in chunks[-1])
    # several backward columns cache every layer's patches and need more per sample than one
    assert chunks[-1][1] < chunks[-1][0]


def test_cpu_passes_of_the_per_sample_engine_are_capped(monkeypatch, convnet, conv_data):
    """Whatever the budget, a CPU pass of the per-sample engine takes at most CPU_PASS_SAMPLES samples."""
    params = prunable_parameters(convnet.eval())
    set_memory_budget(10**9)
    monkeypatch.setattr(per_sample, "CPU_PASS_SAMPLES", 7)
    for vectors in (loss_gradient_vectors(), ggn_vectors()):
        assert auto_chunk_size(convnet, params, conv_data, vectors) == 7
        assert auto_chunk_size(convnet, params, conv_data, vectors, "vmap") == 7


@pytest.mark.parametrize("method", ["hooks", "vmap"])
def test_a_tiny_budget_gives_chunks_of_one_and_the_one_pass_result(monkeypatch, convnet, conv_data, method):
    params = prunable_parameters(convnet.eval())
    sizes = _spy_chunks(monkeypatch, per_sample)
    set_memory_budget(10**12)
    g_whole, f_whole = per_sample_gradient_moments(convnet, params, conv_data, method=method)
    ggn_whole = ggn_diagonal(convnet, params, conv_data, method=method)
    set_memory_budget(1)
    g_one, f_one = per_sample_gradient_moments(convnet, params, conv_data, method=method)
    ggn_one = ggn_diagonal(convnet, params, conv_data, method=method)
    assert min(sizes[:2]) >= 4  # the largest batch in one pass
    assert sizes[2:] == [1, 1]
    for whole, one in ((g_whole, g_one), (f_whole, f_one), (ggn_whole, ggn_one)):
        for k in params:
            torch.testing.assert_close(one[k], whole[k], rtol=1e-12, atol=0)


def test_a_tiny_hutchinson_budget_gives_chunks_of_one_and_the_one_pass_result(
    monkeypatch, convnet, conv_data
):
    from initprune.curvature import hvp

    params = prunable_parameters(convnet.eval())
    sizes = _spy_chunks(monkeypatch, hvp)
    results = []
    for budget in (10**12, 1):
        set_memory_budget(budget)
        gen = torch.Generator().manual_seed(5)
        results.append(hutchinson_diagonal(convnet, params, conv_data, probes=3, generator=gen))
    assert sizes[0] >= 4 and sizes[1] == 1
    for k in params:
        torch.testing.assert_close(results[1][k], results[0][k], rtol=1e-12, atol=0)


def test_the_criteria_default_to_the_budget(monkeypatch, convnet, conv_data):
    """``chunk_size`` defaults to None (the budget) in every batched criterion; an explicit one still caps."""
    for name in ("fisher_diag", "ggn_diag", "fisher_mc_diag", "hutch_diag"):
        assert initprune.get_criterion(name).options["chunk_size"] is None
    sizes = _spy_chunks(monkeypatch, per_sample)
    set_memory_budget(1)
    initprune.score(convnet, "fisher_diag", conv_data)
    initprune.score(convnet, "fisher_diag", conv_data, chunk_size=3)
    assert sizes == [1, 3]


def _peak_cpu_bytes(fn) -> int:
    """Peak bytes torch allocates on the CPU while ``fn()`` runs (profiler memory events in time order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize("criterion", ["fisher_diag", "ggn_diag", "hutch_diag"])
def test_peak_memory_stays_within_a_budget_that_binds(monkeypatch, criterion):
    """A budget a quarter of the one-pass peak gives chunks of several samples, and the measured peak stays
    below it (the one-pass peak is above it, so the budget binds)."""
    from initprune.curvature import hvp

    sizes = _spy_chunks(monkeypatch, hvp if criterion == "hutch_diag" else per_sample)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 12 * 12, 10),
    ).eval()  # fmt: skip
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(48, 3, 12, 12, generator=g), torch.randint(0, 10, (48,), generator=g))]
    options = {"probes": 2} if criterion == "hutch_diag" else {}
    set_memory_budget(10**12)
    one_pass = _peak_cpu_bytes(lambda: initprune.score(model, criterion, data, **options))
    budget = one_pass // 4
    set_memory_budget(budget)
    peak = _peak_cpu_bytes(lambda: initprune.score(model, criterion, data, **options))
    assert peak <= budget < one_pass
    assert 1 < sizes[-1] < 48
