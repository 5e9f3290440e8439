"""greenprobe-perf-helper's start-up: opening rapl-perf through the helper (spawn, peer check,
request, the helper opening the events, the descriptors handed over, the helper reaped) against
opening the events in-process, on a two-package stand-in (fake perf PMU, LD_PRELOAD; the helper
stands for one holding CAP_PERFMON). Side by side in one run, as a ratio.

    .venv/bin/python benchmarks/bench_perf_helper.py [OPENS=50]

The helper is the one installed with the package (python/greenprobe/bin/ in a source tree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "tests" / "python")]

from greenprobe.config import PERF_HELPER  # noqa: E402
from standins import build_fake_perf, make_perf_tree  # noqa: E402

CHILD = r"""
import json, sys, time
from greenprobe import _core
options, n = json.loads(sys.argv[1]), int(sys.argv[2])
times = []
for _ in range(n):
    t = time.perf_counter_ns()
    s = _core.open_sensor("rapl-perf", options)
    times.append(time.perf_counter_ns() - t)
    opened_by = s.info()["opened_by"]
    del s
times.sort()
print(json.dumps({"median_ms": times[len(times) // 2] / 1e6, "p90_ms": times[int(len(times) * 0.9)] / 1e6,
                  "opened_by": opened_by}))
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    if not PERF_HELPER.is_file():
        sys.exit(f"no helper at {PERF_HELPER}: build the package (or copy build/*/greenprobe-perf-helper there)")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        lib = build_fake_perf(d)
        cpus = {c: c // 8 for c in range(16)}
        options, env = make_perf_tree(d, cpus, "0,8", {"energy-pkg": 2, "energy-cores": 1, "energy-ram": 3})
        env = dict(os.environ, **env, LD_PRELOAD=str(lib), PYTHONPATH=str(ROOT / "python"),
                   GREENPROBE_PERF_EVENT_ROOT=options["perf_event_root"],
                   GREENPROBE_SYSFS_CPU_ROOT=options["sysfs_cpu_root"], GREENPROBE_PROC_ROOT=options["proc_root"],
                   FAKE_PERF_ALLOW_EXE=PERF_HELPER.name)
        rows = []
        for how, extra, opts in (("in-process perf_event_open", {}, {**options, "perf_helper": ""}),
                                 ("through greenprobe-perf-helper", {"FAKE_PERF_OPEN_ERRNO": "EACCES"},
                                  {**options, "perf_helper": str(PERF_HELPER)})):
            r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(opts), str(n)], env={**env, **extra},
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                sys.exit(r.stderr)
            rows.append((how, json.loads(r.stdout.strip().splitlines()[-1])))
    base = rows[0][1]["median_ms"]
    print(f"Opening rapl-perf, 2 packages x 3 events (6 descriptors), {n} opens each, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}:\n")
    print("| how | median ms per open | p90 ms | vs in-process | opened by |")
    print("|---|---|---|---|---|")
    for how, r in rows:
        print(f"| {how} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['median_ms'] / base:.1f}x | {r['opened_by']} |")


if __name__ == "__main__":
    main()
