"""Cost of one greenprobe.mark() enter+exit against two bare time.perf_counter_ns() calls.

    .venv/bin/python benchmarks/bench_mark.py [N]

Run with a Probe active (marks are recorded), best of 7 repeats of N iterations each.
"""

from __future__ import annotations

import sys
import time
import timeit

import greenprobe


def best_ns(stmt, setup="pass", n=200_000, repeat=7, globs=None):
    t = timeit.Timer(stmt, setup=setup, globals=globs).repeat(repeat=repeat, number=n)
    return min(t) / n * 1e9


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    pc = time.perf_counter_ns
    g = {"pc": pc, "greenprobe": greenprobe, "mark": greenprobe.mark}
    bare = best_ns("pc(); pc()", n=n, globs=g)
    empty_with = best_ns("with nullcontext(): pass", setup="from contextlib import nullcontext", n=n, globs=g)
    with greenprobe.Probe(sensors=["synthetic:update_us=1000"], period_us=1000) as probe:
        m = best_ns("with mark('infer'): pass", n=n, globs=g)
        m_attr = best_ns("with mark('infer', runtime='torch', batch=64): pass", n=n, globs=g)
    recorded = len(probe.marks())
    print("| what | ns per call | ratio to two perf_counter_ns |")
    print("|---|---|---|")
    print(f"| two time.perf_counter_ns() calls | {bare:.0f} | 1.00 |")
    print(f"| `with contextlib.nullcontext(): pass` (Python's floor for any context manager) | {empty_with:.0f} | {empty_with / bare:.2f} |")
    print(f"| `with greenprobe.mark('infer'): pass` | {m:.0f} | {m / bare:.2f} |")
    print(f"| `with greenprobe.mark('infer', runtime=..., batch=...): pass` | {m_attr:.0f} | {m_attr / bare:.2f} |")
    print(f"\n{recorded} marks recorded during the runs (all kept).")


if __name__ == "__main__":
    main()
