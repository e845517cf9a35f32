"""LeNet-300-100 and LeNet-5 (LeCun et al., "Gradient-based learning applied to document recognition",
Proc. IEEE 1998): the small networks of the pruning literature's MNIST-scale experiments."""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import InitpruneError
from .registry import register_model


class LeNet300(nn.Module):
    """LeNet-300-100: a fully connected 300-100 ReLU network on the flattened image.

    The first layer's size depends on the input, so the image side ``image_size`` is fixed when the model is
    built; an input of another size raises an error naming it. PyTorch's default Linear initialization.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)
        self.fc1 = nn.Linear(in_channels * image_size * image_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise InitpruneError(
                f"lenet300 was built for inputs of shape {self.input_shape}, got {tuple(x.shape[1:])}; "
                "pass image_size= (and in_channels=) to match the data"
            )
        x = x.flatten(1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling: conv 6@5×5 (padding 2) → pool → conv 16@5×5 → pool → 120 → 84.

    An adaptive average pool to 5×5 before the fully connected layers makes it take any input of side ≥ 12:
    on 28×28 (with the padding of the classic MNIST variant) and 32×32 inputs the feature map is already
    5×5 or 6×6. PyTorch's default initialization.
    """

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(5),
        )
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).flatten(1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


@register_model("lenet300", "LeNet-300-100 (LeCun et al. 1998): MLP 300-100 on the flattened image")
def lenet300(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 28) -> nn.Module:
    """LeNet-300-100 for ``image_size``×``image_size`` inputs (28 for MNIST/Fashion-MNIST, 32 for CIFAR)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise InitpruneError(f"image_size must be a positive integer, got {image_size!r}")
    return LeNet300(num_classes, in_channels, image_size)


@register_model("lenet5", "LeNet-5 (LeCun et al. 1998): 2 conv + 3 fc layers, ReLU, adaptive pooling")
def lenet5(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """LeNet-5 for any input of side at least 12."""
    return LeNet5(num_classes, in_channels)
