"""Energy per consumer (issue 22): what tracking costs, and how close each method comes to the truth.

    PYTHONPATH=python .venv/bin/python benchmarks/bench_consumers.py [--procs 1000] [--seeds 40]

1. Cost: ``--procs`` real sleeping processes (coreutils sleep) on this machine; the wall time of one
   sweep of every process (consumers.ProcessReader.read, as the sampler's clock sees it), its share
   of one core at the default 0.25 s period, per 100 processes.
2. Memory under churn: a recorder fed an hour of sweeps (14,400 at 0.25 s) of 1,000 live processes of
   which 10 exit and 10 start every sweep (a synthetic reader: the cost under test is the recorder's),
   the daemon's forgetting every 30 s window; Python's allocated memory (tracemalloc) at each
   quarter-hour.
2b. The daemon's whole cost at 1,000 processes (``--minutes`` of churn, 105 by default: past the hour
   of window tables the daemon keeps for its queries, KEEP_S): a Probe on a
   virtual clock with the daemon's consumer accounting (daemon/consumers.ConsumerAccount: a fit of
   every domain every 30 s window over every process, its totals, the sweeps let go) fed the churn
   above; the fit's wall time per window, the share of a core sweeps and fits take together, and the
   process's resident memory (VmRSS) at each quarter-hour.
3. Error against the truth on seeded stand-in nodes (tests/python/node.py: 4 processes at 4-30 W per
   core on independent schedules, power wandering 2 W, 60 s, sweeps every 250 ms): greenprobe's
   regression beside Kepler's split (energy above idle, idle the lowest window's power, by CPU-time
   share) and Scaphandre's (the whole energy by CPU-time share), all on the same windows; the median
   and 90th percentile of |error| / truth over every process, and greenprobe's interval coverage.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "python"))


def cost(n: int) -> dict:
    from greenprobe.consumers import ProcessReader

    kids = [subprocess.Popen(["sleep", "600"]) for _ in range(n)]
    try:
        reader = ProcessReader("/proc")
        reader.read()
        times = []
        for _ in range(30):
            a = time.perf_counter()
            got = reader.read()
            times.append(time.perf_counter() - a)
        seen = len(got)
    finally:
        for k in kids:
            k.kill()
        for k in kids:
            k.wait()
    sweep = float(np.median(times))
    return {"processes": seen, "sweep_ms": sweep * 1e3, "core_at_250ms": sweep / 0.25,
            "core_per_100": sweep / 0.25 / seen * 100}


class Churn:
    """A reader of `live` processes of which `turn` exit and `turn` start every sweep, each using CPU."""

    kind = "process"
    fresh = frozenset()  # what a ProcessReader says of processes started since its last read
    resolution_s = 0.01

    def __init__(self, live=1000, turn=10, seed=0):
        from greenprobe.consumers import Consumer

        self.Consumer = Consumer
        self.rng = np.random.default_rng(seed)
        self.next_pid = 1000
        self.live = {}
        for _ in range(live):
            self._spawn()
        self.turn = turn

    def _spawn(self):
        c = self.Consumer(f"{self.next_pid}:1", "process", self.next_pid, 1, "worker", "/")
        self.live[c] = 0.0
        self.next_pid += 1

    def read(self):
        for c in list(self.live)[:self.turn]:
            del self.live[c]
        for _ in range(self.turn):
            self._spawn()
        busy = self.rng.random(len(self.live)) < 0.2
        for (c, v), b in zip(list(self.live.items()), busy):
            if b:
                self.live[c] = v + 0.01
        return dict(self.live)


def memory(sweeps: int = 14_400) -> list:
    from greenprobe.consumers import UseRecorder

    rec = UseRecorder(["process"], period_s=0.25, proc_root="/proc")
    rec.readers["process"] = Churn()
    tracemalloc.start()
    out = []
    t0 = 10**12
    for s in range(sweeps):
        t = t0 + s * 250_000_000
        rec.read_at(t)
        if s % 120 == 119:  # a 30 s window closed: the daemon lets it go
            rec.forget_before(t)
        if s % 3600 == 3599:
            out.append((round((s + 1) * 0.25 / 60), tracemalloc.get_traced_memory()[0] / 2**20))
    tracemalloc.stop()
    return out


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def daemon_cost(minutes: int = 60, live: int = 1000) -> dict:
    import greenprobe
    from greenprobe.daemon.consumers import ConsumerAccount

    probe = greenprobe.Probe(sensors=["synthetic:waveform=sine;base_w=60;amp_w=20;freq_hz=0.05;update_us=1000"],
                             clock="virtual", consumers="process", consumer_period_s=0.25)
    probe.start()
    rec = probe.use_recorder
    rec.readers["process"] = Churn(live)
    account = ConsumerAccount(probe, None, window_s=30.0)
    t0 = t = 10**12
    fits, rss = [], []
    step = 250_000_000
    for s in range(minutes * 240):
        t = t0 + s * step
        probe.poll_at(t)
        if s % 120 == 119:  # the daemon's account closes a 30 s window
            a = time.perf_counter()
            account.close_window(end_ns=t)
            fits.append(time.perf_counter() - a)
        if s % 3600 == 3599:
            rss.append((round((s + 1) * 0.25 / 60), rss_mib()))
    probe.stop()
    return {"fit_s": float(np.median(fits)), "fit_max_s": float(max(fits)), "windows": len(fits), "rss": rss,
            "series": len(account.totals)}


def accuracy(seeds: int) -> dict:
    from node import seeded_fit

    err = {"greenprobe": [], "kepler": [], "scaphandre": []}
    hits = n = 0
    for seed in range(seeds):
        run = seeded_fit(seed, procs=4, seconds=60.0, noise_w=2.0, noise_tau_s=1.0, watts_seed=5000 + seed)
        a, b, totals = run.a, run.b, run.totals
        truth = run.node.truth(a, b)
        total_e = float(run.energy.sum())
        window_s = np.diff(run.t_ns) / 1e9
        idle_kepler = float((run.energy / window_s).min()) * (b - a) / 1e9  # the lowest window's power, as idle
        share = totals / totals.sum()
        for i in range(totals.size):
            est, half, own = run.consumer(i)
            err["greenprobe"].append(abs(est - truth[i]) / truth[i])
            err["kepler"].append(abs((total_e - idle_kepler) * share[i] - truth[i]) / truth[i])
            err["scaphandre"].append(abs(total_e * share[i] - truth[i]) / truth[i])
            if own:
                n += 1
                hits += abs(est - truth[i]) <= half
    out = {m: (float(np.median(v)), float(np.percentile(v, 90))) for m, v in err.items()}
    out["coverage"] = hits / max(n, 1)
    out["processes"] = len(err["greenprobe"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--minutes", type=int, default=105, help="of churn for the daemon's whole cost (2b): past the hour "
                    "of windows the daemon keeps (KEEP_S)")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    c = cost(args.procs)
    print(f"cost: one sweep of {c['processes']} processes {c['sweep_ms']:.1f} ms (median of 30): "
          f"{c['core_at_250ms'] * 100:.1f} % of a core at 0.25 s, {c['core_per_100'] * 100:.2f} % per 100 processes")
    print("memory under churn (minutes, MiB allocated):", ", ".join(f"{m} min {mib:.2f}" for m, mib in memory()))
    d = daemon_cost(args.minutes)
    whole = c["sweep_ms"] / 1e3 / 0.25 + d["fit_s"] / 30.0
    print(f"the daemon's accounting at 1,000 processes: a 30 s window's fit {d['fit_s'] * 1e3:.0f} ms (median of "
          f"{d['windows']}, most {d['fit_max_s'] * 1e3:.0f} ms); sweeps and fits {whole * 100:.1f} % of a core, "
          f"{whole * 100 / c['processes'] * 100:.2f} % per 100 processes; {d['series']} series kept")
    print("  resident memory under churn (minutes, MiB):", ", ".join(f"{m} min {mib:.0f}" for m, mib in d["rss"]))
    acc = accuracy(args.seeds)
    print(f"error over {acc['processes']} processes (|error| / truth, median and 90th percentile):")
    for m in ("greenprobe", "kepler", "scaphandre"):
        print(f"  {m:<11} {acc[m][0] * 100:6.1f} %  {acc[m][1] * 100:6.1f} %   "
              f"(x{acc[m][0] / acc['greenprobe'][0]:.0f} greenprobe's median)")
    print(f"greenprobe's 95 % intervals covered the truth for {acc['coverage']:.3f} of the processes told apart")


if __name__ == "__main__":
    main()
