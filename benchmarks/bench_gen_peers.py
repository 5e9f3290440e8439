"""Energy per prompt token and per output token: greenprobe against two peers' methods, on a stand-in
GPU with exact truth (issue 21; the methods, with sources: ../shared/PEERS.md).

    .venv/bin/python benchmarks/bench_gen_peers.py [OUT] [--lengths 5,30] [--runs 3]

The fake NVML's FAKE_NVML_FOLLOW mode: 80 W idle + 150 W per CPU-second per second of the study's
workers, an energy counter that moves every 100 ms (NVML's). The workload: GPT-2 (124M, random
weights) through transformers, batch 1, prompts of 64 tokens, 32 output tokens, runs of L seconds.

- greenprobe: ``greenprobe study --task generate`` (each prefill and decode step marked; the
  prefill's energy from the estimator over every counter update, the rest to the output tokens).
- ML.ENERGY benchmark v3 (``RequestTracker``): one window per run, from the first request's first
  token to the end of request N - B - 1 (here B = 1: requests run one at a time), energy read from
  NVML's counter at the window's ends (Zeus: the last value the counter shows), divided by the tokens
  generated in the window. One figure per token: no prefill/decode split, idle included.
- Hugging Face AI Energy Score (optimum-benchmark's energy_star scenario): a prefill pass (each
  request with max_new_tokens = 1) and a full pass, back to back, each read from the counter at its
  start and end; prompt token = prefill pass / prompt tokens; output token = (full - prefill) /
  (sequences x (N - 1)), a subtraction between separate passes.

Every figure is compared with the exact gross figure of the workload (docs/SCHEMA.md, "Generation"),
from the stand-in's trace over the study's own runs: per prompt token, the prefills' energy and idle
over their time; per output token, the rest of each run's energy above idle and idle over the decode
steps' time. Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

IDLE_W, FOLLOW_W = 80.0, 150.0
MODEL, PROMPT, OUTPUT, BATCH = "gpt2", 64, 32, 1


def counter_at(t: np.ndarray, e: np.ndarray, at: int) -> float:
    """What NVML's energy counter shows at ``at``: its last value read at or before it."""
    i = int(np.searchsorted(t, at, side="right")) - 1
    return float(e[max(i, 0)])


def counter(session: Path) -> tuple[np.ndarray, np.ndarray]:
    s = pq.read_table(session / "samples.parquet", columns=["t_ns", "energy_j", "domain"]).to_pydict()
    keep = [i for i, d in enumerate(s["domain"]) if d == "gpu0" and s["energy_j"][i] is not None]
    t = np.array([s["t_ns"][i] for i in keep], np.int64)
    return t, np.array([s["energy_j"][i] for i in keep], np.float64)


def exact_figures(study: Path, cfg_id: str, trace) -> tuple[list, list]:
    """Per run: the exact gross J per prompt token and per output token (the convention)."""
    cfg = study / "configs" / cfg_id
    st = pq.read_table(cfg / "steps.parquet").to_pydict()
    run_of, phase = np.array(st["run"]), np.array(st["phase"])
    s, e, tok, dur = (np.array(st[k]) for k in ("start_ns", "end_ns", "tokens", "duration_s"))
    ppt, pot = [], []
    for p in sorted((cfg / "runs").glob("r*.json")):
        r = json.loads(p.read_text())
        pre, dec = (run_of == r["run"]) & (phase == "prefill"), (run_of == r["run"]) & (phase == "decode")
        e_pre = sum(trace.energy_between(int(a), int(b)) for a, b in zip(s[pre], e[pre]))
        net = trace.energy_between(r["window_start_ns"], r["window_end_ns"])
        ppt.append((e_pre + IDLE_W * dur[pre].sum()) / tok[pre].sum())
        pot.append((net - e_pre + IDLE_W * dur[dec].sum()) / tok[dec].sum())
    return ppt, pot


def ml_energy(study: Path, cfg_id: str) -> list[float]:
    """ML.ENERGY's J per token for each run: its steady-state window over the run's requests."""
    cfg = study / "configs" / cfg_id
    t, e = counter(study / "sessions" / "0")
    st = pq.read_table(cfg / "steps.parquet").to_pydict()
    out = []
    for p in sorted((cfg / "runs").glob("r*.json")):
        r = json.loads(p.read_text())
        rows = [i for i, x in enumerate(st["run"]) if x == r["run"]]
        req = np.array([st["request"][i] for i in rows])
        end = np.array([st["end_ns"][i] for i in rows])
        step = np.array([st["step"][i] for i in rows])
        n = int(req.max()) + 1
        a = int(end[(req == 0) & (step == 0)][0])                 # the first request's first token
        b = int(end[req == n - BATCH - 1].max()) if n - BATCH - 1 >= 0 else int(end.max())  # request N-B-1 done
        tokens = int(((end > a) & (end <= b)).sum()) * BATCH      # tokens generated in the window
        out.append((counter_at(t, e, b) - counter_at(t, e, a)) / max(tokens, 1))
    return out


def ai_energy_score(work: Path, n_requests: int, env: dict) -> tuple[float, float]:
    """The AI Energy Score's two passes on a fresh worker, read from the counter at their ends."""
    import greenprobe
    from greenprobe.models.generative import write_checkpoint
    from greenprobe.runtimes import Worker

    ck = write_checkpoint(MODEL, "full", work / "aies-model")
    with greenprobe.Probe(sensors="nvml", period_us=500) as probe:
        with Worker("torch", task="generate", env=env) as w:
            w.build(MODEL, size="full", precision="fp32", checkpoint=str(ck), work_dir=str(work / "aies-conv"),
                    device="cpu", sequences=BATCH, prompt_tokens=PROMPT, seed=0, slot="s")
            w.generate(2, OUTPUT, slot="s", warmup=1)
            time.sleep(0.3)
            spans = {}
            for name, tokens in (("prefill", 1), ("full", OUTPUT)):
                a = time.monotonic_ns()
                w.generate(n_requests, tokens, slot="s")
                spans[name] = (a, time.monotonic_ns())
                time.sleep(0.3)
        time.sleep(0.3)
    ch = [c for c in probe.channels() if c.domain == "gpu0" and c.quantity == "energy"][0]
    t, e = ch.t_ns, ch.energy_j
    energy = {k: counter_at(t, e, b) - counter_at(t, e, a) for k, (a, b) in spans.items()}
    ppt = energy["prefill"] / (n_requests * BATCH * PROMPT)
    pot = (energy["full"] - energy["prefill"]) / (n_requests * BATCH * (OUTPUT - 1))
    return ppt, pot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=str(ROOT / "benchmarks" / "out" / "gen-peers"))
    ap.add_argument("--lengths", default="5,30", help="run lengths in seconds")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "nvml").mkdir(parents=True)
    from standins import build_fake_nvml
    from truth import CpuTrace

    lib = build_fake_nvml(out / "nvml")
    trace_path = out / "cpu.trace"
    env = {"FAKE_NVML_GPUS": "1", "FAKE_NVML_UPDATE_MS": "100", "FAKE_NVML_WAVEFORM": "constant",
           "FAKE_NVML_BASE_W": str(IDLE_W), "FAKE_NVML_FOLLOW": "greenprobe.runtimes.worker",
           "FAKE_NVML_FOLLOW_W": str(FOLLOW_W), "FAKE_NVML_FOLLOW_TICK_US": "250",
           "FAKE_NVML_FOLLOW_LOG": str(trace_path), "GREENPROBE_NVML_LIBRARY": str(lib),
           "GREENPROBE_NVML_MIN_PERIOD_US": "100"}
    os.environ.update(env)
    from greenprobe.study import load_spec, run_study

    rows = []
    for length in [float(x) for x in args.lengths.split(",")]:
        study = out / f"study-{length:g}s"
        spec = load_spec(None, task="generate", runtimes=["torch"], models=[MODEL], precisions=["fp32"],
                         batch_sizes=[BATCH], size="full", prompt_tokens=PROMPT, output_tokens=OUTPUT, runs=args.runs,
                         min_run_s=length, min_inferences=4, warmup=1, rest_s=0.2, baseline_s=2.0, sensors="nvml",
                         period_us=500, seed=11)
        run_study(spec, study, log=lambda s: print(s, file=sys.stderr, flush=True))
        cfg_id = f"torch-fp32-{MODEL}-b{BATCH}"
        row = [r for r in pq.read_table(study / "summary.parquet").to_pylist() if r["id"] == cfg_id][0]
        trace = CpuTrace(trace_path, FOLLOW_W)
        ex_ppt, ex_pot = exact_figures(study, cfg_id, trace)
        truth = {"prompt": float(np.mean(ex_ppt)), "output": float(np.mean(ex_pot))}
        n_req = row["requests_per_run"]
        mle = ml_energy(study, cfg_id)
        aies = [ai_energy_score(out / f"aies-{length:g}-{k}", n_req, env) for k in range(args.runs)]
        gp = {"prompt": (row["energy_j_per_prompt_token"], row["energy_j_per_prompt_token_low"],
                         row["energy_j_per_prompt_token_high"]),
              "output": (row["energy_j_per_output_token"], row["energy_j_per_output_token_low"],
                         row["energy_j_per_output_token_high"])}
        rows.append((length, n_req, truth, gp, float(np.mean(mle)), [float(np.mean([a[0] for a in aies])),
                                                                      float(np.mean([a[1] for a in aies]))],
                     row["ttft_s"], row["tpot_s"]))
    print("\n| run length | requests per run | figure | exact J | greenprobe (95 %) | error | ML.ENERGY | error "
          "| AI Energy Score | error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for length, n_req, truth, gp, mle, aies, ttft, tpot in rows:
        for k, name in (("prompt", "J per prompt token"), ("output", "J per output token")):
            v, lo, hi = gp[k]
            ml = mle if k == "output" else float("nan")
            ae = aies[0] if k == "prompt" else aies[1]
            ml_txt = f"{ml:.4g} | {ml / truth[k] - 1:+.1%}" if k == "output" else "no figure (no split) | -"
            print(f"| {length:g} s | {n_req} | {name} | {truth[k]:.4g} | {v:.4g} [{lo:.4g}, {hi:.4g}] | "
                  f"{v / truth[k] - 1:+.1%} | {ml_txt} | {ae:.4g} | {ae / truth[k] - 1:+.1%} |")
    print(f"\n(TTFT {rows[0][6] * 1e3:.1f} ms, TPOT {rows[0][7] * 1e3:.1f} ms at the first length; "
          f"{args.runs} runs per length; ML.ENERGY's J per token over its window, prefills included, "
          "is compared with the exact J per output token)")


if __name__ == "__main__":
    main()
