"""Helpers shared by the architectures: option checks, channel scaling and the convolutional init."""

from __future__ import annotations

from torch import nn

from ..errors import InitpruneError


def check_positive(what: str, value: float) -> float:
    """Return ``value`` if it is a positive number, else raise naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InitpruneError(f"{what} must be a positive number, got {value!r}")
    return value


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier, rounded, at least 1."""
    return max(1, round(channels * width))


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
