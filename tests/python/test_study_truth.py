"""The study's figure against exact truth: a stand-in GPU whose power follows the workers' CPU work.

The fake NVML library's FAKE_NVML_FOLLOW mode draws 80 W idle plus 150 W per CPU-second per second
that the study's worker processes spend, read from their CPU-time clocks every millisecond; its
energy counter moves every 100 ms, as NVML's does. The trace it writes defines the power exactly,
so each run's exact figure follows from the definitions in docs/SCHEMA.md ("The study's figure"):
net = (the window's energy - idle power x the window) / inferences = 150 W x the workers' CPU
seconds in the window / inferences; gross = net + idle power x the inference's mean duration.
Target (issue 13): within 5 % of the exact figure, with 95 % intervals that cover it, for every
configuration, its inferences ranging over 1 to 100 ms.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from greenprobe.study import load_spec, run_study
from truth import CpuTrace

IDLE_W, FOLLOW_W = 80.0, 150.0


@pytest.fixture(scope="module")
def followed_study(tmp_path_factory, fake_nvml):
    out = tmp_path_factory.mktemp("study-follow")
    trace = out / "cpu.trace"
    env = {"FAKE_NVML_GPUS": "1", "FAKE_NVML_UPDATE_MS": "100", "FAKE_NVML_WAVEFORM": "constant",
           "FAKE_NVML_BASE_W": str(IDLE_W), "FAKE_NVML_FOLLOW": "greenprobe.runtimes.worker",
           "FAKE_NVML_FOLLOW_W": str(FOLLOW_W), "FAKE_NVML_FOLLOW_LOG": str(trace),
           "GREENPROBE_NVML_LIBRARY": str(fake_nvml), "GREENPROBE_NVML_MIN_PERIOD_US": "100"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        # torch and ONNX Runtime, a light and a heavy model, batch 1 and 64: inferences of ~0.5 to ~130 ms
        spec = load_spec(None, runtimes=["torch", "onnxruntime"], sources=["torch"], providers=["cpu"],
                         models=["mobilenet_v2", "resnet50"], batch_sizes=[1, 64], size="tiny", image_size=96,
                         runs=3, min_run_s=1.0, min_inferences=8, warmup=2, rest_s=0.1, baseline_s=1.0,
                         sensors="nvml", period_us=500, seed=5)
        run_study(spec, out, log=lambda s: None)
    return out, CpuTrace(trace, FOLLOW_W)


def exact(out, row, trace: CpuTrace) -> tuple[float, float]:
    """The configuration's exact (gross, net) energy per inference: the mean over its runs."""
    runs = pq.read_table(out / "configs" / row["id"] / "runs.parquet").to_pylist()
    nets = [trace.energy_between(r["window_start_ns"], r["window_end_ns"]) / r["inferences"] for r in runs]
    grosses = [n + IDLE_W * r["time_s_per_inference"] for n, r in zip(nets, runs)]
    return sum(grosses) / len(runs), sum(nets) / len(runs)


def test_study_figure_matches_a_gpu_that_follows_the_workers(followed_study):
    out, trace = followed_study
    rows = [r for r in pq.read_table(out / "summary.parquet").to_pylist() if r["status"] == "ok"]
    assert len(rows) == 8, [(r["id"], r["status"], r.get("error")) for r in pq.read_table(out / "summary.parquet").to_pylist()]
    times = sorted(r["time_s_per_inference"] for r in rows)
    # from far below the 100 ms counter period to a large share of it: at 64 px the longest took 106 ms on
    # the AMD EPYC this was written on, 57 ms on a later Xeon under other work and 37 ms on it quiet, under
    # the range; at 96 px 145 ms on that Xeon (the machine's speed, not the figure's)
    assert times[0] < 0.005 and times[-1] > 0.04, f"inference times {times} do not span the range the test is for"
    report, bad = [], []
    for r in rows:
        gross, net = exact(out, r, trace)
        assert net > 0.2 * gross, f"{r['id']}: the followed work is too small a share to test the net figure"
        assert r["domains"] == "nvml/gpu0", r["domains"]
        report.append(f"{r['id']}: idle {r['idle_power_w']:.4g} W (exact {IDLE_W:g}), {r['time_s_per_inference'] * 1e3:.3g} ms")
        if abs(r["idle_power_w"] / IDLE_W - 1) > 0.005:  # work leaking into the idle windows at their edges
            bad.append(report[-1])
        for key, truth in (("energy_j_per_inference", gross), ("energy_j_per_inference_net", net)):
            err = r[key] / truth - 1
            report.append(f"{r['id']} {key}: {r[key]:.5g} J vs exact {truth:.5g} J ({err:+.2%}), "
                          f"95 % [{r[key + '_low']:.5g}, {r[key + '_high']:.5g}]")
            if abs(err) > 0.05 or not r[key + "_low"] <= truth <= r[key + "_high"]:
                bad.append(report[-1])
    print("\n".join(report))
    assert not bad, "off by more than 5 % or not covered:\n" + "\n".join(bad) + "\n\nall:\n" + "\n".join(report)
