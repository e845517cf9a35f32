"""Helpers shared by the architectures: option checks, channel scaling and initializations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InitpruneError, unknown_choice


def check_positive(what: str, value: float) -> float:
    """Return ``value`` if it is a positive number, else raise naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InitpruneError(f"{what} must be a positive number, got {value!r}")
    return value


def check_bool(what: str, value: bool) -> bool:
    """Return ``value`` if it is a bool, else raise naming the option."""
    if not isinstance(value, bool):
        raise InitpruneError(f"{what} must be true or false, got {value!r}")
    return value


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier, rounded, at least 1."""
    return max(1, round(channels * width))


INITS = ("kaiming", "pytorch")


def check_init(init: str) -> str:
    """Return ``init`` if it is one of :data:`INITS`, else raise naming it and the valid ones."""
    if init not in INITS:
        raise unknown_choice("init", init, INITS)
    return init


def initialize(model: nn.Module, init: str, linear_std: float | None = None) -> None:
    """Initialize a convolutional network: ``kaiming`` (the default) or ``pytorch``.

    ``kaiming`` is :func:`init_conv_bn`. ``pytorch`` keeps the initialization every layer received when it
    was built (PyTorch's default: weights U(±1/√fan_in), i.e. std 1/√(3·fan_in), biases U(±1/√fan_in),
    BatchNorm weight 1 and bias 0). The paper's reference code (Gollini/Scalable_Second_Order_PaI, models
    from kuangliu/pytorch-cifar) uses ``pytorch``; it is not the default because it is not the
    initialization the networks are trained from in the literature (torchvision's Kaiming fan-out, std
    √(2/fan_out), √6 times larger where fan_in = fan_out), and its scale follows fan-in instead of fan-out,
    which changes how one global threshold spreads a mask over the layers.
    """
    if check_init(init) == "kaiming":
        init_conv_bn(model, linear_std=linear_std)


def init_conv_bn(model: nn.Module, linear_std: float | None = None) -> None:
    """The torchvision initialization of convolutional networks.

    Convolutions: Kaiming normal, fan_out, ReLU gain (He et al. 2015), zero bias. BatchNorm: weight 1,
    bias 0. Linear layers: N(0, ``linear_std``²) with zero bias if ``linear_std`` is given (torchvision's
    VGG uses 0.01), else PyTorch's default (torchvision's ResNet). All draws come from torch's global
    generator, in registration order, so ``torch.manual_seed`` makes them reproducible.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def trunc_normal_(tensor: Tensor, std: float) -> Tensor:
    """Fill ``tensor`` from N(0, std²) truncated to [−2 std, 2 std], in place, by rejection sampling.

    The same distribution as ``nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)`` (timm's ViT
    initialization), several times faster on CPU: 4.6% of the draws fall outside and are redrawn until none is
    left. Draws come from torch's global generator, so ``torch.manual_seed`` makes the result reproducible.
    """
    flat = (
        tensor.view(-1)
        if tensor.is_contiguous()
        else torch.empty(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    )
    flat.normal_(0.0, std)
    redraw = torch.nonzero(flat.abs() > 2 * std).squeeze(1)
    while redraw.numel():
        values = torch.randn(redraw.numel(), dtype=flat.dtype, device=flat.device) * std
        flat[redraw] = values
        redraw = redraw[values.abs() > 2 * std]
    if flat.data_ptr() != tensor.data_ptr():
        tensor.copy_(flat.view_as(tensor))
    return tensor
