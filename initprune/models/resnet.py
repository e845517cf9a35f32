"""ResNet-18/34/50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

``resnet18/34/50`` use the CIFAR stem of the pruning-at-initialization literature (a 3×3 conv with stride 1
and no max-pool, as in GraSP, SynFlow and arXiv 2502.11450) and end in adaptive average pooling, so the same
network takes 28×28, 32×32 and 64×64 (TinyImageNet) inputs. ``resnet50_imagenet`` is the standard ImageNet
network: a 7×7 stride-2 conv and a 3×3 stride-2 max-pool. Shortcuts that change shape are 1×1 conv + BN
projections; the Bottleneck puts its stride on the 3×3 conv (torchvision's "ResNet v1.5").
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .common import check_init, check_positive, initialize, scaled
from .registry import register_model
from .resnet_cifar import BasicBlock


def _width(width: float) -> float:
    return check_positive("width", width)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (with the stride) → 1×1 expand by 4, each with BN; ReLU after the residual sum."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Four stages of 64/128/256/512 (times ``width``) planes; ``stem`` is ``"cifar"`` or ``"imagenet"``.

    Initialization: Kaiming normal (fan_out, ReLU) convolutions, BatchNorm weight 1 and bias 0, PyTorch's
    default Linear classifier (torchvision's ResNet with ``zero_init_residual=False``). ``init="pytorch"``
    keeps PyTorch's default initialization everywhere, as the paper's reference code does (see
    :func:`~initprune.models.common.initialize`).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int,
        width: float,
        stem: str,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
            self.stem_pool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, planes[0], 7, stride=2, padding=3, bias=False)
            self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        stages = []
        for i, (p, n) in enumerate(zip(planes, layers, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, p, stride=2 if i > 0 and j == 0 else 1))
                in_planes = p * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        initialize(self, init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_pool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


@register_model("resnet18", "ResNet-18 (He et al. 2016), CIFAR stem: 3×3 conv stride 1, no max-pool")
def resnet18(
    *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, init: str = "kaiming"
) -> nn.Module:
    """ResNet-18 (He et al. 2016) with the CIFAR stem; ``width`` multiplies the 64/128/256/512 planes.

    ``init``: kaiming (default) or pytorch (the paper's reference code; see ``models.common.initialize``).
    """
    return ResNet(
        BasicBlock, (2, 2, 2, 2), num_classes, in_channels, _width(width), "cifar", check_init(init)
    )


@register_model("resnet34", "ResNet-34 (He et al. 2016), CIFAR stem: 3×3 conv stride 1, no max-pool")
def resnet34(
    *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, init: str = "kaiming"
) -> nn.Module:
    """ResNet-34 (He et al. 2016) with the CIFAR stem; ``width`` multiplies the 64/128/256/512 planes.

    ``init``: kaiming (default) or pytorch (the paper's reference code; see ``models.common.initialize``).
    """
    return ResNet(
        BasicBlock, (3, 4, 6, 3), num_classes, in_channels, _width(width), "cifar", check_init(init)
    )


@register_model(
    "resnet50", "ResNet-50 (He et al. 2016), Bottleneck blocks, CIFAR stem: 3×3 conv, no max-pool"
)
def resnet50(
    *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, init: str = "kaiming"
) -> nn.Module:
    """ResNet-50 (He et al. 2016) with the CIFAR stem; ``width`` multiplies the 64/128/256/512 planes.

    ``init``: kaiming (default) or pytorch (the paper's reference code; see ``models.common.initialize``).
    """
    return ResNet(
        Bottleneck, (3, 4, 6, 3), num_classes, in_channels, _width(width), "cifar", check_init(init)
    )


@register_model(
    "resnet50_imagenet", "ResNet-50 (He et al. 2016), ImageNet stem: 7×7 conv stride 2 + max-pool"
)
def resnet50_imagenet(
    *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, init: str = "kaiming"
) -> nn.Module:
    """ResNet-50 (He et al. 2016) as torchvision builds it (25.56M parameters with 1000 classes)."""
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes,
        in_channels,
        check_positive("width", width),
        "imagenet",
        check_init(init),
    )
