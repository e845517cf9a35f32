"""Tiny models and data shared by the tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# The tests use tiny tensors, for which one thread is fastest and immune to a busy machine.
torch.set_num_threads(1)


def tiny_mlp(activation: type[nn.Module] = nn.Tanh, classes: int = 3) -> nn.Sequential:
    """6 → 5 → 4 → classes; the last Linear is the classifier."""
    return nn.Sequential(nn.Linear(6, 5), activation(), nn.Linear(5, 4), activation(), nn.Linear(4, classes))


def tiny_convnet(classes: int = 3) -> nn.Sequential:
    """Conv + BatchNorm + ReLU + max-pool, a grouped conv, then two Linear layers."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
        nn.Tanh(),
        nn.Linear(5, classes),
    )


def randomize_bn(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


@pytest.fixture
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return tiny_mlp().double()


@pytest.fixture
def convnet() -> nn.Module:
    torch.manual_seed(0)
    model = tiny_convnet().double()
    randomize_bn(model, torch.Generator().manual_seed(1))
    return model


@pytest.fixture
def mlp_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    return [(x[:5], y[:5]), (x[5:], y[5:])]


@pytest.fixture
def conv_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 2, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    return [(x[:4], y[:4]), (x[4:], y[4:])]
