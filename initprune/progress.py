"""Progress bars that show only on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_bar(
    iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True
) -> tqdm:
    """A tqdm bar over ``iterable``, disabled unless ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))
