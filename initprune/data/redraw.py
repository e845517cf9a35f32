"""Scoring samples augmented afresh on every pass over them, as the paper's reference code draws them
(its scoring loader applies the training augmentation each time it is iterated, with an unseeded
generator, so GraSP's g and Hg and HTS's two passes see different views of the same images).

A reproduction option, never a default: the mask it gives cannot be reproduced from the settings.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .loader import BatchTransform

Batch = tuple[Tensor, Tensor]


class RedrawnBatches(list):
    """A list of ``(inputs, targets)`` batches whose every iteration draws new augmentation parameters
    for the same raw images (one draw per pass, from ``generator``: by default one seeded from the
    operating system's entropy). Indexing and ``len`` see the latest draw. ``redraws`` tells the scoring
    code to keep the object as it is instead of copying it into a plain list."""

    redraws = True

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        transform: BatchTransform,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if generator is None:
            generator = torch.Generator()
            generator.seed()  # unseeded: the reference code's draws
        self.images, self.targets, self.transform = images, targets, transform
        self.batch_size, self.generator = batch_size, generator
        self.draws = 0
        super().__init__(self._draw())

    def _draw(self) -> list[Batch]:
        params = self.transform.draw(len(self.targets), self.generator).to(self.images.device)
        x = self.transform(self.images, params)
        self.draws += 1
        if self.batch_size is None:
            return [(x, self.targets)]
        return list(zip(x.split(self.batch_size), self.targets.split(self.batch_size), strict=True))

    def __iter__(self) -> Iterator[Batch]:
        fresh = self._draw()
        super().__setitem__(slice(None), fresh)
        return iter(fresh)
