"""The CPU estimate against its own law: idle, one busy core, two busy cores.

    PYTHONPATH=python .venv/bin/python benchmarks/bench_cpu_estimate.py [PERIOD_US ...]

cpu-estimate models power as idle + (rated - idle) x utilisation (rated 40 W here, idle 30 % of it):
on a 2-CPU machine 12 W idle, 26 W with one core busy, 40 W with both. Each phase lasts 3 s (busy
Python loops in child processes); the mean power the Probe reports over each, at each polling period.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import greenprobe

BUSY = "import time\nt = time.time()\nwhile time.time() - t < 3: pass"


def phases(period_us: int) -> list[tuple[str, float]]:
    with greenprobe.Probe(sensors=["cpu-estimate"], cpu_tdp_w=40, period_us=period_us) as probe:
        time.sleep(1)
        t0 = probe.now_ns()
        time.sleep(3)
        t1 = probe.now_ns()
        subprocess.Popen([sys.executable, "-c", BUSY]).wait()
        t2 = probe.now_ns()
        kids = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
        for k in kids:
            k.wait()
        t3 = probe.now_ns()
    return [(name, probe.energy(a, b)[0]["energy_j"] / ((b - a) / 1e9))
            for a, b, name in ((t0, t1, "idle"), (t1, t2, "1 busy"), (t2, t3, "2 busy"))]


def main() -> None:
    cpus = os.cpu_count()
    law = {"idle": 12.0, "1 busy": 12.0 + 28.0 / cpus, "2 busy": 12.0 + 28.0 * min(2, cpus) / cpus}
    for period in [int(a) for a in sys.argv[1:]] or [1000, 100000]:
        print(f"period {period} us: " + ", ".join(f"{n} {w:.2f} W (law {law[n]:.2f})" for n, w in phases(period)))


if __name__ == "__main__":
    main()
