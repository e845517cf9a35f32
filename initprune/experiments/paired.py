"""Paired comparisons of runs: per-seed differences, paired 95 % t-intervals and verdicts corrected for
the number of comparisons (``initprune report --compare A B`` and ``--comparisons FILE``).

A comparison names two selectors, A and B (``criterion=hutch_pruner``, several joined by commas:
``criterion=hutch_pruner,warmup_batches=0``; a dotted key reads into a mapping:
``criterion_options.probes=1``), and filters shared by both (``sparsity=0.99``). Every run that matches A
is paired with the run that matches B and agrees with it in every other setting (the seed, and whatever
else the filters leave free; the criterion's options go with ``criterion`` when that is a selector key).
For the n pairs, d_i = metric(A_i) − metric(B_i) (in points for accuracies), and

    mean d̄ = (1/n) Σ d_i,   s = sqrt(Σ (d_i − d̄)² / (n − 1)),   t = d̄ / (s / √n),
    95 % interval d̄ ± t_{0.975, n−1} · s / √n,   p = 2 · (1 − F_{n−1}(|t|))   (two-sided paired t-test),

with F_ν the Student t distribution function, computed exactly from the regularized incomplete beta
function (:mod:`initprune.stats`). The claim "A is better than B" is **held** where the p-value,
adjusted for the number m of comparisons made together, is below α (default 0.05) and d̄ > 0, **not held**
where it is below α and d̄ < 0 (B is better), and **undecided** otherwise (and always with n < 2). For a
metric where lower is better (:func:`lower_is_better`: a loss, a perplexity, bits per byte, seconds) the
signs swap: A is better where d̄ < 0.
Adjustment (``correction``): ``holm`` (default; Holm 1979, step-down: the i-th smallest p-value is
multiplied by m − i + 1, then made non-decreasing, capped at 1), ``bonferroni`` (p · m, capped at 1) or
``none``. The intervals are the unadjusted 95 % intervals of each comparison. The correction runs within
each family of comparisons (``family``; ``initprune report`` makes each ``--comparisons`` file one family
when it is given several), so a pre-declared family per claim is not diluted by the others.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InitpruneError, unknown_choice
from ..stats import CORRECTIONS, adjust, paired_stats

VERDICTS = ("held", "not held", "undecided")
_LOWER_IS_BETTER = ("loss", "perplexity", "bits_per_byte", "seconds")
# settings that never pair runs: where or how a run ran
_UNPAIRED = {"out", "device", "data_dir"}
_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_.]*\s*=)")


# ---------------------------------------------------------------- selecting and pairing runs


def parse_selector(text: str | Mapping[str, Any], what: str = "selector") -> dict[str, Any]:
    """``"key=value,key=value"`` (values read as YAML: ``0.99`` a number, ``null``, ``true``) or a mapping,
    as {key: value}; a dotted key reads into a mapping setting (``criterion_options.probes=1``)."""
    if isinstance(text, Mapping):
        return {str(k): v for k, v in text.items()}
    if not isinstance(text, str) or not text.strip():
        raise InitpruneError(f"{what} must be KEY=VALUE[,KEY=VALUE...], got {text!r}")
    out: dict[str, Any] = {}
    for part in _SPLIT.split(text):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InitpruneError(f"{what} {text!r}: {part!r} is not KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value.strip()) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value.strip()
    return out


def _value(row: Mapping[str, Any], key: str) -> Any:
    head, _, rest = key.partition(".")
    value = row.get(head)
    for part in rest.split(".") if rest else []:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _text(value: Any) -> str:
    """One spelling per value: 0.99 and 0.990 alike, 1 and 1.0 alike, NaN (a setting left unset) null."""
    if isinstance(value, float) and math.isnan(value):
        value = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(round(float(value), 9))
    return json.dumps(value, sort_keys=True, default=str)


def matches(row: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
    return all(_text(_value(row, k)) == _text(v) for k, v in selector.items())


@dataclass
class Comparison:
    """One claim "A is better than B" on ``metric``: selectors ``a``, ``b``; filters ``where`` of both."""

    a: dict[str, Any]
    b: dict[str, Any]
    where: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    metric: str = "test_accuracy"
    family: str | None = None
    """The comparisons corrected together (:func:`compare`); ``None`` is one family of its own."""

    def label(self) -> str:
        if self.name:
            return self.name
        where = f" at {_spelled(self.where)}" if self.where else ""
        return f"{_spelled(self.a)} vs {_spelled(self.b)}{where}"


def _spelled(selector: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in selector.items())


def _pair_keys(rows: Iterable[Mapping[str, Any]], comparison: Comparison) -> list[str]:
    """The settings two runs must share to be a pair: every config key but the selectors' (and
    ``criterion_options`` with ``criterion``) and where a run ran."""
    free = {k.partition(".")[0] for k in (*comparison.a, *comparison.b)}
    if "criterion" in free:
        free.add("criterion_options")
    keys = {k for row in rows for k in row.get("_config_keys", ())} or {"seed"}
    return sorted(keys - free - _UNPAIRED)


def pair_runs(rows: Sequence[Mapping[str, Any]], comparison: Comparison) -> list[dict[str, Any]]:
    """The pairs of ``comparison``: [{"seed", "a", "b", "difference", "a_run", "b_run", "key"}], in seed
    order. Two runs of one side with the same pairing settings are an error that names both."""
    scale = 100.0 if "accuracy" in comparison.metric else 1.0
    chosen = [r for r in rows if matches(r, comparison.where)]
    sides = {
        "a": [r for r in chosen if matches(r, comparison.a)],
        "b": [r for r in chosen if matches(r, comparison.b)],
    }
    keys = _pair_keys(sides["a"] + sides["b"], comparison)
    indexed: dict[str, dict[str, Mapping[str, Any]]] = {"a": {}, "b": {}}
    for side, members in sides.items():
        for row in members:
            key = json.dumps({k: _text(_value(row, k)) for k in keys}, sort_keys=True)
            if key in indexed[side]:
                raise InitpruneError(
                    f"comparison {comparison.label()!r}: runs {indexed[side][key].get('run')!r} and "
                    f"{row.get('run')!r} both match side {side.upper()} with the same settings; add a filter "
                    "that tells them apart"
                )
            indexed[side][key] = row
    pairs = []
    for key in sorted(set(indexed["a"]) & set(indexed["b"])):
        ra, rb = indexed["a"][key], indexed["b"][key]
        va, vb = _number(ra, comparison.metric), _number(rb, comparison.metric)
        if va is None or vb is None:
            continue
        pairs.append(
            {"seed": ra.get("seed"), "a": scale * va, "b": scale * vb, "difference": scale * (va - vb),
             "a_run": ra.get("run"), "b_run": rb.get("run"), "key": json.loads(key)}
        )  # fmt: skip
    return sorted(pairs, key=_pair_order)


def _pair_order(pair: Mapping[str, Any]) -> tuple[str, float, str]:
    """Pairs by their other settings, then by seed as a number (0, 42, 123, not 0, 123, 42)."""
    others = {k: v for k, v in pair["key"].items() if k != "seed"}
    seed = pair["seed"]
    number = float(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else math.inf
    return json.dumps(others, sort_keys=True), number, str(seed)


def lower_is_better(metric: str) -> bool:
    """Whether a smaller ``metric`` is the better result: a loss, a perplexity, bits per byte or a time
    (``test_loss``, ``val_perplexity``, ``test_bits_per_byte``, ``scoring_seconds``)."""
    return metric.endswith(_LOWER_IS_BETTER)


def _number(row: Mapping[str, Any], metric: str) -> float | None:
    value = _value(row, metric)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def compare(
    rows: Sequence[Mapping[str, Any]],
    comparisons: Sequence[Comparison],
    *,
    correction: str = "holm",
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Every comparison's pairs, :class:`PairedStats`, adjusted p-value and verdict (module docstring).
    The correction is taken within each family (:attr:`Comparison.family`: the comparisons of one
    comparisons file, say), over all ``comparisons`` when none sets one. A comparison that pairs no runs
    is an error naming it."""
    if correction not in CORRECTIONS:
        raise unknown_choice("correction", correction, CORRECTIONS)
    if not 0.0 < alpha < 1.0:
        raise InitpruneError(f"alpha must be in (0, 1), got {alpha!r}")
    known = {k for row in rows for k in row if not k.startswith("_")}
    out = []
    for comparison in comparisons:
        for side, selector in (("A", comparison.a), ("B", comparison.b), ("where", comparison.where)):
            unknown = sorted(k for k in selector if k.partition(".")[0] not in known)
            if unknown:
                raise InitpruneError(
                    f"comparison {comparison.label()!r}: {side} names {', '.join(map(repr, unknown))}, which "
                    f"no run has; the runs' settings and results: {', '.join(sorted(known))}"
                )
        pairs = pair_runs(rows, comparison)
        if not pairs:
            raise InitpruneError(
                f"comparison {comparison.label()!r} pairs no runs: no run matching A has a run matching B "
                "with the same other settings (check the selectors and filters)"
            )
        stats = paired_stats([p["difference"] for p in pairs])
        varying = sorted(
            k for k in pairs[0]["key"] if k != "seed" and len({_text(p["key"][k]) for p in pairs}) > 1
        )
        out.append({"name": comparison.label(), "a": comparison.a, "b": comparison.b,
                    "where": comparison.where, "metric": comparison.metric, "family": comparison.family,
                    **stats.__dict__,
                    "seeds": [p["seed"] for p in pairs], "varying": varying, "pairs": pairs})  # fmt: skip
    families: dict[str | None, list[int]] = {}
    for i, comparison in enumerate(comparisons):
        families.setdefault(comparison.family, []).append(i)
    adjusted = [math.nan] * len(out)
    for members in families.values():
        for i, p in zip(members, adjust([out[i]["p"] for i in members], correction), strict=True):
            adjusted[i] = p
            out[i]["family_size"] = len(members)
    for c, p in zip(out, adjusted, strict=True):
        c["p_adjusted"] = p
        c["correction"] = correction
        c["alpha"] = alpha
        decided = c["n"] >= 2 and p < alpha
        a_better = c["mean"] < 0 if lower_is_better(c["metric"]) else c["mean"] > 0
        c["verdict"] = ("held" if a_better else "not held") if decided and c["mean"] != 0 else "undecided"
    return out


# ---------------------------------------------------------------- comparisons files and the report


def load_comparisons(path: str | Path) -> tuple[list[Comparison], dict[str, Any]]:
    """A comparisons file (YAML or JSON): ``comparisons: [{a, b, where?, name?, metric?}, ...]`` and
    optional ``where`` (filters of every comparison), ``metric``, ``correction``, ``alpha``. Returns the
    comparisons and the file's ``correction``/``alpha`` where it sets them."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InitpruneError(
            f"cannot read comparisons file {str(path)!r}: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("comparisons"), list):
        raise InitpruneError(f"comparisons file {str(path)!r} must hold a mapping with a list 'comparisons'")
    known = {"comparisons", "where", "metric", "correction", "alpha"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise InitpruneError(
            f"comparisons file {str(path)!r}: unknown key(s) {unknown}; valid: {sorted(known)}"
        )
    shared = parse_selector(spec["where"], "where") if spec.get("where") else {}
    metric = spec.get("metric", "test_accuracy")
    out = []
    for i, item in enumerate(spec["comparisons"]):
        if not isinstance(item, Mapping) or "a" not in item or "b" not in item:
            raise InitpruneError(f"comparisons file {str(path)!r}: comparison {i + 1} needs 'a' and 'b'")
        extra = sorted(set(item) - {"a", "b", "where", "name", "metric"})
        if extra:
            raise InitpruneError(
                f"comparisons file {str(path)!r}: comparison {i + 1} has unknown key(s) {extra}; "
                "valid: a, b, where, name, metric"
            )
        where = {**shared, **(parse_selector(item["where"], "where") if item.get("where") else {})}
        out.append(Comparison(parse_selector(item["a"], "a"), parse_selector(item["b"], "b"), where,
                              item.get("name"), item.get("metric", metric)))  # fmt: skip
    return out, {k: spec[k] for k in ("correction", "alpha") if k in spec}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def comparisons_json(results: Sequence[Mapping[str, Any]]) -> str:
    """The comparisons as JSON text (an infinite t or a missing interval as null)."""
    return json.dumps(_plain(list(results)), indent=2, default=str) + "\n"


def _fmt(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.{digits}f}"


def comparisons_markdown(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The comparisons as a markdown section: one row per comparison, then the per-seed differences."""
    if not results:
        return []
    first = results[0]
    how = {
        "holm": "Holm's step-down correction",
        "bonferroni": "Bonferroni's correction",
        "none": "no correction",
    }
    sizes: dict[str | None, int] = {}
    for r in results:
        sizes[r.get("family")] = sizes.get(r.get("family"), 0) + 1
    several = len(sizes) > 1
    scope = (
        f"the {len(results)} comparison(s)"
        if not several
        else "each family apart ("
        + "; ".join(f"{name or 'the command line'}: {m} comparison(s)" for name, m in sizes.items())
        + ")"
    )
    lines = [
        "## Paired comparisons",
        "",
        f"A − B per seed (runs paired by seed and every other setting); mean, paired 95 % t-interval, n; "
        f'verdict on "A is better than B" at α = {first["alpha"]:g} with {how[first["correction"]]} '
        f"for {scope}: held (adjusted p < α, A better), not held (adjusted p < α, "
        "B better), undecided (otherwise). Better: a larger mean A − B, or a smaller one for "
        + (", ".join(sorted({r["metric"] for r in results if lower_is_better(r["metric"])})) or "a loss")
        + " (lower is better).",
        "",
        "| comparison | n | mean A − B | 95 % interval | p | adjusted p | verdict |"
        + (" family |" if several else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if several else ""),
    ]
    for r in results:
        interval = "–" if r["n"] < 2 else f"{_fmt(r['low'])} to {_fmt(r['high'])}"
        note = f" (pairs span {', '.join(r['varying'])})" if r["varying"] else ""
        lines.append(
            f"| {r['name']}{note} | {r['n']} | {_fmt(r['mean'])} | {interval} | {r['p']:.3g} | "
            f"{r['p_adjusted']:.3g} | {r['verdict']} |"
            + (f" {r.get('family') or 'the command line'} |" if several else "")
        )
    lines += ["", "Per-seed differences (A − B):", ""]
    for r in results:
        cells = ", ".join(f"seed {p['seed']}: {_fmt(p['difference'])}" for p in r["pairs"])
        lines.append(f"- {r['name']}: {cells}")
    return lines
