"""``mask.hold(model)`` in a user's own loop, and ``mask.to_torch_prune(model)``.

The property tested: no pruned weight ever moves — neither the weight the model computes with (read
through every module that uses it) nor the optimized parameter — over several steps of SGD with momentum
and weight decay, Adam with L2 decay and AdamW, on a ResNet-18, an LSTM, an attention block and a model
with a tied weight; while the kept weights do move. A control shows that without holding, the same steps
revive pruned weights, so the property is not vacuous.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

import initprune
from initprune import InitpruneError
from initprune.models import create_model

CLASSES = 4


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class AttentionNet(nn.Module):
    """An attention block: MultiheadAttention (its out_proj is read, never called) and a feed-forward."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.ff = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = x + self.attn(x, x, x, need_weights=False)[0]
        h = h + F.relu(self.ff(h))
        return self.head(h.mean(1))


class TiedNet(nn.Module):
    """``up`` and ``down`` share one weight matrix (the second use is ``down``)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 6)
        self.mid = nn.Linear(6, 6)
        self.down = nn.Linear(6, 6)
        self.down.weight = self.up.weight
        self.head = nn.Linear(6, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.down(torch.tanh(self.mid(torch.tanh(self.up(x)))))))


def _resnet18() -> nn.Module:
    return create_model("resnet18", num_classes=CLASSES, in_channels=3, width=0.125)


MODELS = {
    "resnet18": (_resnet18, (3, 8, 8)),
    "lstm": (LSTMNet, (4, 5)),
    "attention": (AttentionNet, (3, 8)),
    "tied": (TiedNet, (6,)),
}

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-3, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=5e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
}


def _setup(name: str, sparsity: float = 0.7) -> tuple[nn.Module, initprune.Mask, tuple[int, ...]]:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = build()
    params = initprune.prunable_parameters(model)
    gen = torch.Generator().manual_seed(1)
    scores = {n: torch.rand(p.shape, generator=gen) for n, p in params.items()}
    return model, initprune.make_mask(scores, sparsity), shape


def _batch(shape: tuple[int, ...], seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, *shape, generator=gen), torch.randint(0, CLASSES, (6,), generator=gen)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, shape: tuple[int, ...], seed: int) -> None:
    x, y = _batch(shape, seed)
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def _pruned_values(model: nn.Module, mask: initprune.Mask) -> Tensor:
    """Every value at a pruned position: of each module's weight and of the optimized parameter."""
    values = []
    for name, keep in mask.items():
        module_path, attr = name.rsplit(".", 1) if "." in name else ("", name)
        module = model.get_submodule(module_path)
        values.append(getattr(module, attr).detach()[~keep])
        if parametrize.is_parametrized(module, attr):
            values.append(module.parametrizations[attr].original.detach()[~keep])
    return torch.cat(values)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_hold_keeps_every_pruned_weight_at_zero(model_name: str, optimizer: str) -> None:
    model, mask, shape = _setup(model_name)
    dense_names = list(model.state_dict())
    handle = mask.hold(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = OPTIMIZERS[optimizer](model.parameters())
    assert _pruned_values(model, mask).abs().max() == 0
    for step in range(4):
        _step(model, opt, shape, seed=step)
        pruned = _pruned_values(model, mask)
        assert torch.equal(pruned, torch.zeros_like(pruned)), f"a pruned weight moved at step {step}"
        assert not pruned.signbit().any()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    held = {n for n in before if n.endswith(".original")}
    assert len(held) == len(mask) and held <= moved, "a held weight did not train"
    model.train(False)
    # the model computes with the masked weights: garbage in the pruned entries of `original` changes nothing
    x, _ = _batch(shape, seed=9)
    with torch.no_grad():
        reference = model(x)
        for name, keep in mask.items():
            module_path, attr = name.rsplit(".", 1)
            original = model.get_submodule(module_path).parametrizations[attr].original
            original.masked_fill_(~keep, 1e3)
        assert torch.allclose(model(x), reference, rtol=0, atol=1e-6)
        for name, keep in mask.items():
            module_path, attr = name.rsplit(".", 1)
            model.get_submodule(module_path).parametrizations[attr].original.masked_fill_(~keep, 0.0)

    handle.remove()
    assert not handle.held and handle.remove() is model  # a second remove does nothing
    assert list(model.state_dict()) == dense_names
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        assert isinstance(params[name], nn.Parameter)
        assert torch.equal(params[name][~keep], torch.zeros(int((~keep).sum())))
    with torch.no_grad():
        assert torch.allclose(model(x), reference, rtol=0, atol=1e-6)


def test_without_holding_the_same_steps_revive_pruned_weights() -> None:
    """The control: zeroing once (``mask.apply``) is not holding."""
    for model_name in ("lstm", "attention", "tied"):
        model, mask, shape = _setup(model_name)
        mask.apply(model)
        opt = OPTIMIZERS["sgd"](model.parameters())
        for step in range(3):
            _step(model, opt, shape, seed=step)
        assert (_pruned_values(model, mask) != 0).any(), model_name


def test_hold_tied_weight_masks_the_second_use_and_stays_tied() -> None:
    model, mask, _ = _setup("tied")
    assert "up.weight" in mask and "down.weight" not in dict(model.named_parameters())
    handle = mask.hold(model)
    keep = mask["up.weight"]
    for module in (model.up, model.down):
        assert parametrize.is_parametrized(module, "weight")
        assert torch.equal(module.weight[~keep], torch.zeros(int((~keep).sum())))
    assert model.up.parametrizations.weight.original is model.down.parametrizations.weight.original
    assert sum(1 for _ in model.parameters()) == 7  # the tied original is one parameter
    handle.remove()
    assert model.up.weight is model.down.weight


def test_hold_attention_out_proj_is_masked_though_never_called() -> None:
    model, mask, shape = _setup("attention")
    out_keep = mask["attn.out_proj.weight"]
    assert not out_keep.all()
    handle = mask.hold(model)
    calls = []
    model.attn.out_proj.register_forward_hook(lambda *a: calls.append(1))
    x, _ = _batch(shape, 3)
    model(x)
    assert not calls  # out_proj is read, not called: a hook-based holder would miss it
    reference = copy.deepcopy(model)
    handle.remove()
    # the output equals attention computed by hand with the masked projections
    attn = model.attn
    with torch.no_grad():
        out = F.multi_head_attention_forward(
            x.transpose(0, 1),
            x.transpose(0, 1),
            x.transpose(0, 1),
            8,
            2,
            attn.in_proj_weight * mask["attn.in_proj_weight"],
            attn.in_proj_bias,
            None,
            None,
            False,
            0.0,
            attn.out_proj.weight * out_keep,
            attn.out_proj.bias,
            training=False,
            need_weights=False,
        )[0].transpose(0, 1)
        assert torch.allclose(reference.attn(x, x, x, need_weights=False)[0], out, atol=1e-6)


def test_hold_with_amp_grad_scaler_and_ddp() -> None:
    """Mixed precision (autocast + GradScaler) and DistributedDataParallel (one gloo process) train the
    held model with pruned weights at 0."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model, mask, shape = _setup("resnet18")
    mask.hold(model)
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        net = DistributedDataParallel(model)
        opt = OPTIMIZERS["sgd"](net.parameters())
        scaler = torch.amp.GradScaler("cpu")
        for step in range(2):
            x, y = _batch(shape, step)
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    finally:
        dist.destroy_process_group()
    assert torch.equal(_pruned_values(model, mask), torch.zeros_like(_pruned_values(model, mask)))


def test_hold_checks_before_changing_anything() -> None:
    model, mask, _ = _setup("tied")
    state = copy.deepcopy(model.state_dict())
    bad = {**mask, "up.weight": torch.ones(3, 3, dtype=torch.bool)}
    with pytest.raises(InitpruneError, match=r"'up.weight' has shape \(3, 3\)"):
        initprune.Mask(bad).hold(model)
    with pytest.raises(InitpruneError, match="are not parameters"):
        initprune.Mask({"nope.weight": torch.ones(2, dtype=torch.bool)}).hold(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    handle = mask.hold(model)
    with pytest.raises(InitpruneError, match=r"already held\? call handle.remove\(\) first"):
        mask.hold(model)
    handle.remove()


def test_hold_as_context_manager_removes_on_exit() -> None:
    model, mask, _ = _setup("lstm")
    with mask.hold(model) as handle:
        assert handle.held and parametrize.is_parametrized(model.lstm)
    assert not parametrize.is_parametrized(model.lstm)


# ------------------------------------------------------------------------------------------------------
# to_torch_prune


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_to_torch_prune_is_read_by_torch_prune_and_holds_through_steps(model_name: str) -> None:
    model, mask, shape = _setup(model_name)
    reference = mask.apply(copy.deepcopy(model))
    mask.to_torch_prune(model)
    assert prune.is_pruned(model)
    for name, keep in mask.items():
        module_path, attr = name.rsplit(".", 1)
        module = model.get_submodule(module_path)
        assert torch.equal(getattr(module, f"{attr}_mask"), keep.float())
        assert isinstance(getattr(module, f"{attr}_orig"), nn.Parameter)
    model.train(False)
    reference.train(False)
    x, _ = _batch(shape, 5)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), rtol=0, atol=1e-6)
    # train both: the pruned model computes with the current weights (MHA's out_proj included)
    model.train(True)
    opt = OPTIMIZERS["sgd"](model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(3):
        _step(model, opt, shape, seed=step)
    origs = [n for n in before if n.endswith("_orig")]
    assert len(origs) == len(mask)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in origs), (
        "a pruned weight did not train: its module computes with a stale weight"
    )
    model.train(False)
    with torch.no_grad():
        out = model(x)
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    prune.remove(module, hook._tensor_name)
        assert not prune.is_pruned(model)
        assert torch.allclose(model(x), out, rtol=0, atol=1e-6)
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        assert torch.equal(params[name][~keep], torch.zeros(int((~keep).sum())))
    if model_name == "tied":
        assert model.up.weight is model.down.weight


def test_to_torch_prune_combines_with_further_torch_pruning() -> None:
    model, mask, _ = _setup("tied")
    mask.to_torch_prune(model)
    prune.l1_unstructured(model.mid, "weight", amount=0.5)
    combined = model.mid.weight_mask.bool()
    assert not (combined & ~mask["mid.weight"]).any()
    assert int(combined.sum()) < int(mask["mid.weight"].sum())


def test_to_torch_prune_refuses_a_held_model() -> None:
    model, mask, _ = _setup("tied")
    mask.hold(model)
    with pytest.raises(InitpruneError, match="reparametrized"):
        mask.to_torch_prune(model)


def test_hold_on_a_hugging_face_bert_classifier() -> None:
    """BERT (Linear projections, a tied-free encoder, a dict batch with labels) trained in a plain loop."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    params = initprune.prunable_parameters(model)
    scores = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) for n, p in params.items()}
    mask = initprune.make_mask(scores, 0.8)
    handle = mask.hold(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    gen = torch.Generator().manual_seed(3)
    batch = {
        "input_ids": torch.randint(0, 50, (4, 6), generator=gen),
        "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 6, [1] * 3 + [0] * 3]),
        "labels": torch.randint(0, 2, (4,), generator=gen),
    }
    for _ in range(3):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        pruned = _pruned_values(model, mask)
        assert torch.equal(pruned, torch.zeros_like(pruned))
    handle.remove()
    named = dict(model.named_parameters())
    assert all(not named[n][~keep].any() for n, keep in mask.items())
