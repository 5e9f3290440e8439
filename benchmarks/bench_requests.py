"""Energy per request in batched serving (issue 22): error against the exact share, by counter period.

    PYTHONPATH=python .venv/bin/python benchmarks/bench_requests.py

The continuous-batching stand-in of tests/python/test_requests.py (200 requests, up to 16 per step, a
prefill beside the decode steps, 0.3 ms between steps; step power a known function of its tokens) on
a virtual clock, its counter updating every 1, 20 and 100 ms. For each: |error| / exact share
(median, worst), the median width of the hard bounds, and two simpler splits on the same samples:
plain interpolation of each step's energy (no model of the pieces' power), and an equal split among
the requests of a step (tokens ignored).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "python"))


def run(update_ns: int, server, mode: str) -> dict:
    import greenprobe
    import greenprobe.request_energy as re_
    from standins import make_powercap_tree
    from test_requests import MAX_UJ, drive

    tmp = Path(tempfile.mkdtemp())
    paths = make_powercap_tree(tmp / "powercap", [("intel-rapl:0", "package-0", MAX_UJ)])
    probe = greenprobe.Probe(sensors=["rapl-powercap"], powercap_root=str(tmp / "powercap"), columnar_marks=True,
                             clock="virtual").start()
    drive(probe, server, paths["package-0"], update_ns)
    for a, b, tokens, phase in server.steps:
        for ph in ("prefill", "decode"):
            part = {r: (1 if mode == "equal" else n) for r, n in tokens.items() if phase[r] == ph}
            if part:
                re_.mark_batch_step(probe, "step", a, b, part, phase=ph)
    probe.stop()
    split = re_._split_periods
    if mode == "interpolation":
        re_._split_periods = lambda grid, running, u, e, interpolated: interpolated
    try:
        rows = {r["request"]: r for r in probe.requests().to_pylist()}
    finally:
        re_._split_periods = split
    truth = server.truth()
    err = np.array([abs(rows[k]["energy_j"] - t) / t for k, t in truth.items()])
    width = np.median([(r["energy_j_high"] - r["energy_j_low"]) / r["energy_j"] for r in rows.values()])
    return {"median": float(np.median(err)), "worst": float(err.max()), "width": float(width)}


def main() -> None:
    from test_requests import Server

    server = Server(seed=3)
    print(f"{len(server.steps)} steps, 200 requests")
    print(f"{'counter':>8}  {'method':<22} {'median':>8} {'worst':>8} {'bounds width (median)':>22}")
    for update_ns in (1_000_000, 20_000_000, 100_000_000):
        for mode, name in (("tokens", "greenprobe"), ("interpolation", "plain interpolation"),
                           ("equal", "equal split (no tokens)")):
            r = run(update_ns, server, mode)
            print(f"{update_ns / 1e6:>6g} ms  {name:<22} {r['median'] * 100:7.2f}% {r['worst'] * 100:7.2f}% "
                  f"{r['width'] * 100:21.0f}%")


if __name__ == "__main__":
    main()
