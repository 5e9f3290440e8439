"""The estimator against exact truth, on simulated sessions (tests/python/simulate.py).

1. The study's figure per call length and counter update period: before (mean of per-call
   interpolated differences, what the study averaged until now) and after (back-to-back over a
   window padded with idle: (window energy - idle x window) / n + idle x call), against the exact
   gross energy per call, 300 W while a call runs and 100 W idle, with the study's gaps (uniform in
   [0, call length]).
2. Coverage of the 95 % intervals of probe.summary() over seeded sessions, white and wandering
   power, against what the calls spent and against the expected energy per call.
3. The estimator's cost for a 24-hour session with 10^6 marks under a 100 ms counter.

    PYTHONPATH=python:tests/python .venv/bin/python benchmarks/bench_estimator.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from greenprobe.attribution import attribute  # noqa: E402
from greenprobe.store import marks_table  # noqa: E402
from greenprobe.summary import summarise  # noqa: E402
from simulate import counter_channel, dithered, make_session, wandering  # noqa: E402

IDLE_W, CALL_W = 100.0, 300.0


def study_figure(call_s: float, update_ms: float, seed: int, n: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    pad_s = max(0.05, 2 * update_ms * 1e-3)
    s, e = dithered(rng, n, call_s, t0_s=1.0)
    marks = {"inference": (s, e)}
    sess = make_session(marks, dict(idle_w=IDLE_W, watts={"inference": CALL_W - IDLE_W}), seed,
                        update_ns=int(update_ms * 1e6), poll_ns=min(int(update_ms * 1e6) // 10, 1_000_000) or 100_000,
                        jitter_ns=int(update_ms * 1e6) // 50, resolution=1e-6, tail_s=pad_s + 1.0)
    ch = sess.channel
    (res,) = attribute(s, e, [ch])
    before = float(res["energy_j"].mean())
    a, b = int(s[0] - pad_s * 1e9), int(e[-1] + pad_s * 1e9)
    (win,) = attribute(np.array([a]), np.array([b]), [ch])
    net = (float(win["energy_j"][0]) - IDLE_W * (b - a) * 1e-9) / n
    after = net + IDLE_W * call_s
    return before, after, CALL_W * call_s


def table(n_seeds: int) -> None:
    print("| call | update period | before: mean of interpolated calls | after: back-to-back, padded window |")
    print("|---|---|---|---|")
    for update_ms in (1, 20, 100):
        for call_ms in (0.5, 2, 10, 50):
            n = int(max(200, min(5000, 10.0 / (call_ms * 1.5e-3))))
            errs_b, errs_a = [], []
            for seed in range(n_seeds):
                b, a, truth = study_figure(call_ms * 1e-3, update_ms, seed, n)
                errs_b.append(b / truth - 1)
                errs_a.append(a / truth - 1)
            print(f"| {call_ms} ms | {update_ms} ms | {np.mean(errs_b):+.2%} (sd {np.std(errs_b):.2%}) "
                  f"| {np.mean(errs_a):+.3%} (sd {np.std(errs_a):.3%}) |")


def coverage(n_seeds: int) -> None:
    print("\n| power | sessions | covers what the calls spent | covers the expected energy per call |")
    print("|---|---|---|---|")
    for noise in ("white", "wandering"):
        spent = expected = 0
        for seed in range(n_seeds):
            rng = np.random.default_rng(5000 + seed)
            if noise == "white":
                power = dict(idle_w=80.0, watts={"infer": 200.0}, noise_w=20.0, noise_tau_s=0.0)
            else:
                power = dict(idle_w=80.0, watts={"infer": 200.0}, sines=wandering(rng), noise_w=15.0,
                             noise_tau_s=1.0)
            a, b = dithered(rng, 2000, 0.01), dithered(rng, 2000, 0.01, t0_s=0.503)
            sess = make_session({"infer": (np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))}, power,
                                seed)
            (r,) = [r for r in summarise(marks_table(sess.records), [sess.channel]) if r["sensor"] != "all"]
            t = sess.truth("infer")
            spent += r["energy_j_per_call_low"] <= t["spent"] <= r["energy_j_per_call_high"]
            expected += r["energy_j_per_call_low"] <= t["expected"] <= r["energy_j_per_call_high"]
        print(f"| {noise} | {n_seeds} | {spent / n_seeds:.1%} | {expected / n_seeds:.1%} |")


def cost() -> None:
    rng = np.random.default_rng(0)
    day_s, n_marks, call_s = 86_400.0, 1_000_000, 0.01
    starts = np.sort(rng.uniform(1.0, day_s - 1.0, n_marks))
    starts = (starts * 1e9).astype(np.int64)
    ends = starts + int(call_s * 1e9)
    from simulate import busy_ns

    t0 = time.perf_counter()
    ch = counter_channel(lambda u: 80.0 * u * 1e-9 + 200.0 * busy_ns(starts, ends, u) * 1e-9, int(day_s * 1e9),
                         100_000_000, 1_000_000, rng)
    records = [("infer", int(a), int(b), 0, None, True) for a, b in zip(starts, ends)]
    t1 = time.perf_counter()
    rows = summarise(marks_table(records), [ch])
    t2 = time.perf_counter()
    (r,) = [r for r in rows if r["sensor"] != "all"]
    from greenprobe.estimator import Activity

    union_s = Activity(["infer"], [starts], [ends]).union_time(0)  # calls at random overlap now and then
    exact = (80.0 * union_s + 200.0 * call_s * n_marks) / n_marks
    print(f"\n24 h session, {n_marks} marks of 10 ms, 100 ms counter ({ch.t_ns.size} updates): "
          f"summarise {t2 - t1:.2f} s (set-up {t1 - t0:.1f} s); {r['windows']} windows, "
          f"{r['energy_j_per_call']:.5f} J per call (exact {exact:.5f}: "
          f"{r['energy_j_per_call'] / exact - 1:+.3%})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--table-seeds", type=int, default=20)
    args = p.parse_args()
    table(args.table_seeds)
    coverage(args.seeds)
    cost()


if __name__ == "__main__":
    main()
