"""Paired statistics: Student's t distribution computed exactly (no SciPy), the paired t-interval and
test, and p-value corrections for multiple comparisons (Holm, Bonferroni).

For paired differences d_1..d_n (the same seed, two settings):

    mean d̄ = (1/n) Σ d_i,   s = sqrt(Σ (d_i − d̄)² / (n − 1)),   t = d̄ / (s / √n),
    95 % interval d̄ ± t_{0.975, n−1} · s / √n,   p = 2 · (1 − F_{n−1}(|t|))   (two-sided),

with F_ν the distribution function of Student's t, I the regularized incomplete beta function:
F_ν(t) = 1 − ½ I_{ν/(ν+t²)}(ν/2, ½) for t ≥ 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InitpruneError, unknown_choice

CORRECTIONS = ("holm", "bonferroni", "none")


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta fraction did not converge for a={a}, b={b}, x={x}")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b), for a, b > 0 and x in
    [0, 1] (continued fraction, Numerical Recipes §6.4)."""
    if not 0.0 <= x <= 1.0:
        raise InitpruneError(f"incomplete_beta needs x in [0, 1], got {x!r}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """F_ν(t) = P(T ≤ t) of Student's t with ν = ``df`` > 0 degrees of freedom:
    1 − ½ I_{ν/(ν+t²)}(ν/2, ½) for t ≥ 0, and F_ν(−t) = 1 − F_ν(t)."""
    if not df > 0:
        raise InitpruneError(f"degrees of freedom must be > 0, got {df!r}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom: the t with F_ν(t) = p, found by
    bisection on :func:`t_cdf` to machine precision (t_{0.975, 2} = 4.3027, t_{0.975, 4} = 2.7764)."""
    if not 0.0 < p < 1.0:
        raise InitpruneError(f"a quantile needs p in (0, 1), got {p!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return 0.5 * (low + high)


@dataclass
class PairedStats:
    """Summary of paired differences d_i: n, mean, sample std, 95 % t-interval, t and two-sided p."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    t: float
    p: float


def paired_stats(differences: Sequence[float], level: float = 0.95) -> PairedStats:
    """n, d̄, s, the ``level`` t-interval d̄ ± t_{(1+level)/2, n−1} s/√n, t = d̄/(s/√n) and the two-sided
    p-value 2(1 − F_{n−1}(|t|)) of paired differences. With n < 2: std, interval and t are NaN and p 1."""
    d = [float(v) for v in differences]
    n = len(d)
    if n == 0:
        raise InitpruneError("paired statistics need at least one difference, got none")
    mean = sum(d) / n
    if n < 2:
        return PairedStats(n, mean, math.nan, math.nan, math.nan, math.nan, 1.0)
    std = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    se = std / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    if se == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        t = mean / se
    p = 2.0 * (1.0 - t_cdf(abs(t), n - 1)) if not math.isnan(t) else 1.0
    return PairedStats(n, mean, std, mean - half, mean + half, t, min(1.0, p))


def adjust(p_values: Sequence[float], correction: str = "holm") -> list[float]:
    """p-values adjusted for the m = len(p_values) comparisons: Holm's step-down
    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)) over the ascending order, Bonferroni min(1, m p),
    or none."""
    if correction not in CORRECTIONS:
        raise unknown_choice("correction", correction, CORRECTIONS)
    m = len(p_values)
    if correction == "none":
        return [float(p) for p in p_values]
    if correction == "bonferroni":
        return [min(1.0, m * p) for p in p_values]
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out
