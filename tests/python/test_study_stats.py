"""The study's intervals over runs: where they can be (above zero for energy, time and rates) and
holding their 95 % coverage, shown over seeded simulations of few, skewed runs."""

from __future__ import annotations

import numpy as np
import pytest

from greenprobe.study.stats import mean_ci, mean_ci_with

# (name, draw n values, the true mean): what per-run figures look like, well and badly behaved
CASES = [
    ("log-normal, 5 % spread", lambda rng, n: rng.lognormal(0, 0.05, n), float(np.exp(0.05 ** 2 / 2))),
    ("log-normal, 30 % spread", lambda rng, n: rng.lognormal(0, 0.3, n), float(np.exp(0.3 ** 2 / 2))),
    ("log-normal, skewed (sigma 1)", lambda rng, n: rng.lognormal(0, 1.0, n), float(np.exp(0.5))),
    ("normal, 5 % spread", lambda rng, n: rng.normal(1, 0.05, n), 1.0),
    ("gamma, shape 4", lambda rng, n: rng.gamma(4, 0.25, n), 1.0),
]


@pytest.mark.parametrize("name,draw,mean", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("n", [3, 5, 10])
def test_a_positive_quantitys_interval_stays_above_zero_and_covers(name, draw, mean, n):
    rng = np.random.default_rng(n * 1000 + len(name))
    trials, covered, lowest = 4000, 0, np.inf
    for _ in range(trials):
        v = draw(rng, n)
        m, lo, hi = mean_ci(v, positive=True)
        assert lo <= m <= hi
        covered += lo <= mean <= hi
        lowest = min(lowest, lo)
    assert lowest > 0, "never below zero"
    # 4,000 trials: a 95 % interval's coverage lands within +-0.7 % of its truth 95 % of the time
    assert 0.92 <= covered / trials <= 0.98, f"{name}, {n} runs: coverage {covered / trials:.3f}"


def test_students_t_went_below_zero_where_this_does_not():
    """The quick study's case: three runs, one far from the others (its report showed
    [-4.16, 11.78] J)."""
    runs = [1.2, 1.5, 9.2]
    _, t_low, _ = mean_ci(runs)
    m, lo, hi = mean_ci(runs, positive=True)
    assert t_low < 0 < lo < m < hi


def test_a_run_at_zero_is_not_logged_the_interval_is_cut_at_zero():
    m, lo, hi = mean_ci([0.2, 0.0, 0.4], positive=True)
    _, t_lo, t_hi = mean_ci([0.2, 0.0, 0.4])
    assert lo == 0.0 <= m <= hi == pytest.approx(t_hi) and t_lo < 0


def test_a_net_figure_keeps_students_t_and_may_cross_zero():
    """Energy above idle: an estimate below zero says the work is indistinguishable from idle."""
    m, lo, hi = mean_ci([-1e-5, 2e-5, -3e-5])
    assert lo < m < 0 < hi


def test_the_common_error_widens_a_positive_interval_and_keeps_it_above_zero():
    runs = [1.0, 1.1, 0.9, 1.05]
    _, lo0, hi0 = mean_ci_with(runs, 0.0, positive=True)
    _, lo1, hi1 = mean_ci_with(runs, 0.2, positive=True)
    assert 0 < lo1 < lo0 and hi1 > hi0
    _, lo2, _ = mean_ci_with(runs, 5.0, positive=True)  # an idle error larger than the figure
    assert lo2 > 0
