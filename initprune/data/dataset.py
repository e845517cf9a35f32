"""A dataset loaded and split: :class:`DatasetSplits`, :func:`load_dataset`, :func:`scoring_batches`."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InitpruneError, suggest, unknown_choice
from .base import check_data_dir
from .images import FolderLoader, decode_all, default_workers
from .loader import BatchTransform, TensorData, TensorLoader, check_augmentation, epoch_seed
from .redraw import RedrawnBatches
from .registry import COMMON_OPTIONS, REGISTRY, DatasetSpec
from .splits import count, holdout_indices, per_class_indices


@dataclass
class DatasetSplits:
    """A dataset split into ``train`` / ``val`` / ``test`` (``val`` is None when ``val_size=0``).

    Splits are :class:`TensorData` on ``device`` (raw uint8 pixels, float values, or int64 token ids with
    ``input_shape`` (length,): text, passed to the model as they are) or :class:`ImageFiles`.
    ``num_classes`` is the number of classes, or the vocabulary for per-token targets.
    ``train_targets`` is a CPU LongTensor of the training labels, for samplers. ``augmentation`` is the
    on-device training augmentation (``none``, ``flip``, ``crop``, ``crop_flip``).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Any
    val: Any
    test: Any
    train_targets: Tensor
    device: torch.device
    augmentation: str = "none"
    crop_padding: int = 4
    num_workers: int = 0
    classes: tuple[str, ...] = ()
    root: Path | None = None  # the folder the files were read from (None for generated data)

    def split(self, split: str) -> Any:
        if split not in ("train", "val", "test"):
            raise unknown_choice("split", split, ("train", "val", "test"))
        data = getattr(self, split)
        if data is None:
            raise InitpruneError(f"{self.name} has no validation split: it was loaded with val_size=0")
        return data

    def batch_transform(self, augment: bool, dtype: torch.dtype = torch.float32) -> BatchTransform:
        """Normalization (and, with ``augment``, this dataset's on-device augmentation) on the device."""
        aug = self.augmentation if augment else "none"
        return BatchTransform(self.mean, self.std, self.device, aug, self.crop_padding, dtype)

    def loader(
        self,
        split: str = "train",
        batch_size: int = 512,
        shuffle: bool | None = None,
        augment: bool | None = None,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TensorLoader | FolderLoader:
        """Batches ``(inputs normalized, targets)`` on the device; ``shuffle`` and ``augment`` default to
        True for ``train`` and False otherwise."""
        data = self.split(split)
        shuffle = split == "train" if shuffle is None else shuffle
        augment = split == "train" if augment is None else augment
        if isinstance(data, TensorData):
            aug = self.augmentation if augment else "none"
            return TensorLoader(
                data, batch_size, shuffle=shuffle, augmentation=aug, mean=self.mean, std=self.std, seed=seed,
                drop_last=drop_last, padding=self.crop_padding, dtype=dtype,
            )  # fmt: skip
        return FolderLoader(
            data.with_mode("train" if augment else "eval"),
            batch_size,
            transform=self.batch_transform(augment, dtype),
            device=self.device,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            num_workers=self.num_workers if num_workers is None else num_workers,
        )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_size: int = 5000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **options: Any,
) -> DatasetSplits:
    """Load dataset ``name`` (see :func:`datasets`) and hold ``val_size`` training samples out by ``seed``.

    Files are looked for in ``data_dir`` (or ``$INITPRUNE_DATA`` when None) and ``<that>/<name>``, then in
    a dataset-specific system location (Fashion-MNIST's Debian package), then in
    ``~/.cache/initprune/<name>``; a missing dataset raises an error saying where it looked and how to get it.

    Common options: ``augmentation`` (the training augmentation, default per dataset: ``crop_flip`` for
    CIFAR and TinyImageNet, ``none`` otherwise), ``crop_padding`` (4), ``num_workers`` (folder datasets,
    default ``min(4, cpu count)``). Dataset options: fashion_mnist/mnist ``download``; cifar100 ``labels``
    ('fine'/'coarse'); tinyimagenet ``in_memory``; imagenet ``image_size``, ``resize_size``; synthetic
    ``num_classes``, ``input_shape``, ``train_size``, ``test_size``, ``data_seed``.
    """
    spec, valid = _spec_and_options(name, options)
    opts = {**valid, **options}
    num_workers = default_workers() if opts["num_workers"] is None else int(opts["num_workers"])
    build_opts = {k: opts[k] for k in spec.options}
    if "num_workers" in inspect.signature(spec.build).parameters:
        build_opts["num_workers"] = num_workers
    source = spec.build(data_dir, **build_opts)
    augmentation = check_augmentation(opts["augmentation"] or source.augmentation)
    if int(opts["crop_padding"]) < 0:
        raise InitpruneError(f"crop_padding must be >= 0, got {opts['crop_padding']!r}")
    device = torch.device(device)
    groups = getattr(source.train, "groups", None)
    strata = source.train.targets if source.stratify else None
    train_idx, val_idx = holdout_indices(len(source.train), val_size, seed, groups, strata)
    if isinstance(source.train, TensorData):
        train, val = source.train.subset(train_idx), source.train.subset(val_idx)
        train, val, test = train.to(device), val.to(device) if val_size else None, source.test.to(device)
    else:
        train = source.train.subset(train_idx, "train")
        val = source.train.subset(val_idx, "eval") if val_size else None
        test = source.test
    return DatasetSplits(
        name=name,
        num_classes=source.num_classes,
        input_shape=tuple(source.input_shape),  # type: ignore[arg-type]
        mean=tuple(source.mean),
        std=tuple(source.std),
        train=train,
        val=val,
        test=test,
        train_targets=source.train.targets.index_select(0, train_idx),
        device=device,
        augmentation=augmentation,
        crop_padding=int(opts["crop_padding"]),
        num_workers=num_workers,
        classes=tuple(source.classes),
        root=None if source.root is None else Path(source.root).resolve(),
    )


def _spec_and_options(name: str, options: dict[str, Any]) -> tuple[DatasetSpec, dict[str, Any]]:
    if name not in REGISTRY:
        raise unknown_choice("dataset", name, REGISTRY)
    spec = REGISTRY[name]
    valid = {**COMMON_OPTIONS, **spec.options}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        hint = suggest(unknown[0], valid)
        raise InitpruneError(f"unknown option(s) {unknown} for dataset {name!r}; {hint}")
    for key, value in options.items():  # an option whose default is a bool or an int takes only that
        kind = type(valid[key])
        if kind is bool and not isinstance(value, bool):
            raise InitpruneError(f"dataset option {key} of {name!r} must be true or false, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise InitpruneError(f"dataset option {key} of {name!r} must be an integer, got {value!r}")
    return spec, valid


def check_dataset_settings(
    name: str, data_dir: str | os.PathLike | None = None, val_size: int = 0, **options: Any
) -> None:
    """Check without reading any data what :func:`load_dataset` would refuse: an unknown dataset or
    option, a given ``data_dir`` that is not a folder, and a ``val_size`` that leaves no training data
    where the training set's size is known."""
    spec, valid = _spec_and_options(name, options)
    check_data_dir(data_dir, spec.how)
    size = spec.train_size(dict(valid, **options)) if callable(spec.train_size) else spec.train_size
    if isinstance(size, int) and isinstance(val_size, int) and val_size >= size:
        raise InitpruneError(
            f"val_size={val_size} leaves no training data: {name} has {size} training samples"
        )


SCORING_SEQUENCES = 64
"""Scoring samples of a language-modelling dataset (one target per token: no class to draw per)."""


def scoring_batches(
    splits: DatasetSplits,
    per_class: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    augment: bool = False,
    redraw: bool = False,
    sequences: int = SCORING_SEQUENCES,
) -> list[tuple[Tensor, Tensor]]:
    """``per_class × num_classes`` training samples (never val or test), ``per_class`` of each class, drawn
    by ``seed`` and shuffled, as a list of ``(inputs, targets)`` batches on the device (a single batch when
    ``batch_size`` is None). ``augment`` applies the training augmentation, drawn from ``seed`` too.

    ``redraw`` (the paper's reference code, not reproducible): the training augmentation is drawn afresh,
    by an unseeded generator, every time the batches are iterated (:class:`~.redraw.RedrawnBatches`);
    the samples are still chosen by ``seed``. It needs a dataset held as tensors.

    A dataset with per-token targets (``fortunes_lm``) has no class per sample: ``sequences`` training
    sequences (default :data:`SCORING_SEQUENCES`) are drawn by ``seed`` instead."""
    if splits.train_targets.dim() == 2:
        n = count(sequences, "sequences", 1)
        if n > splits.train_targets.shape[0]:
            raise InitpruneError(
                f"sequences={n} is more than the {splits.train_targets.shape[0]} training sequences"
            )
        chosen = torch.randperm(
            splits.train_targets.shape[0], generator=torch.Generator().manual_seed(int(seed))
        )[:n]
    else:
        chosen = per_class_indices(splits.train_targets, per_class, splits.num_classes, seed)
    data = splits.train
    if redraw:
        if not isinstance(data, TensorData):
            raise InitpruneError(
                f"redrawn scoring samples need {splits.name} held as tensors; its images are read from files "
                "(tinyimagenet: set the dataset option in_memory=true)"
            )
        if batch_size is not None and int(batch_size) < 1:
            raise InitpruneError(f"batch_size must be >= 1 or None, got {batch_size!r}")
        picked = data.subset(chosen)
        return RedrawnBatches(picked.images, picked.targets, splits.batch_transform(True), batch_size)
    if isinstance(data, TensorData):
        picked = data.subset(chosen)
    else:
        files = data.subset(chosen, "train" if augment else "eval")
        files.seed = epoch_seed(seed, 0)
        picked = decode_all(files, splits.num_workers).to(splits.device)
    transform = splits.batch_transform(augment)
    params = None
    if transform.augments:
        params = transform.draw(len(picked), torch.Generator().manual_seed(epoch_seed(seed, 1))).to(
            splits.device
        )
    x = transform(picked.images, params)
    if batch_size is None:
        return [(x, picked.targets)]
    if int(batch_size) < 1:
        raise InitpruneError(f"batch_size must be >= 1 or None, got {batch_size!r}")
    return list(zip(x.split(int(batch_size)), picked.targets.split(int(batch_size)), strict=True))
