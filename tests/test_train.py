"""Training with a held mask: pruned weights stay zero, schedules follow their formulas, resume is exact."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initprune.errors import InitpruneError
from initprune.masks import Mask
from initprune.optim import MaskHolder, StepSchedule, make_optimizer, make_scheduler
from initprune.train import TrainConfig, evaluate, train


class TensorLoader:
    """Batches of in-memory tensors, reshuffled by ``seed + epoch`` at every ``set_epoch``."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True, seed: int = 0
    ):
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.epoch = 0
        self.batches_served = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            self.batches_served += 1
            yield self.x[idx], self.y[idx]


def blobs(n: int = 256, classes: int = 4, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable task: Gaussian blobs around random class centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.randint(classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


def images(n: int = 64, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=g)
    x = torch.randn(n, 1, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
    return x, y


def conv_net(seed: int = 0, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * 6 * 6, 3),
    )


def random_mask(model: nn.Module, names: tuple[str, ...], density: float = 0.4, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {name: torch.rand(params[name].shape, generator=g) < density for name in names}


QUIET = {"progress": False, "device": "cpu"}


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(epochs=3, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="constant"),
        TrainConfig(epochs=3, optimizer="sgd", lr=0.1, nesterov=True, weight_decay=5e-2, grad_clip=1.0),
        TrainConfig(epochs=3, optimizer="adamw", lr=0.01, weight_decay=5e-2, schedule="cosine"),
        TrainConfig(epochs=2, lr=0.1, weight_decay=5e-2, channels_last=True),
    ],
    ids=["sgd", "sgd-nesterov-clip", "adamw", "sgd-channels-last"],
)
def test_pruned_weights_stay_exactly_zero(config: TrainConfig) -> None:
    model = conv_net()
    masked = ("0.weight", "3.weight")
    mask = random_mask(model, masked)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert all((before[k][~mask[k]] != 0).all() for k in masked)
    x, y = images()
    train(model, TensorLoader(x, y, 16), config, mask=mask, **QUIET)
    params = dict(model.named_parameters())
    for name in masked:
        w = params[name].detach()
        assert (w[~mask[name]] == 0).all(), name
        assert not torch.equal(w[mask[name]], before[name][mask[name]]), name
    for name in ("0.bias", "1.weight", "1.bias", "7.weight", "7.bias"):
        assert not torch.equal(params[name].detach(), before[name]), name


def test_channels_last_on_the_cpu_trains_the_same_network() -> None:
    """channels_last=True changes only the memory layout: in float64 the trained weights match the
    default layout's to rounding, masked weights stay exactly zero, and the model is handed back."""
    x, y = images()
    x = x.double()
    mask = random_mask(conv_net(), ("0.weight", "3.weight"))
    trained = {}
    for last in (False, True):
        model = conv_net().double()
        config = TrainConfig(epochs=2, lr=0.1, momentum=0.9, weight_decay=5e-4, channels_last=last)
        train(model, TensorLoader(x, y, 16), config, mask=mask, **QUIET)
        trained[last] = {k: v.detach().contiguous() for k, v in model.named_parameters()}
        assert (trained[last]["0.weight"][~mask["0.weight"]] == 0).all()
    moved = max((trained[False][k] - conv_net().double().state_dict()[k]).abs().max() for k in trained[False])
    assert moved > 1e-3  # training changed the weights, so equality below is not vacuous
    for k, w in trained[False].items():
        torch.testing.assert_close(trained[True][k], w, rtol=1e-10, atol=1e-12, msg=k)


def test_mask_holder_grads_and_momentum() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    mask = random_mask(model, ("0.weight",))
    holder = MaskHolder(model, mask)
    holder.apply()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(7, 5)).square().mean().backward()
        holder.mask_grads()
        assert (model[0].weight.grad[~mask["0.weight"]] == 0).all()
        opt.step()
        holder.after_step()
    assert (model[0].weight[~mask["0.weight"]] == 0).all()
    assert (opt.state[model[0].weight]["momentum_buffer"][~mask["0.weight"]] == 0).all()


def test_mask_holder_rejects_wrong_names_and_shapes() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(InitpruneError, match=r"'1.weight'.*0.weight, 0.bias"):
        MaskHolder(model, {"1.weight": torch.ones(2, 3, dtype=torch.bool)})
    with pytest.raises(InitpruneError, match=r"shape \(3, 2\)"):
        MaskHolder(model, {"0.weight": torch.ones(3, 2, dtype=torch.bool)})


def test_training_learns_a_learnable_task() -> None:
    x, y = blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    before = evaluate(model, TensorLoader(x, y, 64, shuffle=False))
    config = TrainConfig(epochs=8, lr=0.05, schedule="cosine", label_smoothing=0.1)
    mask = Mask(random_mask(model, ("0.weight",), density=0.5))
    result = train(
        model, TensorLoader(x, y, 32), config, mask=mask, val_loader=TensorLoader(x, y, 64), **QUIET
    )
    history = result["history"]
    assert [r["epoch"] for r in history] == list(range(1, 9))
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.2 * before["loss"]
    assert history[-1]["val_accuracy"] > 0.95
    assert result["final"] is history[-1] and result["steps"] == 8 * 8


def test_evaluate_matches_a_hand_computed_reference() -> None:
    torch.manual_seed(3)
    model = nn.Linear(4, 10)
    x, y = torch.randn(11, 4), torch.randint(10, (11,))
    x[0] = 0.0  # logits = bias for sample 0
    logits = model(x).detach()
    loss = -(logits.log_softmax(-1)[torch.arange(11), y]).mean()
    top1 = sum(int(logits[i].argmax() == y[i]) for i in range(11)) / 11
    ranks = [int((logits[i] > logits[i, y[i]]).sum()) for i in range(11)]
    top5 = sum(r < 5 for r in ranks) / 11
    model.train()
    result = evaluate(model, TensorLoader(x, y, 4, shuffle=False))
    assert model.training
    # float32 sums of 11 losses in other groupings (batches of 4 vs one mean): each addition rounds by at
    # most eps32 of the running sum, so the two differ by at most 2 · 11 · eps32 relative
    assert result["loss"] == pytest.approx(float(loss), rel=2 * 11 * torch.finfo(torch.float32).eps)
    assert result["accuracy"] == pytest.approx(top1)
    assert result["top5_accuracy"] == pytest.approx(top5)
    assert result["count"] == 11
    small = evaluate(nn.Linear(4, 3), TensorLoader(x, y % 3, 4))
    assert "top5_accuracy" not in small


def test_step_schedule_formulas() -> None:
    e = 10  # steps per epoch
    step = StepSchedule("step", e, 50, milestones=(2, 3), gamma=0.1)
    assert [step(s) for s in (0, 19, 20, 29, 30, 49)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = StepSchedule("cosine", e, 100)
    for s in (0, 25, 50, 99):
        assert cosine(s) == pytest.approx(0.5 * (1 + math.cos(math.pi * s / 100)))
    warm = StepSchedule("cosine", e, 100, warmup_epochs=0.5)  # 5 warmup steps
    assert [warm(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert warm(5) == 1.0 and warm(5 + 95 // 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 47 / 95)))
    const = StepSchedule("constant", e, 100, warmup_epochs=0.2)
    assert [const(s) for s in (0, 1, 2, 50)] == [0.5, 1.0, 1.0, 1.0]


def test_step_schedule_equals_multisteplr_per_epoch() -> None:
    config = TrainConfig(epochs=6, lr=0.4, milestones=(2, 4), gamma=0.2)
    w = nn.Parameter(torch.zeros(1))
    ours = make_optimizer(nn.ParameterList([w]), config)
    scheduler = make_scheduler(ours, config, steps_per_epoch=3, total_steps=18)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=[2, 4], gamma=0.2)
    for _ in range(6):
        for _ in range(3):
            assert ours.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
            ours.step()
            scheduler.step()
        ref_opt.step()
        ref.step()


@pytest.mark.parametrize(("epochs", "steps", "records"), [(0.25, 3, [3]), (0.1, 1, [1]), (1.5, 15, [10, 15])])
def test_fractional_epochs_run_the_right_number_of_steps(epochs: float, steps: int, records: list) -> None:
    x, y = blobs(40)
    loader = TensorLoader(x, y, 4)  # 10 batches
    model = nn.Linear(8, 4)
    result = train(model, loader, TrainConfig(epochs=epochs, lr=0.01), **QUIET)
    assert loader.batches_served == steps
    assert [r["step"] for r in result["history"]] == records
    assert result["steps"] == steps


def test_lr_history_follows_the_schedule() -> None:
    x, y = blobs(40)
    config = TrainConfig(epochs=4, lr=0.1, milestones=(1, 3), gamma=0.5)
    result = train(nn.Linear(8, 4), TensorLoader(x, y, 10), config, **QUIET)
    assert [r["lr"] for r in result["history"]] == pytest.approx([0.1, 0.05, 0.05, 0.025])


@pytest.mark.parametrize("loader_kind", ["tensor", "dataloader"])
def test_killed_run_resumes_to_identical_weights_and_metrics(tmp_path, loader_kind: str) -> None:
    x, y = images(48)
    vx, vy = images(24, seed=1)

    def make_loader():
        if loader_kind == "tensor":
            return TensorLoader(x, y, 8, seed=5)
        dataset = torch.utils.data.TensorDataset(x, y)
        return torch.utils.data.DataLoader(
            dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5)
        )

    config = TrainConfig(epochs=3, lr=0.05, milestones=(2,), warmup_epochs=0.5, seed=7)

    def run(checkpoint_dir, on_epoch_end=None):
        model = conv_net(dropout=0.3)
        mask = random_mask(model, ("0.weight", "3.weight"))
        result = train(
            model,
            make_loader(),
            config,
            mask=mask,
            val_loader=TensorLoader(vx, vy, 12, shuffle=False),
            checkpoint_dir=checkpoint_dir,
            on_epoch_end=on_epoch_end,
            **QUIET,
        )
        return model, result

    reference, ref_result = run(tmp_path / "straight")

    class Killed(Exception):
        pass

    def kill(record):
        if record["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "killed", on_epoch_end=kill)
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    resumed, result = run(tmp_path / "killed")
    assert result["resumed_from_epoch"] == 1

    def strip(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert strip(result["history"]) == strip(ref_result["history"])
    ref_state, state = reference.state_dict(), resumed.state_dict()
    assert ref_state.keys() == state.keys()
    for name in ref_state:
        assert torch.equal(ref_state[name], state[name]), name

    # A finished run is not trained again: it loads its final weights and returns the stored history.
    again, finished = run(tmp_path / "killed")
    assert finished["resumed_from_epoch"] == 3 and strip(finished["history"]) == strip(ref_result["history"])
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ref_state.items())


def test_resume_with_another_configuration_is_refused(tmp_path) -> None:
    x, y = blobs(40)
    train(nn.Linear(8, 4), TensorLoader(x, y, 10), TrainConfig(epochs=1), checkpoint_dir=tmp_path, **QUIET)
    with pytest.raises(InitpruneError, match=r"lr: 0.03 -> 0.1"):
        train(
            nn.Linear(8, 4),
            TensorLoader(x, y, 10),
            TrainConfig(epochs=1, lr=0.1),
            checkpoint_dir=tmp_path,
            **QUIET,
        )


def test_no_decay_norm_bias_groups() -> None:
    model = conv_net()
    groups = make_optimizer(model, TrainConfig(no_decay_norm_bias=True, weight_decay=0.1)).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim <= 1 for p in groups[1]["params"])
    (only,) = make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    assert only["weight_decay"] == 0.1 and len(only["params"]) == len(list(model.parameters()))


def test_label_smoothing_is_the_training_objective() -> None:
    x, y = blobs(16)
    model = nn.Linear(8, 4)
    expected = float(F.cross_entropy(model(x).detach(), y, label_smoothing=0.3))
    config = TrainConfig(epochs=1, lr=1e-12, weight_decay=0.0, momentum=0.0, label_smoothing=0.3)
    result = train(model, TensorLoader(x, y, 16), config, **QUIET)
    # one float32 batch of 16, reduced in another order: at most 2 · 16 · eps32 relative apart
    bound = 2 * 16 * torch.finfo(torch.float32).eps
    assert result["history"][0]["train_loss"] == pytest.approx(expected, rel=bound)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"optimizer": "adam"}, r"optimizer 'adam'.*adamw, sgd"),
        ({"schedule": "linear"}, r"schedule 'linear'.*constant, cosine, step"),
        ({"epochs": 0}, r"epochs .* got 0"),
        ({"epochs": "ten"}, r"epochs .* got 'ten'"),
        ({"lr": -1}, r"lr .* got -1"),
        ({"momentum": 1.5}, r"momentum .*\[0, 1\).* got 1.5"),
        ({"nesterov": True, "optimizer": "adamw"}, r"nesterov"),
        ({"milestones": (120, 80)}, r"milestones .*\(120, 80\)"),
        ({"warmup_epochs": 200}, r"warmup_epochs .* got 200"),
        ({"label_smoothing": 1.0}, r"label_smoothing"),
        ({"amp": "maybe"}, r"amp must be true, false or 'auto', got 'maybe'"),
        ({"grad_clip": 0}, r"grad_clip"),
        ({"seed": 1.5}, r"seed must be an integer, got 1.5"),
        ({"seed": "x"}, r"seed must be an integer, got 'x'"),
        ({"log_every": -1}, r"log_every must be an integer >= 0, got -1"),
        ({"betas": (0.9,)}, r"betas"),
    ],
)
def test_bad_config_values_are_named(kwargs: dict, pattern: str) -> None:
    with pytest.raises(InitpruneError, match=pattern):
        TrainConfig(**kwargs)


def test_config_fields_have_help_and_flags_accept_strings() -> None:
    import dataclasses

    assert all(f.metadata.get("help") for f in dataclasses.fields(TrainConfig))
    config = TrainConfig(amp="false", channels_last="auto", epochs="2", milestones=[1])
    assert config.amp is False and config.channels_last == "auto" and config.epochs == 2.0
    assert config.milestones == (1,)


def test_amp_on_cpu_warns_and_trains_in_float32() -> None:
    x, y = blobs(16)
    with pytest.warns(UserWarning, match="amp=True has no effect on cpu"):
        train(nn.Linear(8, 4), TensorLoader(x, y, 8), TrainConfig(epochs=1, amp=True), **QUIET)


def test_empty_loader_is_an_error() -> None:
    with pytest.raises(InitpruneError, match="empty"):
        train(nn.Linear(2, 2), [], TrainConfig(epochs=1), **QUIET)


def test_progress_bar_only_on_a_terminal(monkeypatch) -> None:
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    x, y = blobs(40)
    config = TrainConfig(epochs=2, lr=0.01, log_every=2)
    for stream, progress, shown in (
        (Terminal(), True, True),
        (io.StringIO(), True, False),
        (Terminal(), False, False),
    ):
        monkeypatch.setattr(sys, "stderr", stream)
        train(nn.Linear(8, 4), TensorLoader(x, y, 10), config, progress=progress, device="cpu")
        assert ("epoch 2/2" in stream.getvalue()) is shown
