"""Progress: bars that show only on a terminal, and stage lines that show everywhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_bar(
    iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True
) -> tqdm:
    """A tqdm bar over ``iterable``, disabled unless ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))


def stage_line(text: str, enabled: bool = True) -> None:
    """One timestamped, flushed line on stdout for a stage of a run, on a terminal and in a log alike.

    On a terminal the line is written above the open bars (``tqdm.write``), so that bars and lines do not
    overwrite each other and the lines stay when the bars are gone."""
    if not enabled:
        return
    tqdm.write(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stdout)
    sys.stdout.flush()
