"""The dataset registry: :func:`register_dataset`, :func:`datasets`, and the built-in datasets."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import unknown_choice
from . import cifar, folders, idx, synthetic, text
from .base import Source

COMMON_OPTIONS: dict[str, Any] = {"augmentation": None, "crop_padding": 4, "num_workers": None}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    build: Callable[..., Source]  # build(data_dir, **options) -> Source
    options: dict[str, Any]  # dataset-specific options and their defaults
    # The size of the official training set, or a function of the options giving it; None: unknown
    train_size: int | Callable[[dict[str, Any]], int] | None = None
    how: str = ""  # how to get the files
    # locate(data_dir) -> [(folder, holds the dataset)], the folders searched in order; None: no files
    locate: Callable[[Any], list[tuple[Path, bool]]] | None = None
    loss: str = "cross_entropy"  # the loss its targets take: cross_entropy or token_cross_entropy
    inputs: str = "images"  # what its samples are: images (C, H, W) or tokens (L,) integer ids


REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    description: str,
    build: Callable[..., Source],
    train_size: int | Callable[[dict[str, Any]], int] | None = None,
    how: str = "",
    locate: Callable[[Any], list[tuple[Path, bool]]] | None = None,
    loss: str = "cross_entropy",
    inputs: str = "images",
) -> None:
    """Add a dataset: ``build(data_dir, **options)`` returns a :class:`~initprune.data.base.Source`;
    its keyword parameters after ``data_dir`` (with their defaults) are the dataset's options.
    ``train_size`` (the training set's size, or a function of the options giving it) lets
    :func:`check_dataset_settings` check ``val_size`` without reading the data; ``how`` says how to get
    the files; ``locate(data_dir)`` lists the folders searched, in order, each with whether it holds the
    dataset (:func:`dataset_locations`); ``loss`` the loss its targets take (``token_cross_entropy`` for
    per-token targets), what ``initprune run`` scores and trains with unless told otherwise; ``inputs``
    what its samples are (``images`` or ``tokens``), which a model must take."""
    params = list(inspect.signature(build).parameters.values())[1:]
    options = {p.name: p.default for p in params}
    REGISTRY[name] = DatasetSpec(name, description, build, options, train_size, how, locate, loss, inputs)


def datasets() -> dict[str, str]:
    """Every registered dataset name with a one-line description."""
    return {name: spec.description for name, spec in REGISTRY.items()}


def dataset_locations(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]] | None:
    """Where dataset ``name`` is looked for, in order (``data_dir`` alone where given, else
    ``$INITPRUNE_DATA``, the system's folder and the user cache), each folder with whether it holds the
    dataset; None for a dataset without files (``synthetic``) or one registered without ``locate``."""
    if name not in REGISTRY:
        raise unknown_choice("dataset", name, REGISTRY)
    locate = REGISTRY[name].locate
    return None if locate is None else locate(data_dir)


def _fashion(data_dir, download: bool = True) -> Source:
    return idx.load_idx_family("fashion_mnist", data_dir, download)


def _mnist(data_dir, download: bool = True) -> Source:
    return idx.load_idx_family("mnist", data_dir, download)


# The paper's reference code normalizes with these std constants (not the datasets' own pixel std).
REFERENCE_STD = {"cifar10": (0.2023, 0.1994, 0.2010), "tinyimagenet": (0.276, 0.269, 0.282)}


def _reference_std(source: Source, name: str, reference_std: bool) -> Source:
    """``source`` with the reference code's std constants where ``reference_std`` (a bool: the registry
    checks the options' types)."""
    if reference_std:
        source.std = REFERENCE_STD[name]
    return source


def _cifar10(data_dir, reference_std: bool = False) -> Source:
    return _reference_std(cifar.load_cifar("cifar10", data_dir), "cifar10", reference_std)


def _tinyimagenet(
    data_dir, in_memory: bool = False, num_workers: int | None = None, reference_std: bool = False
) -> Source:
    source = folders.load_tinyimagenet(data_dir, in_memory=in_memory, num_workers=num_workers)
    return _reference_std(source, "tinyimagenet", reference_std)


def _cifar100(data_dir, labels: str = "fine") -> Source:
    return cifar.load_cifar("cifar100", data_dir, labels)


def _synthetic(
    data_dir, num_classes=10, input_shape=(3, 32, 32), train_size=10000, test_size=2000, data_seed=0
):
    return synthetic.make_synthetic(num_classes, input_shape, train_size, test_size, data_seed)


register_dataset(
    "fashion_mnist",
    "Fashion-MNIST: 28×28 grey clothing images, 10 classes, 60k/10k (IDX)",
    _fashion,
    60000,
    idx.how_to_get("fashion_mnist"),
    locate=functools.partial(idx.locate, "fashion_mnist"),
)
register_dataset(
    "mnist",
    "MNIST: 28×28 grey handwritten digits, 10 classes, 60k/10k (IDX)",
    _mnist,
    60000,
    idx.how_to_get("mnist"),
    locate=functools.partial(idx.locate, "mnist"),
)
register_dataset(
    "cifar10",
    "CIFAR-10: 32×32 colour images, 10 classes, 50k/10k (python pickles)",
    _cifar10,
    50000,
    cifar.how_to_get("cifar10"),
    locate=functools.partial(cifar.locate, "cifar10"),
)
register_dataset(
    "cifar100",
    "CIFAR-100: 32×32 colour images, 100 classes, 50k/10k (python pickles)",
    _cifar100,
    50000,
    cifar.how_to_get("cifar100"),
    locate=functools.partial(cifar.locate, "cifar100"),
)
register_dataset(
    "tinyimagenet",
    "TinyImageNet-200: 64×64 colour images, 200 classes, 100k/10k (image folders; official val as test)",
    _tinyimagenet,
    100000,
    f"Download {folders.TINY_URL} and unzip it into your data folder",
    locate=functools.partial(folders.locate, "tinyimagenet"),
)
register_dataset(
    "imagenet",
    "ImageNet ILSVRC-2012: 1000 classes, 224×224 crops (image folders train/, val/)",
    folders.load_imagenet,
    how="Get ILSVRC-2012 from https://image-net.org/download.php and extract train/ and val/ (one folder "
    "per class) into your data folder",
    locate=functools.partial(folders.locate, "imagenet"),
)
register_dataset(
    "synthetic",
    "Synthetic: Gaussian inputs labelled by a fixed random linear map (learnable)",
    _synthetic,
    lambda options: options["train_size"],
)
register_dataset(
    "fortunes_lm",
    "Fortunes LM: byte-level language modelling on Debian's fortunes texts (vocabulary 256, windows of "
    "seq_len=128 bytes cut from whole texts; train/val/test split by text)",
    text.load_fortunes_lm,
    how=text.HOW,
    locate=text.locate,
    loss="token_cross_entropy",
    inputs="tokens",
)
register_dataset(
    "fortunes_topic",
    "Fortunes topic: a text's topic file from its first seq_len=128 bytes (topics with >= min_texts=300 "
    "texts; split by text, stratified)",
    text.load_fortunes_topic,
    how=text.HOW,
    locate=text.locate,
    inputs="tokens",
)
