"""Per-layer densities taken from elsewhere: a file of layer name → density, or another run's
``result.json``. The criterion still ranks the weights inside each layer; only how many each layer keeps
comes from the given densities (an allocation transplant: SynFlow's layer densities filled by magnitude,
say). Layer l keeps k_l = round(d_l · n_l) weights, 0 where d_l = 0 (an emptied layer is transplanted as
it is), so a run's ``per_layer_density`` (kept / weights per layer) gives back its counts exactly."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import yaml

from .errors import InitpruneError

RESULT_FILE = "result.json"
SPARSITY_TOLERANCE = 1e-3
"""How far the sparsity the given densities make may lie from the asked sparsity (rounding of k per layer
and a source run whose achieved sparsity differs from its target by a few weights)."""


def read_layer_densities(source: str | Path) -> dict[str, float]:
    """{layer: density} from ``source``: a run folder (its ``result.json``'s ``per_layer_density``), a
    ``result.json``, or a YAML/JSON file mapping each prunable parameter name to its density in [0, 1]."""
    path = Path(source)
    if path.is_dir():
        if not (path / RESULT_FILE).is_file():
            raise InitpruneError(
                f"layer densities: folder {str(path)!r} has no {RESULT_FILE}; give a finished run's folder "
                "or a YAML/JSON file of layer: density"
            )
        path = path / RESULT_FILE
    if not path.is_file():
        raise InitpruneError(
            f"layer densities: {str(source)!r} does not exist (a run folder or a YAML/JSON file)"
        )
    try:
        values = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InitpruneError(
            f"layer densities: cannot read {str(path)!r}: {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(values, Mapping) and "per_layer_density" in values:  # a run's result.json
        values = values["per_layer_density"]
    if not isinstance(values, Mapping) or not values:
        raise InitpruneError(
            f"layer densities: {str(path)!r} must map layer names to densities (or be a run's {RESULT_FILE})"
        )
    out = {}
    for name, value in values.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0
        if not ok or math.isnan(float(value)):
            raise InitpruneError(
                f"layer densities: layer {name!r} has density {value!r} in {str(path)!r}; a density is a "
                "number in [0, 1]"
            )
        out[str(name)] = float(value)
    return out


def check_layer_densities(
    densities: Mapping[str, float], numels: Mapping[str, int], sparsity: float | None = None
) -> dict[str, int]:
    """The kept count k_l = round(d_l · n_l) of every prunable layer (``numels``: name → n_l), after
    checking that ``densities`` name exactly the prunable layers, each in [0, 1], keep at least one weight,
    and (with ``sparsity``) remove that fraction within :data:`SPARSITY_TOLERANCE`."""
    missing = [n for n in numels if n not in densities]
    extra = [n for n in densities if n not in numels]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing prunable layer(s) {', '.join(missing)}")
        if extra:
            parts.append(f"layer(s) that are not prunable here {', '.join(extra)}")
        raise InitpruneError(
            f"layer densities: {'; '.join(parts)}; the prunable layers are: {', '.join(numels)}"
        )
    bad = {n: d for n, d in densities.items() if not 0.0 <= d <= 1.0}
    if bad:
        raise InitpruneError(f"layer densities must be in [0, 1], got {bad}")
    kept = {n: round(densities[n] * numels[n]) for n in numels}
    total = sum(numels.values())
    if sum(kept.values()) == 0:
        raise InitpruneError("layer densities keep no weight at all")
    made = 1.0 - sum(kept.values()) / total
    if sparsity is not None and abs(made - sparsity) > SPARSITY_TOLERANCE:
        raise InitpruneError(
            f"layer densities make sparsity {made:.6f}, but sparsity {sparsity:g} was asked for; set the "
            f"sparsity to {made:.4g} (or give densities for {sparsity:g})"
        )
    return kept
