"""rapl-perf through greenprobe.Probe, against the RAPL perf PMU faked at the libc boundary.

tests/fixtures/fake_perf.c is loaded with LD_PRELOAD into a child Python process (the library must
be there from the start: it replaces syscall, read and close). The child opens a Probe on a power
PMU tree written here, runs marked intervals and reports the attributed energies with the exact
truth of the fake's power law (truth.Wave, the same law written independently); this process checks
them. The fake counts in 2^-14 J hardware steps shifted to 2^-32 J, as the kernel does, so the
truth lying inside the reported bounds also checks the channels' resolution.
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
from helpers import assert_accuracy
from standins import build_fake_perf, make_perf_tree

HERE = Path(__file__).resolve().parent
# where this process's greenprobe comes from (the installed package in CI, python/ in a source tree
# that holds a built _core): the child imports the same one
PYTHON_DIR = Path(greenprobe.__file__).resolve().parents[1]

CHILD = r"""
import json, sys
import numpy as np
import greenprobe
from helpers import compare, run_marks
from truth import Wave

cfg = json.loads(sys.argv[1])
try:
    probe = greenprobe.Probe(sensors=["rapl-perf"], period_us=200, **cfg["options"])
    with probe:
        for label, count, duration_s, gap_s, busy in cfg["marks"]:
            run_marks(label, count, duration_s, gap_s, busy=busy)
except greenprobe.errors.SensorError as e:
    print(json.dumps({"error": type(e).__name__, "category": e.category, "message": e.message, "fix": e.fix}))
    sys.exit(0)
waves = {d: Wave(**w) for d, w in cfg["waves"].items()}
out = {"channels": [{k: c[k] for k in ("domain", "parent_domain", "resolution_j", "max_power_w")}
                    for c in probe.channel_info()],
       "info": [s for s in probe.sensor_info() if s["kind"] == "rapl-perf"][0]["info"],
       "compare": {}}
# Where the sampler itself did not poll (this machine's cores are shared): the fake's counters move
# every millisecond, so a gap of over 1.5 ms between recorded samples is the sampler's (the factor
# helpers.writer_stalls applies to stand-in writers), and no sensor could date an edge inside it. Intervals with an edge there are left out of the accuracy check
# (compare allows a third at most), not out of the bounds check.
t = np.sort(probe.channels()[0].t_ns)
gap = np.flatnonzero(np.diff(t) > 1_500_000)
stalls = [(int(t[i]), int(t[i + 1])) for i in gap]
out["stalls_ms"] = [(b - a) / 1e6 for a, b in stalls]
out["all"] = {}
for label, *_ in cfg["marks"]:
    res = compare(probe, label, waves, stalls=stalls)
    out["compare"][label] = {d: [np.asarray(a, dtype=float).tolist() for a in arrays] for d, arrays in res.items()}
    res = compare(probe, label, waves)
    out["all"][label] = {d: [np.asarray(a, dtype=float).tolist() for a in arrays] for d, arrays in res.items()}
out["stats"] = probe.stats()
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope="session")
def fake_perf(tmp_path_factory) -> Path:
    return build_fake_perf(tmp_path_factory.mktemp("perf"))


def run_child(lib: Path, fake_env: dict, cfg: dict, log: Path) -> dict:
    env = dict(os.environ, **fake_env, LD_PRELOAD=str(lib), FAKE_PERF_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(PYTHON_DIR), str(HERE)]))
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def law(t0_ns: int, factors: dict) -> tuple[dict, dict]:
    """The fake's power law (factor x (base + amp sin)) as FAKE_PERF_* variables, and as truth.Wave
    arguments per (package, config)."""
    base, amp, freq = 60.0, 25.0, 3.0
    env = {"FAKE_PERF_BASE_W": str(base), "FAKE_PERF_AMP_W": str(amp), "FAKE_PERF_FREQ_HZ": str(freq),
           "FAKE_PERF_T0_NS": str(t0_ns), "FAKE_PERF_UPDATE_NS": "1000000", "FAKE_PERF_ESU": "14",
           "FAKE_PERF_SCALE": ",".join(f"{p}:{c}:{f}" for (p, c), f in factors.items())}
    waves = {key: {"shape": "sine", "base_w": base, "amp_w": amp, "freq_hz": freq, "t0_ns": t0_ns, "scale": f}
             for key, f in factors.items()}
    return env, waves


def check_truth(out: dict, label: str, **limits) -> None:
    """Accuracy on the intervals away from sampler stalls; the truth inside the bounds on all."""
    kept = {d: tuple(np.array(a) for a in arrays) for d, arrays in out["compare"][label].items()}
    assert_accuracy(kept, **limits)
    for domain, (_, true, low, high) in out["all"][label].items():
        true, low, high = np.array(true), np.array(low), np.array(high)
        assert np.all(low <= true + 1e-6) and np.all(true <= high + 1e-6), f"{domain}: truth outside the bounds"


def opens(log: Path) -> list[str]:
    return sorted(line[5:] for line in log.read_text().splitlines() if line.startswith("open "))


def test_two_sockets_every_domain_matches_the_exact_truth(tmp_path, fake_perf):
    cpus = {0: 0, 1: 0, 2: 1, 3: 1}
    events = {"energy-pkg": 2, "energy-cores": 1, "energy-ram": 3, "energy-psys": 5}
    options, env = make_perf_tree(tmp_path, cpus, "0,2", events)
    factors = {(0, 2): 1.0, (0, 1): 0.6, (0, 3): 0.15, (0, 5): 3.0, (1, 2): 0.8, (1, 1): 0.45, (1, 3): 0.2}
    law_env, waves = law(time.monotonic_ns(), factors)
    domain = {(0, 2): "package-0", (0, 1): "core-0", (0, 3): "dram-0", (0, 5): "psys", (1, 2): "package-1",
              (1, 1): "core-1", (1, 3): "dram-1"}
    cfg = {"options": options, "waves": {domain[k]: w for k, w in waves.items()},
           "marks": [["long", 8, 0.05, 0.01, False], ["short", 40, 0.002, 0.003, True]]}
    log = tmp_path / "perf.log"
    out = run_child(fake_perf, {**env, **law_env}, cfg, log)
    assert "error" not in out, out
    parents = {c["domain"]: c["parent_domain"] for c in out["channels"]}
    assert parents == {"package-0": "psys", "core-0": "package-0", "dram-0": "psys", "psys": "",
                       "package-1": "psys", "core-1": "package-1", "dram-1": "psys"}
    assert all(c["resolution_j"] == 2.0**-14 for c in out["channels"])
    assert {c["domain"]: c["max_power_w"] for c in out["channels"]}["psys"] == 2000.0
    # One descriptor per event and package, on the package's cpumask CPU; psys once.
    assert opens(log) == sorted(["42 2 0", "42 1 0", "42 3 0", "42 5 0", "42 2 2", "42 1 2", "42 3 2"])
    assert out["info"]["cpu_opened_per_package"] == "0:0,1:2"
    check_truth(out, "long", per_interval_rel=0.01)
    check_truth(out, "short", summed_rel=0.05)


def test_zen4_cpumask_with_a_cpu_per_ccd_counts_each_package_once(tmp_path, fake_perf):
    # Two sockets of 4 CCDs x 8 CPUs; a kernel before 6.11 lists one CPU per CCD.
    cpus = {c: c // 32 for c in range(64)}
    options, env = make_perf_tree(tmp_path, cpus, "0,8,16,24,32,40,48,56", {"energy-pkg": 2},
                                  vendor="AuthenticAMD", model=17)
    law_env, waves = law(time.monotonic_ns(), {(0, 2): 1.0, (1, 2): 1.7})
    cfg = {"options": options, "waves": {"package-0": waves[(0, 2)], "package-1": waves[(1, 2)]},
           "marks": [["long", 6, 0.05, 0.01, False]]}
    log = tmp_path / "perf.log"
    out = run_child(fake_perf, {**env, **law_env}, cfg, log)
    assert "error" not in out, out
    assert [(c["domain"], c["parent_domain"]) for c in out["channels"]] == [("package-0", ""), ("package-1", "")]
    assert opens(log) == ["42 2 0", "42 2 32"]
    assert out["info"]["cpumask_cpus_package_0"] == "0,8,16,24"
    # Opening every listed CPU would have counted each package 4 times.
    check_truth(out, "long", per_interval_rel=0.01)


def test_amd_single_socket_has_its_package_only(tmp_path, fake_perf):
    options, env = make_perf_tree(tmp_path, {0: 0, 1: 0, 2: 0, 3: 0}, "0", {"energy-pkg": 2}, vendor="AuthenticAMD")
    law_env, waves = law(time.monotonic_ns(), {(0, 2): 1.2})
    cfg = {"options": options, "waves": {"package-0": waves[(0, 2)]}, "marks": [["long", 5, 0.05, 0.01, False]]}
    out = run_child(fake_perf, {**env, **law_env}, cfg, tmp_path / "perf.log")
    assert [c["domain"] for c in out["channels"]] == ["package-0"]
    check_truth(out, "long", per_interval_rel=0.01)


def test_permission_denied_names_paranoid_cap_perfmon_and_the_fixes(tmp_path, fake_perf):
    options, env = make_perf_tree(tmp_path, {0: 0, 1: 0}, "0", {"energy-pkg": 2}, paranoid=2)
    cfg = {"options": options, "waves": {}, "marks": []}
    out = run_child(fake_perf, {**env, "FAKE_PERF_OPEN_ERRNO": "EACCES"}, cfg, tmp_path / "perf.log")
    assert out["error"] == "SensorPermissionError" and out["category"] == "permission"
    assert "perf_event_paranoid is 2" in out["message"] and options["proc_root"] in out["message"]
    assert "lacks CAP_PERFMON" in out["message"] and "energy-pkg" in out["message"]
    assert "sudo sysctl kernel.perf_event_paranoid=0" in out["fix"] and "/etc/sysctl.d/" in out["fix"]
    assert "greenprobe setup-perf" in out["fix"] and "greenprobe daemon" in out["fix"]


def test_kernel_refusing_the_event_is_unsupported(tmp_path, fake_perf):
    options, env = make_perf_tree(tmp_path, {0: 0}, "0", {"energy-pkg": 2})
    cfg = {"options": options, "waves": {}, "marks": []}
    out = run_child(fake_perf, {**env, "FAKE_PERF_OPEN_ERRNO": "ENOENT"}, cfg, tmp_path / "perf.log")
    assert out["error"] == "SensorUnsupported" and "rapl-powercap" in out["fix"]


def test_no_power_pmu_is_not_found_with_the_alternatives(tmp_path):
    # No fake needed: the tree has no power PMU, so nothing is opened.
    options, _ = make_perf_tree(tmp_path, {0: 0}, "0", {"energy-pkg": 2})
    options["perf_event_root"] = str(tmp_path / "vm-without-rapl")
    with pytest.raises(greenprobe.errors.SensorNotFound) as e:
        greenprobe.Probe(sensors=["rapl-perf"], **options).start()
    assert str(tmp_path / "vm-without-rapl" / "power") in e.value.message
    assert "rapl-powercap" in e.value.fix and "rapl-msr" in e.value.fix and "daemon" in e.value.fix


def test_counters_that_never_move_are_refused_so_auto_falls_back(tmp_path, fake_perf):
    """A VM that lists energy-psys whose count stays 0 (this project's own CI machine, 2026-12-06): a
    sensor that measures nothing must not open, or auto would report 0 J as measured."""
    options, env = make_perf_tree(tmp_path, {0: 0, 1: 0}, "0", {"energy-psys": 5})
    law_env, _ = law(time.monotonic_ns(), {(0, 5): 0.0})  # the counter never moves
    cfg = {"options": options, "waves": {}, "marks": []}
    out = run_child(fake_perf, {**env, **law_env}, cfg, tmp_path / "perf.log")
    assert out["error"] == "SensorUnsupported", out
    assert "none of the power PMU's counters (energy-psys) moved in 250 ms" in out["message"], out
    assert "cpu-estimate" in out["fix"]
    # the same tree with a counter that moves opens
    law_env, waves = law(time.monotonic_ns(), {(0, 5): 1.0})
    out = run_child(fake_perf, {**env, **law_env}, {**cfg, "waves": {"psys": waves[(0, 5)]}}, tmp_path / "perf2.log")
    assert "error" not in out and [c["domain"] for c in out["channels"]] == ["psys"], out
