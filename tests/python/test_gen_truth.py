"""The generative study's figures against exact truth (issue 21): a stand-in GPU whose power follows
the workers' CPU work, with NVML's 100 ms energy counter.

The fake NVML library's FAKE_NVML_FOLLOW mode draws 80 W idle plus 150 W per CPU-second per second
that the study's worker processes spend, read from their CPU-time clocks every 250 µs; its energy
counter moves every 100 ms. Its trace defines the power exactly, so each run's exact figures follow
from docs/SCHEMA.md ("Generation"): the prefills' own energy is the trace's energy during the prefill
marks, the output tokens get the rest of the window's energy above idle, gross adds 80 W over the
phase's own time. Target: energy per prompt token and per output token within 5 % of the exact
figure, with each 95 % interval covering it, for every generative runtime that runs here (a
configuration whose runs other processes disturbed beyond the study's threshold even when run again,
which the study flags, is held to its interval only: the figure says it was measured on a busy
machine), on the
same model: Llama 3.2's architecture at size "tiny" (8 layers of 768, about 50M parameters), whose
decode steps took 13-20 ms on these 2 cores, as a full model's take 5-50 ms on a GPU. (Requests far shorter
than the counter's period cannot be split into phases by any window: every window then holds the
same mix of prefill and decode; the estimator's interval says so, and test_generation.py's
simulation shows it.)
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from greenprobe.study import load_spec, run_study
from truth import CpuTrace

IDLE_W, FOLLOW_W = 80.0, 150.0
#: the runtimes that run here (vLLM: NVIDIA GPUs only)
RUNTIMES = ("torch", "ctranslate2", "llama.cpp", "onnxruntime-genai")
MODEL = "llama-3.2-1b"


def available() -> list[str]:
    from greenprobe.runtimes import probe_environment

    have = [rt for rt in RUNTIMES if probe_environment(rt)["installed"]]
    missing = sorted(set(RUNTIMES) - set(have))
    if missing and os.environ.get("GREENPROBE_REQUIRE_RUNTIMES") == "1":
        pytest.fail(f"generative runtimes missing: {missing} (bash scripts/setup-genai.sh)")
    return have


FAKE_UPDATE_MS = "100"  # the stand-in NVML counter's update period


@pytest.fixture(scope="module")
def followed_gen_study(tmp_path_factory, fake_nvml):
    runtimes = available()
    if not runtimes:
        pytest.skip("no generative runtime installed (bash scripts/setup-genai.sh)")
    out = tmp_path_factory.mktemp("gen-follow")
    env = {"FAKE_NVML_GPUS": "1", "FAKE_NVML_UPDATE_MS": FAKE_UPDATE_MS, "FAKE_NVML_WAVEFORM": "constant",
           "FAKE_NVML_BASE_W": str(IDLE_W), "FAKE_NVML_FOLLOW": "greenprobe.runtimes.worker",
           "FAKE_NVML_FOLLOW_W": str(FOLLOW_W), "FAKE_NVML_FOLLOW_TICK_US": "250",
           "FAKE_NVML_FOLLOW_LOG": str(out / "study.trace"), "GREENPROBE_NVML_LIBRARY": str(fake_nvml),
           "GREENPROBE_NVML_MIN_PERIOD_US": "100"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        spec = load_spec(None, task="generate", runtimes=runtimes, models=[MODEL], precisions=["fp32"],
                         batch_sizes=[1], size="tiny", prompt_tokens=64, output_tokens=16, runs=3, min_run_s=4.0,
                         min_inferences=4, warmup=1, rest_s=0.1, baseline_s=1.0, sensors="nvml", period_us=500,
                         seed=7)
        run_study(spec, out / "study", log=lambda s: None)
    return out, runtimes


def exact(study, row, trace: CpuTrace) -> dict:
    """The configuration's exact figures: each run's by the convention, then their mean."""
    cfg = study / "configs" / row["id"]
    steps = pq.read_table(cfg / "steps.parquet").to_pydict()
    runs = [json.loads(p.read_text()) for p in sorted((cfg / "runs").glob("r*.json"))]
    figs = {k: [] for k in ("energy_j_per_prompt_token", "energy_j_per_prompt_token_net",
                            "energy_j_per_output_token", "energy_j_per_output_token_net", "energy_j_per_request")}
    run_of, phase = np.array(steps["run"]), np.array(steps["phase"])
    for r in runs:
        pre, dec = (run_of == r["run"]) & (phase == "prefill"), (run_of == r["run"]) & (phase == "decode")
        s, e = np.array(steps["start_ns"]), np.array(steps["end_ns"])
        tokens, dur = np.array(steps["tokens"]), np.array(steps["duration_s"])
        e_pre = sum(trace.energy_between(int(a), int(b)) for a, b in zip(s[pre], e[pre]))
        net = trace.energy_between(r["window_start_ns"], r["window_end_ns"])
        figs["energy_j_per_prompt_token_net"].append(e_pre / tokens[pre].sum())
        figs["energy_j_per_prompt_token"].append((e_pre + IDLE_W * dur[pre].sum()) / tokens[pre].sum())
        figs["energy_j_per_output_token_net"].append((net - e_pre) / tokens[dec].sum())
        figs["energy_j_per_output_token"].append((net - e_pre + IDLE_W * dur[dec].sum()) / tokens[dec].sum())
        figs["energy_j_per_request"].append((net + IDLE_W * r["request_time_s"]) / (r["requests"] * r["sequences"]))
    return {k: float(np.mean(v)) for k, v in figs.items()}


def test_every_runtime_within_5_percent_of_exact_with_covering_intervals(followed_gen_study):
    out, runtimes = followed_gen_study
    report, bad, seen = [], [], set()
    for study in sorted(p for p in out.iterdir() if (p / "summary.parquet").exists()):
        trace = CpuTrace(out / f"{study.name}.trace", FOLLOW_W)
        for row in pq.read_table(study / "summary.parquet").to_pylist():
            if row["status"] != "ok":
                bad.append(f"{row['id']}: {row['status']}: {row.get('error')}")
                continue
            seen.add(row["runtime"])
            assert row["domains"] == "nvml/gpu0" and row["prefill_status"] == "ok", (row["id"], row["prefill_reason"])
            steps = pq.read_table(study / "configs" / row["id"] / "steps.parquet").to_pydict()
            dec = [d for d, p in zip(steps["duration_s"], steps["phase"]) if p == "decode"]
            report.append(f"{row['id']}: decode steps {np.median(dec) * 1e3:.3g} ms (median), prefill "
                          f"{row['ttft_s'] * 1e3:.3g} ms, idle {row['idle_power_w']:.4g} W")
            # no run kept though other processes disturbed it (the study runs a disturbed one again)
            precise = not row["runs_disturbed_kept"]
            report.append(f"  {row['runs']} runs ({row['runs_run_again']} run again, {row['runs_disturbed_kept']} kept "
                          f"disturbed, others' most {row['foreign_cores_max']:.2f} cores)"
                          + ("" if precise else "  <- disturbed: held to its interval only"))
            for key, truth in exact(study, row, trace).items():
                err = row[key] / truth - 1
                report.append(f"  {key}: {row[key]:.5g} vs exact {truth:.5g} ({err:+.2%}), 95 % "
                              f"[{row[key + '_low']:.5g}, {row[key + '_high']:.5g}]")
                if (precise and abs(err) > 0.05) or not row[key + "_low"] <= truth <= row[key + "_high"]:
                    bad.append(report[-1] + f"  <- {row['id']}")
    print("\n".join(report))
    assert seen == set(runtimes), f"measured {sorted(seen)} of {runtimes}"
    assert not bad, "off by more than 5 % or not covered:\n" + "\n".join(bad) + "\n\nall:\n" + "\n".join(report)


def test_decode_steps_are_shorter_than_the_counters_update_period(followed_gen_study):
    """The regime the figures above are for: decode steps below the stand-in NVML's 100 ms counter
    period (the issue's 5-50 ms on a GPU; 13-20 ms on the 2-core machine this was written on, ~60 ms
    there with two busy loops holding both cores), so a step is never bracketed by two counter
    updates and each figure rests on the estimator."""
    out, runtimes = followed_gen_study
    update_s = int(FAKE_UPDATE_MS) * 1e-3
    for rt in runtimes:
        steps = pq.read_table(out / "study" / "configs" / f"{rt}-fp32-{MODEL}-b1" / "steps.parquet").to_pydict()
        dec = sorted(d for d, p in zip(steps["duration_s"], steps["phase"]) if p == "decode")
        median = dec[len(dec) // 2]
        print(f"{rt}: median decode step {median * 1e3:.3g} ms")
        assert median < update_s, f"{rt}: median decode step {median * 1e3:.3g} ms, not below {update_s * 1e3:.0f} ms"
