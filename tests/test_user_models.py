"""Every criterion on researchers' own models, through ``score`` and ``prune``.

Hand-written equivalents of torchvision's ResNet-18 (max-pool stem, BasicBlocks) and MobileNet-V2
(inverted residuals, depthwise convolutions, ReLU6) at reduced width and small input, weight tying, a
Transformer encoder with ``nn.MultiheadAttention`` (packed and separate q/k/v projections), Embedding +
LSTM + Linear on integer inputs, and a Conv1d network. Each criterion either gives exact results —
the Fisher, Gauss-Newton and Monte-Carlo Fisher families against per-sample ``autograd.grad`` loops,
GraSP against central differences of the gradient, SNIP and the gradient norm against the batch
gradient — or finite, deterministic ones (SynFlow, Hutchinson, random), or raises a clear
:class:`InitpruneError` before the model changes.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import initprune
from initprune import DegenerateScoresWarning, InitpruneError
from initprune.curvature import sample_model_labels

from .reference import per_sample_grads

CLASSES = 3

# ------------------------------------------------------------------------------------------------------
# Models


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout (7×7 stride-2 stem, max-pool, 2-2-2-2 BasicBlocks) at width w."""

    def __init__(self, width: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stages.append(nn.Sequential(BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers = [] if expand == 1 else [conv_bn_relu6(cin, hidden, 1)]
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, bias=False),  # linear bottleneck
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNet-V2 layout (stem, inverted residuals with expansion t, 1×1 head conv,
    dropout + Linear) with fewer, narrower blocks."""

    def __init__(self) -> None:
        super().__init__()
        features, cin = [conv_bn_relu6(3, 4, 3, 2)], 4
        for expand, cout, repeats, stride in ((1, 4, 1, 1), (6, 6, 2, 2), (6, 8, 2, 2)):
            for i in range(repeats):
                features.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        features.append(conv_bn_relu6(cin, 16, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class Tied(nn.Module):
    """``b.weight = a.weight``: one Parameter used by two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight
        self.c = nn.Linear(6, 5)
        self.head = nn.Linear(5, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))))


class Transformer(nn.Module):
    """A Linear token embedding, ``nn.TransformerEncoderLayer`` (packed ``in_proj_weight``), a
    cross-attention ``nn.MultiheadAttention`` with its own key/value sizes (separate ``q/k/v_proj_weight``),
    mean pooling and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.encoder = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True)
        self.cross = nn.MultiheadAttention(8, 2, kdim=6, vdim=6, batch_first=True)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(self.embed(x))
        h, _ = self.cross(h, x, x, need_weights=False)
        return self.head(h.mean(1))


class EmbeddingLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.lstm = nn.LSTM(6, 7, batch_first=True)
        self.head = nn.Linear(7, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out[:, -1])


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding=1)
        self.c2 = nn.Conv1d(4, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 7, 5)
        self.head = nn.Linear(5, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))))


class InplaceMLP(nn.Sequential):
    """Linear layers each followed by ``ReLU(inplace=True)``: the activation overwrites the layer's output."""

    def __init__(self) -> None:
        super().__init__(
            nn.Linear(6, 5),
            nn.ReLU(inplace=True),
            nn.Linear(5, 4),
            nn.ReLU(inplace=True),
            nn.Linear(4, CLASSES),
        )


class VGG11(nn.Module):
    """torchvision's VGG-11 layout (convolutions each followed by ``ReLU(inplace=True)``, max-pools,
    adaptive average pool, a three-layer classifier with in-place ReLUs and dropout) at width w."""

    def __init__(self, width: int = 2) -> None:
        super().__init__()
        layers, cin = [], 3
        for v in (width, "M", 2 * width, "M", 4 * width, 4 * width, "M", 8 * width, 8 * width, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(cin * 4, 12), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(12, 12),
            nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(12, CLASSES),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SqueezeExcite(nn.Module):
    """timm's ``SqueezeExcite``: ``SiLU(inplace=True)`` right after ``conv_reduce``."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


def bn_silu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.SiLU(inplace=True))


class MBConv(nn.Module):
    """timm's ``InvertedResidual``: 1×1 expansion, depthwise 3×3, SE, 1×1 projection, identity skip."""

    def __init__(self, channels: int, expanded: int) -> None:
        super().__init__()
        self.conv_pw = nn.Conv2d(channels, expanded, 1, bias=False)
        self.bn1 = bn_silu(expanded)
        self.conv_dw = nn.Conv2d(expanded, expanded, 3, padding=1, groups=expanded, bias=False)
        self.bn2 = bn_silu(expanded)
        self.se = SqueezeExcite(expanded, max(1, channels // 2))
        self.conv_pwl = nn.Conv2d(expanded, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.se(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))
        return x + self.bn3(self.conv_pwl(out))


class EfficientNetB0(nn.Module):
    """timm's EfficientNet-B0 layout at reduced depth and width: stem, depthwise-separable block with SE,
    two MBConv blocks with SE, 1×1 head, pooling, classifier; SiLU(inplace=True) throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 4, 3, 2, 1, bias=False)
        self.bn1 = bn_silu(4)
        self.conv_dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.bn_dw = bn_silu(4)
        self.se = SqueezeExcite(4, 2)
        self.conv_pw = nn.Conv2d(4, 4, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(4)
        self.blocks = nn.Sequential(MBConv(4, 8), MBConv(4, 8))
        self.conv_head = nn.Conv2d(4, 8, 1, bias=False)
        self.bn2 = bn_silu(8)
        self.classifier = nn.Linear(8, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv_stem(x))
        x = x + self.bn_pw(self.conv_pw(self.se(self.bn_dw(self.conv_dw(x)))))
        x = self.bn2(self.conv_head(self.blocks(x)))
        return self.classifier(x.mean((2, 3)))


def _randomize_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


MODELS = {
    "resnet18": (ResNet18, (3, 32, 32)),
    "mobilenet_v2": (MobileNetV2, (3, 32, 32)),
    "tied": (Tied, (6,)),
    "transformer": (Transformer, (5, 6)),
    "embedding_lstm": (EmbeddingLSTM, (5,)),
    "conv1d": (Conv1dNet, (2, 16)),
    "inplace_mlp": (InplaceMLP, (6,)),
    "vgg11": (VGG11, (3, 16, 16)),
    "efficientnet_b0": (EfficientNetB0, (3, 12, 12)),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS[name][0]().double()
    _randomize_bn(model)
    return model


def data(name: str, n: int = 5) -> list[tuple[Tensor, Tensor]]:
    """n samples in two batches of unequal size."""
    gen = torch.Generator().manual_seed(2)
    shape = MODELS[name][1]
    if name == "embedding_lstm":
        x = torch.randint(0, 11, (n, *shape), generator=gen)
    else:
        x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    return [(x[:3], y[:3]), (x[3:], y[3:])]


CRITERIA = list(initprune.criteria())
HUTCHINSON = ("hutch_diag", "hutch_pruner", "hutch_taylor")

# What may not be scored, and the message that says so (before the model changes).
ERRORS = {
    (
        "embedding_lstm",
        "synflow",
    ): "synflow cannot score EmbeddingLSTM: it looks up integer inputs in Embedding",
}


def options(criterion: str) -> dict:
    return {"probes": 2} if criterion in HUTCHINSON else {}


def state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"


# ------------------------------------------------------------------------------------------------------
# References


def _cat(batches):
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _mean(dicts: list[dict[str, Tensor]], fn=lambda t: t) -> dict[str, Tensor]:
    return {k: sum(fn(d[k]) for d in dicts) / len(dicts) for k in dicts[0]}


def _jacobian_rows(model: nn.Module, names: list[str], x: Tensor) -> list[list[dict[str, Tensor]]]:
    """J_i row by row: [[∂z_ic/∂θ for c] for i], by autograd.grad of each logit of each sample."""
    params = dict(model.named_parameters())
    rows = []
    for i in range(x.shape[0]):
        z = model(x[i : i + 1])[0]
        rows.append(
            [
                dict(
                    zip(
                        names,
                        torch.autograd.grad(z[c], [params[n] for n in names], retain_graph=True),
                        strict=True,
                    )
                )
                for c in range(z.shape[0])
            ]
        )
    return rows


_REFERENCES: dict[str, dict] = {}


def references(name: str) -> dict:
    """Loop references of every exact criterion on model ``name`` (eval mode, temperature 1)."""
    if name in _REFERENCES:
        return _REFERENCES[name]
    model = build(name).eval()
    x, y = _cat(data(name))
    names = list(initprune.prunable_parameters(model))
    theta = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    grads = per_sample_grads(model, names, x, y)
    g = _mean(grads)
    fisher = _mean(grads, torch.square)
    # GGN: diag(J_iᵀ Λ_i J_i), Λ_i = diag(p_i) − p_i p_iᵀ, from the Jacobian rows (no square root used).
    with torch.no_grad():
        probs = torch.softmax(model(x), -1)
    rows = _jacobian_rows(model, names, x)
    ggn = {n: torch.zeros_like(t) for n, t in theta.items()}
    for i, jac in enumerate(rows):
        lam = torch.diag(probs[i]) - torch.outer(probs[i], probs[i])
        for c in range(CLASSES):
            for d in range(CLASSES):
                for n in names:
                    ggn[n] += lam[c, d] * jac[c][n] * jac[d][n] / x.shape[0]
    # MC Fisher: the labels the criterion draws (scoring seed 0, one draw per sample, row by row).
    labels = sample_model_labels(probs, 1, torch.Generator().manual_seed(0))[:, 0]
    mc = _mean(per_sample_grads(model, names, x, labels), torch.square)

    def family(diag: dict[str, Tensor], prefix: str) -> dict[str, dict[str, Tensor]]:
        return {
            f"{prefix}_diag": diag,
            f"{prefix}_pruner": {n: 0.5 * theta[n] ** 2 * diag[n] for n in names},
            f"{prefix}_taylor": {n: (theta[n] * g[n] + 0.5 * theta[n] ** 2 * diag[n]).abs() for n in names},
        }

    refs = {
        **family(fisher, "fisher"),
        **family(ggn, "ggn"),
        **family(mc, "fisher_mc"),
        "grad_norm": {n: g[n].abs() for n in names},
        "snip": {n: (theta[n] * g[n]).abs() for n in names},
        "magnitude": {n: theta[n].abs() for n in names},
        "grasp": _grasp_reference(model, names, x, y, theta),
    }
    _REFERENCES[name] = refs
    return refs


def _grasp_reference(model, names, x, y, theta, eps: float = 1e-5) -> dict[str, Tensor]:
    """θ ⊙ Hg with Hg from central differences of the gradient along g (T = 200), in float64."""
    params = dict(model.named_parameters())

    def gradient() -> dict[str, Tensor]:
        loss = F.cross_entropy(model(x) / 200.0, y)
        return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))

    g = gradient()
    shifted = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for n in names:
                params[n].add_(sign * eps * g[n])
        shifted.append(gradient())
        with torch.no_grad():
            for n in names:
                params[n].copy_(theta[n])
    return {n: theta[n] * (shifted[0][n] - shifted[1][n]) / (2 * eps) for n in names}


# ------------------------------------------------------------------------------------------------------
# score


def _score(name: str, criterion: str, **kw) -> dict[str, Tensor]:
    model = build(name)
    before = state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateScoresWarning)
        scores = initprune.score(model, criterion, data(name), **options(criterion), **kw)
    assert_same_state(model, before)
    return scores


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", list(MODELS))
def test_score(name, criterion):
    if (name, criterion) in ERRORS:
        model = build(name)
        before = state(model)
        with pytest.raises(InitpruneError, match=ERRORS[name, criterion]):
            initprune.score(model, criterion, data(name), **options(criterion))
        assert_same_state(model, before)
        return
    if (name, criterion) == ("mobilenet_v2", "synflow"):
        with pytest.warns(DegenerateScoresWarning, match=r"every score of 'synflow' equals 0.*ReLU6"):
            initprune.score(build(name), criterion, data(name))
        return
    if (name, criterion) == ("transformer", "synflow"):
        # SynFlow's R = Σ f(1; |θ|) does not depend on what comes before the encoder's LayerNorm (the sum of
        # a LayerNorm's outputs with equal gains is constant), nor on the cross-attention's queries and keys
        # (its all-ones tokens are equal, so its attention is uniform): those scores are 0 in exact
        # arithmetic, and exact 0 or ~1e-16 rounding noise depending on the CPU's kernels.
        with pytest.warns(DegenerateScoresWarning) as caught:
            initprune.score(build(name), criterion, data(name))
        zero = "embed.weight, encoder.self_attn.in_proj_weight, encoder.self_attn.out_proj.weight, "
        zero += "encoder.linear1.weight, encoder.linear2.weight, cross.q_proj_weight, cross.k_proj_weight:"
        assert [f"every score of 'synflow' is 0 in {zero}" in str(w.message) for w in caught] == [True]
        return
    scores = _score(name, criterion)
    params = initprune.prunable_parameters(build(name))
    assert list(scores) == list(params)
    for k, s in scores.items():
        assert s.shape == params[k].shape and torch.isfinite(s).all(), k
    if criterion == "random":
        assert not any(torch.equal(scores[k], v) for k, v in _score(name, criterion, seed=1).items())
    exact = references(name).get(criterion)
    if exact is None:  # stochastic or without a loop reference: deterministic per seed
        again = _score(name, criterion)
        assert all(torch.equal(scores[k], again[k]) for k in scores)
        return
    rtol = 1e-5 if criterion == "grasp" else 1e-9
    for k in exact:
        torch.testing.assert_close(
            scores[k], exact[k], rtol=rtol, atol=rtol * float(exact[k].abs().max()) + 1e-300
        )


# ------------------------------------------------------------------------------------------------------
# prune


@pytest.mark.filterwarnings("ignore::initprune.LayerCollapseWarning")
@pytest.mark.filterwarnings("ignore::initprune.DegenerateScoresWarning")
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", list(MODELS))
def test_prune(name, criterion):
    model = build(name)
    before = state(model)
    rounds = 3 if criterion == "synflow" else None
    kwargs = dict(sparsity=0.8, rounds=rounds, warmup_batches=1, **options(criterion))
    if (name, criterion) in ERRORS:
        with pytest.raises(InitpruneError, match=ERRORS[name, criterion]):
            initprune.prune(model, criterion, data(name), **kwargs)
        assert_same_state(model, before)  # the BatchNorm warmup, if any, is undone too
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = initprune.prune(model, criterion, data(name), **kwargs)
    skipped = [w for w in caught if "path check skipped" in str(w.message)]
    assert len(skipped) == (name == "embedding_lstm")
    params = initprune.prunable_parameters(model)
    assert list(mask) == list(params)
    assert mask.sparsity == pytest.approx(0.8, abs=0.01)
    for k, p in params.items():
        assert not p[~mask[k]].any(), f"pruned weights of {k} are not zero"
    if rounds is None:  # one round: the mask of the scores of the warmed-up model
        reference = build(name)
        initprune.warmup_bn(reference, data(name), batches=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = initprune.score(reference, criterion, data(name), **options(criterion))
            expected = initprune.make_mask(scores, 0.8)
        assert all(torch.equal(mask[k], expected[k]) for k in mask)


def test_prune_of_an_embedding_model_from_an_input_shape_skips_the_path_check():
    model = build("embedding_lstm")
    with pytest.warns(UserWarning, match=r"path check skipped: the model takes integer inputs \(embed\)"):
        mask = initprune.prune(model, "magnitude", sparsity=0.5, input_shape=(5,))
    assert mask.sparsity == pytest.approx(0.5, abs=0.01)


@pytest.mark.filterwarnings("ignore::initprune.LayerCollapseWarning")
def test_a_layer_with_all_scores_zero_warns_with_its_name():
    model = build("conv1d")
    with torch.no_grad():
        model.c2.weight.zero_()  # zero-initialized: no magnitude, and no gradient reaches c1
    with pytest.warns(DegenerateScoresWarning, match=r"every score of 'snip' is 0 in c1.weight, c2.weight"):
        initprune.score(model, "snip", data("conv1d"))
    with pytest.warns(
        DegenerateScoresWarning, match=r"every score of 'magnitude' is 0 in c2.weight: .* Likely causes"
    ):
        initprune.prune(model, "magnitude", sparsity=0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_layer_of_rounding_noise_counts_as_zero(dtype):
    from initprune.scores.degenerate import ROUNDING_ULPS, warn_degenerate

    eps = torch.finfo(dtype).eps
    big = torch.tensor([[0.5, -0.75]], dtype=dtype)
    noise = torch.tensor([[ROUNDING_ULPS * eps * 0.5, -ROUNDING_ULPS * eps * 0.75]], dtype=dtype)
    with pytest.warns(DegenerateScoresWarning, match=r"every score of 'x' is 0 in b: "):
        warn_degenerate("x", {"a": big, "b": noise})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateScoresWarning)
        warn_degenerate("x", {"a": big, "b": noise * 2})  # small, but above rounding: a ranking


@pytest.mark.filterwarnings("ignore::initprune.LayerCollapseWarning")
def test_zero_initialized_norm_scales_are_named_as_the_cause_of_zero_scores():
    """timm's ``zero_init_last``: the last BatchNorm of every block starts at scale 0, so no gradient
    reaches the block's convolutions; the warning names those BatchNorms and the fix."""
    model = build("resnet18")
    with torch.no_grad():
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in stage:
                block.bn2.weight.zero_()
    with pytest.warns(DegenerateScoresWarning) as caught:
        initprune.prune(model, "snip", data("resnet18"), sparsity=0.9)
    message = str(caught[0].message)
    assert "every score of 'snip' is 0 in layer1.0.conv1.weight, layer1.0.conv2.weight" in message
    assert "zero-initialized normalization scale (8 layer(s) with weight all 0: layer1.0.bn2, " in message
    assert "zero_init_last=False" in message and "and 4 more" in message
    with pytest.warns(DegenerateScoresWarning) as caught:  # without zero scales, no such cause is named
        initprune.score(build("conv1d"), "magnitude", data("conv1d"), prunable={"c2.weight": _zeroed()})
    assert "normalization" not in str(caught[0].message)


def _zeroed() -> nn.Parameter:
    return nn.Parameter(torch.zeros(4, 4, 3, dtype=torch.float64))


def test_timm_resnet_with_zero_init_last_names_the_cause():
    timm = _timm()
    model = timm.create_model("resnet18", pretrained=False, num_classes=CLASSES, zero_init_last=True)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32, generator=gen), torch.randint(0, CLASSES, (2,), generator=gen)
    with pytest.warns(
        DegenerateScoresWarning, match=r"zero-initialized normalization scale .*layer1\.0\.bn2"
    ):
        initprune.score(model, "snip", (x, y))


def test_prune_restores_the_model_when_a_late_step_fails(monkeypatch):
    import initprune.pruning as pruning

    def fail(*args, **kwargs):
        raise RuntimeError("late failure")

    model = build("resnet18")
    before = state(model)
    monkeypatch.setattr(pruning, "disconnected_layers", fail)
    with pytest.raises(RuntimeError, match="late failure"):
        initprune.prune(model, "snip", data("resnet18"), sparsity=0.9, warmup_batches=1)
    assert_same_state(model, before)  # neither the warmup nor the mask is left behind


# ------------------------------------------------------------------------------------------------------
# Shared weights, attention, recurrent layers


def test_tied_weight_is_prunable_once_and_gets_every_use():
    model = build("tied")
    params = initprune.prunable_parameters(model)
    assert list(params) == ["a.weight", "c.weight"] and params["a.weight"] is model.b.weight
    x, y = _cat(data("tied"))
    grads = per_sample_grads(model.eval(), ["a.weight"], x, y)
    # Both uses contribute before squaring: the square of the sum, not the sum of the squares.
    fisher = _mean(grads, torch.square)["a.weight"]
    scores = initprune.score(model, "fisher_diag", data("tied"))
    torch.testing.assert_close(scores["a.weight"], fisher, rtol=1e-10, atol=0)
    mask = initprune.prune(model, "fisher_pruner", data("tied"), sparsity=0.5)
    assert mask.num_total == 36 + 30
    assert torch.equal(model.a.weight == 0, ~mask["a.weight"]) and model.b.weight is model.a.weight


def test_a_weight_tied_to_a_dense_use_stays_dense():
    class TiedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(6, 6)
            self.a = nn.Linear(6, 6)
            self.mid = nn.Linear(6, 6)
            self.lookup = nn.Linear(6, 6)
            self.head = nn.Linear(6, 6)
            self.head.weight = self.a.weight  # tied to the classifier
            self.lookup.weight = self.embed.weight  # tied to an embedding table

    model = TiedHead()
    assert list(initprune.prunable_parameters(model)) == ["mid.weight"]
    assert list(initprune.prunable_parameters(model, include_classifier=True)) == ["a.weight", "mid.weight"]


def test_attention_projections_are_prunable_unless_kept_dense():
    model = build("transformer")
    names = list(initprune.prunable_parameters(model))
    assert names == [
        "embed.weight",
        "encoder.self_attn.in_proj_weight",
        "encoder.self_attn.out_proj.weight",
        "encoder.linear1.weight",
        "encoder.linear2.weight",
        "cross.q_proj_weight",
        "cross.k_proj_weight",
        "cross.v_proj_weight",
        "cross.out_proj.weight",
    ]
    dense = initprune.prunable_parameters(model, include_attention=False)
    assert list(dense) == ["embed.weight", "encoder.linear1.weight", "encoder.linear2.weight"]
    assert list(initprune.score(model, "snip", data("transformer"), include_attention=False)) == list(dense)
    mask = initprune.prune(model, "magnitude", sparsity=0.5, include_attention=False)
    assert list(mask) == list(dense)
    assert bool((model.encoder.self_attn.in_proj_weight != 0).all())


def test_second_order_scoring_selects_the_math_attention_kernel_only_for_its_duration():
    from torch.backends.cuda import flash_sdp_enabled, math_sdp_enabled

    model = build("transformer")
    seen = []
    real = initprune.scores.gradient.hessian_vector_product

    def spy(*args, **kwargs):
        seen.append((flash_sdp_enabled(), math_sdp_enabled()))
        return real(*args, **kwargs)

    initprune.scores.gradient.hessian_vector_product = spy
    try:
        initprune.score(model, "grasp", data("transformer"))
    finally:
        initprune.scores.gradient.hessian_vector_product = real
    assert seen == [(False, True)]
    assert flash_sdp_enabled()  # restored after scoring
    with sdpa_kernel(SDPBackend.MATH):  # a caller's own choice is kept too
        initprune.score(model, "hutch_diag", data("transformer"), probes=1)
        assert not flash_sdp_enabled()


def test_hutchinson_on_a_float32_lstm():
    """Recurrent models take the loop route: the float32 LSTM scores, the same for the same seed."""
    torch.manual_seed(0)
    model = EmbeddingLSTM()
    batches = data("embedding_lstm")
    scores = initprune.score(model, "hutch_diag", batches, probes=2)
    again = initprune.score(model, "hutch_diag", batches, probes=2)
    assert all(torch.isfinite(s).all() and torch.equal(s, again[k]) for k, s in scores.items())
    assert all(bool(s.ne(0).any()) for s in scores.values())


def test_hutchinson_on_an_lstm_matches_finite_differences_with_the_same_probes():
    """ĥ = (1/(kN)) Σ_i Σ_j z_ij ⊙ (H_i z_ij) on Embedding + LSTM + Linear (float64), with H_i z_ij from
    central differences of each sample's autograd gradient along z_ij: no double backward in the reference."""
    from initprune.curvature import rademacher_probes
    from initprune.curvature.hvp import probe_seed

    model = build("embedding_lstm").eval()
    batches = data("embedding_lstm")
    names = list(initprune.prunable_parameters(model))
    params = dict(model.named_parameters())
    k, temperature, eps = 2, 1.0, 1e-5
    est = initprune.curvature.hutchinson_diagonal(
        model, {n: params[n] for n in names}, batches, probes=k, temperature=temperature,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    x, y = _cat(batches)
    seed = probe_seed(torch.Generator().manual_seed(3))
    z = rademacher_probes({n: params[n].shape for n in names}, k, x.shape[0], seed, x.device, torch.float64)

    def gradient(i: int) -> dict[str, Tensor]:
        loss = F.cross_entropy(model(x[i : i + 1]) / temperature, y[i : i + 1])
        return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))

    ref = {n: torch.zeros_like(params[n]) for n in names}
    theta = {n: params[n].detach().clone() for n in names}
    for i in range(x.shape[0]):
        for j in range(k):
            shifted = []
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for n in names:
                        params[n].copy_(theta[n] + sign * eps * z[n][i, j])
                shifted.append(gradient(i))
            with torch.no_grad():
                for n in names:
                    params[n].copy_(theta[n])
            for n in names:
                ref[n] += z[n][i, j] * (shifted[0][n] - shifted[1][n]) / (2 * eps)
    for n in names:
        expected = ref[n] / (k * x.shape[0])
        torch.testing.assert_close(est[n], expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
        assert float(expected.abs().max()) > 1e-4  # not a trivially zero block


# ------------------------------------------------------------------------------------------------------
# The real torchvision models, where torchvision imports


def _torchvision():
    try:
        import torchvision
    except Exception:  # not installed, or its C ops do not register beside this torch build
        pytest.skip("torchvision does not import here")
    return torchvision


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_models(arch):
    tv = _torchvision()
    torch.manual_seed(0)
    kwargs = {"width_mult": 0.25} if arch == "mobilenet_v2" else {}
    model = getattr(tv.models, arch)(num_classes=CLASSES, **kwargs).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (3,), generator=gen)
    names = list(initprune.prunable_parameters(model))[-3:]  # the last layers keep the loop short
    prunable = {n: p for n, p in model.named_parameters() if n in names}
    fisher = _mean(per_sample_grads(model.eval(), names, x, y), torch.square)
    scores = initprune.score(model, "fisher_diag", (x, y), prunable=prunable)
    for n in names:
        torch.testing.assert_close(scores[n], fisher[n], rtol=1e-9, atol=1e-300)
    before = state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = initprune.prune(model, "ggn_pruner", (x, y), sparsity=0.9)
    assert mask.sparsity == pytest.approx(0.9, abs=0.01)
    assert any(not torch.equal(model.state_dict()[k], before[k]) for k in mask)


def _timm():
    try:
        import timm
    except Exception:  # not installed, or it does not import beside this torch build
        pytest.skip("timm does not import here")
    return timm


@pytest.mark.parametrize("arch", ["vgg11", "efficientnet_b0"])
def test_real_models_with_in_place_activations_score_exactly(arch):
    """torchvision's VGG-11 (ReLU(inplace=True) after every convolution) and timm's EfficientNet-B0
    (SiLU(inplace=True) after every SE ``conv_reduce``): the layers whose output is overwritten in place
    against the per-sample loop, for the empirical Fisher, the GGN and the Monte-Carlo Fisher."""
    torch.manual_seed(0)
    if arch == "vgg11":
        model = _torchvision().models.vgg11(num_classes=CLASSES)
        model.avgpool, model.classifier = nn.AdaptiveAvgPool2d(1), nn.Linear(512, CLASSES)  # a small head
        names = [f"features.{i}.weight" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)][
            -3:
        ]
    else:
        model = _timm().create_model("efficientnet_b0", pretrained=False, num_classes=CLASSES)
        names = [f"{n}.weight" for n, m in model.named_modules() if n.endswith("se.conv_reduce")][-3:]
    model = model.double().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (3,), generator=gen)
    prunable = {n: p for n, p in model.named_parameters() if n in names}
    fisher = _mean(per_sample_grads(model, names, x, y), torch.square)
    with torch.no_grad():
        probs = torch.softmax(model(x), -1)
    labels = sample_model_labels(probs, 1, torch.Generator().manual_seed(0))[:, 0]
    mc = _mean(per_sample_grads(model, names, x, labels), torch.square)
    for criterion, expected in (("fisher_diag", fisher), ("fisher_mc_diag", mc)):
        scores = initprune.score(model, criterion, (x, y), prunable=prunable)
        for n in names:
            torch.testing.assert_close(
                scores[n], expected[n], rtol=1e-9, atol=1e-9 * float(expected[n].abs().max())
            )
    # The GGN diagonal through the hook route against the vmap route, which differentiates the whole graph.
    from initprune.curvature import ggn_diagonal

    hooks = ggn_diagonal(model, prunable, [(x, y)], method="hooks")
    vmapped = ggn_diagonal(model, prunable, [(x, y)], method="vmap")
    for n in names:
        torch.testing.assert_close(hooks[n], vmapped[n], rtol=1e-9, atol=1e-9 * float(vmapped[n].abs().max()))
