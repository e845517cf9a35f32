"""The points of a grid: every combination of the swept values, the folder each point runs in, and the
shard of the grid a process takes. Shared by the sweep (:mod:`.sweep`) and its launchers (:mod:`.launchers`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InitpruneError

__all__ = ["grid_points", "parse_shard", "point_folder", "value_label"]


def value_label(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (the last key varies fastest)."""
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], (list, tuple)) or not grid[key]:
            raise InitpruneError(f"grid key {key!r} needs a non-empty list of values, got {grid[key]!r}")
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def point_folder(point: Mapping[str, Any]) -> str:
    """The run folder of one grid point: ``key=value`` parts joined by commas."""
    return ",".join(f"{k}={value_label(v)}" for k, v in point.items()) or "run"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n; None → (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InitpruneError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise InitpruneError(f"shard {text!r} needs 0 <= i < n")
    return index, count
