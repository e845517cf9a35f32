"""``timm:NAME`` and ``tv:NAME`` models, and every criterion on real timm models.

The errors (library missing, broken, unknown name) are tested everywhere by simulating the import;
the models themselves only where timm and torchvision import (they need a torchvision built for the
installed torch): these tests skip cleanly otherwise. The real-model checks run every criterion through
``score`` and ``prune`` on timm resnet18 / efficientnet_b0 / convnext_atto / vit_tiny at 16×16 or 32×32 input,
in float64, against per-sample ``autograd.grad`` loops (Fisher, Gauss-Newton, Monte-Carlo Fisher, SNIP,
gradient norm, magnitude) and central differences (GraSP) on a few layers of each.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import initprune
from initprune import InitpruneError
from initprune.cli import main
from initprune.curvature import sample_model_labels
from initprune.models import create_model, get_model, model_options
from initprune.models.registry import _EXTERNAL

from .reference import per_sample_grads


def _library(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # not installed, or a torchvision whose C ops do not register beside this torch
        pytest.skip(f"{name} does not import here")


@pytest.fixture(autouse=True)
def _fresh_entries():
    _EXTERNAL.clear()
    yield
    _EXTERNAL.clear()


# ------------------------------------------------------------------------------------------------------
# Errors and listings, everywhere


def _fail_import(monkeypatch: pytest.MonkeyPatch, library: str, exc: Exception) -> None:
    real = importlib.import_module

    def fake(name: str, *args, **kwargs):
        if name == library or name.startswith(library + "."):
            raise exc
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)


def test_a_missing_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_import(monkeypatch, "timm", ModuleNotFoundError("No module named 'timm'", name="timm"))
    with pytest.raises(
        InitpruneError, match=r"needs timm, but timm is not installed: pip install 'initprune\[timm\]'"
    ):
        get_model("timm:convnext_atto")
    _fail_import(monkeypatch, "torchvision", ModuleNotFoundError("no", name="torchvision"))
    with pytest.raises(
        InitpruneError, match="needs torchvision, but torchvision is not installed: pip install"
    ):
        create_model("tv:resnet18")


def test_a_broken_library_says_it_does_not_match_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_import(monkeypatch, "torchvision", RuntimeError("operator torchvision::nms does not exist"))
    with pytest.raises(
        InitpruneError, match=r"does not import beside torch .*torchvision::nms does not exist"
    ):
        model_options("tv:resnet18")


def test_a_name_without_model_and_an_unknown_model_name() -> None:
    with pytest.raises(InitpruneError, match=r"'timm:' names no model: write timm:NAME"):
        get_model("timm:")
    with pytest.raises(InitpruneError, match=r"unknown model 'convnext'; `initprune models` lists them"):
        get_model("convnext")


def test_cli_models_names_both_forms(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "timm:NAME" in out and "tv:NAME" in out and "vgg11" in out


# ------------------------------------------------------------------------------------------------------
# The models, where timm / torchvision import


def test_unknown_timm_and_torchvision_names_suggest_close_ones() -> None:
    _library("timm")
    with pytest.raises(
        InitpruneError, match=r"unknown timm model 'convnext_atoo'.*did you mean timm:convnext_atto"
    ):
        get_model("timm:convnext_atoo")
    with pytest.raises(
        InitpruneError, match=r"unknown torchvision model 'resnet81'.*did you mean tv:resnet18"
    ):
        get_model("tv:resnet81")


def test_timm_model_built_for_the_data_and_its_options_passed_on() -> None:
    timm = _library("timm")
    torch.manual_seed(0)
    with pytest.warns(
        UserWarning, match=r"'timm:convnext_atto' does not run on 28×28 inputs.*resized to 32×32"
    ):
        model = create_model("timm:convnext_atto", num_classes=10, in_channels=1, image_size=28)
    assert isinstance(model, timm.models.ConvNeXt) and model.stem[0].in_channels == 1
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    vit = create_model("timm:vit_tiny_patch16_224", num_classes=4, in_channels=1, image_size=28, patch_size=4)
    assert vit.patch_embed.img_size == (28, 28) and vit(torch.randn(2, 1, 28, 28)).shape == (2, 4)
    with pytest.raises(
        InitpruneError, match=r"cannot build model 'timm:resnet18': TypeError: .*no_such_option"
    ):
        create_model("timm:resnet18", no_such_option=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resnet18 runs on 28×28: no resizing
        create_model("timm:resnet18", num_classes=10, in_channels=1, image_size=28)
    resized = create_model("timm:resnet18", num_classes=10, in_channels=1, image_size=28, input_resize=64)
    seen = []
    resized.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    resized(torch.randn(1, 1, 28, 28))
    assert seen == [64]


def test_torchvision_model_with_its_first_conv_adapted() -> None:
    tv = _library("torchvision")
    torch.manual_seed(0)
    model = create_model("tv:resnet18", num_classes=10, in_channels=1)
    torch.manual_seed(0)
    rgb = tv.models.resnet18(weights=None, num_classes=10)
    assert isinstance(model, tv.models.ResNet) and model.conv1.in_channels == 1
    assert torch.equal(model.conv1.weight, rgb.conv1.weight[:, :1])  # the model's own init, first channel
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    five = create_model("tv:mobilenet_v2", num_classes=3, in_channels=5, width_mult=0.25)
    assert five.features[0][0].in_channels == 5 and five(torch.randn(2, 5, 32, 32)).shape == (2, 3)


def test_initprune_run_with_a_timm_model_on_fashion_mnist(tmp_path) -> None:
    _library("timm")
    from initprune.experiments import build_config, run_experiment

    config = build_config(
        {
            "model": "timm:convnext_atto",
            "dataset": "synthetic",
            "dataset_options": {
                "input_shape": [1, 28, 28],
                "train_size": 64,
                "test_size": 32,
                "num_classes": 10,
            },
            "val_size": 16,
            "criterion": "snip",
            "sparsity": 0.9,
            "warmup_batches": 1,
            "scoring_per_class": 1,
            "batch_size": 32,
            "epochs": 1,
            "device": "cpu",
            "out": str(tmp_path / "run"),
        }
    )
    with pytest.warns(UserWarning, match="resized to 32×32"):
        result = run_experiment(config, progress=False)
    assert result["model"] == "timm:convnext_atto" and result["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert result["pruned_weights_stayed_zero"] and result["test_accuracy"] is not None


# ------------------------------------------------------------------------------------------------------
# Every criterion on real timm models, exact against loops

CLASSES = 3
# (timm name, options, image side): the smallest input each runs on unresized (ConvNeXt's last 2×2
# downsampling needs 32), to keep the float64 double-backward passes short
TIMM = {
    "resnet18": ("resnet18", {}, 16),
    "efficientnet_b0": ("efficientnet_b0", {}, 16),
    "convnext_atto": ("convnext_atto", {}, 32),
    "vit_tiny": ("vit_tiny_patch16_224", {"patch_size": 8}, 16),
}
CRITERIA = list(initprune.criteria())
HUTCHINSON = ("hutch_diag", "hutch_pruner", "hutch_taylor")
# efficientnet_b0's squeeze-excitation convs feed SiLU(inplace=True): its Fisher-type scores check that the
# engine takes each layer's output gradient before the in-place operation.


def _build(key: str) -> nn.Module:
    _library("timm")
    torch.manual_seed(0)
    name, options, side = TIMM[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no resizing: the model runs on the input as it is
        model = create_model(f"timm:{name}", num_classes=CLASSES, in_channels=3, image_size=side, **options)
    model = model.double()
    with torch.no_grad():  # non-trivial normalization, so that every layer's scores differ from 0
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model


def _data(key: str, n: int = 3) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(2)
    side = TIMM[key][2]
    x = torch.randn(n, 3, side, side, generator=gen, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    return [(x[:2], y[:2]), (x[2:], y[2:])]


def _checked(model: nn.Module) -> list[str]:
    """A few layers: the first, the middle one, and the last prunable ones (plus the first squeeze-
    excitation reduction, where there is one)."""
    names = list(initprune.prunable_parameters(model))
    chosen = [names[0], names[len(names) // 2], names[-1]]
    chosen += [n for n in names if "conv_reduce" in n][:1]
    return list(dict.fromkeys(chosen))


def _mean(dicts: list[dict[str, Tensor]], fn=lambda t: t) -> dict[str, Tensor]:
    return {k: sum(fn(d[k]) for d in dicts) / len(dicts) for k in dicts[0]}


_REFS: dict[str, dict[str, dict[str, Tensor]]] = {}


def _references(key: str) -> dict[str, dict[str, Tensor]]:
    if key in _REFS:
        return _REFS[key]
    model = _build(key).eval()
    x = torch.cat([b[0] for b in _data(key)])
    y = torch.cat([b[1] for b in _data(key)])
    names = _checked(model)
    params = dict(model.named_parameters())
    theta = {n: params[n].detach().clone() for n in names}
    grads = per_sample_grads(model, names, x, y)
    g = _mean(grads)
    with torch.no_grad():
        probs = torch.softmax(model(x), -1)
    ggn = {n: torch.zeros_like(t) for n, t in theta.items()}
    for i in range(x.shape[0]):  # diag(J_iᵀ Λ_i J_i) from the Jacobian rows, Λ_i = diag(p_i) − p_i p_iᵀ
        z = model(x[i : i + 1])[0]
        rows = [
            torch.autograd.grad(z[c], [params[n] for n in names], retain_graph=True) for c in range(CLASSES)
        ]
        lam = torch.diag(probs[i]) - torch.outer(probs[i], probs[i])
        for c in range(CLASSES):
            for d in range(CLASSES):
                for j, n in enumerate(names):
                    ggn[n] += lam[c, d] * rows[c][j] * rows[d][j] / x.shape[0]
    labels = sample_model_labels(probs, 1, torch.Generator().manual_seed(0))[:, 0]
    mc = _mean(per_sample_grads(model, names, x, labels), torch.square)

    def family(diag: dict[str, Tensor], prefix: str) -> dict[str, dict[str, Tensor]]:
        return {
            f"{prefix}_diag": diag,
            f"{prefix}_pruner": {n: 0.5 * theta[n] ** 2 * diag[n] for n in names},
            f"{prefix}_taylor": {n: (theta[n] * g[n] + 0.5 * theta[n] ** 2 * diag[n]).abs() for n in names},
        }

    def gradient(temperature: float) -> dict[str, Tensor]:
        loss = F.cross_entropy(model(x) / temperature, y)
        return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))

    # GraSP: θ ⊙ Hg, Hg by central differences of the gradient (T = 200) along g of *all* prunable weights
    every = list(initprune.prunable_parameters(model))
    loss = F.cross_entropy(model(x) / 200.0, y)
    g_all = dict(zip(every, torch.autograd.grad(loss, [params[n] for n in every]), strict=True))
    eps, shifted = 1e-5, []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for n in every:
                params[n].add_(sign * eps * g_all[n])
        shifted.append(gradient(200.0))
        with torch.no_grad():
            for n in every:
                params[n].sub_(sign * eps * g_all[n])
    refs = {
        **family(_mean(grads, torch.square), "fisher"),
        **family(ggn, "ggn"),
        **family(mc, "fisher_mc"),
        "grad_norm": {n: g[n].abs() for n in names},
        "snip": {n: (theta[n] * g[n]).abs() for n in names},
        "magnitude": {n: theta[n].abs() for n in names},
        "grasp": {n: theta[n] * (shifted[0][n] - shifted[1][n]) / (2 * eps) for n in names},
    }
    _REFS[key] = refs
    return refs


def _options(criterion: str) -> dict:
    return {"probes": 1} if criterion in HUTCHINSON else {}


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.filterwarnings("ignore::initprune.DegenerateScoresWarning")
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("key", list(TIMM))
def test_timm_score(key: str, criterion: str) -> None:
    model = _build(key)
    before = _state(model)
    scores = initprune.score(model, criterion, _data(key), **_options(criterion))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is unchanged
    params = initprune.prunable_parameters(model)
    assert list(scores) == list(params)
    assert all(s.shape == params[k].shape and torch.isfinite(s).all() for k, s in scores.items())
    exact = _references(key).get(criterion)
    if exact is None:  # stochastic: the same per seed
        again = initprune.score(_build(key), criterion, _data(key), **_options(criterion))
        assert all(torch.equal(scores[k], again[k]) for k in scores)
        return
    rtol = 1e-5 if criterion == "grasp" else 1e-9
    for n, ref in exact.items():
        torch.testing.assert_close(scores[n], ref, rtol=rtol, atol=rtol * float(ref.abs().max()) + 1e-300)


@pytest.mark.filterwarnings("ignore::initprune.LayerCollapseWarning")
@pytest.mark.filterwarnings("ignore::initprune.DegenerateScoresWarning")
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("key", list(TIMM))
def test_timm_prune(key: str, criterion: str) -> None:
    model = _build(key)
    rounds = 2 if criterion == "synflow" else None
    mask = initprune.prune(model, criterion, _data(key), sparsity=0.9, rounds=rounds, **_options(criterion))
    params = initprune.prunable_parameters(model)
    assert list(mask) == list(params)
    assert mask.sparsity == pytest.approx(0.9, abs=0.01)
    assert all(not p[~mask[k]].any() for k, p in params.items())
    assert all(p[mask[k]].all() for k, p in params.items())  # kept weights are untouched (nonzero)
