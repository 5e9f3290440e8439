"""The nvml sensor against a driver: the real one on a GPU machine (scripts/gpu-check.sh), the fake
NVML following this process's CPU time everywhere else (tests/python/test_gpu_check.py runs the same
script with --standin).

Runs only when GREENPROBE_NVML_CHECK=1 (the script sets it): NVML comes from GREENPROBE_NVML_LIBRARY
or the driver's soname. The load is GPU matrix products where PyTorch sees a CUDA device, else a busy
CPU loop (which the fake NVML's FAKE_NVML_FOLLOW turns into GPU power). What each test measured goes
to GREENPROBE_CHECK_OUT/nvml_driver.json for the tables of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import greenprobe
from greenprobe import _core
from greenprobe.config import resolve_options

pytestmark = pytest.mark.skipif(os.environ.get("GREENPROBE_NVML_CHECK") != "1",
                                reason="needs a driver: scripts/gpu-check.sh sets GREENPROBE_NVML_CHECK=1")

MEASURED: dict = {}


def _record(key: str, value) -> None:
    MEASURED[key] = value
    out = os.environ.get("GREENPROBE_CHECK_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "nvml_driver.json").write_text(json.dumps(MEASURED, indent=2, default=str))


def _cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


#: the command line of the CPU load's process, which the fake NVML follows (FAKE_NVML_FOLLOW)
LOAD_TAG = "greenprobe-nvml-check-load"


def _load(seconds: float) -> None:
    """Work for `seconds`: bf16 matrix products on the GPU, else a busy CPU loop in a child process
    (the fake NVML follows other processes, never the one that loaded it)."""
    torch = _cuda()
    end = time.monotonic() + seconds
    if torch is None:
        code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
        subprocess.run([sys.executable, "-c", code, LOAD_TAG], check=True)
        return
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    while time.monotonic() < end:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()


def test_every_measured_gpu_has_an_energy_counter_and_a_power_channel():
    sensor = _core.open_sensor("nvml", resolve_options())
    channels = sensor.channels()
    gpus = sorted({c["domain"] for c in channels if c["domain"].startswith("gpu")})
    assert gpus, channels
    for g in gpus:
        mine = [c for c in channels if c["domain"] == g]
        assert {c["quantity"] for c in mine} == {"energy", "power"}, mine
        assert all(c["device_uuid"].startswith(("GPU-", "MIG-")) and c["device_bus_id"] for c in mine), mine
        power = next(c for c in mine if c["quantity"] == "power")
        assert power["averaging_window_ns"] > 0 or power["averaging_window_max_ns"] > 0, power
    _record("channels", channels)
    _record("sensor_info", sensor.info())


def test_load_is_told_from_idle_and_the_counter_agrees_with_the_power_readings():
    with greenprobe.Probe(sensors=["nvml"], period_us=1000, schedule="adaptive") as probe:
        for _ in range(4):
            with greenprobe.mark("idle"):
                time.sleep(0.6)
            with greenprobe.mark("load"):
                _load(0.6)
    rows = [r for r in probe.intervals().to_pylist() if r["sensor"] == "nvml"]
    figures = {}
    for g in sorted({r["domain"] for r in rows if r["domain"].startswith("gpu")}):
        power = {label: float(np.mean([r["energy_j"] / r["duration_s"] for r in rows
                                       if r["domain"] == g and r["label"] == label and r["energy_j"] is not None]))
                 for label in ("idle", "load")}
        figures[g] = power
    _record("mean_power_w_by_label", figures)
    loaded = [g for g, p in figures.items() if p["load"] > p["idle"] + 3.0]
    assert loaded, f"no GPU drew 3 W more under load than idle: {figures}"

    # The whole run two ways: counter difference, and the power readings integrated over time.
    agreement = {}
    for c in probe.channels():
        if c.quantity != "power" or not c.domain.startswith("gpu"):
            continue
        counter = next(e for e in probe.channels() if e.quantity == "energy" and e.domain == c.domain)
        t0, t1 = max(counter.t_ns[0], c.t_ns[0]), min(counter.t_ns[-1], c.t_ns[-1])
        e_counter = float(np.interp(t1, counter.t_ns, counter.energy_j) - np.interp(t0, counter.t_ns, counter.energy_j))
        inside = (c.t_ns >= t0) & (c.t_ns <= t1)
        trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
        e_power = float(trapezoid(c.power_w[inside], c.t_ns[inside] * 1e-9))
        agreement[c.domain] = {"counter_j": e_counter, "power_integral_j": e_power,
                               "ratio": e_power / e_counter if e_counter else float("nan"), "seconds": (t1 - t0) * 1e-9}
    _record("counter_vs_power_readings", agreement)
    for domain, a in agreement.items():
        assert 0.85 < a["ratio"] < 1.15, (domain, a)


def test_the_adaptive_schedule_learns_each_counters_update_period():
    with greenprobe.Probe(sensors=["nvml"], period_us=500, schedule="adaptive") as probe:
        _load(2.5)
    st = probe.stats()[0]
    periods = st["learned_update_periods_ns"]
    energy = [c for c in probe.channels() if c.quantity == "energy"]
    learned = {c.domain: periods[c.channel] * 1e-6 for c in energy}
    widths = {}
    for c in energy:
        edge = ((c.flags & greenprobe.attribution.FLAG_CHANGED) != 0) & ((c.flags & greenprobe.attribution.FLAG_FIRST) == 0)
        w = (c.t_ns[edge] - c.prev_t_ns[edge]) * 1e-3
        widths[c.domain] = {"updates": int(w.size), "median_window_us": float(np.median(w)) if w.size else None}
    _record("learned_update_period_ms", learned)
    _record("update_windows", widths)
    _record("adaptive_polls_per_s", st["polls"] / 2.5)
    for domain, ms in learned.items():
        assert 0.5 <= ms <= 1000, (domain, learned)
