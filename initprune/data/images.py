"""Image files on disk: a Dataset decoding them with PIL, and a loader feeding the device from workers.

A sample decodes to a uint8 ``(3, H, W)`` tensor, so workers pass a quarter of the bytes of floats; the
loader normalizes (and, for fixed-size images, crops and flips) on the device in batch, as the tensor
loader does. Random choices made in PIL (ImageNet's random resized crop and flip) come from a generator
seeded by (epoch seed, sample index), so batches do not depend on the number of workers.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import InitpruneError
from .loader import BatchTransform, EpochLoader, TensorData, epoch_seed

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp")
STYLES = ("fixed", "imagenet")


def default_workers() -> int:
    """Worker processes for decoding images: ``min(4, cpu count)``."""
    return min(4, os.cpu_count() or 1)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted(
            Path(e.path) for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )


def random_resized_crop(
    img: Image.Image,
    rng: random.Random,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """The (left, top, width, height) box of torchvision's RandomResizedCrop, drawn from ``rng``."""
    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    # Fallback: the whole image, trimmed to the nearest allowed aspect ratio, centered.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class ImageFiles(torch.utils.data.Dataset):
    """``(path, label)`` samples decoded with PIL to uint8 ``(3, size, size)`` tensors.

    ``style='fixed'``: the image, resized to ``image_size`` only if it is not that size already (crop and
    flip happen on the device). ``style='imagenet'``: in ``mode='train'`` a random resized crop to
    ``image_size`` and a horizontal flip; in ``mode='eval'`` a resize of the shorter side to
    ``resize_size`` and a center crop of ``image_size``.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        *,
        style: str = "fixed",
        mode: str = "eval",
        image_size: int = 64,
        resize_size: int | None = None,
    ) -> None:
        if style not in STYLES or mode not in ("train", "eval"):
            raise InitpruneError(f"bad image style/mode {style!r}/{mode!r}")
        self.samples = list(samples)
        self.targets = torch.tensor([label for _, label in self.samples], dtype=torch.long)
        self.style, self.mode = style, mode
        self.image_size = int(image_size)
        self.resize_size = int(resize_size) if resize_size else round(self.image_size / 0.875)
        self.seed = 0  # set per epoch by the loader

    def __len__(self) -> int:
        return len(self.samples)

    def with_mode(self, mode: str) -> ImageFiles:
        return self.subset(None, mode)

    def subset(self, indices: Tensor | None, mode: str | None = None) -> ImageFiles:
        samples = self.samples if indices is None else [self.samples[i] for i in indices.tolist()]
        return ImageFiles(
            samples,
            style=self.style,
            mode=mode or self.mode,
            image_size=self.image_size,
            resize_size=self.resize_size,
        )

    def load(self, index: int) -> Image.Image:
        path = self.samples[index][0]
        try:
            with Image.open(path) as img:
                if self.style == "imagenet" and self.mode == "eval":
                    img.draft("RGB", (self.resize_size, self.resize_size))  # JPEG DCT scaling: faster decode
                return img.convert("RGB")
        except (OSError, ValueError) as e:
            raise InitpruneError(f"cannot decode image {path}: {e}") from None

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        img = self.load(index)
        size = self.image_size
        bilinear = Image.Resampling.BILINEAR
        if self.style == "fixed":
            if img.size != (size, size):
                img = img.resize((size, size), bilinear)
        elif self.mode == "train":
            rng = random.Random(f"{self.seed}:{index}")
            left, top, w, h = random_resized_crop(img, rng)
            img = img.resize((size, size), bilinear, box=(left, top, left + w, top + h))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            w, h = img.size
            short = self.resize_size
            new = (short, max(1, round(h * short / w))) if w <= h else (max(1, round(w * short / h)), short)
            img = img.resize(new, bilinear)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            img = img.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        return pixels.permute(2, 0, 1).contiguous(), self.samples[index][1]


def decode_all(data: ImageFiles, num_workers: int | None = None, batch_size: int = 256) -> TensorData:
    """Every image of ``data``, in order and in its mode, decoded into one uint8 :class:`TensorData` (CPU)."""
    workers = default_workers() if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers)
    images = [x for x, _ in loader]
    return TensorData(
        torch.cat(images) if images else torch.zeros(0, 3, 1, 1, dtype=torch.uint8), data.targets
    )


class FolderLoader(EpochLoader):
    """Batches ``(inputs, targets)`` on ``device`` from an :class:`ImageFiles`, decoded by worker processes.

    Same contract as :class:`~initprune.data.loader.TensorLoader`: each ``iter()`` is one epoch whose
    order and augmentation are drawn from ``(seed, epoch)``.
    """

    def __init__(
        self,
        data: ImageFiles,
        batch_size: int,
        *,
        transform: BatchTransform,
        device: torch.device | str,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(data, batch_size, seed, drop_last)
        self.transform, self.device = transform, torch.device(device)
        self.shuffle = bool(shuffle)
        self.num_workers = default_workers() if num_workers is None else int(num_workers)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        seed = epoch_seed(self.seed, self.epoch)
        self.epoch += 1
        generator = torch.Generator().manual_seed(seed)
        self.data.seed = seed
        batching: dict = {"batch_size": self.batch_size, "shuffle": self.shuffle, "drop_last": self.drop_last}
        if self.world_size > 1:
            # The order one process would draw (the same generator calls), cut into this rank's parts.
            order = (
                torch.utils.data.RandomSampler(self.data, generator=generator)
                if self.shuffle
                else torch.utils.data.SequentialSampler(self.data)
            )
            batching = {"batch_sampler": _RankBatches(self, order)}
        loader = torch.utils.data.DataLoader(
            self.data,
            **batching,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        params = None
        if self.transform.augments:
            params = self.transform.draw(len(self.data), generator).to(self.device)
        for i, (x, y) in enumerate(loader):
            lo, hi = self.part(i * self.batch_size, i * self.batch_size + self.global_batch_size(i))
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield self.transform(x, None if params is None else params[lo:hi]), y


class _RankBatches(torch.utils.data.Sampler):
    """The global batches of ``order`` (as ``BatchSampler`` makes them), each cut to the loader's part."""

    def __init__(self, loader: FolderLoader, order: torch.utils.data.Sampler) -> None:
        self.loader = loader
        self.batches = torch.utils.data.BatchSampler(order, loader.batch_size, loader.drop_last)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            a, b = self.loader.part(0, len(batch))
            yield batch[a:b]
