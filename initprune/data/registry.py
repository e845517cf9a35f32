"""The dataset registry: :func:`register_dataset`, :func:`datasets`, and the built-in datasets."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    loss: str = "cross_entropy"  # the loss its targets take: cross_entropy or token_cross_entropy
    inputs: str = "images"  # what its samples are: images (C, H, W) or tokens (L,) integer ids


REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    description: str,
    build: Callable[..., Source],
    train_size: int | Callable[[dict[str, Any]], int] | None = None,
    how: str = "",
    loss: str = "cross_entropy",
    inputs: str = "images",
) -> None:
    """Add a dataset: ``build(data_dir, **options)`` returns a :class:`~initprune.data.base.Source`;
    its keyword parameters after ``data_dir`` (with their defaults) are the dataset's options.
    ``train_size`` (the training set's size, or a function of the options giving it) lets
    :func:`check_dataset_settings` check ``val_size`` without reading the data; ``how`` says how to get
    the files; ``loss`` the loss its targets take (``token_cross_entropy`` for per-token targets), what
    ``initprune run`` scores and trains with unless told otherwise; ``inputs`` what its samples are
    (``images`` or ``tokens``), which a model must take."""
    params = list(inspect.signature(build).parameters.values())[1:]
    options = {p.name: p.default for p in params}
    REGISTRY[name] = DatasetSpec(name, description, build, options, train_size, how, loss, inputs)


def datasets() -> dict[str, str]:
    """Every registered dataset name with a one-line description."""
    return {name: spec.description for name, spec in REGISTRY.items()}


def _fashion(data_dir, download: bool = True) -> Source:
    return idx.load_idx_family("fashion_mnist", data_dir, download)


def _mnist(data_dir, download: bool = True) -> Source:
    return idx.load_idx_family("mnist", data_dir, download)


def _cifar10(data_dir) -> Source:
    return cifar.load_cifar("cifar10", data_dir)


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
)
register_dataset(
    "mnist",
    "MNIST: 28×28 grey handwritten digits, 10 classes, 60k/10k (IDX)",
    _mnist,
    60000,
    idx.how_to_get("mnist"),
)
register_dataset(
    "cifar10",
    "CIFAR-10: 32×32 colour images, 10 classes, 50k/10k (python pickles)",
    _cifar10,
    50000,
    cifar.how_to_get("cifar10"),
)
register_dataset(
    "cifar100",
    "CIFAR-100: 32×32 colour images, 100 classes, 50k/10k (python pickles)",
    _cifar100,
    50000,
    cifar.how_to_get("cifar100"),
)
register_dataset(
    "tinyimagenet",
    "TinyImageNet-200: 64×64 colour images, 200 classes, 100k/10k (image folders; official val as test)",
    folders.load_tinyimagenet,
    100000,
    f"Download {folders.TINY_URL} and unzip it into your data folder",
)
register_dataset(
    "imagenet",
    "ImageNet ILSVRC-2012: 1000 classes, 224×224 crops (image folders train/, val/)",
    folders.load_imagenet,
    how="Get ILSVRC-2012 from https://image-net.org/download.php and extract train/ and val/ (one folder "
    "per class) into your data folder",
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
    loss="token_cross_entropy",
    inputs="tokens",
)
register_dataset(
    "fortunes_topic",
    "Fortunes topic: a text's topic file from its first seq_len=128 bytes (topics with >= min_texts=300 "
    "texts; split by text, stratified)",
    text.load_fortunes_topic,
    how=text.HOW,
    inputs="tokens",
)
