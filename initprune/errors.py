"""Errors and warnings raised by initprune."""

from __future__ import annotations

from collections.abc import Iterable


class InitpruneError(ValueError):
    """Bad input: the message names the bad value and, where there are any, the valid ones."""


class LayerCollapseWarning(UserWarning):
    """A prunable layer was left with no weight, which cuts every path through the network."""


class DegenerateScoresWarning(UserWarning):
    """A criterion's scores are all equal, or all 0 in a layer: the mask there is the tie-break's, not the
    criterion's (a saturated bounded activation, dead units or a zero-initialized layer, typically)."""


def unknown_choice(kind: str, value: object, valid: Iterable[str]) -> InitpruneError:
    """Build the error for a name that is not one of ``valid``."""
    choices = ", ".join(sorted(valid))
    return InitpruneError(f"unknown {kind} {value!r}; valid: {choices}")


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
