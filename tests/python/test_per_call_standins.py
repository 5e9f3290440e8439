"""Per-call energy of 0.5 ms calls from coarse counters, on the stand-in sensors, against exact truth.

The stand-ins' power follows a schedule of calls known in advance (truth.Load): idle power plus a
known extra while a call runs. The test process busy-waits through each scheduled call (the CPU
load of real work) and records it with ``probe.add_mark`` at its scheduled ends, so marks and work
coincide exactly, as they do when a mark wraps the call (mark timestamps themselves are tested in
test_marks_clock); the exact energy of every mark is known. Target (sub-millisecond attribution issue): the mean energy per call
of 2,000 calls of 0.5 ms within 5 % of the exact mean, and its 95 % interval covering the truth in at
least 90 % of seeded repetitions (here: as often as a calibrated interval does, see check); on the NVML stand-in at a 100 ms update period and the RAPL
powercap stand-in at 1 ms.
"""

from __future__ import annotations

import time

import numpy as np
import greenprobe
from greenprobe.dither import gap_schedule
from standins import Writer, make_powercap_tree
from truth import Load, Total, Wave

CALLS, CALL_S, MAX_GAP_S = 2000, 0.0005, 0.001
SEEDS = range(10)
LEAD_S = 1.5  # from opening the probe to the first call: settle + idle baseline + margin


def follow(probe, starts: np.ndarray, ends: np.ndarray, label: str = "infer") -> None:
    """Busy-waits through each scheduled call and records it as a mark."""
    now = time.monotonic_ns
    for a, b in zip(starts.tolist(), ends.tolist()):
        while now() < b:
            pass
        probe.add_mark(label, a, b)


def truth_per_call(probe, power) -> float:
    marks = [m for m in probe.marks() if m[0] == "infer"]
    return float(np.mean([power.energy_between(m[1], m[2]) for m in marks]))


def nvml_run(fake_nvml, nvml_env, tmp_path, seed: int, **env):
    t0 = time.monotonic_ns()
    starts, ends = gap_schedule(CALLS, CALL_S, MAX_GAP_S, seed=seed, start_ns=t0 + int(LEAD_S * 1e9))
    load = Load(starts, ends, watts=150.0)
    load.write(tmp_path / f"load{seed}.bin")
    nvml_env(gpus=1, update_ms=100, t0_ns=t0, waveform="constant", base_w=100,
             load_file=tmp_path / f"load{seed}.bin", load_w=150, **env)
    with greenprobe.Probe(sensors=["nvml"], period_us=200, nvml_library=str(fake_nvml), nvml_min_period_us=100,
                          baseline_s=0.5) as probe:
        assert time.monotonic_ns() < starts[0], "the probe took longer to open than the schedule allows"
        follow(probe, starts, ends)
    (row,) = [r for r in probe.summary().to_pylist() if r["sensor"] == "nvml" and r["label"] == "infer"]
    return row, truth_per_call(probe, Total(Wave("constant", base_w=100, t0_ns=t0), load)), probe


def rapl_run(tmp_path, seed: int):
    t0 = time.monotonic_ns()
    starts, ends = gap_schedule(CALLS, CALL_S, MAX_GAP_S, seed=seed, start_ns=t0 + int(LEAD_S * 1e9))
    load = Load(starts, ends, watts=30.0)
    run = tmp_path / f"rapl{seed}"
    run.mkdir()
    load.write(run / "load.bin")
    max_uj = 262_143_328_850
    files = make_powercap_tree(run / "powercap", [("intel-rapl:0", "package-0", max_uj)])
    wave = Wave("constant", base_w=20, t0_ns=t0)
    cfg = {"kind": "powercap", "t0_ns": t0, "period_ns": 1_000_000, "duration_s": LEAD_S + 6.0, "wave": wave.kwargs(),
           "load": load.kwargs(run / "load.bin"),
           "targets": [{"path": str(files["package-0"]), "scale": 1.0, "max_uj": max_uj, "offset_uj": 1000}]}
    writer = Writer(cfg, run)
    writer.wait_started()
    try:
        with greenprobe.Probe(sensors=["rapl-powercap"], period_us=200, powercap_root=str(run / "powercap"),
                              baseline_s=0.3) as probe:
            assert time.monotonic_ns() < starts[0], "the probe took longer to open than the schedule allows"
            follow(probe, starts, ends)
    finally:
        writer.stop()
    (row,) = [r for r in probe.summary().to_pylist() if r["label"] == "infer" and r["sensor"] != "all"]
    return row, truth_per_call(probe, Total(wave, load)), probe


def check(rows_truths: list, idle_w: float, extra_w: float, update_ms: float) -> None:
    covered, errors = 0, []
    for row, truth in rows_truths:
        assert row["calls"] == CALLS and row["method"] == "regression"
        assert row["resolution"].startswith("statistical") and abs(row["update_period_ns"] / 1e6 - update_ms) < 0.02 * update_ms
        assert row["baseline_source"] == "idle-measured" and abs(row["baseline_power_w"] - idle_w) < 0.02 * idle_w
        err = (row["energy_j_per_call"] - truth) / truth
        errors.append(err)
        assert abs(err) <= 0.05, f"per-call mean {row['energy_j_per_call']:.6g} J vs exact {truth:.6g} J ({err:.2%})"
        covered += row["energy_j_per_call_low"] <= truth <= row["energy_j_per_call_high"]
        net_truth = truth - idle_w * row["time_s_mean"]
        assert abs(row["energy_j_per_call_net"] - net_truth) <= 0.1 * net_truth
    # A calibrated 95 % interval misses now and then: in 10 sessions it covers 8 or fewer times with
    # probability 8.6 %, so "at least 9 of 10" failed that often with nothing wrong (it did, at 8 of
    # 10 with every error under 0.01 %). The bar is the count below which a calibrated interval falls
    # at most 2 % of the time (8 of 10: 1.15 %); coverage itself is measured over 50 simulated
    # sessions per case in tests/python/test_estimator.py, and 200 in benchmarks/RESULTS.md.
    from scipy.stats import binom

    n = len(rows_truths)
    need = int(binom.ppf(0.02, n, 0.95))
    assert covered >= need, (
        f"95 % interval covered the exact mean in {covered} of {n} seeded runs (a calibrated interval covers "
        f">= {need} with 98 % probability); errors {np.round(np.array(errors) * 100, 4).tolist()} %")


def test_nvml_100ms_counter_resolves_half_millisecond_calls(fake_nvml, nvml_env, tmp_path):
    results = [nvml_run(fake_nvml, nvml_env, tmp_path, seed)[:2] for seed in SEEDS]
    check(results, idle_w=100.0, extra_w=150.0, update_ms=100)


def test_rapl_1ms_counter_resolves_half_millisecond_calls(tmp_path):
    results = [rapl_run(tmp_path, seed)[:2] for seed in SEEDS]
    check(results, idle_w=20.0, extra_w=30.0, update_ms=1)


def test_nvml_power_only_board_resolves_half_millisecond_calls(fake_nvml, nvml_env, tmp_path):
    """No energy counter (pre-Volta): the instant power reading, each the mean of 25 ms out of every
    100 ms. The fit uses the marked time inside each averaged window."""
    row, truth, probe = nvml_run(fake_nvml, nvml_env, tmp_path, 0, no_energy=1, window_ms=25)
    assert {c.quantity for c in probe.channels()} == {"power"}
    err = (row["energy_j_per_call"] - truth) / truth
    assert abs(err) <= 0.05, f"per-call mean {row['energy_j_per_call']:.6g} J vs exact {truth:.6g} J ({err:.2%})"
    assert row["energy_j_per_call_high"] - row["energy_j_per_call_low"] < 0.1 * truth  # a 95 % interval, one run
    assert "each the mean of 25 ms" in row["resolution"] and row["method"] == "regression"
    assert abs(row["baseline_power_w"] - 100) < 2
