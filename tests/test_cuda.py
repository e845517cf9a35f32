"""The library on CUDA: the same scores as on the CPU, exact Hutchinson, held masks, runs and resume, and no
host-device synchronization that grows with the number of batches or steps.

Skipped where no CUDA device is present (CI). Run them on a GPU machine with ``python -m pytest
tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections import Counter

import pytest
import torch
from torch import nn

import initprune
from initprune.curvature import hutchinson_diagonal, per_sample_gradient_moments, rademacher_probes
from initprune.curvature.samples import functional_parts
from initprune.experiments import build_config, run_experiment
from initprune.models import create_model, get_model, model_options, models
from initprune.prunable import prunable_parameters
from initprune.scores import get_criterion
from initprune.train import TrainConfig, train

from .conftest import randomize_bn, tiny_convnet
from .reference import cat, exact_hessian, mean_loss_fn, split
from .test_experiments import SMALL, _comparable, interrupt_after_first_epoch
from .test_train import conv_net, images, random_mask

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
SEEDED = {"random"}  # the Hutchinson criteria draw the CPU's probes on CUDA: compared with the CPU
SEEDED_PREFIXES = ("fisher_mc",)


def _to(batches, device):
    return [(x.to(device), y.to(device)) for x, y in batches]


def _seeded(name: str) -> bool:
    return name in SEEDED or name.startswith(SEEDED_PREFIXES)


@pytest.mark.parametrize("name", sorted(initprune.criteria()))
def test_every_criterion_scores_on_cuda_as_on_the_cpu(convnet, conv_data, name):
    """Deterministic criteria give the CPU's float64 scores; seeded ones are reproducible on CUDA."""
    gpu_model = copy.deepcopy(convnet).to(CUDA)
    data_free = not get_criterion(name).needs_data
    cpu_data = None if data_free else conv_data
    gpu_data = None if data_free else _to(conv_data, CUDA)
    kwargs = {"input_shape": (2, 6, 6)}
    gpu = initprune.score(gpu_model, name, gpu_data, **kwargs)
    assert all(t.device.type == "cuda" for t in gpu.values())
    if _seeded(name):
        again = initprune.score(gpu_model, name, gpu_data, **kwargs)
        other = initprune.score(gpu_model, name, gpu_data, seed=1, **kwargs)
        for k in gpu:
            assert torch.equal(gpu[k], again[k]), k
        assert any(not torch.equal(gpu[k], other[k]) for k in gpu)
        return
    cpu = initprune.score(convnet, name, cpu_data, **kwargs)
    assert cpu.keys() == gpu.keys()
    for k in cpu:
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], rtol=1e-7, atol=1e-14, msg=f"{name} {k}")


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_hutchinson_on_cuda_equals_the_formula_with_the_same_probes(convnet, conv_data, temperature):
    """ĥ = (1/(kN)) Σ_i Σ_j z_ij ⊙ (H_i z_ij): CUDA estimate vs per-sample torch.func.hessian on the CPU."""
    model = copy.deepcopy(convnet).to(CUDA).eval()
    params = prunable_parameters(model, include_classifier=True)
    names = list(params)
    k, seed = 3, 5
    gen = torch.Generator(device=CUDA).manual_seed(seed)
    est = hutchinson_diagonal(
        model, params, _to(conv_data, CUDA), probes=k, temperature=temperature, chunk_size=4, generator=gen
    )
    x, y = cat(conv_data)
    probed, _ = functional_parts(model, params)
    z = rademacher_probes(
        {n: p.shape for n, p in probed.items()},
        k,
        x.shape[0],
        torch.Generator(device=CUDA).manual_seed(seed),
        CUDA,
        torch.float64,
    )
    flat_z = torch.cat([z[n].cpu().reshape(x.shape[0], k, -1) for n in names], dim=-1)
    ref_model = convnet.eval()
    total = 0
    for i in range(x.shape[0]):
        h = exact_hessian(ref_model, names, x[i : i + 1], y[i : i + 1], temperature)
        total = total + (flat_z[i] * (flat_z[i] @ h.T)).sum(0)
    _, _, shapes, sizes = mean_loss_fn(ref_model, names, x, y, temperature)
    ref = split(total / (k * x.shape[0]), names, shapes, sizes)
    for n in names:
        assert est[n].device.type == "cuda"
        torch.testing.assert_close(est[n].cpu(), ref[n], rtol=1e-6, atol=1e-16, msg=n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probes_on_cuda_are_the_cpus(monkeypatch, dtype):
    """The counter-based generator gives the same signs on CUDA as on the CPU, in one block or many."""
    from initprune.curvature import probes

    shapes = {"a": torch.Size([300, 70]), "b": torch.Size([33])}
    cpu = rademacher_probes(shapes, 3, 5, 2**40 + 7, torch.device("cpu"), dtype, start=11)
    gpu = rademacher_probes(shapes, 3, 5, 2**40 + 7, CUDA, dtype, start=11)
    assert all(torch.equal(gpu[k].cpu(), cpu[k]) for k in shapes)
    monkeypatch.setattr(probes, "ACCELERATOR_BLOCK_WORDS", 7)
    blocks = rademacher_probes(shapes, 3, 5, 2**40 + 7, CUDA, dtype, start=11)
    assert all(torch.equal(blocks[k].cpu(), cpu[k]) for k in shapes)


def test_prune_on_cuda_gives_the_cpu_mask_and_leaves_the_model_pruned(convnet, conv_data):
    gpu_model = copy.deepcopy(convnet).to(CUDA)
    cpu_mask = initprune.prune(convnet, "snip", conv_data, sparsity=0.8)
    gpu_mask = initprune.prune(gpu_model, "snip", _to(conv_data, CUDA), sparsity=0.8)
    params = dict(gpu_model.named_parameters())
    for name, keep in gpu_mask.items():
        assert keep.device.type == "cuda"
        assert torch.equal(keep.cpu(), cpu_mask[name]), name
        assert (params[name].detach()[~keep] == 0).all(), name
    assert gpu_mask.sparsity == pytest.approx(cpu_mask.sparsity)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_pruned_weights_stay_exactly_zero_with_bf16_and_channels_last(optimizer):
    model = conv_net().to(CUDA)
    masked = ("0.weight", "3.weight")
    mask = {k: v.to(CUDA) for k, v in random_mask(model, masked).items()}
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = images()
    config = TrainConfig(
        epochs=3, optimizer=optimizer, lr=0.05, weight_decay=5e-2, amp=True, channels_last=True, grad_clip=1.0
    )
    result = train(
        model, initprune.data.TensorLoader((x.to(CUDA), y.to(CUDA)), 16), config, mask=mask, progress=False
    )
    assert all(r["train_loss"] == r["train_loss"] for r in result["history"])  # no NaN
    params = dict(model.named_parameters())
    for name in masked:
        w = params[name].detach()
        assert w.device.type == "cuda"
        assert (w[~mask[name]] == 0).all(), name
        assert not torch.equal(w[mask[name]], before[name][mask[name]]), name


def _sync_sites(fn) -> Counter:
    """The synchronizing CUDA calls made by ``fn()``, counted by the source line that made them."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower())


def test_sync_detection_sees_a_known_sync():
    """The two tests below would pass vacuously if synchronizations went unseen."""
    sites = _sync_sites(lambda: torch.ones(3, device=CUDA).sum().item())
    assert sum(sites.values()) >= 1


def _conv_setup(batches: int):
    torch.manual_seed(0)
    model = tiny_convnet().to(CUDA)
    randomize_bn(model, torch.Generator().manual_seed(1))
    model = model.to(CUDA).eval()
    g = torch.Generator().manual_seed(3)
    data = [
        (torch.randn(4, 2, 6, 6, generator=g).to(CUDA), torch.randint(0, 3, (4,), generator=g).to(CUDA))
        for _ in range(batches)
    ]
    return model, prunable_parameters(model), data


@pytest.mark.parametrize("estimator", ["fisher", "hutchinson"])
def test_scoring_syncs_do_not_grow_with_the_number_of_chunks(estimator):
    def sites(batches: int) -> Counter:
        model, params, data = _conv_setup(batches)

        def call():
            if estimator == "fisher":
                per_sample_gradient_moments(model, params, data, chunk_size=4)
            else:
                gen = torch.Generator(device=CUDA).manual_seed(0)
                hutchinson_diagonal(model, params, data, probes=2, chunk_size=4, generator=gen)

        call()  # warm up lazy initialization
        return _sync_sites(call)

    one, four = sites(1), sites(4)
    grown = {site: (one[site], n) for site, n in four.items() if n > one[site]}
    assert not grown, f"synchronizations per chunk (1 chunk, 4 chunks) by site: {grown}"


def test_training_syncs_do_not_grow_with_the_number_of_steps():
    x, y = images(128)
    loader_data = (x.to(CUDA), y.to(CUDA))

    def sites(steps: int) -> Counter:
        model = conv_net().to(CUDA)
        mask = {k: v.to(CUDA) for k, v in random_mask(model, ("0.weight", "3.weight")).items()}
        config = TrainConfig(epochs=steps / 16, lr=0.05, grad_clip=1.0, log_every=0)
        loader = initprune.data.TensorLoader(loader_data, 8)
        return _sync_sites(lambda: train(model, loader, config, mask=mask, progress=False))

    sites(2)
    two, eight = sites(2), sites(8)
    grown = {site: (two[site], n) for site, n in eight.items() if n > two[site]}
    assert not grown, f"synchronizations per step (2 steps, 8 steps) by site: {grown}"


def test_a_run_on_cuda_resumes_after_an_interruption(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    settings = {**SMALL, "device": "cuda", "amp": False}
    reference = run_experiment(build_config({**settings, "out": str(tmp_path / "whole")}), progress=False)
    assert reference["pruned_weights_stayed_zero"] is True
    assert json.loads((tmp_path / "whole" / "result.json").read_text()) == reference

    cut = build_config({**settings, "out": str(tmp_path / "cut")})
    interrupt_after_first_epoch(monkeypatch, cut)
    resumed = run_experiment(cut, progress=False)
    a, b = _comparable(resumed), _comparable(reference)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(b[key], float):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
        else:
            assert a[key] == b[key], key
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    cut_state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    for k in whole:
        torch.testing.assert_close(cut_state[k], whole[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("name", sorted(n for n in models() if get_model(n).inputs == "images"))
def test_models_train_a_step_on_cuda_in_bf16(name):
    """Every model runs forward and backward under bf16 autocast with channels_last."""
    size = 64 if name == "resnet50_imagenet" else 32
    options = {"image_size": size} if "image_size" in model_options(name) else {}
    model = create_model(name, 10, 3, **options).to(CUDA).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, size, size, device=CUDA).to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
    nn.functional.cross_entropy(out.float(), torch.zeros(4, dtype=torch.long, device=CUDA)).backward()
    assert out.shape == (4, 10)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
