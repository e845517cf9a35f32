"""What a dataset module returns, and where datasets are looked for on disk."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_ENV = "INITPRUNE_DATA"


@dataclass
class Source:
    """A dataset as read from disk, before the validation hold-out and the move to the device.

    ``train`` and ``test`` are :class:`~initprune.data.loader.TensorData` on the CPU or
    :class:`~initprune.data.folders.ImageFiles`.
    """

    train: Any
    test: Any
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: str
    classes: list[str] = field(default_factory=list)
    root: Path | None = None


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/initprune/<name>`` (``~/.cache/initprune/<name>`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "initprune" / name


def candidate_dirs(
    name: str, data_dir: str | os.PathLike | None, extra: Sequence[str | os.PathLike] = ()
) -> list[Path]:
    """Folders to search, in order: ``data_dir`` and ``data_dir/<name>`` (or ``$INITPRUNE_DATA`` and
    ``$INITPRUNE_DATA/<name>`` when ``data_dir`` is None), then ``extra``, then the user cache."""
    roots: list[Path] = []
    given = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if given is not None:
        base = Path(given).expanduser()
        roots += [base, base / name]
    roots += [Path(p) for p in extra]
    roots.append(cache_dir(name))
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def looked_in(dirs: Sequence[Path]) -> str:
    return ", ".join(str(d) for d in dirs)
