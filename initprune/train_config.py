"""How to train a (pruned) network: :class:`TrainConfig`, its validation, and the flag parsing it shares.

A module of its own so that :mod:`initprune.optim` and :mod:`initprune.checkpoint`, which read a
``TrainConfig``, do not import the training loop that imports them. ``initprune.train.TrainConfig`` is the
same class.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from .curvature.losses import LOSSES
from .errors import InitpruneError, unknown_choice

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _auto_flag(name: str, value: bool | str) -> bool | str:
    """``True``, ``False`` or ``"auto"``; also accepts the usual spellings from config files and flags."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low == "auto":
            return "auto"
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise InitpruneError(f"{name} must be true, false or 'auto', got {value!r}")


def _number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """``value`` as a finite float inside the given bounds, else an error naming it and the range."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    ok = math.isfinite(x) and not isinstance(value, bool)
    if ok and low is not None:
        ok = x > low if low_open else x >= low
    if ok and high is not None:
        ok = x < high if high_open else x <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        bounds = f"{left}{lo}, {hi}{right}"
        raise InitpruneError(f"{name} must be a number in {bounds}, got {value!r}")
    return x


def _integer(name: str, value: Any, what: str, low: int | None = None) -> int:
    """``value`` as an int (integral floats and digit strings accepted), else an error naming it."""
    try:
        x = float(value)
        ok = x.is_integer() and not isinstance(value, bool) and (low is None or x >= low)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise InitpruneError(f"{name} must be {what}, got {value!r}")
    return int(x)


@dataclass
class TrainConfig:
    """How to train a (pruned) network. The defaults are the paper's CIFAR setting (DESIGN.md §4)."""

    epochs: float = field(
        default=160,
        metadata={
            "help": "Training length in epochs; fractions allowed (0.1 = a tenth of the steps of an epoch)"
        },
    )
    optimizer: str = field(default="sgd", metadata={"help": "Optimizer: sgd or adamw"})
    lr: float = field(default=0.03, metadata={"help": "Base learning rate (peak rate after warmup)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (sgd only)"})
    nesterov: bool = field(default=False, metadata={"help": "Use Nesterov momentum (sgd only)"})
    weight_decay: float = field(
        default=5e-4,
        metadata={
            "help": "Weight decay, on all parameters unless no_decay_norm_bias (coupled for sgd, "
            "decoupled for adamw)"
        },
    )
    no_decay_norm_bias: bool = field(
        default=False, metadata={"help": "Exempt biases and normalization parameters from weight decay"}
    )
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas (adamw only)"})
    eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon (adamw only)"})
    schedule: str = field(
        default="step",
        metadata={"help": "Learning-rate schedule, updated every step: step, cosine (to 0) or constant"},
    )
    milestones: tuple[int, ...] = field(
        default=(80, 120), metadata={"help": "Epochs at which the step schedule multiplies the rate by gamma"}
    )
    gamma: float = field(default=0.2, metadata={"help": "Factor of the step schedule at each milestone"})
    warmup_epochs: float = field(
        default=0.0, metadata={"help": "Epochs of linear learning-rate warmup (fractions allowed)"}
    )
    warmup_steps: int = field(
        default=0,
        metadata={"help": "Optimizer steps of linear learning-rate warmup, instead of warmup_epochs"},
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing of the training loss"})
    loss: str = field(
        default="cross_entropy",
        metadata={
            "help": "Loss: cross_entropy (class targets) or token_cross_entropy (per-token targets (B, L), "
            "-100 not counted; a sequence's loss is the mean over its tokens)"
        },
    )
    amp: bool | str = field(
        default="auto",
        metadata={"help": "bfloat16 autocast: auto (on for CUDA), true or false; never on CPU"},
    )
    channels_last: bool | str = field(
        default="auto",
        metadata={
            "help": "channels_last memory format for 4-D inputs and weights: auto (on for CUDA), true, false"
        },
    )
    grad_clip: float | None = field(
        default=None, metadata={"help": "Clip the gradient norm to this value (none: no clipping)"}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the training randomness (shuffling, augmentation)"}
    )
    log_every: int = field(
        default=50,
        metadata={
            "help": "Steps between progress-bar loss updates, each a device sync (0: at epoch end only)"
        },
    )

    def __post_init__(self) -> None:
        self.epochs = _number("epochs", self.epochs, low=0, low_open=True, high=None)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown_choice("schedule", self.schedule, SCHEDULES)
        self.lr = _number("lr", self.lr, low=0, low_open=True, high=None)
        self.momentum = _number("momentum", self.momentum, low=0, high=1)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise InitpruneError(
                f"nesterov=True needs optimizer 'sgd' with momentum > 0, got optimizer={self.optimizer!r}, "
                f"momentum={self.momentum:g}"
            )
        self.weight_decay = _number("weight_decay", self.weight_decay, low=0, high=None)
        try:
            betas = tuple(float(b) for b in self.betas)
        except (TypeError, ValueError):
            betas = ()
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise InitpruneError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (betas[0], betas[1])
        self.eps = _number("eps", self.eps, low=0, low_open=True, high=None)
        milestones = (self.milestones,) if isinstance(self.milestones, (int, float)) else self.milestones
        try:
            ms = [_number("milestone", m, low=0, low_open=True, high=None) for m in milestones]
        except (TypeError, InitpruneError):
            ms = None
        if ms is None or any(b <= a for a, b in itertools.pairwise(ms)):
            raise InitpruneError(
                f"milestones must be positive epochs in increasing order, got {self.milestones!r}"
            )
        self.milestones = tuple(int(m) if float(m).is_integer() else m for m in ms)
        self.gamma = _number("gamma", self.gamma, low=0, low_open=True, high=None)
        self.warmup_epochs = _number("warmup_epochs", self.warmup_epochs, low=0, high=self.epochs)
        self.warmup_steps = _integer("warmup_steps", self.warmup_steps, "an integer >= 0", low=0)
        if self.warmup_steps and self.warmup_epochs:
            raise InitpruneError(
                f"give the learning-rate warmup in epochs or in steps, not both: warmup_epochs="
                f"{self.warmup_epochs:g}, warmup_steps={self.warmup_steps}"
            )
        self.label_smoothing = _number("label_smoothing", self.label_smoothing, low=0, high=1)
        if self.loss not in LOSSES:
            raise unknown_choice("loss", self.loss, LOSSES)
        self.amp = _auto_flag("amp", self.amp)
        self.channels_last = _auto_flag("channels_last", self.channels_last)
        if self.grad_clip is not None:
            self.grad_clip = _number("grad_clip", self.grad_clip, low=0, low_open=True, high=None)
        self.seed = _integer("seed", self.seed, "an integer")
        self.log_every = _integer("log_every", self.log_every, "an integer >= 0", low=0)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (stored in checkpoints)."""
        return dataclasses.asdict(self)
