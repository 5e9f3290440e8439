"""The statistics the study's summary, findings and reports use, in one place (SciPy underneath)."""

from __future__ import annotations

import math

import numpy as np

from ..summary import t975


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and its 95 % interval (t distribution) over independent runs."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, m, m
    half = t975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m, m - half, m + half


def mean_ci_with(values, common_se: float) -> tuple[float, float, float]:
    """As mean_ci, widened by an error common to every run (the idle power's, which repeating runs
    does not average away): the two half-widths added in quadrature, the common one at 1.96."""
    m, lo, hi = mean_ci(values)
    half = math.hypot((hi - lo) / 2, 1.959963984540054 * common_se)
    return m, m - half, m + half


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
