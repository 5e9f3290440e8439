"""NVML field values end to end on the fake library: each reading dated by NVML's own timestamp
(FAKE_NVML_STAMP_LOG records when the fake fetched each call's values), and Grace Hopper's module
power (FAKE_NVML_MODULE_GPUS: GPU power plus a known CPU power) against exact truth, with the
module containing its GPU in every total."""

from __future__ import annotations

import time

import numpy as np

import greenprobe
from helpers import assert_accuracy, compare, run_marks
from truth import Total, Wave


def stamps(path) -> np.ndarray:
    """The fake's log: per nvmlDeviceGetFieldValues call (CLOCK_MONOTONIC ns of the fetch, the
    timestamp it gave in µs, 1 if that timestamp was garbage)."""
    return np.fromfile(path, dtype="<i8").reshape(-1, 3)


def nearest(sorted_t: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Distance from each t to the nearest of sorted_t."""
    i = np.clip(np.searchsorted(sorted_t, t), 1, sorted_t.size - 1)
    return np.minimum(np.abs(sorted_t[i] - t), np.abs(sorted_t[i - 1] - t))


def test_samples_are_dated_when_nvml_fetched_them(fake_nvml, nvml_env, tmp_path):
    """Calls of 2 ms fetching at 90 % of the call: every sample lies at its fetch (dated at the
    poll's middle it would be ~0.8 ms early), and the metadata counts the timestamps used."""
    log = tmp_path / "stamps"
    nvml_env(gpus=2, update_ms=20, call_us=2000, stamp_at=0.9, stamp_log=log)
    with greenprobe.Probe(sensors=["nvml"], period_us=1000, record_all=True, nvml_library=str(fake_nvml)) as probe:
        time.sleep(0.3)
    fetched = np.sort(stamps(log)[:, 0])
    t = np.concatenate([c.t_ns for c in probe.channels()])
    assert t.size > 100
    d = nearest(fetched, t)
    print(f"{t.size} samples; distance to the fake's fetch: median {np.median(d):.0f} ns, max {d.max()} ns")
    assert d.max() <= 3000, d.max()
    (info,) = [s["info"] for s in probe.metadata()["sensors"] if s["kind"] == "nvml"]
    assert int(info["timestamps_used"]) >= t.size and info["timestamps_rejected"] == "0"


def test_garbage_timestamps_fall_back_to_the_poll_and_are_counted(fake_nvml, nvml_env, tmp_path):
    """Every second call's timestamps are an hour off (a wall clock stepped by NTP): those readings
    are dated at their poll, inside it, and counted as rejected; the others at their fetch."""
    log = tmp_path / "stamps"
    nvml_env(gpus=1, update_ms=20, call_us=2000, stamp_at=0.9, stamp_shift_us=-3_600_000_000,
             stamp_shift_every=2, stamp_log=log)
    with greenprobe.Probe(sensors=["nvml"], period_us=1000, record_all=True, nvml_library=str(fake_nvml)) as probe:
        time.sleep(0.3)
    rec = stamps(log)
    rec = rec[np.argsort(rec[:, 0])]
    fetched, garbage = rec[:, 0], rec[:, 2] == 1
    t = probe.channels()[0].t_ns
    on_fetch = nearest(fetched[~garbage], t) <= 3000
    # the others: dated at their poll's middle, so before the garbage call's fetch (at 90 % of the
    # call) and after the fetch before it
    k = np.searchsorted(fetched, t)
    ok = k < fetched.size
    kk = np.minimum(k, fetched.size - 1)
    at_poll = ~on_fetch & ok & garbage[kk] & (fetched[kk] - t > 100_000)
    print(f"{t.size} samples: {on_fetch.sum()} at their fetch, {at_poll.sum()} at their poll, "
          f"{np.median(fetched[kk][at_poll] - t[at_poll]) / 1e3:.0f} us before the fetch (median)")
    assert (on_fetch | at_poll).all() and on_fetch.sum() > 20 and at_poll.sum() > 20
    (info,) = [s["info"] for s in probe.metadata()["sensors"] if s["kind"] == "nvml"]
    # record_all: one sample of this channel per poll, and two fields per call
    assert int(info["timestamps_used"]) == 2 * on_fetch.sum()
    assert int(info["timestamps_rejected"]) == 2 * at_poll.sum()


def test_grace_hopper_module_energy_matches_truth_and_totals_count_it_once(fake_nvml, nvml_env):
    """GPU 0 sits on a module whose CPU draws a known sine beside the GPU; GPU 1 is a plain board.
    module0's energy (power readings integrated) matches the exact GPU + CPU energy; gpu0 stays
    measured by its own counter; the total adds module0 and gpu1, never gpu0 on top."""
    t0 = time.monotonic_ns()
    gpu0 = Wave("sine", base_w=120, amp_w=10, freq_hz=0.25, t0_ns=t0)
    gpu1 = Wave("sine", base_w=120, amp_w=10, freq_hz=0.25, t0_ns=t0, scale=2.0)
    cpu0 = Wave("sine", base_w=60, amp_w=20, freq_hz=0.5, t0_ns=t0)
    nvml_env(gpus=2, module_gpus="0", update_ms=20, window_ms=20, t0_ns=t0, waveform="sine", base_w=120, amp_w=10,
             freq_hz=0.25, module_cpu_w=60, module_cpu_amp_w=20, module_cpu_freq_hz=0.5)
    with greenprobe.Probe(sensors=["nvml"], period_us=1000, nvml_library=str(fake_nvml)) as probe:
        run_marks("long", 10, 0.1, 0.02)
    chans = {c["domain"]: c for c in probe.metadata()["channels"] if c["quantity"] == "power"}
    assert chans["module0"]["parent_domain"] == "" and chans["gpu0"]["parent_domain"] == "module0"
    assert chans["gpu1"]["parent_domain"] == "" and "module1" not in chans
    (info,) = [s["info"] for s in probe.metadata()["sensors"] if s["kind"] == "nvml"]
    assert info["gpu0_module_power"].startswith("module0: field 186 at module scope")
    assert info["gpu1_module_power"].startswith("none:")
    truth = {"module0": Total(gpu0, cpu0), "gpu0": gpu0, "gpu1": gpu1}
    results = compare(probe, "long", truth, sensor="nvml")
    for domain, (est, true, _, _) in results.items():
        print(f"{domain}: worst interval error {np.max(np.abs(est - true) / true):.3%} over {est.size} intervals")
    assert_accuracy(results, per_interval_rel=0.01)
    rows = {r["domain"]: r for r in probe.intervals().to_pylist() if r["label"] == "long" and r["sensor"] == "nvml"}
    assert rows["module0"]["method"] == "power-integration" and rows["gpu0"]["method"] == "counter-interpolation"
    summary = [r for r in probe.summary().to_pylist() if r["label"] == "long"]
    (total,) = [r for r in summary if r["sensor"] == "all"]
    assert set(total["domains"].split(",")) == {"nvml/module0", "nvml/gpu1"}
    per_domain = {r["domain"]: r["energy_j_per_call"] for r in summary if r["sensor"] == "nvml"}
    assert total["energy_j_per_call"] == per_domain["module0"] + per_domain["gpu1"]
    marks = [m for m in probe.marks() if m[0] == "long"]
    true_total = np.mean([truth["module0"].energy_between(a, b) + gpu1.energy_between(a, b) for _, a, b, *_ in marks])
    print(f"total per call {total['energy_j_per_call']:.4f} J, truth {true_total:.4f} J")
    assert abs(total["energy_j_per_call"] - true_total) / true_total <= 0.02
