"""The statistics the study's summary, findings and reports use, in one place (SciPy underneath)."""

from __future__ import annotations

import math

import numpy as np

from ..summary import t975


Z975 = 1.959963984540054


def mean_ci(values, positive: bool = False) -> tuple[float, float, float]:
    """Mean and its 95 % interval over independent runs.

    ``positive``: the quantity cannot be below zero (energy, time, throughput). Where every run's
    value is above zero, the interval is Cox's for the mean of a log-normal (the log scale's mean
    and variance, t quantiles): it stays above zero and holds its coverage when the runs are skewed,
    where Student's t across three runs went below zero (the quick study's [-4.16, 11.78] J).
    Where some run is at or below zero, Student's t, cut at zero: the quantity is there or above,
    so the cut loses no coverage. tests/python/test_study_stats.py shows the coverage over seeded
    simulations. Otherwise (``positive`` False: a net figure, energy above idle, whose estimate may
    fall below zero where the work is indistinguishable from idle): Student's t."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, m, m
    if positive and (v > 0).all():
        lo, hi = _cox(v, 0.0)
        return m, lo, hi
    half = t975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m, (max(m - half, min(0.0, m)) if positive else m - half), m + half


def mean_ci_with(values, common_se: float, positive: bool = False) -> tuple[float, float, float]:
    """As mean_ci, widened by an error common to every run (the idle power's, which repeating runs
    does not average away): the two half-widths added in quadrature, the common one at 1.96 (for a
    positive quantity on the log scale, as a relative error)."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean()) if v.size else float("nan")
    if positive and v.size >= 2 and (v > 0).all():
        lo, hi = _cox(v, common_se / m)
        return m, lo, hi
    m, lo, hi = mean_ci(values)
    half = math.hypot((hi - lo) / 2, Z975 * common_se)
    return m, (max(m - half, min(0.0, m)) if positive else m - half), m + half


def _cox(v: np.ndarray, common_rel: float) -> tuple[float, float]:
    """Cox's interval for the mean of positive values (log-normal): log(mean) = mu + s^2/2, its
    standard error sqrt(s^2/n + s^4/(2(n-1))), t quantiles; ``common_rel``, a relative error common
    to every value, added in quadrature on the log scale."""
    n = v.size
    logs = np.log(v)
    s2 = float(logs.var(ddof=1))
    centre = float(logs.mean()) + s2 / 2
    half = math.hypot(t975(n - 1) * math.sqrt(s2 / n + s2 * s2 / (2 * (n - 1))), Z975 * common_rel)
    return math.exp(centre - half), math.exp(centre + half)


def spearman(x, y) -> tuple[float, float]:
    """Spearman's rank correlation (average ranks for ties) and its p-value (SciPy); NaNs below 3
    points."""
    from scipy import stats

    if len(x) < 3:
        return float("nan"), float("nan")
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def welch(a: list, b: list) -> tuple[float, float, float, bool]:
    """Difference of means b - a, its 95 % interval (Welch's t, SciPy), and whether it excludes 0
    (significant at the 5 % level, two-sided)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(b.mean() - a.mean())
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        return diff, diff, diff, diff != 0
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    lo, hi = float(ci.low), float(ci.high)
    return diff, lo, hi, not (lo <= 0 <= hi)


def welch_ratio(a: list[float], b: list[float]) -> tuple[float, float, float, bool]:
    """mean(b) / mean(a) on the log scale: the ratio, its 95 % interval (Welch's t on the runs'
    logarithms, SciPy) and whether it excludes 1."""
    from scipy import stats

    la, lb = np.log(np.asarray(a, float)), np.log(np.asarray(b, float))
    if la.size < 2 or lb.size < 2:
        return float("nan"), float("nan"), float("nan"), False
    res = stats.ttest_ind(lb, la, equal_var=False)
    ci = res.confidence_interval(0.95)
    d = float(lb.mean() - la.mean())
    return math.exp(d), math.exp(ci.low), math.exp(ci.high), bool(ci.low > 0 or ci.high < 0)
