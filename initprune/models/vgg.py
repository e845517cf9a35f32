"""VGG-11/13/16/19 with BatchNorm and the CIFAR head (Simonyan & Zisserman, "Very Deep Convolutional
Networks for Large-Scale Image Recognition", ICLR 2015; BatchNorm from Ioffe & Szegedy 2015).

The CIFAR variant used by SNIP, GraSP and SynFlow: the 3×3 conv stack with five 2×2 max-pools, then global
average pooling to 1×1 and a single Linear classifier on the 512 channels (no 4096-wide fc layers).
"""

from __future__ import annotations

from torch import Tensor, nn

from .common import check_bool, check_init, check_positive, initialize, scaled
from .registry import Builder, register_model

# Output channels of each 3×3 conv; "M" is a 2×2 max-pool (configurations A, B, D, E of the paper).
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        *[64, 64, "M", 128, 128, "M"],
        *[256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    ],
}


class VGG(nn.Module):
    """VGG with BatchNorm: [conv3×3 → BN → ReLU]* with max-pools, global average pool, Linear.

    The max-pools use ``ceil_mode=True``: on 32×32 (and 64×64) inputs this is the usual floor pooling, and on
    28×28 inputs the maps go 28→14→7→4→2→1 instead of failing at the fifth pool (a 1×1 map pools to 1×1).
    The adaptive average pool to 1×1 then makes the classifier independent of the input size (64×64 inputs
    end at 2×2). Convolutions have no bias by default (BatchNorm follows each one, which cancels it).

    Initialization (torchvision's): Kaiming normal (fan_out, ReLU) convolutions, BatchNorm weight 1 and bias
    0, classifier N(0, 0.01²) with zero bias. ``init="pytorch"`` with ``conv_bias=True`` is the network of
    the paper's reference code instead (PyTorch's default initialization, convolutions with biases; see
    :func:`~initprune.models.common.initialize`).
    """

    def __init__(
        self,
        config: list[int | str],
        num_classes: int,
        in_channels: int,
        width: float,
        init: str = "kaiming",
        conv_bias: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                out = scaled(int(item), width)
                conv = nn.Conv2d(channels, out, 3, padding=1, bias=conv_bias)
                layers += [conv, nn.BatchNorm2d(out), nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        initialize(self, init, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _builder(name: str, depth: int) -> Builder:
    def build(
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        init: str = "kaiming",
        conv_bias: bool = False,
    ) -> nn.Module:
        return VGG(
            CONFIGS[name],
            num_classes,
            in_channels,
            check_positive("width", width),
            check_init(init),
            check_bool("conv_bias", conv_bias),
        )

    build.__name__ = name
    build.__doc__ = (
        f"VGG-{depth} with BatchNorm, CIFAR head (Simonyan & Zisserman 2015). ``width`` multiplies every "
        "conv's channel count (1.0 is the paper's network). ``init`` (kaiming or pytorch) and ``conv_bias`` "
        "reproduce the paper's reference code with init=pytorch, conv_bias=True (not the default: see "
        "``initprune.models.common.initialize``)."
    )
    return register_model(name, f"VGG-{depth} with BatchNorm, CIFAR head (Simonyan & Zisserman 2015)")(build)


vgg11 = _builder("vgg11", 11)
vgg13 = _builder("vgg13", 13)
vgg16 = _builder("vgg16", 16)
vgg19 = _builder("vgg19", 19)
