"""A GPU's energy per process (issue 22), against the truth, beside Kepler's GPU split, on the fake NVML
stand-in (a virtual clock; the GPU's counter moves every 100 ms, its idle power drifts 3 W).

    PYTHONPATH=python .venv/bin/python benchmarks/bench_gpu_consumers.py [--seeds 20] [--seconds 60]

Two kinds of GPU, ``--seeds`` runs of each:
* a whole GPU, whose processes' use NVML gives per process (nvmlDeviceGetProcessUtilization): three
  processes at 50, 120 and 200 W on independent schedules; per process;
* a MIG-enabled GPU, whose use GPM gives per GPU instance (100 ms refresh): 4101 alone in instance 1
  at 50 W; 4102 and 4103 taking turns in instance 5 at 120 W; per instance (nobody measures a split
  inside one: greenprobe says so, and its per-process intervals run from 0);
* the same with 4103 at 200 W: an instance whose power per busy second depends on which of its
  processes runs, which GPM cannot see (the model is wrong there: what that costs).

Kepler's split (docs/developer/design/architecture/gpu-power-monitoring.md, ../shared/PEERS.md):
idle is the lowest power observed (over the sweep windows); the energy above it is split by each
consumer's share of the SM-busy time (on MIG, the instance's engine activity). Both methods read the
same recording. Printed: the median and 90th percentile of |error| / truth, and greenprobe's 95 %
interval coverage.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "python"))

IDLE_W, DRIFT_W = 60.0, 3.0
WHOLE = {4101: 50.0, 4102: 120.0, 4103: 200.0}
MIG = {4101: (1, 50.0), 4102: (5, 120.0), 4103: (5, 120.0)}
#: two processes of unequal power in one instance: GPM gives the instance's activity only, so its power
#: per busy second is not one number, and the model is wrong there (what that costs, shown)
MIG_UNEQUAL = {4101: (1, 50.0), 4102: (5, 120.0), 4103: (5, 200.0)}


def one_run(lib: Path, seed: int, seconds: float, mig: Optional[dict]) -> list[tuple]:
    """(what, truth J, greenprobe J, low, high, kepler J) per process (whole GPU) or instance (MIG)."""
    from greenprobe.attribution import Timeline, choose_channels
    from gpu_standin import busy_s, proc_tree, run, schedules
    from test_consumer_gpu_mig import mig_schedules

    t0 = 10**12
    d = Path(tempfile.mkdtemp())
    if mig:
        spans = mig_schedules(seed, seconds, t0)
        lines = [f"0 {p} {mig[p][1]} {a} {b} {mig[p][0]}" for p, ss in spans.items() for a, b in ss]
        watts = {p: w for p, (_, w) in mig.items()}
    else:
        spans = schedules(seed, seconds, t0)
        lines = [f"0 {p} {WHOLE[p]} {a} {b}" for p, ss in spans.items() for a, b in ss]
        watts = WHOLE
    (d / "procs.txt").write_text("\n".join(lines) + "\n")
    env = {"FAKE_NVML_GPUS": "1", "FAKE_NVML_UPDATE_MS": "100", "FAKE_NVML_T0_NS": str(t0),
           "FAKE_NVML_WAVEFORM": "sine", "FAKE_NVML_BASE_W": str(IDLE_W), "FAKE_NVML_AMP_W": str(DRIFT_W),
           "FAKE_NVML_FREQ_HZ": "0.13", "FAKE_NVML_PROCS": str(d / "procs.txt"), "FAKE_NVML_PROC_SAMPLE_MS": "100",
           "FAKE_NVML_GPM_REFRESH_MS": "100"}
    for k in [k for k in os.environ if k.startswith("FAKE_NVML_")]:
        del os.environ[k]
    os.environ.update(env, **({"FAKE_NVML_MIG": "0"} if mig else {}))
    probe = run([lib], t0, seconds, sensors=["nvml"], nvml_library=str(lib), nvml_min_period_us=100,
                proc_root=str(proc_tree(d / "proc", watts)))
    a, b = t0 + 1_000_000_000, t0 + int((seconds - 1) * 1e9)
    rows = {r["pid"]: r for r in probe.consumers(a, b).to_pylist() if r["domain"] == "gpu0" and r["kind"] == "process"}
    # Kepler: idle the lowest sweep window's power; the energy above it by share of SM-busy time
    (ch,) = [c for c in choose_channels(probe.channels_around(a, b)) if c.domain == "gpu0"]  # the fit's
    t = probe.use_recorder.use("gpu").t_ns
    t = t[(t >= a) & (t <= b)]
    tl = Timeline(ch)
    power = tl.energy(t[:-1], t[1:])[0] / (np.diff(t) / 1e9)
    measured = float(tl.energy(np.array([a]), np.array([b]))[0][0])
    above = measured - float(power.min()) * (b - a) / 1e9
    busy = {p: r["cpu_s"] for p, r in rows.items()}
    kepler = {p: above * busy[p] / sum(busy.values()) for p in rows}
    truth = {p: watts[p] * busy_s(spans[p], a, b) for p in watts}
    if not mig:
        return [(p, truth[p], rows[p]["energy_j"], rows[p]["energy_j_low"], rows[p]["energy_j_high"], kepler[p])
                for p in watts]
    out = [("instance 1", truth[4101], rows[4101]["energy_j"], rows[4101]["energy_j_low"],
            rows[4101]["energy_j_high"], kepler[4101])]
    pair = [rows[p] for p in (4102, 4103)]
    # the pair's interval: their shared group's (each row's high is the group's upper bound)
    out.append(("instance 5", truth[4102] + truth[4103], sum(r["energy_j"] for r in pair),
                max(r["energy_j_low"] for r in pair), pair[0]["energy_j_high"], kepler[4102] + kepler[4103]))
    return out


def main() -> None:
    from standins import build_fake_nvml

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    lib = build_fake_nvml(Path(tempfile.mkdtemp()))
    kinds = {"whole GPU, per process (NVML)": None, "MIG GPU, per instance (GPM)": MIG,
             "MIG GPU, unequal processes in instance 5": MIG_UNEQUAL}
    for kind, mig in kinds.items():
        err = {"greenprobe": [], "kepler": []}
        hits = n = 0
        for seed in range(args.seeds):
            for what, truth, est, low, high, kep in one_run(lib, seed, args.seconds, mig):
                err["greenprobe"].append(abs(est - truth) / truth)
                err["kepler"].append(abs(kep - truth) / truth)
                hits += low <= truth <= high
                n += 1
        print(f"{kind}: {n} over {args.seeds} seeds of {args.seconds:g} s; |error| / truth, median and 90th percentile:")
        for m, v in err.items():
            print(f"  {m:<11} {np.median(v) * 100:6.2f} %  {np.percentile(v, 90) * 100:6.2f} %")
        print(f"  greenprobe's 95 % intervals covered the truth for {hits / n:.3f}")


if __name__ == "__main__":
    main()
