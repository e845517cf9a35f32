"""Optimizers, per-step learning-rate schedules, and holding a mask through optimizer steps.

The learning rate is updated after every optimizer step, not every epoch: the schedule is a function of the
global step ``s`` (0-based) and of the number of steps per epoch, so milestones and warmup given in
(possibly fractional) epochs land on exact steps and fractional-epoch runs follow the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from .errors import InitpruneError
from .hold import masked_parameters

if TYPE_CHECKING:
    from .train_config import TrainConfig


def epoch_steps(epochs: float, steps_per_epoch: int) -> int:
    """Steps covering ``epochs`` epochs of ``steps_per_epoch`` steps: rounded half up, at least 1 if > 0."""
    steps = math.floor(epochs * steps_per_epoch + 0.5)
    return max(1, steps) if epochs > 0 else 0


class StepSchedule:
    """Learning-rate factor (multiplying the base rate) as a function of the 0-based global step ``s``.

    With ``W`` warmup steps (``warmup_steps``, else ``warmup_epochs`` in steps) and ``T`` total steps:

    - warmup: factor ``(s + 1) / W`` for ``s < W`` (linear from ``1/W`` to 1), multiplied by the schedule;
    - ``step``: ``gamma ** k`` where ``k`` counts the milestones ``m`` (epochs) with ``s >= round(m * E)``,
      ``E`` the steps per epoch — the same rates as ``MultiStepLR`` stepped each epoch;
    - ``cosine``: ``(1 + cos(pi * (s - W) / (T - W))) / 2`` after warmup (1 during it), reaching 0 at ``T``;
    - ``constant``: 1.

    A plain object of numbers so that ``LambdaLR.state_dict()`` stores it and ``weights_only`` loads it.
    """

    def __init__(
        self,
        schedule: str,
        steps_per_epoch: int,
        total_steps: int,
        *,
        milestones: Sequence[float] = (),
        gamma: float = 1.0,
        warmup_epochs: float = 0.0,
        warmup_steps: int = 0,
    ):
        self.schedule = schedule
        self.total_steps = int(total_steps)
        self.milestone_steps = [epoch_steps(m, steps_per_epoch) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps) or epoch_steps(warmup_epochs, steps_per_epoch)

    def __call__(self, step: int) -> float:
        factor = 1.0
        if step < self.warmup_steps:
            factor = (step + 1) / self.warmup_steps
        if self.schedule == "step":
            passed = sum(1 for m in self.milestone_steps if step >= m)
            return factor * self.gamma**passed
        if self.schedule == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            return factor * 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int, total_steps: int
) -> LambdaLR:
    """A ``LambdaLR`` over :class:`StepSchedule`; call its ``step()`` after every optimizer step."""
    schedule = StepSchedule(
        config.schedule,
        steps_per_epoch,
        total_steps,
        milestones=config.milestones,
        gamma=config.gamma,
        warmup_epochs=config.warmup_epochs,
        warmup_steps=config.warmup_steps,
    )
    return LambdaLR(optimizer, schedule)


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """One group decaying every parameter (the paper's setting), or two: tensors of rank ≤ 1 (biases,
    normalization scales and shifts) without weight decay when ``no_decay_norm_bias``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [
        g
        for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
        if g["params"]
    ]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, coupled weight decay) or AdamW (decoupled weight decay) from ``config``."""
    groups = parameter_groups(model, config.weight_decay, config.no_decay_norm_bias)
    if not groups:
        raise InitpruneError(f"{type(model).__name__} has no trainable parameter")
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


class MaskHolder:
    """Holds a keep-mask on a model's parameters through training.

    ``apply()`` zeros the pruned weights, ``mask_grads()`` zeros their gradients after ``backward()``
    (so gradient clipping and Adam moments see only kept weights), and ``after_step()`` zeros them again
    after ``optimizer.step()`` so that weight decay and momentum cannot revive them. Each is one fused
    ``torch._foreach_mul_`` over float masks precomputed on the parameters' device: no host-device sync.
    The mask must cover parameters by their ``named_parameters()`` names; other parameters train freely.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, Tensor]):
        named = masked_parameters(model, mask)  # raises naming a bad name or shape
        self.names = list(named)
        self.params: list[nn.Parameter] = list(named.values())
        self.masks: list[Tensor] = []
        for name, p in named.items():
            m = mask[name]
            # Same memory format as the parameter (channels_last models) so the fused multiply stays cheap.
            keep = torch.empty_like(p, requires_grad=False)
            keep.copy_(m.to(device=p.device, dtype=p.dtype))
            self.masks.append(keep)

    def __len__(self) -> int:
        return len(self.params)

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights in place, as +0.0 (a negative weight times 0 is -0.0; adding 0 makes
        it +0.0 and changes nothing else), so that a sparse export rebuilds the weights bit for bit."""
        if self.params:
            torch._foreach_mul_(self.params, self.masks)
            torch._foreach_add_(self.params, 0.0)

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the gradients of the pruned weights (call after ``backward()``, before clipping/stepping)."""
        pairs = [(p.grad, m) for p, m in zip(self.params, self.masks, strict=True) if p.grad is not None]
        if pairs:
            grads, masks = zip(*pairs, strict=True)
            torch._foreach_mul_(list(grads), list(masks))

    @torch.no_grad()
    def after_step(self) -> None:
        """Re-zero the pruned weights after ``optimizer.step()``. One multiply: a step adds only zeros to
        a pruned +0.0 (its gradient is masked), which leaves it +0.0."""
        if self.params:
            torch._foreach_mul_(self.params, self.masks)
