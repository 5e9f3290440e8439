"""Simulated sessions with an exact truth: marks, a power law that is a known function of time and
of the running calls, a sensor that updates on a jittered lattice and a sampler that polls it.

Power = idle + sum over labels of watts[label] x (calls of that label running) + wander(t) + noise(t)
where wander is a sum of sines (random phases) and noise is an Ornstein-Uhlenbeck process (power
piecewise constant on a 1 ms grid: its integral is exact). The truth of a label:

    spent     the energy over the union of its calls, divided by their number (the definition)
    expected  the same without wander and noise (their mean is zero): what a repeat would average
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greenprobe.attribution import FLAG_CHANGED, FLAG_FIRST, Channel
from greenprobe.summary import marked_time

NOISE_DT_NS = 1_000_000


def _union(starts, ends):
    order = np.argsort(starts)
    s, e = starts[order], ends[order]
    us, ue = [], []
    for a, b in zip(s, e):
        if us and a <= ue[-1]:
            ue[-1] = max(ue[-1], b)
        else:
            us.append(a)
            ue.append(b)
    return np.array(us, np.int64), np.array(ue, np.int64)


def busy_ns(starts, ends, t):
    """Sum over calls of their time before t (not the union: concurrent calls each count)."""
    s, e = np.sort(starts).astype(np.float64), np.sort(ends).astype(np.float64)
    t = np.asarray(t, np.float64)
    cs, ce = np.concatenate([[0], np.cumsum(s)]), np.concatenate([[0], np.cumsum(e)])
    ns, ne = np.searchsorted(s, t, side="right"), np.searchsorted(e, t, side="right")
    return (t * ns - cs[ns]) - (t * ne - ce[ne])


@dataclass
class Power:
    idle_w: float
    watts: dict                    # label -> extra W per running call
    sines: list = field(default_factory=list)   # (amplitude W, period s, phase)
    noise_w: float = 0.0           # OU standard deviation
    noise_tau_s: float = 1.0       # OU correlation time (0: white at the 1 ms grid)
    t_end_ns: int = 0
    seed: int = 0

    def __post_init__(self):
        rng = np.random.default_rng(self.seed + 99991)
        n = int(self.t_end_ns // NOISE_DT_NS) + 2
        if self.noise_w > 0:
            if self.noise_tau_s > 0:
                a = np.exp(-NOISE_DT_NS * 1e-9 / self.noise_tau_s)
                z = rng.normal(0, self.noise_w * np.sqrt(1 - a * a), n)
                x = np.empty(n)
                x[0] = rng.normal(0, self.noise_w)
                for i in range(1, n):  # noqa: the recursion is the OU process
                    x[i] = a * x[i - 1] + z[i]
            else:
                x = rng.normal(0, self.noise_w, n)
        else:
            x = np.zeros(n)
        self._noise_cum = np.concatenate([[0.0], np.cumsum(x * NOISE_DT_NS * 1e-9)])

    def wander_j(self, t_ns) -> np.ndarray:
        """Energy of wander and noise from 0 to t (exact)."""
        t = np.asarray(t_ns, np.float64)
        e = np.zeros_like(t)
        for amp, period, phase in self.sines:
            w = 2 * np.pi / period
            e += amp / w * (np.cos(phase) - np.cos(w * t * 1e-9 + phase))
        grid = np.arange(self._noise_cum.size) * float(NOISE_DT_NS)
        return e + np.interp(t, grid, self._noise_cum)

    def energy_j(self, t_ns, marks: dict) -> np.ndarray:
        """Cumulative energy at each instant (exact)."""
        t = np.asarray(t_ns, np.float64)
        e = self.idle_w * t * 1e-9 + self.wander_j(t)
        for label, (s, en) in marks.items():
            e += self.watts.get(label, 0.0) * busy_ns(s, en, t) * 1e-9
        return e


@dataclass
class Session:
    records: list
    channel: Channel
    marks: dict
    power: Power

    def truth(self, label: str) -> dict:
        """Per call: spent and expected gross energy, time, and exclusive expected energy."""
        s, e = self.marks[label]
        us, ue = _union(s, e)
        n = s.size
        union_s = float((ue - us).sum()) * 1e-9
        calls_j = 0.0
        for other, (os_, oe) in self.marks.items():
            inside = marked_time(us, ue, oe.astype(np.float64)) - marked_time(us, ue, os_.astype(np.float64))
            calls_j += self.power.watts.get(other, 0.0) * float(inside.sum()) * 1e-9
        expected = self.power.idle_w * union_s + calls_j
        wander = float((self.power.wander_j(ue) - self.power.wander_j(us)).sum())
        return {"expected": expected / n, "spent": (expected + wander) / n, "time_s_per_call": union_s / n,
                "idle_w": self.power.idle_w}


def counter_channel(energy_at, t_end_ns: int, update_ns: int, poll_ns: int, rng, jitter_ns: int = 0,
                    resolution: float = 1e-3, sensor="nvml", domain="gpu0") -> Channel:
    """A counter updating every update_ns (+ jitter) with the exact energy, quantised, polled
    every poll_ns: each update is seen by the first poll after it."""
    upd = np.arange(update_ns, t_end_ns, update_ns, dtype=np.int64)
    if jitter_ns:
        upd = upd + rng.integers(-jitter_ns, jitter_ns + 1, upd.size)
    phase = int(rng.integers(0, poll_ns))
    t = ((upd - phase) // poll_ns + 1) * poll_ns + phase
    prev = t - poll_ns
    e = np.floor(energy_at(upd) / resolution) * resolution
    t = np.concatenate([[phase], t])
    prev = np.concatenate([[0], prev])
    e = np.concatenate([[0.0], e])
    flags = np.full(t.size, FLAG_CHANGED, np.uint32)
    flags[0] |= FLAG_FIRST
    return Channel(0, sensor, domain, "energy", False, resolution, update_ns, t_ns=t, prev_t_ns=prev, energy_j_or_power_w=e,
                   flags=flags)


def dithered(rng, n: int, call_s: float, t0_s: float = 0.5, max_gap_s: float | None = None):
    """n calls of call_s with uniform random gaps in [0, max_gap_s] (default: the call's length)."""
    gap = call_s if max_gap_s is None else max_gap_s
    gaps = rng.uniform(0, gap, n)
    starts = t0_s + np.cumsum(gaps) + call_s * np.arange(n)
    s = (starts * 1e9).astype(np.int64)
    return s, s + int(call_s * 1e9)


def make_session(marks: dict, power_kwargs: dict, seed: int, update_ns=100_000_000, poll_ns=1_000_000,
                 jitter_ns=0, resolution=1e-3, tail_s=1.0) -> Session:
    rng = np.random.default_rng(seed)
    t_end = int(max(e.max() for _, e in marks.values()) + tail_s * 1e9)
    power = Power(t_end_ns=t_end, seed=seed, **power_kwargs)
    ch = counter_channel(lambda u: power.energy_j(u, marks), t_end, update_ns, poll_ns, rng, jitter_ns, resolution)
    records = sorted(((label, int(a), int(b), 0, None, True) for label, (s, e) in marks.items()
                      for a, b in zip(s, e)), key=lambda r: r[1])
    return Session(records, ch, marks, power)


def wandering(rng, total_w=25.0, periods=(0.5, 1.0, 2.0, 4.0)) -> list:
    """Sines of the given periods whose amplitudes add up to total_w, random phases."""
    amps = rng.dirichlet(np.ones(len(periods))) * total_w
    return [(float(a), float(p), float(rng.uniform(0, 2 * np.pi))) for a, p in zip(amps, periods)]
