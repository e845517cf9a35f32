"""CIFAR-10 and CIFAR-100 from the python pickle batches of the official archives.

The batches are Python pickles: unpickling runs code chosen by whoever wrote the file, so only load files
from a trusted source (the official archives from https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InitpruneError
from .base import Source, candidate_dirs, looked_in
from .loader import TensorData

SETS = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", b"label_names"),
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "classes": 10,
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", b"fine_label_names"),
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "classes": 100,
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
}


def how_to_get(name: str) -> str:
    """How to get the CIFAR archive ``name``."""
    info = SETS[name]
    return f"Download {info['url']} and extract it (tar xzf) into your data folder"


def unpickle(path: Path) -> dict[bytes, Any]:
    """One batch file as its dict (byte-string keys). The file must be trusted: see the module docstring."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise InitpruneError(f"cannot read CIFAR batch {path}: {e}; the file is corrupt, delete it") from None
    if not isinstance(batch, dict):
        raise InitpruneError(f"{path} is not a CIFAR batch (a pickled dict), found {type(batch).__name__}")
    return batch


def read_batches(paths: list[Path], label_key: bytes) -> TensorData:
    """Concatenate batch files into (N, 3, 32, 32) uint8 images and long labels."""
    images, labels = [], []
    for path in paths:
        batch = unpickle(path)
        if b"data" not in batch or label_key not in batch:
            keys = sorted(k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in batch)
            raise InitpruneError(f"{path} lacks 'data' or {label_key.decode()!r}; its keys: {keys}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(batch[label_key]):
            raise InitpruneError(
                f"{path}: 'data' must be (N, 3072) with N = {len(batch[label_key])} labels, got {data.shape}"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return TensorData(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def locate(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """The folders :func:`load_cifar` reads ``name`` from, in order, each with whether it holds every
    batch file."""
    info = SETS[name]
    dirs = [x for d in candidate_dirs(name, data_dir) for x in (d, d / info["folder"])]
    return [(d, all((d / f).is_file() for f in info["train"] + info["test"])) for d in dirs]


def load_cifar(name: str, data_dir: str | os.PathLike | None, labels: str = "fine") -> Source:
    """Read CIFAR-10 or CIFAR-100 (``labels`` 'fine' or 'coarse' for CIFAR-100) from the first folder
    holding every batch file: ``data_dir`` itself, ``data_dir/<archive folder>``, ``data_dir/<name>/...``."""
    info = SETS[name]
    num_classes = info["classes"]
    label_key = b"labels"
    if name == "cifar100":
        if labels not in ("fine", "coarse"):
            raise InitpruneError(f"CIFAR-100 labels must be 'fine' or 'coarse', got {labels!r}")
        label_key = f"{labels}_labels".encode()
        num_classes = 100 if labels == "fine" else 20
    found = locate(name, data_dir)
    dirs, needed = [d for d, _ in found], info["train"] + info["test"]
    root = next((d for d, there in found if there), None)
    if root is None:
        raise InitpruneError(
            f"{info['title']} not found: looked for {info['folder']}/{{{', '.join(needed)}}} in "
            f"{looked_in(dirs)}. Download {info['url']} and extract it (tar xzf) into your data folder, then "
            f"pass data_dir=<that folder>. Those files are pickles: use only the official archive."
        )
    train = read_batches([root / f for f in info["train"]], label_key)
    test = read_batches([root / f for f in info["test"]], label_key)
    for split, part in (("train", train), ("test", test)):
        if len(part) and not 0 <= int(part.targets.min()) <= int(part.targets.max()) < num_classes:
            raise InitpruneError(f"{info['title']} {split} labels fall outside 0..{num_classes - 1}")
    classes: list[str] = []
    meta_file, meta_key = info["meta"]
    if labels == "coarse":
        meta_key = b"coarse_label_names"
    if (root / meta_file).is_file():
        names = unpickle(root / meta_file).get(meta_key, [])
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return Source(
        train=train,
        test=test,
        num_classes=num_classes,
        input_shape=(3, 32, 32),
        mean=info["mean"],
        std=info["std"],
        augmentation="crop_flip",
        classes=classes,
        root=root,
    )
