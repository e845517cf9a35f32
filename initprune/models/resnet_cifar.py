"""ResNet-20/32/56 for CIFAR (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2).

A 3×3 conv with 16 channels, then three stages of n BasicBlocks with 16, 32 and 64 channels (the second and
third start with stride 2), global average pooling and a Linear classifier: 6n + 2 layers. Where a block
changes shape its shortcut is a 1×1 conv + BatchNorm projection (the paper's option B); the paper's CIFAR
counts (0.27M for ResNet-20) are for the parameter-free option A, which option B exceeds by 2,752 weights
for every depth.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .common import check_init, check_positive, initialize, scaled
from .registry import Builder, register_model


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers with a residual connection; ReLU after the sum."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of depth 6n + 2 (``blocks`` = n per stage), base width 16 times ``width``.

    Initialization: Kaiming normal (fan_out, ReLU) convolutions, BatchNorm weight 1 and bias 0, PyTorch's
    default Linear classifier (as torchvision's ResNet); ``init="pytorch"`` keeps PyTorch's default
    initialization, as the paper's reference code does (see :func:`~initprune.models.common.initialize`).
    """

    def __init__(
        self, blocks: int, num_classes: int, in_channels: int, width: float, init: str = "kaiming"
    ) -> None:
        super().__init__()
        planes = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        stages = []
        in_planes = planes[0]
        for i, p in enumerate(planes):
            layers = []
            for j in range(blocks):
                layers.append(BasicBlock(in_planes, p, stride=2 if i > 0 and j == 0 else 1))
                in_planes = p
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        initialize(self, init)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _builder(depth: int) -> Builder:
    blocks = (depth - 2) // 6

    def build(
        *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, init: str = "kaiming"
    ) -> nn.Module:
        return CifarResNet(blocks, num_classes, in_channels, check_positive("width", width), check_init(init))

    build.__name__ = f"resnet{depth}"
    build.__doc__ = (
        f"ResNet-{depth} for CIFAR (He et al. 2016), projection shortcuts. ``width`` multiplies the 16/32/64 "
        "channels (1.0 is the paper's network). ``init``: kaiming (default) or pytorch (the paper's "
        "reference code; see ``initprune.models.common.initialize``)."
    )
    description = f"ResNet-{depth} for CIFAR (He et al. 2016): 16/32/64 channels, {blocks} blocks per stage"
    return register_model(f"resnet{depth}", description)(build)


resnet20 = _builder(20)
resnet32 = _builder(32)
resnet56 = _builder(56)
