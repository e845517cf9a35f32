"""Linear learning-rate warmup given in optimizer steps (``warmup_steps``): the schedule, its checks,
its record, and a resume across the warmup."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from initprune.errors import InitpruneError
from initprune.optim import StepSchedule
from initprune.train import TrainConfig, train

from .test_train import TensorLoader

QUIET = {"device": "cpu", "progress": False}


def _data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_warmup_steps_schedule():
    cosine = StepSchedule("cosine", 10, 50, warmup_steps=4)
    assert [cosine(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cosine(4) == 1.0
    assert cosine(4 + 23) == pytest.approx(0.5 * (1 + math.cos(math.pi * 23 / 46)))
    step = StepSchedule("step", 10, 50, milestones=(1,), gamma=0.1, warmup_steps=15)  # past the milestone
    assert step(9) == pytest.approx(10 / 15) and step(10) == pytest.approx(0.1 * 11 / 15)
    assert step(15) == pytest.approx(0.1)
    # steps win over the epochs' rounding: 3 steps where 0.25 epoch of 10 would be 3 too, 7 where 0.7
    assert StepSchedule("constant", 10, 50, warmup_steps=7).warmup_steps == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0, got -1"),
        ({"warmup_steps": 2.5}, "warmup_steps must be an integer >= 0, got 2.5"),
        ({"warmup_steps": 3, "warmup_epochs": 0.5}, "in epochs or in steps, not both"),
    ],
)
def test_bad_warmup_steps(changes, message):
    with pytest.raises(InitpruneError, match=message):
        TrainConfig(epochs=2, **changes)


def test_warmup_longer_than_training_is_refused():
    x, y = _data()
    with pytest.raises(InitpruneError, match="at most the 20 steps of the training, got 21"):
        train(nn.Linear(6, 3), TensorLoader(x, y, 4), TrainConfig(epochs=2, warmup_steps=21), **QUIET)


def test_recorded_rates_follow_the_warmup_and_resume(tmp_path):
    x, y = _data()
    config = TrainConfig(epochs=3, lr=0.3, schedule="constant", warmup_steps=15, seed=1)  # 10 steps/epoch

    def run(folder, on_epoch_end=None):
        torch.manual_seed(0)
        model = nn.Linear(6, 3)
        result = train(model, TensorLoader(x, y, 4, seed=2), config, checkpoint_dir=folder,
                       on_epoch_end=on_epoch_end, **QUIET)  # fmt: skip
        return model, result

    model, straight = run(tmp_path / "straight")
    assert straight["lr_warmup_steps"] == 15
    # the rate of each epoch's last step: step 9 at 10/15, step 19 and 29 at the full rate
    assert [r["lr"] for r in straight["history"]] == pytest.approx([0.3 * 10 / 15, 0.3, 0.3])

    class Killed(Exception):
        pass

    def kill(record):
        if record["epoch"] == 1:  # inside the warmup
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "killed", on_epoch_end=kill)
    resumed_model, resumed = run(tmp_path / "killed")
    assert resumed["resumed_from_epoch"] == 1 and resumed["lr_warmup_steps"] == 15

    def strip(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert strip(resumed["history"]) == strip(straight["history"])
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values(), strict=True)
    )
    # another warmup is another configuration: its checkpoint is not resumed
    other = TrainConfig(epochs=3, lr=0.3, schedule="constant", warmup_steps=5, seed=1)
    with pytest.raises(InitpruneError, match="warmup_steps: 15 -> 5"):
        train(
            nn.Linear(6, 3),
            TensorLoader(x, y, 4, seed=2),
            other,
            checkpoint_dir=tmp_path / "straight",
            **QUIET,
        )


def test_a_checkpoint_from_before_warmup_steps_still_resumes(tmp_path):
    x, y = _data()
    config = TrainConfig(epochs=2, lr=0.1, schedule="constant", seed=1)
    train(nn.Linear(6, 3), TensorLoader(x, y, 4), TrainConfig(epochs=1, lr=0.1, schedule="constant", seed=1),
          checkpoint_dir=tmp_path, **QUIET)  # fmt: skip
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["warmup_steps"]  # as written before the field existed
    torch.save(state, path)
    with pytest.raises(InitpruneError, match=r"epochs: 1\.0 -> 2\.0"):  # only the real difference is named
        train(nn.Linear(6, 3), TensorLoader(x, y, 4), config, checkpoint_dir=tmp_path, **QUIET)
    state["config"]["epochs"] = 2.0
    torch.save(state, path)
    result = train(nn.Linear(6, 3), TensorLoader(x, y, 4), config, checkpoint_dir=tmp_path, **QUIET)
    assert result["resumed_from_epoch"] == 1
