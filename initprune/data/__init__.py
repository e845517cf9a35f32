"""Datasets by name, split into train / validation / test, with fast on-device loaders.

>>> splits = load_dataset("fashion_mnist", val_size=5000, seed=0)
>>> for x, y in splits.loader("train", batch_size=512): ...
>>> batches = scoring_batches(splits, per_class=10, seed=0)

The validation split is held out of the official training set by a seeded permutation; the test split is
the official one, untouched. Small datasets live as tensors on the device (:class:`TensorLoader`); image
folders are read by worker processes (:class:`FolderLoader`).
"""

from .dataset import DatasetSplits, check_dataset_settings, load_dataset, scoring_batches
from .images import FolderLoader, ImageFiles
from .loader import TensorData, TensorLoader
from .registry import REGISTRY, DatasetSpec, dataset_locations, datasets, register_dataset

__all__ = [
    "REGISTRY",
    "DatasetSpec",
    "DatasetSplits",
    "FolderLoader",
    "ImageFiles",
    "TensorData",
    "TensorLoader",
    "check_dataset_settings",
    "dataset_locations",
    "datasets",
    "load_dataset",
    "register_dataset",
    "scoring_batches",
]
