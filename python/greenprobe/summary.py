"""Per-label energy per call: the table that probe.summary(), labels.parquet and the daemon's
Summary return. The figures come from greenprobe.estimator (definitions, model and intervals are
written there and in docs/SCHEMA.md); this module lays them out, one row per (label, sensor, domain)
and one per label for the machine's ``total`` (sensor ``all``): the top-level domains of every
sensor added, nothing counted twice.
"""

from __future__ import annotations

import math

import numpy as np

from .attribution import Channel, choose_channels
from .estimator import Activity, estimate, t_quantile
from .topology import top_level

#: what the 95 % intervals aim at (a column of every row)
INTERVAL_TARGET = ("the energy these calls spent, per call (EWC autocorrelation-robust, Student t); for the "
                   "expected energy of a repeat, compare sessions or use the study's runs")


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


def t975(dof: int) -> float:
    """The 97.5 % Student t quantile (two-sided 95 %), exact."""
    return t_quantile(dof)


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


def summarise(marks, channels: list[Channel], baseline: list[dict] | None = None) -> list[dict]:
    """One row per (label, sensor, domain) on the chosen channels (the counter where there is one,
    else power readings), plus one per label for the total (sensor ``all``, domain ``total``).

    ``marks``: a pyarrow Table with the mark's columns ``label``, ``start_ns`` and ``end_ns`` (a
    Probe's ``marks_table()``; ``store.marks_table`` makes one from records). ``baseline``: rows of
    greenprobe.baseline.idle_power; where one matches the channel, the net figures subtract that
    measured idle power, else the regression's idle state."""
    idle = {(b["sensor"], b["domain"]): b for b in baseline or []}
    if not marks.num_rows:
        return []
    all_labels = np.array(marks.column("label").to_pylist(), dtype=object)
    all_starts = marks.column("start_ns").to_numpy().astype(np.int64, copy=False)
    all_ends = marks.column("end_ns").to_numpy().astype(np.int64, copy=False)
    labels = list(dict.fromkeys(all_labels.tolist()))  # in first-seen order
    starts = [all_starts[all_labels == k] for k in labels]
    ends = [all_ends[all_labels == k] for k in labels]
    act = Activity(labels, starts, ends)
    chosen = choose_channels(channels)
    tops = top_level(chosen)
    rows = []
    for ch in chosen:
        ests, f, win = estimate(labels, starts, ends, ch, act)
        period, source = ch.learned_update_period_ns()
        for e in ests:
            rows.append(_row(e, ch, f, win, period, source, idle.get((ch.sensor, ch.domain)),
                             (ch.sensor, ch.domain) in tops))
    rows += _totals(rows, labels)
    for r in rows:  # what the totals needed
        for k in ("_top", "_se", "_se_net", "_dof"):
            r.pop(k, None)
    return rows


def _row(e, ch, f, win, period: int, source: str, measured: dict | None, top: bool) -> dict:
    ok = e.status == "ok"
    q = t975(f.dof) if ok else float("nan")
    t = e.time_s_per_call
    if measured is not None:  # independent of this fit
        base, base_se, base_source = measured["power_w"], measured["power_w_se"], "idle-measured"
        se_net = math.hypot(e.gross_se, base_se * t) if ok else float("nan")
    else:
        base = e.idle_j / t if ok and t > 0 else float("nan")
        base_se = math.sqrt(max(e.idle_var, 0.0)) / t if ok and t > 0 else float("nan")
        base_source = "regression"
        se_net = math.sqrt(max(e.gross_se ** 2 + e.idle_var - 2 * e.idle_cov, 0.0)) if ok else float("nan")
    net = e.gross_j - base * t
    windows = f.windows if f is not None else (0 if win is None else int(win.a.size))
    averaging = None if ch.quantity == "energy" else (win.averaging_ns if win is not None else period)
    return {
        "label": e.label, "sensor": ch.sensor, "domain": ch.domain, "status": e.status, "reason": e.reason,
        "calls": e.calls, "time_s_mean": e.time_s_mean, "time_s_per_call": t,
        "energy_j_per_call": e.gross_j,
        "energy_j_per_call_low": e.gross_j - q * e.gross_se, "energy_j_per_call_high": e.gross_j + q * e.gross_se,
        "energy_j_per_call_net": net, "energy_j_per_call_net_low": net - q * se_net,
        "energy_j_per_call_net_high": net + q * se_net,
        "energy_j_per_call_exclusive": e.exclusive_j, "time_s_per_call_exclusive": e.exclusive_time_s_per_call,
        "power_w": e.power_w, "baseline_power_w": base, "baseline_power_w_se": base_se,
        "baseline_source": base_source,
        "regression_idle_power_w": float(f.power_w[0]) if f is not None else float("nan"),
        "update_period_ns": period, "update_period_source": source, "windows": windows,
        "dof": f.dof if f is not None else 0,
        "model": f.model if f is not None else "", "interval_target": INTERVAL_TARGET,
        "estimated": ch.estimated,
        "method": "direct" if ch.quantity == "energy" and e.time_s_mean * 1e9 > period else "regression",
        "resolution": resolution_text(e.time_s_mean, e.calls, period, source, windows, averaging),
        "_top": top, "_se": e.gross_se, "_se_net": se_net, "_dof": f.dof if f is not None else 0,
    }


def _totals(rows: list[dict], labels: list[str]) -> list[dict]:
    """Per label, the sum over top-level domains of every sensor. Its interval adds the domains'
    half-widths (errors of domains measured over the same marks may be correlated: the sum of
    standard errors is the bound that holds whatever their correlation)."""
    out = []
    for label in labels:
        mine = [r for r in rows if r["label"] == label and r["_top"]]
        if not mine:
            continue
        bad = [r for r in mine if r["status"] != "ok"]
        first = mine[0]
        total = {k: first[k] for k in ("label", "calls", "time_s_mean", "time_s_per_call",
                                       "time_s_per_call_exclusive", "interval_target")}
        total.update(sensor="all", domain="total", status="ok" if not bad else "not-estimated",
                     reason="" if not bad else "; ".join(f"{r['sensor']}/{r['domain']}: {r['reason']}" for r in bad),
                     estimated=any(r["estimated"] for r in mine),
                     domains=",".join(f"{r['sensor']}/{r['domain']}" for r in mine),
                     method="regression" if any(r["method"] == "regression" for r in mine) else "direct",
                     model=",".join(sorted({r["model"] for r in mine if r["model"]})),
                     resolution="; ".join(f"{r['sensor']}/{r['domain']}: {r['resolution']}" for r in mine),
                     baseline_source=",".join(sorted({r["baseline_source"] for r in mine})))
        for key, se in (("energy_j_per_call", "_se"), ("energy_j_per_call_net", "_se_net")):
            total[key] = sum(r[key] for r in mine)
            half = sum(t975(r["_dof"]) * r[se] if r["status"] == "ok" else float("nan") for r in mine)
            total[key + "_low"], total[key + "_high"] = total[key] - half, total[key] + half
        total["energy_j_per_call_exclusive"] = sum(r["energy_j_per_call_exclusive"] for r in mine)
        total["power_w"] = sum(r["power_w"] for r in mine)
        total["baseline_power_w"] = sum(r["baseline_power_w"] for r in mine)
        out.append(total)
    return out
