"""A shared machine with an exact truth: processes that use the CPU on independent random schedules,
and a CPU power that is a known function of what they use.

    power(t) = idle_w + sum_k w_k x cores_k(t) + wander(t)

cores_k is piecewise constant (segments of 0.2-1.5 s, each drawn from CORES), wander an
Ornstein-Uhlenbeck process (sd ``noise_w``, correlation time ``noise_tau_s``); everything is constant
on a 10 ms grid, so every integral is exact. The truth of consumer k over [a, b] is
w_k x its CPU seconds there. ``write_proc`` lays out a /proc stand-in (stat in clock ticks, cgroup,
/proc/stat) as the kernel shows it at an instant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SLOT_NS = 10_000_000
CORES = (0.0, 0.0, 0.25, 0.5, 1.0, 2.0)
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    pid: int
    comm: str
    w: float  # W per core in use
    start_s: float = 0.0  # alive from (relative to t0)
    end_s: float = float("inf")  # until
    ppid: int = 1
    cgroup: str = "/"
    same_as: int = -1  # index of a process whose schedule this one copies


@dataclass
class Node:
    procs: list
    seconds: float
    seed: int
    idle_w: float = 30.0
    noise_w: float = 2.0
    noise_tau_s: float = 1.0
    t0_ns: int = 10**12
    cores: np.ndarray = field(init=False)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        n = int(self.seconds * 1e9 // SLOT_NS) + 2
        self.cores = np.zeros((len(self.procs), n))
        for i, p in enumerate(self.procs):
            if p.same_as >= 0:
                self.cores[i] = self.cores[p.same_as]
            else:
                j = 0
                while j < n:
                    m = int(rng.uniform(20, 150))
                    self.cores[i, j:j + m] = rng.choice(CORES)
                    j += m
            alive = (np.arange(n) * SLOT_NS >= p.start_s * 1e9) & (np.arange(n) * SLOT_NS < p.end_s * 1e9)
            self.cores[i] *= alive
        wander = np.zeros(n)
        if self.noise_w > 0:
            a = np.exp(-SLOT_NS / 1e9 / self.noise_tau_s)
            e = rng.normal(0.0, self.noise_w * np.sqrt(1 - a * a), n)
            wander[0] = rng.normal(0.0, self.noise_w)
            for j in range(1, n):
                wander[j] = a * wander[j - 1] + e[j]
        w = np.array([p.w for p in self.procs])
        self.power = self.idle_w + w @ self.cores + wander
        slot_s = SLOT_NS / 1e9
        self._e = np.r_[0.0, np.cumsum(self.power * slot_s)]
        self._c = np.c_[np.zeros(len(self.procs)), np.cumsum(self.cores * slot_s, axis=1)]

    def _at(self, cum: np.ndarray, t_ns) -> np.ndarray:
        x = (np.asarray(t_ns, np.float64) - self.t0_ns) / SLOT_NS
        j = np.clip(np.floor(x).astype(np.int64), 0, cum.shape[-1] - 2)
        f = x - j
        return cum[..., j] + (cum[..., j + 1] - cum[..., j]) * f

    def energy_at(self, t_ns) -> np.ndarray:
        return self._at(self._e, t_ns)

    def cpu_at(self, t_ns) -> np.ndarray:
        """Every process's CPU seconds at t (rows: processes)."""
        return self._at(self._c, t_ns)

    def truth(self, a_ns: int, b_ns: int) -> np.ndarray:
        """Each process's energy over [a, b]: w_k x its CPU seconds there."""
        return np.array([p.w for p in self.procs]) * (self.cpu_at(b_ns) - self.cpu_at(a_ns))

    def write_proc(self, root: Path, t_ns: int) -> None:
        """The /proc stand-in at t: a stat and cgroup file per live process (CPU in whole ticks, as the
        kernel shows it), /proc/stat with the machine's busy ticks."""
        root.mkdir(parents=True, exist_ok=True)
        cpu = self.cpu_at(t_ns)
        rel_s = (t_ns - self.t0_ns) / 1e9
        reaped = {}
        for p, c in zip(self.procs, cpu):  # a parent's cutime: its exited children's totals
            if rel_s >= p.end_s:
                reaped[p.ppid] = reaped.get(p.ppid, 0) + int(c / TICK_S)
        for p, c in zip(self.procs, cpu):
            d = root / str(p.pid)
            if not p.start_s <= rel_s < p.end_s:
                if d.exists():
                    for f in d.iterdir():
                        f.unlink()
                    d.rmdir()
                continue
            d.mkdir(exist_ok=True)
            ticks = int(c / TICK_S)
            start_ticks = 1000 + int(p.start_s / TICK_S)
            (d / "stat").write_text(f"{p.pid} ({p.comm}) R {p.ppid} {p.pid} {p.pid} 0 -1 4194304 10 0 0 0 "
                                    f"{ticks - ticks // 4} {ticks // 4} {reaped.get(p.pid, 0)} 0 20 0 1 0 {start_ticks} 1000 100\n")
            if not (d / "cgroup").exists():
                (d / "cgroup").write_text(f"0::{p.cgroup}\n")
        busy = int(cpu.sum() / TICK_S)
        (root / "stat").write_text(f"cpu  {busy} 0 0 {10**7} 0 0 0 0 0 0\n")


def recorded(node: Node, period_ns: int, seed: int):
    """The recorder's view of a node without a Probe (a consumers.Use): sweeps every period (+ up to
    10 %), CPU in whole ticks; and the exact energy of each sweep window."""
    from greenprobe.consumers import Use

    rng = np.random.default_rng(seed)
    end = node.t0_ns + int(node.seconds * 1e9) - period_ns
    t = [node.t0_ns]
    while t[-1] + period_ns < end:
        t.append(t[-1] + period_ns + int(rng.uniform(0, 0.1) * period_ns))
    t = np.array(t, np.int64)
    cpu = np.floor(node.cpu_at(t) / TICK_S) * TICK_S  # processes x sweeps
    K, S = cpu.shape
    use = Use("process", t, [None] * K, np.repeat(np.arange(K), S), np.tile(np.arange(S), K), cpu.reshape(-1))
    return use, np.diff(node.energy_at(t))


@dataclass
class SeededFit:
    node: Node
    fit: object  # consumer_fit.ConsumerFit, or None
    why: str
    totals: np.ndarray  # each process's CPU seconds over [a, b]
    energy: np.ndarray  # each sweep window's exact energy
    a: int
    b: int
    t_ns: np.ndarray  # the sweeps

    def consumer(self, i: int) -> tuple[float, float, bool]:
        """Process i's energy estimate, its 95 % half-width, and whether its coefficient is its own."""
        g = int(self.fit.group_of[i])
        c = np.zeros(len(self.fit.beta))
        c[g + 1] = self.totals[i]
        est, half = self.fit.combo(c)
        return est, half, self.fit.coefficient[g] == "own"


def seeded_fit(seed: int, procs: int, seconds: float, noise_w: float, noise_tau_s: float, watts_seed: int,
               period_ns: int = 250_000_000) -> SeededFit:
    """A node of ``procs`` processes at 4-30 W per core (drawn from ``watts_seed``), recorded without a
    Probe and fitted by consumer_fit over its whole recording."""
    from greenprobe.consumer_fit import _window_use, fit_domain

    rng = np.random.default_rng(watts_seed)
    node = Node([Proc(300 + i, f"p{i}", float(rng.uniform(4, 30))) for i in range(procs)], seconds=seconds, seed=seed,
                noise_w=noise_w, noise_tau_s=noise_tau_s)
    use, energy = recorded(node, period_ns, seed)
    a, b = int(use.t_ns[0]), int(use.t_ns[-1])
    windows, k, w, d, totals = _window_use(use, a, b)
    fit, why = fit_domain(use, windows, k, w, d, totals, energy)
    return SeededFit(node, fit, why, totals, energy, a, b, use.t_ns)
