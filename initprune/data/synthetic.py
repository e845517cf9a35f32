"""Synthetic data: Gaussian inputs labelled by a fixed random linear map, so that a model can learn it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InitpruneError
from .base import Source
from .loader import TensorData


def make_synthetic(
    num_classes: int = 10,
    input_shape: Sequence[int] = (3, 32, 32),
    train_size: int = 2048,
    test_size: int = 512,
    data_seed: int = 0,
) -> Source:
    """Inputs ``x ~ N(0, 1)`` of shape ``input_shape``; label ``argmax(W x)`` with a fixed Gaussian ``W``.

    Everything follows from ``data_seed`` (the split seed of ``load_dataset`` only chooses the validation
    hold-out). The label of an input is a deterministic linear function of it, so accuracy well above
    chance is reachable in a few steps; classes are balanced in expectation by symmetry.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InitpruneError(f"input_shape must be (C, H, W) of positive sizes, got {tuple(input_shape)!r}")
    for key, value, low in (
        ("num_classes", num_classes, 2),
        ("train_size", train_size, 1),
        ("test_size", test_size, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InitpruneError(f"synthetic {key} must be an integer >= {low}, got {value!r}")
    generator = torch.Generator().manual_seed(int(data_seed))
    dim = shape[0] * shape[1] * shape[2]
    weight = torch.randn(dim, num_classes, generator=generator) / dim**0.5

    def draw(n: int) -> TensorData:
        x = torch.randn(n, *shape, generator=generator)
        return TensorData(x, (x.flatten(1) @ weight).argmax(1))

    return Source(
        train=draw(train_size),
        test=draw(test_size),
        num_classes=num_classes,
        input_shape=shape,  # type: ignore[arg-type]
        mean=(0.0,) * shape[0],
        std=(1.0,) * shape[0],
        augmentation="none",
        classes=[str(c) for c in range(num_classes)],
    )
