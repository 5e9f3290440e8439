"""`greenprobe top`'s energy since it started (issue 22): each process's energy summed over the windows
that tile the time, with its interval, on a virtual-clock node whose truth is exact
(tests/python/node.py). The live command itself: test_consumers.py's test_top_shows_screens_..."""

from __future__ import annotations

import subprocess
import sys

import pytest

from greenprobe.cli.top import Cumulative, screen
from node import Node, Proc
from test_consumers import run_node

S = 1_000_000_000


def test_top_sums_each_process_windows_into_its_energy_since_start(tmp_path):
    """Screens every 2 s with a 10 s window and --energy-window 20, as top draws them, over a recorded
    node: each process's energy since start is the sum of its rows over the 20 s windows closed so
    far and the open one;
    within 5 % of w x its CPU seconds, its interval covering that; every domain's totals add up to
    its measured energy; the screen shows them in the ENERGY J column."""
    procs = [Proc(901, "light", 5.0), Proc(902, "mid", 14.0), Proc(903, "heavy", 25.0)]
    node = Node(procs, seconds=42.0, seed=11, noise_w=0.5)
    probe = run_node(tmp_path, node, consumers="process")
    start = node.t0_ns + S // 2
    total = Cumulative(start, 20 * S)
    texts = {}
    for k in range(1, 21):
        now = start + 2 * k * S
        a = max(now - 10 * S, start)
        table = probe.consumers(a, now)
        since = total.update(probe.consumers, now, table, a)
        texts[k] = (screen(table, (now - a) / S, 10, since, (now - start) / S), dict(since))
    # the screen at 26 s: the window [0, 20 s] closed, [20 s, 26 s] open
    text, since = texts[13]
    tiles = [probe.consumers(start, start + 20 * S), probe.consumers(start + 20 * S, start + 26 * S)]
    want = sum(r["energy_j"] for t in tiles for r in t.to_pylist() if r["consumer"] == "903 heavy")
    assert since[("rapl-powercap", "package-0", "903 heavy")][0] == pytest.approx(want, rel=1e-12)
    assert "ENERGY J" in text and "95 % INTERVAL J" in text and "since top started" in text
    line = next(ln for ln in text.splitlines() if " heavy " in ln)
    assert f"{want:10.1f}" in line, (line, want)
    # at the end (40 s): two windows of 20 s, both closed
    end = start + 40 * S
    text, since = texts[20]
    assert total.closed_ns == end and since == {k: v for k, v in total.totals.items()}
    measured = probe.energy(start, end)[0]["energy_j"]
    domain = {k[2]: v for k, v in since.items() if k[:2] == ("rapl-powercap", "package-0")}
    assert sum(v[0] for v in domain.values()) == pytest.approx(measured, rel=1e-9), "conservation"
    truth = node.truth(start, end)
    for p, t in zip(procs, truth):
        j, lo, hi = domain[f"{p.pid} {p.comm}"]
        windows = [probe.consumers(start + 20 * i * S, start + 20 * (i + 1) * S) for i in range(2)]
        rows = [r for w in windows for r in w.to_pylist() if r["consumer"] == f"{p.pid} {p.comm}"]
        assert j == pytest.approx(sum(r["energy_j"] for r in rows), rel=1e-12)
        assert (lo, hi) == pytest.approx((sum(r["energy_j_low"] for r in rows), sum(r["energy_j_high"] for r in rows)))
        print(f"{p.comm} ({p.w:g} W/core): {j:.1f} J [{lo:.1f}, {hi:.1f}] vs exact {t:.1f} J")
        assert abs(j - t) < 0.05 * t, (p.comm, j, t)
        assert lo <= t <= hi, (p.comm, lo, hi, t)


def test_top_help_says_it_shows_energy():
    r = subprocess.run([sys.executable, "-m", "greenprobe", "top", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "energy since top started (ENERGY J) with its 95 % interval" in text
    assert "--energy-window SECONDS the energy since top started is summed over windows this long" in text
