"""Cost of one greenprobe.mark() enter+exit against two bare time.perf_counter_ns() calls.

    .venv/bin/python benchmarks/bench_mark.py [N]

Best of 7 repeats of N iterations each, with the marks going where a user's go: to a local Probe,
then to a `greenprobe daemon` started for the run (synthetic sensor) through this process's
shared-memory ring (the default for a local daemon), then through the gRPC sender
(GREENPROBE_MARK_RING=0). Every mark must arrive: the counts are checked at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import greenprobe


def best_ns(stmt, setup="pass", n=200_000, repeat=7, globs=None, flush=None):
    timer, best = timeit.Timer(stmt, setup=setup, globals=globs), float("inf")
    for _ in range(repeat):
        best = min(best, timer.timeit(number=n))
        if flush is not None:
            flush()  # between repeats: each starts with the daemon caught up
    return best / n * 1e9


def start_daemon(work: Path):
    sock, ready = work / "d.sock", work / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", "synthetic", "--socket",
                             str(sock), "--ready-file", str(ready)], stderr=subprocess.DEVNULL)
    while not ready.exists() or not ready.read_text().strip():
        time.sleep(0.05)
    return proc, f"unix:{sock}"


def remote_sink(address: str, ring: bool):
    os.environ["GREENPROBE_MARK_RING"] = str(1 << 24) if ring else "0"  # 16 MiB: a repeat's marks fit
    remote = greenprobe.connect(address)
    if ring:
        while not remote.mark_sink.attached:
            time.sleep(0.01)
    return remote


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    pc = time.perf_counter_ns
    g = {"pc": pc, "greenprobe": greenprobe, "mark": greenprobe.mark}
    stmts = {"plain": "with mark('infer'): pass", "attrs": "with mark('infer', runtime='torch', batch=64): pass"}
    bare = best_ns("pc(); pc()", n=n, globs=g)
    empty_with = best_ns("with nullcontext(): pass", setup="from contextlib import nullcontext", n=n, globs=g)
    rows = {}
    with greenprobe.Probe(sensors=["synthetic:update_us=1000"], period_us=1000) as probe:
        rows["a local Probe"] = {k: best_ns(v, n=n, globs=g) for k, v in stmts.items()}
    recorded = len(probe.marks())
    proc, address = start_daemon(Path(tempfile.mkdtemp(prefix="greenprobe-bench-mark-")))
    from greenprobe import _core

    held = {}
    try:
        for name, ring in (("the daemon, shared-memory ring", True), ("the daemon, gRPC sender", False)):
            remote = remote_sink(address, ring)
            before = remote.mark_count()
            _core._set_mark_sink(remote.mark_sink)
            rows[name] = {k: best_ns(v, n=n, globs=g, flush=remote.flush) for k, v in stmts.items()}
            remote.flush()
            held[name] = (remote.mark_count() - before, getattr(remote.mark_sink, "fell_back", 0))
            _core._set_mark_sink(None)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    print("| what | mark('infer'): ns per call | ratio to two perf_counter_ns | mark('infer', runtime=..., batch=...) "
          "| ratio |")
    print("|---|---|---|---|---|")
    print(f"| two time.perf_counter_ns() calls | {bare:.0f} | 1.00 | | |")
    print(f"| `with contextlib.nullcontext(): pass` (Python's floor for any context manager) | {empty_with:.0f} | "
          f"{empty_with / bare:.2f} | | |")
    for name, r in rows.items():
        print(f"| to {name} | {r['plain']:.0f} | {r['plain'] / bare:.2f} | {r['attrs']:.0f} | {r['attrs'] / bare:.2f} |")
    print(f"\n{recorded} marks recorded by the local Probe (all kept); the daemon held "
          + "; ".join(f"{h:,} through {k.split(', ')[1]} ({fb} fell back to gRPC)" for k, (h, fb) in held.items())
          + f" of {2 * 7 * n:,} each.")


if __name__ == "__main__":
    main()
