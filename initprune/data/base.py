"""What a dataset module returns, and where datasets are looked for on disk."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InitpruneError

DATA_ENV = "INITPRUNE_DATA"


@dataclass
class Source:
    """A dataset as read from disk, before the validation hold-out and the move to the device.

    ``train`` and ``test`` are :class:`~initprune.data.loader.TensorData` on the CPU or
    :class:`~initprune.data.folders.ImageFiles`. Token data (text) has ``input_shape`` (length,) and empty
    ``mean``/``std`` (no normalization); a ``train`` with ``groups`` is held out by whole groups.
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
    stratify: bool = False  # hold the validation split out per class (in proportion to each class)


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/initprune/<name>`` (``~/.cache/initprune/<name>`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "initprune" / name


def candidate_dirs(
    name: str, data_dir: str | os.PathLike | None, extra: Sequence[str | os.PathLike] = ()
) -> list[Path]:
    """Folders to search, in order. A given ``data_dir`` is the only place read: ``data_dir`` and
    ``data_dir/<name>``, nothing else, so that a run never reads other files than the ones it was pointed
    at. Without it: ``$INITPRUNE_DATA`` and ``$INITPRUNE_DATA/<name>`` if set, then ``extra``, then the
    user cache."""
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        return [base, base / name]
    roots: list[Path] = []
    given = os.environ.get(DATA_ENV) or None
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
    """The folders searched, each missing one marked as such."""
    return ", ".join(str(d) if d.is_dir() else f"{d} (no such folder)" for d in dirs)


def check_data_dir(data_dir: str | os.PathLike | None, how: str = "") -> None:
    """Raise if a given ``data_dir`` is not an existing folder (a typo must not send a run elsewhere);
    ``how`` says how to get the dataset."""
    if data_dir is None:
        return
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise InitpruneError(
            f"data_dir {str(data_dir)!r} {what}; a given data_dir is the only place a dataset is read from: "
            f"pass the folder that holds the dataset's files, or leave data_dir out to use the default "
            f"places{'. ' + how if how else ''}"
        )
