"""Idle power from the windows a Probe measures before and after the work (``baseline_s``)."""

from __future__ import annotations

import math

import numpy as np

from .attribution import Channel, attribute

SQRT3 = math.sqrt(3.0)


def idle_power(windows: list[tuple[str, int, int]], channels: list[Channel]) -> list[dict]:
    """One row per (sensor, domain): before_w, after_w, power_w, power_w_se, seconds.

    power_w is the mean of the windows' powers. Its standard error counts the resolution bounds of
    each window's energy (as a uniform error: half-width / sqrt 3) and, when both halves exist,
    half their difference (a drift between before and after is an uncertainty of the idle level
    during the work, not noise that averages out).
    """
    if not windows:
        return []
    starts = np.array([w[1] for w in windows], np.int64)
    ends = np.array([w[2] for w in windows], np.int64)
    secs = (ends - starts) * 1e-9
    rows = []
    for res in attribute(starts, ends, channels):
        ch = res["channel"]
        ok = res["complete"] & (secs > 0)
        if not ok.any():
            continue
        power = res["energy_j"] / secs
        half = (res["energy_j_high"] - res["energy_j_low"]) / 2 / secs
        half = np.where(np.isfinite(half), half, 0.0)  # no ceiling to bound unseen power: no bound term
        if ch.quantity == "power":
            power, half, ok = _readings_inside(ch, starts, ends, power, half, ok)
        by = {}
        for (which, _, _), p, h, good in zip(windows, power, half, ok):
            if good:
                by.setdefault(which, []).append((p, h))
        means = {k: float(np.mean([p for p, _ in v])) for k, v in by.items()}
        p_all = float(np.mean(power[ok]))
        bounds_se = float(np.sqrt(np.mean(half[ok] ** 2)) / SQRT3 / math.sqrt(ok.sum()))
        drift = abs(means["after"] - means["before"]) / 2 if {"before", "after"} <= means.keys() else 0.0
        rows.append({
            "sensor": ch.sensor, "domain": ch.domain, "estimated": ch.estimated,
            "before_w": means.get("before"), "after_w": means.get("after"),
            "power_w": p_all, "power_w_se": math.hypot(bounds_se, drift), "seconds": float(secs[ok].sum()),
        })
    return rows


def _readings_inside(ch: Channel, starts, ends, power, half, ok):
    """A power reading averages a window before its update (25 ms to 1 s on NVML), so one taken
    just after the work began or ended still holds the work. Per idle window: the mean of the
    readings whose whole averaging window lies inside it, where there are any (the window must
    outlast update period + averaging window); integration otherwise."""
    reach = ch.nominal_update_period_ns + ch.averaging_window_ns
    use = ch.usable()
    t, w = ch.t_ns[use], ch.power_w[use]
    power, half, ok = power.copy(), half.copy(), ok.copy()
    for i, (a, b) in enumerate(zip(starts, ends)):
        inside = (t - reach >= a) & (t <= b)
        if inside.any():
            power[i] = float(w[inside].mean())
            half[i] = ch.resolution_w / 2
            ok[i] = True
    return power, half, ok
