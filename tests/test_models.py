"""The model registry: every model builds, runs on MNIST/CIFAR/TinyImageNet shapes, trains, and scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

import initprune
from initprune.errors import InitpruneError
from initprune.models import create_model, get_model, model_options, models
from initprune.prunable import prunable_modules

ALL = [name for name in models() if get_model(name).inputs == "images"]  # text models: test_text_models
HEAVY = {"resnet50", "resnet50_imagenet", "vit_small", "vgg19"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: one intra-op thread is faster than two, much faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_options(name: str, image_size: int) -> dict:
    """The smallest version of each model its options allow (same layers and spatial path, fewer channels)."""
    options = model_options(name)
    kwargs: dict = {}
    if "image_size" in options:
        kwargs["image_size"] = image_size
    if name.startswith("vit"):
        kwargs.update(depth=2, dim=32, heads=2)
    elif name.startswith("vgg"):
        kwargs["width"] = 1 / 16
    elif name in ("resnet20", "resnet32", "resnet56"):
        kwargs["width"] = 1 / 4
    elif "width" in options:
        kwargs["width"] = 1 / 16
    return kwargs


def build(
    name: str, num_classes: int, in_channels: int, image_size: int, seed: int = 0, **extra
) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes, in_channels, **{**tiny_options(name, image_size), **extra})


def batch(n: int, channels: int, size: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=gen)
    return x, torch.randint(0, num_classes, (n,), generator=gen)


def test_registry_lists_every_architecture():
    expected = {
        *("lenet300", "lenet5", "vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "resnet32", "resnet56"),
        *("resnet18", "resnet34", "resnet50", "resnet50_imagenet", "vit_tiny", "vit_small"),
    }
    assert expected <= set(ALL)
    assert all(isinstance(d, str) and d and "\n" not in d for d in models().values())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 28, 10), (3, 32, 100)])
def test_forward_backward(name, channels, size, classes):
    model = build(name, classes, channels, size).train()
    x, y = batch(2 if name in HEAVY else 4, channels, size, classes)
    logits = model(x)
    assert logits.shape == (x.shape[0], classes)
    F.cross_entropy(logits, y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("name", ALL)
def test_tinyimagenet_shape(name):
    model = build(name, 200, 3, 64).eval()
    with torch.no_grad():
        assert model(batch(2, 3, 64, 200)[0]).shape == (2, 200)


@pytest.mark.parametrize("name", ALL)
def test_full_size_forward(name):
    options = {"image_size": 32} if "image_size" in model_options(name) else {}
    model = create_model(name, 10, 3, **options).eval()
    with torch.no_grad():
        out = model(batch(1 if name in HEAVY else 2, 3, 32, 10)[0])
    assert out.shape[1] == 10 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_classifier_is_last_prunable_module(name):
    model = build(name, 7, 3, 32).eval()
    _, last = prunable_modules(model)[-1]
    seen = {}
    last.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        out = model(batch(2, 3, 32, 7)[0])
    assert isinstance(last, nn.Linear) and last.out_features == 7
    assert torch.equal(seen["out"], out), "the last Conv/Linear registered must produce the logits"


@pytest.mark.parametrize("name", ALL)
def test_init_is_deterministic(name):
    a, b, c = (build(name, 10, 3, 32, seed=s).state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def assert_same_float64(got: torch.Tensor, ref: torch.Tensor) -> None:
    """Two float64 routes through the same function agree to rounding.

    The comparisons below are about exactness (the same function computed another way), so they run in
    float64: rounding there is ~1e-16 relative per operation, and even a 56-layer network's accumulated
    error stays many orders below 1e-9 · max|ref|, while a wrong route (a missing term, a wrong layout)
    is off by O(max|ref|). In float32 the same comparison depends on the CPU's kernels (AVX2 vs AVX-512
    change the summation order) and its error grows with depth, so a fixed float32 tolerance fails on
    some machines.
    """
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9 * float(ref.detach().abs().max()) + 1e-300)


@pytest.mark.parametrize("name", ALL)
def test_channels_last(name):
    model = build(name, 10, 3, 32).double().eval()
    x = batch(2, 3, 32, 10)[0].double()
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert_same_float64(out, ref)


@pytest.mark.parametrize("name", ALL)
def test_functional_call_vmap_per_sample_gradients(name):
    # float64: the per-sample gradients sum to the batch gradient up to rounding (see assert_same_float64)
    model = build(name, 10, 3, 32).double().eval()
    x, y = batch(3, 3, 32, 10)
    x = x.double()
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, xi, yi):
        logits = functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    F.cross_entropy(model(x), y, reduction="sum").backward()
    for k, p in model.named_parameters():
        assert_same_float64(per_sample[k].sum(0), p.grad)


def _score_options(criterion: str) -> dict:
    crit = initprune.get_criterion(criterion)
    return {"probes": 1} if "probes" in crit.options else {}


def _check_scores(model: nn.Module, criterion: str, x: torch.Tensor, y: torch.Tensor) -> None:
    crit = initprune.get_criterion(criterion)
    data = (x, y) if crit.needs_data else None
    scores = initprune.score(
        model, criterion, data, input_shape=tuple(x.shape[1:]), **_score_options(criterion)
    )
    params = initprune.prunable_parameters(model)
    assert set(scores) == set(params)
    for k, p in params.items():
        assert scores[k].shape == p.shape, k
        assert torch.isfinite(scores[k]).all(), f"{criterion} gave non-finite scores for {k}"


SIZE, CLASSES = 16, 5


@pytest.mark.parametrize("criterion", list(initprune.criteria()))
@pytest.mark.parametrize("name", ALL)
def test_every_criterion_scores_every_model(name, criterion):
    model = build(name, CLASSES, 3, SIZE)
    _check_scores(model, criterion, *batch(2, 3, SIZE, CLASSES))


def test_vit_attention_implementations_agree():
    model = build("vit_tiny", 10, 3, 32).double().eval()
    x = batch(2, 3, 32, 10)[0].double()
    outs = []
    for impl in ("fused", "math"):
        for m in model.modules():
            if hasattr(m, "impl"):
                m.impl = impl
        outs.append(model(x))
    assert_same_float64(outs[0], outs[1])


# Literature parameter counts (10 classes unless stated). ResNet-20 with projection shortcuts has 272,474
# (the paper's 0.27M is for the parameter-free option A, 269,722: 2,752 fewer); ResNet-18 CIFAR 11.17M
# (kuangliu/pytorch-cifar); VGG-16-BN CIFAR 14.7M (GraSP, SynFlow); torchvision ResNet-50 25,557,032.
@pytest.mark.parametrize(
    ("name", "classes", "expected", "exact"),
    [
        ("resnet20", 10, 0.27e6, 272_474),
        ("resnet18", 10, 11.17e6, 11_173_962),
        ("vgg16", 10, 14.7e6, 14_724_042),
        ("resnet50_imagenet", 1000, 25.56e6, 25_557_032),
    ],
)
def test_parameter_counts_match_literature(name, classes, expected, exact):
    count = sum(p.numel() for p in create_model(name, classes, 3).parameters())
    assert abs(count - expected) / expected < 0.01
    assert count == exact


def test_unknown_model_suggests_the_nearest_name():
    with pytest.raises(InitpruneError, match=r"unknown model 'resnet19'; did you mean 'resnet18'\?") as err:
        create_model("resnet19")
    assert "`initprune models` lists them" in str(err.value)


def test_unknown_option_names_it_and_the_valid_ones():
    with pytest.raises(
        InitpruneError, match=r"'depth'; did you mean 'width'\? valid: conv_bias, init, w"
    ) as err:
        create_model("vgg16", depth=3)
    assert "vgg16" in str(err.value)
    with pytest.raises(InitpruneError, match="none"):
        create_model("lenet5", width=2)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vgg11", {"width": 0}),
        ("resnet18", {"num_classes": 0}),
        ("vit_tiny", {"dim": 30, "heads": 4}),
        ("vit_tiny", {"image_size": 30}),
        ("vit_tiny", {"attention": "flash"}),
        ("lenet300", {"image_size": -1}),
    ],
)
def test_bad_option_values(name, kwargs):
    with pytest.raises(InitpruneError):
        create_model(name, **kwargs)


@pytest.mark.parametrize("name", ["lenet300", "vit_tiny"])
def test_input_size_mismatch_names_image_size(name):
    model = build(name, 10, 3, 32)
    with pytest.raises(InitpruneError, match="image_size"):
        model(torch.zeros(1, 3, 28, 28))
