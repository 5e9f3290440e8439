"""The stand-in GPUs' processes for the per-process tests (test_consumer_gpu.py, _amd.py,
_gpu_cgroup.py): busy schedules, a /proc stand-in naming them, and a Probe polled on the fake
libraries' virtual clock."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Optional

import numpy as np

import greenprobe

WATTS = {4101: 50.0, 4102: 120.0, 4103: 200.0}  # what each process adds to its GPU's power while busy


def schedules(seed: int, seconds: float, t0: int, pids=WATTS) -> dict:
    """Per pid, busy spans (start_ns, end_ns): on and off for 0.2-1.5 s each, independently."""
    rng = np.random.default_rng(seed)
    out = {}
    for pid in pids:
        spans, t, busy = [], t0 + int(rng.uniform(0, 0.5e9)), bool(rng.integers(2))
        while t < t0 + seconds * 1e9:
            length = int(rng.uniform(0.2e9, 1.5e9))
            if busy:
                spans.append((t, min(t + length, t0 + int(seconds * 1e9))))
            t += length
            busy = not busy
        out[pid] = spans
    return out


def proc_tree(root: Path, pids, cgroups: Optional[dict] = None) -> Path:
    """/proc/PID/stat for each pid (its name gpu-job-PID), and /proc/PID/cgroup (v2) where
    ``cgroups`` gives one, as the kernel shows them."""
    for pid in pids:
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "stat").write_text(f"{pid} (gpu-job-{pid}) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0\n")
        if cgroups is not None:
            (root / str(pid) / "cgroup").write_text(f"0::{cgroups[pid]}\n")
    return root


def run(libs: list, t0: int, seconds: float, consumers: str = "process", **probe_args):
    """A Probe polled every 5 ms on the virtual clock of every fake library in ``libs``."""
    clocks = [ctypes.CDLL(str(lib)) for lib in libs]  # the libraries the sensors load: dlopen gives the same
    for c in clocks:
        c.fake_set_now.argtypes = [ctypes.c_longlong]
        c.fake_set_now(t0)
    try:
        probe = greenprobe.Probe(clock="virtual", consumers=consumers, **probe_args).start()
        for t in range(t0 + 5_000_000, t0 + int(seconds * 1e9), 5_000_000):
            for c in clocks:
                c.fake_set_now(t)
            probe.poll_at(t)
        probe.stop()
    finally:
        for c in clocks:
            c.fake_set_now(0)
    return probe


def busy_s(spans, a: int, b: int) -> float:
    """Seconds of the spans inside [a, b]."""
    return sum(max(0, min(e, b) - max(s, a)) for s, e in spans) / 1e9
