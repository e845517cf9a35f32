"""Means over seeds, written one way in every table (a sweep's ``summary.md``, ``initprune report``).

Accuracies are percentages with two decimals; ``m ± s`` gives the mean and the sample standard deviation
(n − 1) over seeds; a single run has no ±, since one value has no spread; ``(n=k)`` follows where fewer than
three runs made the number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SHOW_N_BELOW = 3
CONVENTION = "mean ± std over seeds, n shown where < 3"


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample std) of ``values``; the std is None for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std of no values")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std


def mean_std_text(mean: float, std: float | None, n: int, scale: float = 100.0, digits: int = 2) -> str:
    """``"m ± s"`` (``"m"`` for one value) in units of ``1 / scale``, with ``" (n=k)"`` where k < 3."""
    text = f"{scale * mean:.{digits}f}"
    if n > 1 and std is not None:
        text += f" ± {scale * std:.{digits}f}"
    return text + (f" (n={n})" if n < SHOW_N_BELOW else "")
