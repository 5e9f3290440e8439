"""The hwmon sensor end to end against stand-in chips whose readings are a known function of time.

A stand-in hwmon tree (a name file, a device link, the reading files), its readings written by
standin_writer.py in another process: an energy counter (µJ, as i915/xe/amd_energy give) and, on a
second chip, a power1_average with its power1_average_interval (µW, ms, as an ACPI power meter
gives). Every interval's attributed energy is compared with the exact energy of the stand-in's power
law, and must lie within its stated bounds.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import greenprobe
from helpers import assert_accuracy, compare, open_as_nobody, run_marks, writer_stalls
from standins import Writer, make_powercap_tree
from truth import Wave
from virtual import Updating, drive, poll_times

MAX_UJ = 10**19 - 1  # a 64-bit accumulator as the kernel keeps it: no wrap in the test's reach


def make_chip(root: Path, dirname: str, name: str, files: dict, device: str = "") -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    for f, v in files.items():
        (d / f).write_text(f"{v}\n")
    if device:
        os.symlink(device, d / "device")
    return d


def _chips(root: Path):
    xe = make_chip(root, "hwmon3", "xe", {"energy1_input": "%020d" % 0, "energy1_label": "card",
                                          "power1_max": 250_000_000}, "../../../0000:03:00.0")
    pm = make_chip(root, "hwmon7", "power_meter", {"power1_average": "%020d" % 0, "power1_average_interval": 10,
                                                   "power1_cap": 0}, "../../../ACPI000D:00")
    make_chip(root, "hwmon0", "coretemp", {"temp1_input": 40000})
    return xe, pm


@dataclass
class RealClockRun:
    probe: greenprobe.Probe
    logs: list         # each writer's log: (written at, raw value, write ended at) per write
    gpu: Wave          # the counter's power, a known function of time
    meter: Wave        # the power meter's
    counter_cfg: dict
    power_cfg: dict


def real_clock_run(tmp_path: Path, duration_s: float) -> RealClockRun:
    """The two chips written in real time by stand-in writers in other processes (standin_writer.py:
    the counter every 2 ms, the meter's average every 10 ms), the sampler's own thread polling them at
    1 kHz around 12 marks of 100 ms (benchmarks/diag_hwmon_busy.py runs it too)."""
    t0 = time.monotonic_ns()
    gpu = Wave("sine", base_w=120, amp_w=40, freq_hz=1.5, t0_ns=t0)
    meter = Wave("sine", base_w=300, amp_w=50, freq_hz=1.0, t0_ns=t0)
    root = tmp_path / "hwmon"
    xe, pm = _chips(root)
    counter_cfg = {"kind": "powercap", "t0_ns": t0, "period_ns": 2_000_000, "duration_s": duration_s,
                   "wave": gpu.kwargs(), "targets": [{"path": str(xe / "energy1_input"), "scale": 1.0,
                                                      "max_uj": MAX_UJ, "offset_uj": 123_456_789_012}]}
    power_cfg = {"kind": "power_average", "t0_ns": t0, "period_ns": 10_000_000, "duration_s": duration_s,
                 "wave": meter.kwargs(), "targets": [{"path": str(pm / "power1_average"), "scale": 1.0,
                                                      "window_ns": 10_000_000}]}
    writers = [Writer(counter_cfg, tmp_path), Writer(power_cfg, tmp_path)]
    for w in writers:
        w.wait_started()
    try:
        with greenprobe.Probe(sensors=["hwmon"], hwmon_root=str(root), period_us=1000) as probe:
            time.sleep(0.1)
            run_marks("infer", 12, 0.1, 0.02)
    finally:
        logs = [w.stop() for w in writers]
    return RealClockRun(probe, logs, gpu, meter, counter_cfg, power_cfg)


def raw_at_open(counts: np.ndarray, written: set) -> int:
    """The counter's raw value when the sensor opened it: the offset by which most recorded values
    (µJ since open) are a value the writer wrote."""
    votes: dict = {}
    for c in counts[:: max(1, counts.size // 16)]:
        for w in written:
            votes[w - int(c)] = votes.get(w - int(c), 0) + 1
    return max(votes, key=votes.get)


def _check_channels(probe):
    info = {c["domain"]: c for c in probe.channel_info()}
    assert set(info) == {"xe-card", "power_meter"}
    assert info["xe-card"]["quantity"] == "energy" and info["xe-card"]["device_bus_id"] == "0000:03:00.0"
    assert info["power_meter"]["quantity"] == "power"
    assert info["power_meter"]["averaging_window_ns"] == 10_000_000  # from power1_average_interval
    assert not any(c["estimated"] for c in info.values())
    rows = [r for r in probe.intervals().to_pylist() if r["label"] == "infer"]
    methods = {r["domain"]: r["method"] for r in rows}
    assert methods == {"xe-card": "counter-interpolation", "power_meter": "power-integration"}
    sensor_info = probe.metadata()["sensors"][0]["info"]
    assert "coretemp (hwmon0): no energy or power readings" in sensor_info["skipped"]


T0 = 10**12  # the virtual clock's origin (any instant: nothing reads the wall clock)


def _virtual_run(tmp_path, stall_ns: int = 0, seed: int = 1):
    """The two chips on a virtual clock: an energy counter (µJ) updated every 2 ms, a 10 ms power
    average updated every 10 ms, polled every 1 ms (+ up to 10 % jitter). 12 marks of 100 ms, each
    with 4 nested steps of 20 ms; with ``stall_ns``, the sampler is descheduled for that long across
    every mark's start and end (the worst place a busy machine can put it)."""
    gpu = Wave("sine", base_w=120, amp_w=40, freq_hz=1.5, t0_ns=T0)
    meter = Wave("sine", base_w=300, amp_w=50, freq_hz=1.0, t0_ns=T0)
    xe, pm = _chips(tmp_path / "hwmon")
    files = [
        Updating(str(xe / "energy1_input"), 2_000_000, T0 + 370_000,
                 lambda u: b"%020d\n" % (123_456_789_012 + math.floor(gpu.energy_at_ns(u) * 1e6))),
        Updating(str(pm / "power1_average"), 10_000_000, T0 + 4_100_000,
                 lambda u: b"%020d\n" % math.floor(meter.energy_between(u - 10_000_000, u) / 0.01 * 1e6)),
    ]
    rng = np.random.default_rng(seed)
    marks, t = [], T0 + 100_000_000
    for i in range(12):
        t += int(rng.integers(0, 2_000_000))  # edges anywhere on the update lattices
        marks.append(("infer", t, t + 100_000_000))
        marks += [("step", t + 5_000_000 + 22_000_000 * k, t + 25_000_000 + 22_000_000 * k) for k in range(4)]
        t += 120_000_000
    stalls = [(m[j] - stall_ns // 2, stall_ns) for m in marks if m[0] == "infer" for j in (1, 2)] if stall_ns else []
    for f in files:
        f.show_at(T0)
    with greenprobe.Probe(sensors=["hwmon"], hwmon_root=str(tmp_path / "hwmon"), period_us=1000,
                          clock="virtual") as probe:
        drive(probe, files, poll_times(T0 + 1_000_000, t + 100_000_000, 1_000_000, seed, stalls=stalls))
        for label, a, b in marks:
            probe.add_mark(label, a, b)
    return probe, {"xe-card": gpu, "power_meter": meter}


def test_energy_counter_and_power_average_match_the_truth(tmp_path):
    probe, truth = _virtual_run(tmp_path)
    _check_channels(probe)
    # each interval within 1 % of the exact energy, and the exact energy inside its bounds. The dating
    # of each counter update to the middle of its 1 ms poll window is the error's budget: up to 0.5 ms
    # of power at each end, 1 % of a 100 ms interval at its mean power (the worst here: 0.77 %).
    results = compare(probe, "infer", truth, sensor="hwmon")
    assert_accuracy(results, per_interval_rel=0.01)
    # the 20 ms steps nested in them: the same budget is 5 % of each; their sum holds to 1 %
    steps = compare(probe, "step", truth, sensor="hwmon")
    assert_accuracy(steps, summed_rel=0.01)
    for label, res in (("infer", results), ("step", steps)):
        for domain, (est, true, low, high) in res.items():
            assert len(est) == (12 if label == "infer" else 48) and np.isfinite(low).all() and np.isfinite(high).all()
    est, true, low, high = compare(probe, "infer", truth, sensor="hwmon")["xe-card"]
    # A counter's bounds span, at each end of an interval, the counter's update (2 ms) and the poll
    # that saw it (1 ms): 2 x 3 ms of energy at the power there, at most 160/120 of the interval's mean
    # (the sine). So the width, in seconds of the interval's mean power, is at most 8 ms (the median).
    width_s = (high - low) / (true / 0.1)
    assert np.median(width_s) <= 2 * (0.002 + 0.001) * 160 / 120, ("a counter's bounds are a few update periods wide",
                                                                  width_s)


@pytest.mark.parametrize("stall_ms", [3, 8])
def test_a_sampler_descheduled_at_every_edge_widens_its_bounds_and_stays_inside_them(tmp_path, stall_ms):
    """What a busy machine does to the instrument (and what made the wall-clock version of the test
    above fail 1 run in ~100, at 1.025 % against 1 %): the sampler's thread, descheduled across a
    mark's edge, sees the counter's updates there late, so each is dated only to within the stall.
    The estimate then errs by up to about half the stall's energy; the bounds say so and hold."""
    quiet, truth = _virtual_run(tmp_path / "quiet")
    busy, _ = _virtual_run(tmp_path / "busy", stall_ns=stall_ms * 1_000_000)
    est, true, low, high = compare(busy, "infer", truth, sensor="hwmon")["xe-card"]
    q_est, q_true, q_low, q_high = compare(quiet, "infer", truth, sensor="hwmon")["xe-card"]
    assert np.array_equal(true, q_true)  # the same marks
    assert ((low <= true + 1e-6) & (true <= high + 1e-6)).all(), "the truth inside the bounds, stalls or not"
    assert np.median(high - low) > np.median(q_high - q_low) + stall_ms * 1e-3 * 80, "wider by the stall's energy"
    rel = np.abs(est - true) / true
    assert rel.max() <= stall_ms * 1e-3 * 160 / 12, "at most the stall's energy at peak power (the mean is 12 J)"
    # the power meter averages over 10 ms: a few ms late changes which reading an edge uses, within its bounds
    est, true, low, high = compare(busy, "infer", truth, sensor="hwmon")["power_meter"]
    assert ((low <= true + 1e-6) & (true <= high + 1e-6)).all()


def test_the_counter_on_the_real_clock_stays_inside_its_bounds(tmp_path):
    """A smoke test of the sampler's own thread against a stand-in written in real time by another
    process (standin_writer.py): the same chips. Accuracy is the virtual-clock tests' business (a
    busy machine delays this thread, see above); here the truth must lie inside every interval's
    bounds, and torn reads of the stand-in's plain files must be rare."""
    run = real_clock_run(tmp_path, 5.0)
    probe, logs, gpu, meter = run.probe, run.logs, run.gpu, run.meter
    counter_cfg, power_cfg = run.counter_cfg, run.power_cfg
    _check_channels(probe)
    # The stand-in's files are plain files: a pread racing the writer's pwrite can take some digits
    # from the new value and the rest from the old one (sysfs formats each read afresh: no such thing
    # there). Such torn reads, and the writer's stalls, are left out of the comparison; they must be rare.
    ch = {c.domain: c for c in probe.channels()}
    counter_written = {raw for _, raw, _ in logs[0][0]}
    counts = np.round(ch["xe-card"].energy_j * 1e6).astype(np.int64)
    base = raw_at_open(counts, counter_written)
    torn_counter = [k for k, c in enumerate(counts) if base + int(c) not in counter_written]
    power_written = {raw for _, raw, _ in logs[1][0]}
    micro_w = np.round(ch["power_meter"].power_w * 1e6).astype(np.int64)
    torn_power = [k for k, v in enumerate(micro_w) if int(v) not in power_written]
    assert len(torn_counter) <= 0.01 * counts.size and len(torn_power) <= 0.02 * micro_w.size, (torn_counter, torn_power)
    stalls = writer_stalls(logs[0][0], counter_cfg["period_ns"]) + writer_stalls(logs[1][0], power_cfg["period_ns"])
    stalls += [(int(ch["xe-card"].t_ns[k]) - 5_000_000, int(ch["xe-card"].t_ns[k]) + 5_000_000) for k in torn_counter]
    stalls += [(int(ch["power_meter"].t_ns[k]) - 25_000_000, int(ch["power_meter"].t_ns[k]) + 15_000_000)
               for k in torn_power]
    assert_accuracy(compare(probe, "infer", {"xe-card": gpu, "power_meter": meter}, sensor="hwmon", stalls=stalls))


def test_auto_with_the_root_set_reads_hwmon_and_leaves_out_chips_another_sensor_measures(tmp_path, monkeypatch, capsys):
    root = tmp_path / "hwmon"
    make_chip(root, "hwmon0", "amd_energy", {"energy1_input": 1000, "energy1_label": "Esocket0"})
    make_chip(root, "hwmon1", "amdgpu", {"power1_average": 80_000_000, "power1_label": "PPT"}, "../../../0000:c3:00.0")
    pc = tmp_path / "powercap"
    make_powercap_tree(pc, [("intel-rapl:0", "package-0", 10**9)])
    monkeypatch.setenv("GREENPROBE_HWMON_ROOT", str(root))
    monkeypatch.setenv("GREENPROBE_POWERCAP_ROOT", str(pc))
    monkeypatch.setenv("GREENPROBE_NVML_LIBRARY", str(tmp_path / "nope.so"))
    monkeypatch.setenv("GREENPROBE_MSR_PATH", str(tmp_path / "nope{cpu}"))
    with greenprobe.Probe(sensors="auto", period_us=10000, settle_timeout_s=0.05) as probe:
        pass
    by_sensor = {}
    for c in probe.channel_info():
        by_sensor.setdefault(c["sensor"], []).append(c["domain"])
    # rapl-powercap measures the CPU package, so amd_energy (the same energy) is not read twice
    assert by_sensor == {"rapl-powercap": ["package-0"], "hwmon": ["amdgpu-ppt"]}
    hw = next(s for s in probe.metadata()["sensors"] if s["kind"] == "hwmon")
    assert "amd_energy (hwmon0): in skip_chips" in hw["info"]["skipped"]

    # `greenprobe sensors` says the same: hwmon available, amdgpu read, amd_energy left out and why
    from greenprobe.cli import main

    assert main(["sensors", "--json"]) == 0
    listing = {s["kind"]: s for s in json.loads(capsys.readouterr().out)}
    assert listing["hwmon"]["available"] and listing["hwmon"]["domains"] == ["amdgpu-ppt"]
    assert "amd_energy (hwmon0): in skip_chips" in listing["hwmon"]["reason"]
    assert listing["hwmon"]["auto"] == "device"


def test_beside_nvml_auto_leaves_out_the_power_meters_that_hold_the_gpus(tmp_path, monkeypatch, fake_nvml):
    """An ACPI power meter measures the GPUs too (a Grace Hopper module, a whole server): with NVML
    open, auto reads the other chips and leaves the meters out, so no total counts a GPU twice."""
    root = tmp_path / "hwmon"
    make_chip(root, "hwmon0", "power_meter", {"power1_average": 600_000_000, "power1_average_interval": 50})
    make_chip(root, "hwmon1", "xe", {"energy1_input": 1000, "energy1_label": "card"})
    monkeypatch.setenv("GREENPROBE_HWMON_ROOT", str(root))
    monkeypatch.setenv("GREENPROBE_NVML_LIBRARY", str(fake_nvml))
    monkeypatch.setenv("GREENPROBE_PERF_EVENT_ROOT", str(tmp_path / "nope"))
    monkeypatch.setenv("GREENPROBE_POWERCAP_ROOT", str(tmp_path / "nope"))
    monkeypatch.setenv("GREENPROBE_MSR_PATH", str(tmp_path / "nope{cpu}"))
    with greenprobe.Probe(sensors="auto", period_us=10000, settle_timeout_s=0.05) as probe:
        pass
    by_sensor = {}
    for c in probe.channel_info():
        by_sensor.setdefault(c["sensor"], set()).add(c["domain"])
    assert by_sensor["hwmon"] == {"xe-card"} and "gpu0" in by_sensor["nvml"], by_sensor
    hw = next(s for s in probe.metadata()["sensors"] if s["kind"] == "hwmon")
    assert "power_meter (hwmon0): in skip_chips" in hw["info"]["skipped"]
    # named, hwmon reads the meter all the same
    with greenprobe.Probe(sensors=["hwmon"], period_us=10000, settle_timeout_s=0.05) as probe:
        pass
    assert {c["domain"] for c in probe.channel_info()} == {"power_meter", "xe-card"}


def test_sensors_listing_says_how_to_fix_a_missing_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GREENPROBE_HWMON_ROOT", str(tmp_path / "no-hwmon"))
    from greenprobe.cli import main

    assert main(["sensors", "--json"]) == 0
    hw = {s["kind"]: s for s in json.loads(capsys.readouterr().out)}["hwmon"]
    assert not hw["available"] and hw["category"] == "not-found"
    assert str(tmp_path / "no-hwmon") in hw["reason"] and "GREENPROBE_HWMON_ROOT" in hw["fix"]


def test_unreadable_amd_energy_is_a_permission_error_with_the_fix():
    """Drops root in a forked child so that file modes are enforced (the tests run as root)."""
    d = Path(tempfile.mkdtemp(prefix="gp-hwmon-perm-"))
    os.chmod(d, 0o755)
    chip = make_chip(d / "hwmon", "hwmon0", "amd_energy", {"energy1_input": 100, "energy1_label": "Esocket0"})
    for p in [d / "hwmon", *(d / "hwmon").rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o444)
    os.chmod(chip / "energy1_input", 0o400)  # as since CVE-2020-8694
    out = open_as_nobody(["hwmon"], hwmon_root=str(d / "hwmon"))
    assert out.startswith("PERMISSION"), out
    assert str(chip / "energy1_input") in out
    assert "CVE-2020-8694" in out and "chmod" in out and "udev" in out and "greenprobe daemon" in out


# NVIDIA Grace Hopper's ACPI power meters, as power1_oem_info names them: the module holds the Grace
# socket (and Hopper and memory); the Grace socket holds the CPU and SysIO rails. Each stand-in meter
# reads the same sine scaled: cpu 0.3 + sysio 0.1 = grace 0.4; grace 0.4 + the GPU part 0.6 = module 1.
GRACE_METERS = {"grace-cpu-0": ("CPU Power Socket 0", 0.3), "grace-sysio-0": ("SysIO Power Socket 0", 0.1),
                "grace-socket-0": ("Grace Power Socket 0", 0.4), "grace-module-0": ("Module Power Socket 0", 1.0)}
GRACE_PARENTS = {"grace-module-0": "", "grace-socket-0": "grace-module-0", "grace-cpu-0": "grace-socket-0",
                 "grace-sysio-0": "grace-socket-0"}


def make_grace_meters(root: Path) -> dict[str, Path]:
    """power1_average in hwmon<N>/, power1_oem_info on the ACPI device hwmon<N>/device links to."""
    out = {}
    for n, (domain, (oem, _)) in enumerate(GRACE_METERS.items()):
        acpi = root.parent / "devices" / f"ACPI000D:0{n}"
        acpi.mkdir(parents=True)
        (acpi / "power1_oem_info").write_text(oem + "\n")
        out[domain] = make_chip(root, f"hwmon{n}", "power_meter", {"power1_average": "%020d" % 0,
                                                                   "power1_average_interval": 10, "power1_cap": 0},
                                str(acpi)) / "power1_average"
    return out


def test_grace_hopper_meters_nest_and_the_total_is_the_module_not_the_sum_of_meters(tmp_path):
    t0 = time.monotonic_ns()
    waves = {d: Wave("sine", base_w=400, amp_w=80, freq_hz=1.0, t0_ns=t0, scale=k) for d, (_, k) in GRACE_METERS.items()}
    files = make_grace_meters(tmp_path / "hwmon")
    cfg = {"kind": "power_average", "t0_ns": t0, "period_ns": 10_000_000, "duration_s": 8.0,
           "wave": waves["grace-module-0"].kwargs() | {"scale": 1.0},
           "targets": [{"path": str(files[d]), "scale": k, "window_ns": 10_000_000} for d, (_, k) in GRACE_METERS.items()]}
    writer = Writer(cfg, tmp_path)
    writer.wait_started()
    try:
        with greenprobe.Probe(sensors=["hwmon"], hwmon_root=str(tmp_path / "hwmon"), period_us=1000) as probe:
            time.sleep(0.1)
            run_marks("infer", 12, 0.1, 0.02)
    finally:
        logs = writer.stop()

    chans = {c["domain"]: c for c in probe.metadata()["channels"]}
    assert {d: c["parent_domain"] for d, c in chans.items()} == GRACE_PARENTS, (
        "the Grace meters' containment is read from power1_oem_info (hwmon.cpp)")
    (info,) = [s["info"] for s in probe.metadata()["sensors"] if s["kind"] == "hwmon"]
    assert "inside grace-socket-0" in info["oem_info_grace-cpu-0"], info
    # torn reads of the stand-in's plain files (see the first test), and the writer's stalls, left out
    ch = {c.domain: c for c in probe.channels()}
    stalls = writer_stalls(logs[0], cfg["period_ns"])
    for i, d in enumerate(GRACE_METERS):
        written = {raw for _, raw, _ in logs[i]}
        micro_w = np.round(ch[d].power_w * 1e6).astype(np.int64)
        torn = [k for k, v in enumerate(micro_w) if int(v) not in written]
        assert len(torn) <= 0.02 * micro_w.size, (d, torn)
        stalls += [(int(ch[d].t_ns[k]) - 25_000_000, int(ch[d].t_ns[k]) + 15_000_000) for k in torn]
    assert_accuracy(compare(probe, "infer", waves, sensor="hwmon", stalls=stalls), per_interval_rel=0.01)

    summary = [r for r in probe.summary().to_pylist() if r["label"] == "infer"]
    (total,) = [r for r in summary if r["sensor"] == "all"]
    assert total["domains"] == "hwmon/grace-module-0", (
        f"the total adds {total['domains']}: the meters inside the module are counted again")
    marks = [m for m in probe.marks() if m[0] == "infer"]
    true_module = np.mean([waves["grace-module-0"].energy_between(a, b) for _, a, b, *_ in marks])
    true_all = true_module * sum(k for _, k in GRACE_METERS.values())
    got = total["energy_j_per_call"]
    print(f"total per call {got:.4f} J, module's truth {true_module:.4f} J, every meter added {true_all:.4f} J")
    assert abs(got - true_module) / true_module <= 0.01, (
        f"the total per call {got:.4f} J is not the module's {true_module:.4f} J (every meter added: {true_all:.4f} J)")


def test_grace_meters_and_nvml_modules_are_not_nested_across_sensors(tmp_path, fake_nvml, nvml_env):
    """NVML's module0 and hwmon's grace-module-0 read the same Grace Hopper module through two sensors:
    each sensor nests its own domains only, and a total over both would add both (documented: leave one
    out with skip_chips)."""
    from greenprobe.topology import parents, top_level

    for d, path in make_grace_meters(tmp_path / "hwmon").items():
        path.write_text("%020d\n" % int(GRACE_METERS[d][1] * 400e6))
    nvml_env(gpus=1, module_gpus="0", update_ms=20, window_ms=20, waveform="constant", base_w=120, module_cpu_w=60)
    with greenprobe.Probe(sensors=["nvml", "hwmon"], period_us=5000, nvml_library=str(fake_nvml),
                          hwmon_root=str(tmp_path / "hwmon")) as probe:
        time.sleep(0.1)
    chans = probe.metadata()["channels"]
    stated = {(c["sensor"], c["domain"]): c["parent_domain"] for c in chans}
    want = {("hwmon", d): p for d, p in GRACE_PARENTS.items()}
    assert {k: v for k, v in stated.items() if k[0] == "hwmon"} == want, (
        "opening nvml beside hwmon changed the Grace meters' parents: each sensor states its own", stated)
    assert stated[("nvml", "gpu0")] == "module0" and stated[("nvml", "module0")] == "", (
        "opening hwmon beside nvml changed NVML's gpu0-in-module0", stated)
    assert parents(chans) == stated, "topology.parents must take the parents the sensors stated"
    tops = top_level(chans)
    assert {t for t in tops if t[1] in ("module0", "grace-module-0")} == {("nvml", "module0"), ("hwmon", "grace-module-0")}, (
        "containment is stated within one sensor only: both modules stay top level", tops)
    assert ("hwmon", "grace-cpu-0") not in tops and ("nvml", "gpu0") not in tops, tops
    # a parent without samples (here: left out) hands its children to the next one by name
    no_socket = top_level([c for c in chans if c["domain"] != "grace-socket-0"])
    assert ("hwmon", "grace-cpu-0") not in no_socket and ("hwmon", "grace-sysio-0") not in no_socket, (
        "with grace-socket-0 absent its rails were counted at the top level beside grace-module-0: "
        "topology.parent_by_name must hand hwmon's grace-cpu-S/grace-sysio-S to grace-module-S", no_socket)
