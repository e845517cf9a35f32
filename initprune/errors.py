"""Errors and warnings raised by initprune."""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterable


class InitpruneError(ValueError):
    """Bad input: the message names the bad value and, where there are any, the valid ones."""


class LayerCollapseWarning(UserWarning):
    """A prunable layer was left with no weight, which cuts every path through the network."""


class DegenerateScoresWarning(UserWarning):
    """A criterion's scores are all equal, or all 0 in a layer: the mask there is the tie-break's, not the
    criterion's (a saturated bounded activation, dead units or a zero-initialized layer, typically)."""


# Up to this many valid names are listed in an error; a longer list is replaced by where to find it.
LISTED = 12


def _common_prefix(a: str, b: str) -> int:
    return sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], zip(a, b, strict=False)))


def suggest(value: object, valid: Iterable[object], listing: str | None = None, prefix: str = "") -> str:
    """What to say about ``value`` not being one of ``valid``: "did you mean 'x'?" for the closest valid
    name (difflib, for a typo), and the valid names where they are few (at most ``LISTED``) or where
    nothing is close and ``listing`` (where the full list is, e.g. "`initprune criteria` lists them") is
    not given. ``prefix`` is shown before each name (``--`` for flags) but not compared."""
    names = sorted(str(v) for v in valid)
    given = str(value)
    # the most similar name (difflib's ratio at least 0.6); among equals, the longest common prefix
    ranked = [(difflib.SequenceMatcher(None, given, n).ratio(), _common_prefix(given, n), n) for n in names]
    best = max(ranked, key=lambda r: (r[0], r[1], [-ord(c) for c in r[2]]), default=None)
    close = [best[2]] if best is not None and best[0] >= 0.6 else []
    parts = [f"did you mean {prefix + close[0]!r}?"] if close else []
    if len(names) <= LISTED or (not close and listing is None):
        parts.append(f"valid: {', '.join(prefix + n for n in names) or 'none'}")
    elif listing is not None:
        parts.append(f"({listing})" if close else listing)
    return " ".join(parts)


def unknown_choice(
    kind: str, value: object, valid: Iterable[str], listing: str | None = None
) -> InitpruneError:
    """Build the error for a name that is not one of ``valid``, with a suggestion for a typo."""
    return InitpruneError(f"unknown {kind} {value!r}; {suggest(value, valid, listing)}")


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float if it lies in [0, 1), else raise naming it."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise InitpruneError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= value < 1.0:
        raise InitpruneError(
            f"sparsity must be in [0, 1) (the fraction of prunable weights removed), got {sparsity!r}"
        )
    return value
