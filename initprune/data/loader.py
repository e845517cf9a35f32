"""On-device data: tensor datasets, batch normalization and augmentation, and a fast tensor loader.

The loader does no per-sample Python work: each epoch draws a permutation and the augmentation
parameters of every position from a seeded CPU generator, moves them to the device once, and every batch
is then an ``index_select`` plus one vectorized gather (crop and flip together) and a fused normalization.
Nothing in the batch loop reads a value back from the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized

import numpy as np
import torch
from torch import Tensor

from ..errors import InitpruneError, unknown_choice

AUGMENTATIONS = ("none", "flip", "crop", "crop_flip")


class TensorData(torch.utils.data.Dataset):
    """Inputs and integer targets held as two tensors (like ``TensorDataset``), on one device.

    Images: ``images`` is ``(N, C, H, W)``, uint8 (pixel values 0..255) or float (already on the
    normalization scale of ``mean``/``std``), and ``targets`` a ``(N,)`` LongTensor. Tokens (text):
    ``images`` is ``(N, L)`` int64 token ids, passed to the model as they are (no normalization, no
    augmentation), and ``targets`` ``(N,)`` classes or ``(N, L)`` next tokens (−100: not counted).
    ``groups`` (optional, ``(N,)``) names the unit a validation hold-out must keep whole (the block of
    texts a language-modelling window was cut from).
    """

    def __init__(self, images: Tensor, targets: Tensor, groups: Tensor | None = None) -> None:
        tokens = images.dim() == 2 and not images.is_floating_point() and images.dtype != torch.uint8
        shapes = (1, 2) if tokens else (1,)
        if (
            (images.dim() != 4 and not tokens)
            or targets.dim() not in shapes
            or images.shape[0] != targets.shape[0]
            or (groups is not None and tuple(groups.shape) != (images.shape[0],))
        ):
            raise InitpruneError(
                "inputs must be images (N, C, H, W) with targets (N,), or int64 tokens (N, L) with targets "
                f"(N,) or (N, L), got {tuple(images.shape)} ({images.dtype}) and {tuple(targets.shape)}"
            )
        self.images = images
        self.targets = targets.long()
        self.groups = groups

    @property
    def tokens(self) -> bool:
        """Whether the inputs are token ids (text) rather than images."""
        return self.images.dim() == 2

    @property
    def tensors(self) -> tuple[Tensor, Tensor]:
        return self.images, self.targets

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.targets[index]

    def subset(self, indices: Tensor) -> TensorData:
        """The samples at ``indices`` (a copy)."""
        groups = None if self.groups is None else self.groups.index_select(0, indices.to(self.groups.device))
        indices = indices.to(self.images.device)
        return TensorData(self.images.index_select(0, indices), self.targets.index_select(0, indices), groups)

    def to(self, device: torch.device | str) -> TensorData:
        """The same data on ``device`` (no copy when already there; ``groups`` stay on the CPU)."""
        return TensorData(self.images.to(device), self.targets.to(device), self.groups)


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, epoch)``, so that epochs can be replayed independently."""
    return int(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(1, np.uint64)[0] >> 1
    )


def check_augmentation(augmentation: str) -> str:
    """``augmentation`` if it is one of :data:`AUGMENTATIONS`, else an error listing them."""
    if augmentation not in AUGMENTATIONS:
        raise unknown_choice("augmentation", augmentation, AUGMENTATIONS)
    return augmentation


class BatchTransform:
    """Augment then normalize a raw batch on its device.

    Cropping pads the raw batch with ``padding`` zeros (black, as torchvision's ``RandomCrop(padding=4)``)
    and takes a window at a random offset; flipping mirrors the columns. Both are one gather driven by
    per-sample offsets, so the cost does not depend on the batch size in Python.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str,
        augmentation: str = "none",
        padding: int = 4,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.augmentation = check_augmentation(augmentation)
        if padding < 0:
            raise InitpruneError(f"crop padding must be >= 0, got {padding!r}")
        self.crop = augmentation in ("crop", "crop_flip")
        self.flip = augmentation in ("flip", "crop_flip")
        self.padding = int(padding) if self.crop else 0
        self.dtype = dtype
        mean_t = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        # x_norm = (x / 255 - mean) / std = x * scale + shift, computed in one fused pass.
        self.scale = (1.0 / std_t).to(device, dtype)
        self.scale_u8 = (1.0 / (255.0 * std_t)).to(device, dtype)
        self.shift = (-mean_t / std_t).to(device, dtype)

    @property
    def augments(self) -> bool:
        return self.crop or self.flip

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """Random parameters for ``n`` samples on the CPU: columns (row offset, column offset, flip)."""
        params = torch.zeros(n, 3, dtype=torch.long)
        if self.crop:
            params[:, :2] = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator)
        if self.flip:
            params[:, 2] = torch.randint(0, 2, (n,), generator=generator)
        return params

    def augment(self, raw: Tensor, params: Tensor) -> Tensor:
        """Crop and/or flip ``raw`` (B, C, H, W) by ``params`` (B, 3) on the device of ``raw``."""
        if not self.augments:
            return raw
        b, c, h, w = raw.shape
        p = self.padding
        padded = torch.nn.functional.pad(raw, (p, p, p, p)) if p else raw
        rows = params[:, 0:1] + torch.arange(h, device=raw.device)
        cols = params[:, 1:2] + torch.arange(w, device=raw.device)
        if self.flip:
            cols = torch.where(params[:, 2:3].bool(), cols.flip(1), cols)
        # One gather over flattened planes (faster than 4-way advanced indexing on CPU and GPU).
        flat = (rows.unsqueeze(2) * (w + 2 * p) + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
        return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)

    def normalize(self, raw: Tensor) -> Tensor:
        scale = self.scale_u8 if raw.dtype == torch.uint8 else self.scale
        return raw.to(self.dtype).mul_(scale).add_(self.shift)

    def __call__(self, raw: Tensor, params: Tensor | None = None) -> Tensor:
        if raw.dim() == 2 and not raw.is_floating_point() and raw.dtype != torch.uint8:
            return raw  # token ids: no normalization, no augmentation
        if params is not None:
            raw = self.augment(raw, params)
        return self.normalize(raw)


class EpochLoader:
    """What every initprune loader shares: batches of ``batch_size`` over ``data`` (the last one partial
    unless ``drop_last``), one epoch per ``iter()``, and ``set_epoch`` to replay an epoch.

    After :meth:`shard` (rank r of w processes) every batch is rank r's contiguous part of the global
    batch of ``batch_size`` that one process would yield: the same number of batches on every rank, and
    together the ranks see exactly one process's samples, in its order and with its augmentation.
    """

    def __init__(self, data: Sized, batch_size: int, seed: int, drop_last: bool) -> None:
        if int(batch_size) < 1:
            raise InitpruneError(f"batch_size must be >= 1, got {batch_size!r}")
        self.data = data
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch``."""
        self.epoch = int(epoch)

    def shard(self, rank: int, world_size: int) -> EpochLoader:
        """Yield rank ``rank``'s part of every global batch from now on (see the class docstring)."""
        if not 0 <= int(rank) < int(world_size):
            raise InitpruneError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        last = self.global_batch_size(len(self) - 1) if len(self) else 0
        if 0 < last < int(world_size):  # a rank would get an empty batch
            raise InitpruneError(
                f"the last batch holds {last} of {len(self.data)} samples, fewer than the {world_size} "
                f"processes; choose a batch size that leaves none or at least {world_size} samples over"
            )
        self.rank, self.world_size = int(rank), int(world_size)
        return self

    def global_batch_size(self, index: int) -> int:
        """The number of samples of global batch ``index`` over all ranks."""
        return min(self.batch_size, len(self.data) - index * self.batch_size)

    def part(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's positions ``[a, b)`` of the global batch at positions ``[lo, hi)``."""
        if self.world_size == 1:
            return lo, hi
        size = hi - lo
        return lo + size * self.rank // self.world_size, lo + size * (self.rank + 1) // self.world_size


class TensorLoader(EpochLoader):
    """Batches ``(inputs, targets)`` of a :class:`TensorData` on its device, normalized and augmented there.

    Each ``iter()`` is one epoch; epoch ``e`` draws its order and augmentation from ``(seed, e)``, so two
    loaders with the same seed give the same batches, and :meth:`set_epoch` replays any epoch.
    """

    def __init__(
        self,
        data: TensorData | tuple[Tensor, Tensor],
        batch_size: int = 512,
        *,
        shuffle: bool = True,
        augmentation: str = "none",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
        drop_last: bool = False,
        padding: int = 4,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(data, TensorData):
            data = TensorData(*data)
        super().__init__(data, batch_size, seed, drop_last)
        channels = 1 if data.tokens else data.images.shape[1]
        self.shuffle = bool(shuffle)
        self.transform = BatchTransform(
            mean if mean is not None else [0.0] * channels,
            std if std is not None else [1.0] * channels,
            data.images.device,
            augmentation,
            padding,
            dtype,
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, bs = len(self.data), self.batch_size
        device = self.data.images.device
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        self.epoch += 1
        order = torch.randperm(n, generator=generator).to(device) if self.shuffle else None
        params = self.transform.draw(n, generator).to(device) if self.transform.augments else None
        images, targets = self.data.tensors
        for i in range(len(self)):
            lo, hi = self.part(i * bs, min((i + 1) * bs, n))
            if order is None:
                x, y = images[lo:hi], targets[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = images.index_select(0, idx), targets.index_select(0, idx)
            yield self.transform(x, None if params is None else params[lo:hi]), y
