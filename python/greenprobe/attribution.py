"""From samples to energy per interval: pure numpy.

Energy counters
    The sampler records a counter when its value *changes*: the update happened between the
    previous poll and this one, (prev_t_ns, t_ns]. Each update is placed at the middle of that
    window (or, when a late poll made the window unusually wide, by the sensor's regular period),
    and the cumulative counter is interpolated linearly between updates (the power is
    taken as constant within one update period). So the energy at any instant, and of any
    interval [a, b], is defined: E(b) - E(a).

Power readings
    A reading is the mean power over the window that precedes it. Power is taken as piecewise
    constant, each reading covering the time since the previous one, and integrated.

Bounds (``energy_j_low`` / ``energy_j_high``) are what the sensor could resolve, not statistics:
    counter  E(t) is at least the last value read at or before t, and at most the value of the
             first update seen after t (plus one resolution step). These hold whatever the power
             did between updates.
    power    each reading is the mean over its averaging window (``averaging_window_ns``, or any length
             in [``averaging_window_min_ns``, ``averaging_window_max_ns``] where only a range is known,
             as for NVML's instant power; 0: since the previous update), ending at its update in
             (prev_t_ns, t_ns]: the window's energy is
             known, not where in the window it went. Per window, what falls inside [a, b] lies
             between its energy less the ceiling x the window's part outside, and the lesser of its
             energy and the ceiling x the part inside; what no window surely covers lies between 0
             and the ceiling x its length (``max_power_w``; without a ceiling the high bound is NaN
             and ``bounds_need_ceiling`` says so). Overlapping windows (a 1 s average updated every
             100 ms) are thinned to ones surely apart. So the bounds hold whatever the power did.
Systematic sensor error (about 5 % for NVML, per Yang et al. SC24) is not in these bounds.

Glitches
    The sampler excludes a counter step that was physically impossible (backwards, above the
    domain's power ceiling, or after a poll gap that could hide whole wraps) and flags its sample
    FLAG_GLITCH: the recorded values leave that step out, so the energy between the update before
    the glitch and the glitch itself is unknown. An interval that overlaps that span is flagged
    ``counter_glitch``, is not ``complete``, and has no bounds (NaN); its estimate bridges the span
    with the mean power of the update periods around it. Intervals away from it are exact as ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np

from .records import with_units

#: The sample flag bits by name. They are defined once, in the core (cpp/include/greenprobe/
#: sample.hpp, exported as greenprobe._core.SAMPLE_FLAGS); a client-only install has no compiled
#: core and uses this copy, which test_errors_sensors.py checks against the core's.
_SAMPLE_FLAGS_WITHOUT_CORE = {"changed": 1, "keepalive": 2, "first": 4, "gone": 8, "final": 16, "glitch": 32}
try:
    from ._core import SAMPLE_FLAGS
except ImportError:
    SAMPLE_FLAGS = dict(_SAMPLE_FLAGS_WITHOUT_CORE)

FLAG_CHANGED = SAMPLE_FLAGS["changed"]
FLAG_KEEPALIVE = SAMPLE_FLAGS["keepalive"]
FLAG_FIRST = SAMPLE_FLAGS["first"]
FLAG_GONE = SAMPLE_FLAGS["gone"]
FLAG_FINAL = SAMPLE_FLAGS["final"]
FLAG_GLITCH = SAMPLE_FLAGS["glitch"]  # an excluded counter step: the energy before it is unknown


@dataclass
class Channel:
    """Metadata of one channel and its samples (sorted by time)."""

    channel: int
    sensor: str
    domain: str
    quantity: str  # "energy" (cumulative joules) or "power" (watts)
    estimated: bool
    resolution_j: float  # energy counters: the smallest step, joules (0 for power channels)
    nominal_update_period_ns: int
    averaging_window_ns: int = 0
    # power: the range the window lies in where it is not known exactly (0, 0: averaging_window_ns is)
    averaging_window_min_ns: int = 0
    averaging_window_max_ns: int = 0
    max_power_w: float = 0.0  # the domain's power ceiling (0: unknown): what bounds the unseen
    parent_domain: Optional[str] = None  # the domain containing this one ("" top level; None: unstated)
    device_uuid: str = ""
    device_bus_id: str = ""
    shared: bool = False  # other work shares what it measures (a MIG instance: its whole GPU)
    wrap_j: float = 0.0  # the energy of one counter range (0: never wraps)
    resolution_w: float = 0.0  # power channels: the smallest step, watts (0 for counters)
    note: str = ""
    t_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    prev_t_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # the readings: cumulative joules for energy counters, watts for power channels (energy_j and
    # power_w below give them under the name of their unit, and refuse the other quantity)
    energy_j_or_power_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))

    @classmethod
    def from_info(cls, info: dict, **samples) -> "Channel":
        """A channel from its descriptor (the sampler's: its id, sensor and every ChannelInfo field,
        read by name; a field absent or None keeps its default) and its sample columns."""
        names = {f.name for f in fields(cls)} - {"t_ns", "prev_t_ns", "energy_j_or_power_w", "flags"}
        info = with_units(info)
        given = {k: info[k] for k in names if info.get(k) is not None}
        return cls(**given, **samples)

    @property
    def energy_j(self) -> np.ndarray:
        """An energy counter's readings: cumulative joules (a power channel has none: ValueError)."""
        if self.quantity != "energy":
            raise ValueError(f"{self.sensor}/{self.domain} reads power (W), not energy: use power_w")
        return self.energy_j_or_power_w

    @property
    def power_w(self) -> np.ndarray:
        """A power channel's readings: watts, each the mean over its averaging window (an energy
        counter has none: ValueError)."""
        if self.quantity != "power":
            raise ValueError(f"{self.sensor}/{self.domain} reads energy (J), not power: use energy_j")
        return self.energy_j_or_power_w

    def usable(self) -> np.ndarray:
        """Samples that carry a reading (a GONE marker repeats the last value and is not one)."""
        return (self.flags & FLAG_GONE) == 0

    def _update_mask(self) -> np.ndarray:
        """Samples that saw a sensor update of known energy (a change after the first read; not a
        glitch, whose step the sampler left out)."""
        f = self.flags
        return ((f & FLAG_CHANGED) != 0) & ((f & FLAG_FIRST) == 0) & ((f & FLAG_GLITCH) == 0)

    def glitch_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """Where the energy of each excluded step (FLAG_GLITCH) lies: from the start of the poll
        window of the update before it (the step accrued from that update on) to the glitch's read."""
        keep = self.usable()
        t, prev, f = self.t_ns[keep], self.prev_t_ns[keep], self.flags[keep]
        g = np.flatnonzero((f & FLAG_GLITCH) != 0)
        if g.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        changed = np.flatnonzero((f & FLAG_CHANGED) != 0)
        j = np.searchsorted(changed, g, side="left") - 1  # the last change before each glitch
        before = changed[np.maximum(j, 0)]
        # the first read has no window before it (prev_t_ns 0): the span starts at the read
        lo = np.where(prev[before] > 0, prev[before], t[before])
        lo = np.where(j >= 0, lo, t[g])
        return lo.astype(np.int64), t[g].astype(np.int64)

    def updates(self) -> tuple[np.ndarray, np.ndarray]:
        """Estimated moments of the sensor's updates (see place_updates) and the values they set."""
        m = self._update_mask()
        return place_updates(self.prev_t_ns[m], self.t_ns[m]), self.energy_j_or_power_w[m]

    def update_windows(self, placed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each placed update may lie: its poll window, narrowed to a typical window's width
        around the placement (a wide window placed by the sensor's period is known better)."""
        m = self._update_mask()
        prev, t = self.prev_t_ns[m], self.t_ns[m]
        if t.size == 0:
            return t, t
        half = max(int(np.median(t - prev)) // 2, 0)
        return np.maximum(prev, placed - half), np.minimum(t, placed + half)

    def update_times(self) -> np.ndarray:
        return self.updates()[0]

    def learned_update_period_ns(self) -> tuple[int, str]:
        """Median time between value changes, or the nominal period when too few were seen."""
        u = self.update_times()
        if u.size >= 4:
            return int(np.median(np.diff(u))), "learned"
        return int(self.nominal_update_period_ns), "nominal"

    def edge_timing_ns(self) -> float:
        """Median width of the poll window that dates an update (the dating uncertainty)."""
        m = self._update_mask()
        if not m.any():
            return float("nan")
        return float(np.median(self.t_ns[m] - self.prev_t_ns[m]))


def channels_of(infos: list[dict], columns: tuple) -> list[Channel]:
    """Each channel of ``infos`` (descriptors: channel id, sensor and the ChannelInfo fields) with
    its samples from ``columns`` (t_ns, prev_t_ns, energy_j_or_power_w, channel, flags, in any order of time),
    sorted by time: what Probe.channels and RemoteProbe.channels answer."""
    t, prev, v, ch, fl = columns
    out = []
    for info in infos:
        m = ch == info["channel"]
        order = np.argsort(t[m], kind="stable")
        out.append(Channel.from_info(info, t_ns=t[m][order], prev_t_ns=prev[m][order], energy_j_or_power_w=v[m][order],
                                     flags=fl[m][order]))
    return out


def place_updates(prev_t: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Estimated update moments from their poll windows (prev_t, t].

    Normally the middle of the window. A window much wider than usual (a late poll: the machine
    woke the sampler late) may span several updates, and the value read is the one set by the
    *last* of them; on a sensor with a regular period that is the latest moment of the update
    lattice inside the window, counted in whole periods from the nearest well-dated update (before
    or after). The hard bounds never use this estimate, only the windows themselves.
    """
    mid = (prev_t + t) // 2
    n = mid.size
    if n < 6:
        return mid
    width = t - prev_t
    typical = max(int(np.median(width)), 1)
    bad = width > 3 * typical
    if not bad.any():
        return mid
    both_good = ~bad[1:] & ~bad[:-1]
    if both_good.sum() < 4:
        return mid
    period = int(np.median(np.diff(mid)[both_good]))
    if period <= 0:
        return mid
    good = np.flatnonzero(~bad)
    # a lattice point predicted a little after t[k] is the update seen at t[k]: the anchor and the
    # period are known only to within a typical window and the sensor's jitter
    slack = typical // 2 + period // 4
    u = mid.astype(np.int64).copy()
    for k in np.flatnonzero(bad):
        lo, hi = int(prev_t[k]), int(t[k])
        j = int(np.searchsorted(good, k))
        guesses = []
        if j < good.size:  # counting back from the next well-dated update
            anchor = int(mid[good[j]])
            guesses.append((anchor - hi, anchor - period * max(1, -(-(anchor - hi - slack) // period))))
        if j > 0:  # counting forward from the previous one
            anchor = int(mid[good[j - 1]])
            guesses.append((hi - anchor, anchor + period * max(1, (hi + slack - anchor) // period)))
        guess = min(guesses)[1]  # the nearer anchor: fewer periods of drift
        u[k] = min(max(guess, lo + 1), hi)
    return u


class Timeline:
    """Cumulative energy of one channel as a function of time, with hard bounds."""

    def __init__(self, ch: Channel):
        self.channel = ch
        keep = ch.usable()
        t, prev, v, f = ch.t_ns[keep], ch.prev_t_ns[keep], ch.energy_j_or_power_w[keep], ch.flags[keep]
        if t.size == 0:
            raise ValueError(f"channel {ch.sensor}/{ch.domain} has no samples")
        self.power = ch.quantity == "power"
        if self.power:
            self._init_power(t, prev, v, f)
        else:
            self._init_counter(t, prev, v, f, ch.resolution_j)

    # -- counters ------------------------------------------------------------------------------
    def _init_counter(self, t, prev, v, f, resolution):
        changed = (f & FLAG_CHANGED) != 0
        first = (f & FLAG_FIRST) != 0
        edge = changed & ~first
        v = v.astype(np.float64)
        self.glitch_lo, self.glitch_hi = self.channel.glitch_spans()
        if self.glitch_hi.size:
            v = v + self._bridge(t, prev, v, f)
        u = place_updates(prev[edge], t[edge])
        if u.size == 0:  # the counter never moved: a single point at the first read
            u, ev = t[:1].copy(), v[:1].copy()
        else:
            ev = v[edge]
        self.u = u.astype(np.float64)
        self.e = ev.astype(np.float64)
        # lower bound: last value read at or before t (any sample)
        self.read_t = t
        self.read_v = v
        # upper bound: first update whose poll window starts at or after t
        self.edge_prev = prev[edge]
        self.edge_v = v[edge] + resolution
        self.span = (float(self.u[0]), float(self.u[-1]))

    def _bridge(self, t, prev, v, f) -> np.ndarray:
        """What to add to each recorded value so that the estimate bridges the excluded steps: the
        recorded values leave each one out, and it is put back as the mean power of the update
        periods around it (up to four on each side, from the updates of known energy) times the time
        from the update before it to the glitch. Every value from a glitch on moves by the same
        amount, so intervals away from it keep their exact figures (and hard bounds)."""
        good = ((f & FLAG_CHANGED) != 0) & ((f & (FLAG_FIRST | FLAG_GLITCH)) == 0)
        gu = place_updates(prev[good], t[good]).astype(np.float64)
        ge = v[good]
        shift = np.zeros(t.size)
        for g in np.flatnonzero((f & FLAG_GLITCH) != 0):
            i = int(np.searchsorted(gu, t[g], side="left"))  # first update of known energy after it
            slopes = []
            k = max(0, i - 5)
            if i >= 2 and gu[i - 1] > gu[k]:
                slopes.append((ge[i - 1] - ge[k]) / (gu[i - 1] - gu[k]))
            k = min(gu.size - 1, i + 4)
            if gu.size - i >= 2 and gu[k] > gu[i]:
                slopes.append((ge[k] - ge[i]) / (gu[k] - gu[i]))
            if not slopes:
                continue
            # the glitch's update (the middle of its window when the counter moved), from the one before
            at = (prev[g] + t[g]) / 2 if prev[g] > 0 and (f[g] & FLAG_CHANGED) else t[g]
            start = gu[i - 1] if i >= 1 else t[0]
            shift[g:] += max(0.0, float(np.mean(slopes))) * max(0.0, float(at - start))
        return shift

    def glitched(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Intervals [a, b] that overlap the span of an excluded counter step."""
        hit = np.zeros(np.shape(a), bool)
        if self.power:
            return hit
        for lo, hi in zip(self.glitch_lo, self.glitch_hi):
            hit |= (a <= hi) & (b > lo)
        return hit

    # -- power ---------------------------------------------------------------------------------
    def _init_power(self, t, prev, v, f):
        # The estimate: reading k taken as the power over (t[k-1], t[k]]; the first covers nothing before it.
        tt = t.astype(np.float64)
        dt = np.diff(tt) * 1e-9
        cum = np.concatenate([[0.0], np.cumsum(v[1:] * dt)])
        self.u, self.e = tt, cum
        self.read_t, self.read_v = t, v.astype(np.float64)
        self.span = (float(tt[0]), float(tt[-1]))
        # The bounds: each reading is the mean power over its averaging window, which ends at its
        # update u, somewhere in (prev, t] of the poll that saw it. Known: the window's energy; not
        # known: where inside the window it was spent. Only readings of a new update (a change after
        # the first read) date a window.
        ch = self.channel
        new = ((f & FLAG_CHANGED) != 0) & ((f & FLAG_FIRST) == 0)
        tr, pr, vr = tt[new], prev[new].astype(np.float64), v[new].astype(np.float64)
        w = float(ch.averaging_window_ns)
        w_min, w_max = float(ch.averaging_window_min_ns), float(ch.averaging_window_max_ns)
        if w_max <= 0:
            w_min = w_max = w
        self.pmax = float(getattr(ch, "max_power_w", 0.0) or 0.0)
        self.tiling = w <= 0 and w_max <= 0
        if self.tiling:
            # since the previous update: the windows tile time from the first update on, and reading
            # i covers (u[i-1], u[i]]: hull (prev[i-1], t[i]], surely (t[i-1], prev[i]]; the first
            # new reading's window starts at an update seen only as the first read: not used
            self.h_lo, self.h_hi = pr[:-1], tr[1:]
            self.c_lo, self.c_hi = tr[:-1], pr[1:]
            self.e_lo = vr[1:] * np.maximum(pr[1:] - tr[:-1], 0.0) * 1e-9
            self.e_hi = vr[1:] * (tr[1:] - pr[:-1]) * 1e-9
            self.tiled = (float(tr[0]), float(pr[-1])) if tr.size >= 2 else None
        else:
            # a window [u - w, u], w known or in [w_min, w_max]; windows that may overlap (a 1 s
            # average updated every 100 ms) cannot both be counted: keep those surely apart, greedily
            keep, last_end = [], -np.inf
            for i in range(tr.size):
                if pr[i] - w_max >= last_end:
                    keep.append(i)
                    last_end = tr[i]
            k = np.array(keep, dtype=np.int64)
            self.h_lo, self.h_hi = pr[k] - w_max, tr[k]
            self.c_lo, self.c_hi = tr[k] - w_min, pr[k]
            self.e_lo, self.e_hi = vr[k] * w_min * 1e-9, vr[k] * w_max * 1e-9
            self.tiled = None

    def _power_bounds(self, a, b):
        """Energy bounds that hold whatever the power did, given the readings' windows and the
        channel's power ceiling (max_power_w; 0 = unknown). Per window: its energy lies between
        0 and all of it inside [a, b], and at most the ceiling x the overlap; what lies outside
        every window can be anything from 0 to the ceiling x its length (unbounded without one:
        then high is NaN, and ``unbounded`` says so)."""
        pmax = self.pmax
        low = np.zeros(a.size)
        high = np.zeros(a.size)
        fa, fb = a.astype(np.float64), b.astype(np.float64)
        n = self.h_lo.size
        # windows whose hull may meet [a, b]: hull_hi > a and hull_lo < b (hulls are ordered in time)
        first = np.searchsorted(self.h_hi, fa, side="right")
        last = np.searchsorted(self.h_lo, fb, side="left")
        for j in range(a.size):
            x, y = fa[j], fb[j]
            s = slice(first[j], max(first[j], min(last[j], n)))
            hl, hh, cl, ch = self.h_lo[s], self.h_hi[s], self.c_lo[s], self.c_hi[s]
            elo, ehi = self.e_lo[s], self.e_hi[s]
            h_in = np.clip(np.minimum(hh, y) - np.maximum(hl, x), 0.0, None) * 1e-9
            h_len = (hh - hl) * 1e-9
            if pmax > 0:
                low[j] = np.clip(elo - pmax * (h_len - h_in), 0.0, None).sum()
                high[j] = np.minimum(ehi, pmax * h_in).sum()
            else:
                inside = (hl >= x) & (hh <= y)
                low[j] = elo[inside].sum()
                high[j] = ehi[h_in > 0].sum()
            if self.tiled is not None:
                lo_t, hi_t = self.tiled
                covered = max(0.0, min(y, hi_t) - max(x, lo_t)) * 1e-9
            else:
                covered = np.clip(np.minimum(ch, y) - np.maximum(cl, x), 0.0, None).sum() * 1e-9
            outside = max(0.0, (y - x) * 1e-9 - covered)
            if outside > 0:
                high[j] = high[j] + pmax * outside if pmax > 0 else np.nan
            if pmax > 0:  # the hulls' slack is counted on both sides above: never past the ceiling
                high[j] = min(high[j], pmax * (y - x) * 1e-9)
        return low, high

    # -- queries -------------------------------------------------------------------------------
    def cumulative(self, x: np.ndarray) -> np.ndarray:
        """The estimate of the energy counted up to each instant of ``x`` (J, from the channel's own
        origin): any interval's energy is the difference of two."""
        return self._interp(np.asarray(x, np.float64))

    def _interp(self, x: np.ndarray) -> np.ndarray:
        u, e = self.u, self.e
        y = np.interp(x, u, e)
        if u.size >= 2:
            # beyond the data: continue with the mean power of the outermost update periods
            k = min(u.size - 1, 4)
            slope_hi = (e[-1] - e[-1 - k]) / (u[-1] - u[-1 - k]) if u[-1] > u[-1 - k] else 0.0
            slope_lo = (e[k] - e[0]) / (u[k] - u[0]) if u[k] > u[0] else 0.0
            hi, lo = x > u[-1], x < u[0]
            y = np.where(hi, e[-1] + slope_hi * (x - u[-1]), y)
            y = np.where(lo, e[0] - slope_lo * (u[0] - x), y)
        return y

    def energy(self, a_ns: np.ndarray, b_ns: np.ndarray):
        """Energy of each interval [a, b]: (estimate, low, high, complete) arrays, joules."""
        a = np.asarray(a_ns, dtype=np.int64)
        b = np.asarray(b_ns, dtype=np.int64)
        est = self._interp(b.astype(np.float64)) - self._interp(a.astype(np.float64))
        complete = (a >= self.span[0]) & (b <= self.span[1])
        if self.power:
            low, high = self._power_bounds(a, b)
        else:
            low = self._lower(b) - self._upper(a)
            high = self._upper(b) - self._lower(a)
            low = np.maximum(low, 0.0)
        glitched = self.glitched(a, b)
        est = np.where(glitched, est, np.clip(est, low, np.where(np.isnan(high), np.inf, high)))
        if glitched.any():  # the energy of an excluded step is unknown: no bounds, not complete
            low = np.where(glitched, np.nan, low)
            high = np.where(glitched, np.nan, high)
            complete = complete & ~glitched
        return est, low, high, complete

    def _lower(self, x):
        i = np.searchsorted(self.read_t, x, side="right") - 1
        return np.where(i >= 0, self.read_v[np.clip(i, 0, None)], -np.inf)

    def _upper(self, x):
        n = self.edge_prev.size
        if n == 0:
            return np.full(np.shape(x), np.inf)
        j = np.searchsorted(self.edge_prev, x, side="left")
        return np.where(j < n, self.edge_v[np.minimum(j, n - 1)], np.inf)


def choose_channels(channels: list[Channel]) -> list[Channel]:
    """One channel per (sensor, domain): the energy counter where there is one, else power."""
    best: dict[tuple[str, str], Channel] = {}
    for ch in channels:
        key = (ch.sensor, ch.domain)
        if ch.t_ns.size == 0 or not ch.usable().any():
            continue
        cur = best.get(key)
        if cur is None or (cur.quantity == "power" and ch.quantity == "energy"):
            best[key] = ch
    return list(best.values())


def attribute(start_ns: np.ndarray, end_ns: np.ndarray, channels: list[Channel]) -> list[dict]:
    """Energy of every interval on every chosen channel: one dict of columns per channel."""
    out = []
    start_ns = np.asarray(start_ns, dtype=np.int64)
    end_ns = np.asarray(end_ns, dtype=np.int64)
    for ch in choose_channels(channels):
        tl = Timeline(ch)
        est, low, high, complete = tl.energy(start_ns, end_ns)
        glitched = tl.glitched(start_ns, end_ns)
        period, source = ch.learned_update_period_ns()
        out.append({
            "channel": ch,
            "energy_j": est,
            "energy_j_low": low,
            "energy_j_high": high,
            "complete": complete,
            "counter_glitch": glitched,
            # power readings leave part of the interval unseen and the channel has no ceiling
            "bounds_need_ceiling": np.isnan(high) & ~glitched,
            "below_update_period": (end_ns - start_ns) < period,
            "update_period_ns": period,
            "update_period_source": source,
            "method": "power-integration" if ch.quantity == "power" else "counter-interpolation",
        })
    return out
