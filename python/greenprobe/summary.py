"""Per-label energy from repetition: the energy of calls shorter than the sensor's update period.

For one counter channel, each update window W_j = (u_{j-1}, u_j] has a measured energy dE_j. The time
x_jk that W_j spent inside marks of label k, and the time x_j0 outside any mark (idle), are known
exactly from the marks. Least squares on

    dE_j = P_0 * x_j0 + sum_k P_k * x_jk + e_j

gives the idle (baseline) power P_0 and the mean power P_k while in label k. Per call:
gross = P_k * mean duration, net of baseline = (P_k - P_0) * mean duration, with 95 % intervals from
the coefficients' standard errors (t distribution). This uses every counter update the marks
overlap, so thousands of 0.3 ms calls resolve under a 100 ms counter. A power sensor is fitted the
same way on the windows its readings average (regress_power). Marks of different labels are
assumed not to overlap (nested marks: summarise one level at a time).
"""

from __future__ import annotations

import numpy as np

from .attribution import Channel, choose_channels


def marked_time(starts: np.ndarray, ends: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Total time (ns) inside the union of [starts, ends] up to each instant t."""
    if starts.size == 0:
        return np.zeros(t.shape, dtype=np.float64)
    order = np.argsort(starts)
    s, e = starts[order].astype(np.float64), ends[order].astype(np.float64)
    e = np.maximum.accumulate(e)  # merge overlaps: union of intervals
    s = np.maximum(s, np.concatenate([[-np.inf], e[:-1]]))
    dur = np.clip(e - s, 0, None)
    before = np.concatenate([[0.0], np.cumsum(dur)])
    i = np.searchsorted(s, t, side="right") - 1
    ok = i >= 0
    ic = np.clip(i, 0, None)
    return np.where(ok, before[ic] + np.clip(t - s[ic], 0, dur[ic]), 0.0)


def expected_marked_time(starts, ends, lo: np.ndarray, hi: np.ndarray, points: int = 8) -> np.ndarray:
    """Mean of marked_time over each dating window [lo, hi]: the update moment is known only to lie
    in it, and using the expectation instead of one guess removes most of the errors-in-variables
    bias from the regression (regression calibration)."""
    frac = (np.arange(points) + 0.5) / points
    grid = lo[:, None].astype(np.float64) + (hi - lo)[:, None].astype(np.float64) * frac[None, :]
    return marked_time(starts, ends, grid.ravel()).reshape(grid.shape).mean(axis=1)


def regress(update_t_ns: np.ndarray, energy_j: np.ndarray, marks: dict[str, tuple[np.ndarray, np.ndarray]],
            group: int | None = None, window_lo: np.ndarray | None = None, window_hi: np.ndarray | None = None):
    """Fits idle and per-label power on a counter's update windows. Returns
    {label: (P, se, cov with P0)}, (P0, se0), dof.

    Windows are groups of ``group`` consecutive update periods: each update moment is known only to
    within its poll window [window_lo, window_hi], and that error in the regressors biases the slopes
    toward zero (errors-in-variables) by about var(error) / var(x); the marked time is therefore
    taken as its mean over the window, and longer windows make what is left negligible while
    keeping >= 100 windows.
    """
    if group is None:
        group = int(max(1, min(10, (update_t_ns.size - 1) // 100)))
    u = update_t_ns[::group].astype(np.float64)
    e = energy_j[::group]
    lo = u if window_lo is None else window_lo[::group].astype(np.float64)
    hi = u if window_hi is None else window_hi[::group].astype(np.float64)
    return fit_windows(u[:-1], lo[:-1], hi[:-1], u[1:], lo[1:], hi[1:], np.diff(e), marks)


def regress_power(update_t_ns: np.ndarray, power_w: np.ndarray, window_ns, marks, window_lo=None, window_hi=None):
    """The same fit on a power sensor: reading j is the mean power over the ``window_ns`` that end at
    its update (NVML's instant power averages ~25 ms of each 100 ms; a window may also be longer than
    the period), so its energy, reading x window, is regressed on the marked time inside that window.
    Only what the windows cover is observed: dithered calls make that an unbiased sample."""
    u = update_t_ns.astype(np.float64)
    w = np.broadcast_to(np.asarray(window_ns, dtype=np.float64), u.shape)
    lo = u if window_lo is None else window_lo.astype(np.float64)
    hi = u if window_hi is None else window_hi.astype(np.float64)
    return fit_windows(u - w, lo - w, hi - w, u, lo, hi, power_w * w * 1e-9, marks)


def fit_windows(a, a_lo, a_hi, b, b_lo, b_hi, energy_j, marks):
    """Least squares of each window's energy (a, b] on the time it spent in each label's marks
    and outside them; a and b are each known within [lo, hi]. HC1 covariance."""
    span = (b - a) * 1e-9
    labels = list(marks)
    cols = []
    inside = np.zeros_like(span)
    for k in labels:
        x = (expected_marked_time(marks[k][0], marks[k][1], b_lo, b_hi)
             - expected_marked_time(marks[k][0], marks[k][1], a_lo, a_hi)) * 1e-9
        cols.append(x)
        inside += x
    X = np.column_stack([np.clip(span - inside, 0, None)] + cols)
    keep = span > 0
    X, y = X[keep], energy_j[keep]
    dof = X.shape[0] - X.shape[1]
    if dof < 1:
        raise ValueError("too few sensor updates for the number of labels")
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    # heteroscedasticity-robust (HC1 sandwich) covariance: windows full of calls are noisier than idle ones
    bread = np.linalg.pinv(X.T @ X)
    meat = (X * (resid ** 2)[:, None]).T @ X
    cov = bread @ meat @ bread * (X.shape[0] / dof)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    return {k: (beta[i + 1], se[i + 1], cov[0, i + 1]) for i, k in enumerate(labels)}, (beta[0], se[0]), dof


def t975(dof: int) -> float:
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, dof))
    except ImportError:  # normal approximation, fine for the hundreds of windows this sees
        return 1.959963984540054 + (2.4 / dof if dof > 0 else 0.0)


def resolution_text(mean_dur_s: float, calls: int, period_ns: int, source: str, windows: int,
                    averaging_ns: int | None = None) -> str:
    """What the figure rests on, in words: direct per call, or statistical over many."""
    period_ms = period_ns / 1e6
    if averaging_ns is not None:
        return (f"statistical: {calls} calls of {mean_dur_s * 1e3:.3g} ms; power readings every {period_ms:.3g} ms "
                f"({source}), each the mean of {averaging_ns / 1e6:.3g} ms; mean per call from a regression over "
                f"{windows} readings (only the averaged windows are observed: dither the calls)")
    if mean_dur_s * 1e9 > period_ns:
        return (f"direct: calls ({mean_dur_s * 1e3:.3g} ms) outlast the {period_ms:.3g} ms update period "
                f"({source}); each call is bracketed by counter updates")
    return (f"statistical: {calls} calls of {mean_dur_s * 1e3:.3g} ms under a {period_ms:.3g} ms update period "
            f"({source}); mean per call from a regression over {windows} update windows, not per call")


def summarise(records: list, channels: list[Channel], baseline: list[dict] | None = None) -> list[dict]:
    """One row per (label, sensor, domain): counters where there are, else power readings.

    ``baseline``: rows of greenprobe.baseline.idle_power; where one matches the channel, the net
    figures subtract that measured idle power, else the regression's idle coefficient.
    """
    idle = {(b["sensor"], b["domain"]): b for b in baseline or []}
    by_label: dict[str, list] = {}
    for r in records:
        by_label.setdefault(r[0], []).append((r[1], r[2]))
    marks = {k: (np.array([a for a, _ in v], np.int64), np.array([b for _, b in v], np.int64))
             for k, v in by_label.items()}
    rows = []
    for ch in choose_channels(channels):
        u, e = ch.updates()
        lo, hi = ch.update_windows(u)
        period, source = ch.learned_update_period_ns()
        try:
            if ch.quantity == "energy":
                fits, (p0, se0), dof = regress(u, e, marks, window_lo=lo, window_hi=hi)
            else:
                window = ch.averaging_window_ns or period
                fits, (p0, se0), dof = regress_power(u, e, window, marks, window_lo=lo, window_hi=hi)
        except (ValueError, np.linalg.LinAlgError):
            continue
        q = t975(dof)
        measured = idle.get((ch.sensor, ch.domain))
        for label, (p, se, cov0) in fits.items():
            s, en = marks[label]
            dur = (en - s) * 1e-9
            mean_dur = float(dur.mean())
            gross = p * mean_dur
            if measured is not None:  # independent of this fit
                base, base_se, base_source = measured["power_w"], measured["power_w_se"], "idle-measured"
                se_net = float(np.hypot(se, base_se)) * mean_dur
            else:
                base, base_se, base_source = p0, se0, "regression"
                se_net = float(np.sqrt(max(se * se + se0 * se0 - 2 * cov0, 0.0))) * mean_dur
            net = (p - base) * mean_dur
            windows = int(dof + len(fits) + 1)
            rows.append({
                "label": label, "sensor": ch.sensor, "domain": ch.domain, "calls": int(dur.size),
                "time_s_mean": mean_dur, "energy_j_per_call": gross,
                "energy_j_per_call_low": gross - q * se * mean_dur, "energy_j_per_call_high": gross + q * se * mean_dur,
                "energy_j_per_call_net": net, "energy_j_per_call_net_low": net - q * se_net,
                "energy_j_per_call_net_high": net + q * se_net, "power_w": p, "baseline_power_w": base,
                "baseline_power_w_se": base_se, "baseline_source": base_source,
                "regression_idle_power_w": p0, "update_period_ns": period, "update_period_source": source,
                "windows": windows, "estimated": ch.estimated,
                "method": "direct" if ch.quantity == "energy" and mean_dur * 1e9 > period else "regression",
                "resolution": resolution_text(mean_dur, int(dur.size), period, source, windows,
                                              None if ch.quantity == "energy" else window),
            })
    return rows
