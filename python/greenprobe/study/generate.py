"""The generative study (``task = "generate"``, issue 21): energy per prompt token, per output token
and per request, phase by phase, with 95 % intervals from the runs.

A run is n requests (each: ``batch_size`` sequences, a prompt of ``prompt_tokens``, exactly
``output_tokens`` tokens per sequence), dithered gaps between them, idle before and after, every
prefill and decode step marked by the worker through the daemon (greenprobe.generation). The
protocol is the classification study's (execute.Runner): interleaved runs, resume, Slurm.

Per run and sensor domain (docs/SCHEMA.md, "Generation"):

    net           the window's energy - idle power x the window (what the run cost above idle)
    prefill net   the estimator's energy during the prefill marks - idle power x their time
    output net    net - prefill net: the decode steps and whatever follows a request's last step
                  before the next request starts (the back-to-back rule)
    per prompt token   prefill net / prompt tokens;   gross: + idle power x the prefills' time
    per output token   output net / decode tokens;    gross: + idle power x the decode steps' time
    per request        (net + idle power x the requests' time) / (requests x sequences)

and the slope of a decode step's energy against its context: the estimator's energy per step in
``CONTEXT_BINS`` bins of context length, fitted by a line (J per output token per 1,000 tokens).
Each figure's interval comes from the spread between runs (t, R - 1) and the idle power's error.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..attribution import attribute
from ..store import marks_where
from .aggregate import _tops, write_json
from .execute import Plan, Runner
from .layout import Layout
from .plan import Config
from .stats import mean_ci, mean_ci_with

#: decode steps are split into this many bins of context length for the slope
CONTEXT_BINS = 4
PHASE_LABELS = ("prefill", "decode")


class GenRunner(Runner):
    """execute.Runner for task generate: workers of task generate, a request as the unit."""

    task = "generate"
    TARGET_FIGURES = ("energy_j_per_prompt_token", "energy_j_per_output_token")

    def run_totals(self, run: dict, idle: dict, tops: list) -> dict:
        """A run's gross figures per prompt and per output token over the top-level domains (a
        domain whose prefill could not be split gives None)."""
        domains = [d for d in run["domains"].split(",") if d]
        f = gen_run_figures(run, domains, idle)
        out = {}
        for key in self.TARGET_FIGURES:
            v = sum(f[f"{key}[{n}]"] for n in tops)
            out[key] = float(v) if math.isfinite(v) else None
        return out

    # -- models --------------------------------------------------------------------------------
    def checkpoint(self, model: str) -> Path:
        """The model's local random-weight checkpoint (written once, in the torch environment)."""
        path = self.layout.checkpoint(model, self.spec.size)
        if (path / Layout.STAMP).exists():
            return path
        from ..runtimes import python_for

        self.log(f"writing {model} ({self.spec.size}) with random weights to {path} ...")
        code = ("import sys; from greenprobe.models.generative import write_checkpoint; "
                "write_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3], seed=int(sys.argv[4]))")
        out = subprocess.run([python_for("torch"), "-c", code, model, self.spec.size, str(path), str(self.spec.seed)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["failed"])[-1]
            raise RuntimeError(f"writing the {model} checkpoint failed: {last}")
        return path

    def build(self, cfg: Config) -> dict:
        s = self.spec
        ck = self.checkpoint(cfg.model)
        work = self.layout.converted
        work.mkdir(parents=True, exist_ok=True)
        return self.worker(cfg.runtime).build(cfg.model, size=s.size, precision=cfg.precision, checkpoint=str(ck),
                                              work_dir=str(work), device=cfg.provider, sequences=cfg.batch_size,
                                              prompt_tokens=s.prompt_tokens, seed=s.seed, slot=cfg.id)

    def time_one(self, cfg: Config, w) -> float:
        """Seconds of one request after the warm-up: the median of 3 (a first one may still be slow)."""
        s = self.spec
        spans = w.generate(3, s.output_tokens, slot=cfg.id, warmup=max(s.warmup, 1))["requests"]
        return float(np.median([(b - a) * 1e-9 for a, b in spans]))

    # -- one run -------------------------------------------------------------------------------
    def measure_run(self, cfg: Config, r: int) -> dict:
        s = self.spec
        plan = self.prepare(cfg)
        w = self.worker(cfg.runtime)
        pad = self.pad_ns()
        # dithered gaps: up to the slowest counter's update period (pad is two of them), so each
        # request's phases fall on every phase of the counter's updates
        gaps = np.random.default_rng(s.seed * 1000 + r).uniform(0, min(plan.one_s, pad * 0.5e-9), plan.n)
        gaps[0] = 0.0
        if s.order == "interleaved" and s.warmup:  # another model ran since: caches are cold (every run: see Runner)
            w.generate(0, s.output_tokens, slot=cfg.id, warmup=1)
        got, usage = self.worked(w, pad, lambda: w.generate(plan.n, s.output_tokens, gaps_s=gaps, slot=cfg.id,
                                                             mark={"attrs": {"config": cfg.id, "run": r,
                                                                                  "attempt": self.attempt}}))
        steps, attrs = self.steps_of(cfg, r)
        want = plan.n * s.output_tokens
        if steps.num_rows != want:
            raise RuntimeError(f"the daemon holds {steps.num_rows} of the {want} phase marks of run {r} "
                               f"({plan.n} requests x {s.output_tokens} tokens)")
        requests = np.array(got["requests"], np.int64)
        starts = steps.column("start_ns").to_numpy().astype(np.int64)
        ends = steps.column("end_ns").to_numpy().astype(np.int64)
        self.close_run(cfg, r, int(starts[0]), int(ends.max()), pad, usage)
        return self.score_run(cfg, r, starts, ends, attrs, requests, usage, plan, pad, got.get("runtime_timings"))

    def steps_of(self, cfg: Config, r: int) -> tuple:
        """The prefill and decode marks of run r that reached the daemon, by request and step: their
        table (store.mark_schema()) and their attributes."""
        new, self.cursor = self.probe.marks_since(self.cursor)
        return marks_where(new, PHASE_LABELS, order_by=("request", "step"), config=cfg.id, run=r)

    def score_run(self, cfg: Config, r: int, starts: np.ndarray, ends: np.ndarray, attrs: list[dict],
                  requests: np.ndarray, usage: dict, plan: Plan, pad: int, runtime_timings=None) -> dict:
        """The run's figures (score_phases), its steps to runs/rNNNN.parquet, then its row to
        rNNNN.json (its presence: the run is done), with the runtime's own timings where it keeps
        them (runtime_timings: vLLM's, per request and sequence; their means as runtime_ttft_s...)."""
        s = self.spec
        phase = np.array([a["phase"] for a in attrs])
        context = np.array([a["context_tokens"] for a in attrs], np.int64)
        tokens = np.array([x["tokens"] for x in attrs], np.int64)
        a, b = int(starts.min()) - pad, int(ends.max()) + pad
        margin = int(2e9) + 20 * max((c["nominal_update_period_ns"] for c in self.probe.channel_info()), default=0)
        # the window's energy from the samples around it; the estimator from the window's own
        # (its pads are idle; around it other configurations ran, unmarked here: their work would
        # pass for idle power)
        scored = score_phases(starts, ends, phase, context, a, b, self.probe.channels(a - margin, b + margin),
                              self.probe.channels(a, b))
        cols = {"config": [cfg.id] * len(starts), "run": np.full(len(starts), r),
                "request": np.array([x["request"] for x in attrs], np.int64),
                "step": np.array([x["step"] for x in attrs], np.int64), "phase": phase.tolist(),
                "start_ns": starts, "end_ns": ends, "duration_s": (ends - starts) * 1e-9,
                "sequences": np.array([x["sequences"] for x in attrs], np.int64), "context_tokens": context,
                "tokens": tokens, **scored.pop("interpolated")}
        d = self.layout.runs(cfg.id)
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), self.layout.run_inferences(cfg.id, r))
        row = {"run": r, "session": self.session, **self.where, "start_ns": int(starts.min()), "end_ns": int(ends.max()),
               **run_counts(starts, ends, phase, tokens, requests, cfg.batch_size, a, b),
               "prompt_tokens": s.prompt_tokens, "output_tokens": s.output_tokens, "device": plan.device, **scored,
               **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in usage.items()},
               **runtime_means(runtime_timings)}
        write_json(self.layout.run_row(cfg.id, r), row)
        return row

    def run_line(self, row: dict) -> str:
        tot = sum(v for k, v in row.items() if k.startswith("energy_j_window["))
        return (f"    {row['ttft_s'] * 1e3:.1f} ms to the first token, {row['tpot_s'] * 1e3:.2f} ms per step, "
                f"{tot / row['decode_tokens_total']:.4g} J per output token over its window, idle included"
                f"{' (ESTIMATED)' if row['estimated'] else ''}")


def score_phases(starts: np.ndarray, ends: np.ndarray, phase: np.ndarray, context: np.ndarray, a: int, b: int,
                 chans: list, own: list) -> dict:
    """One run's energies per domain: the window [a, b]'s (``chans``: samples around it), and from
    the estimator over ``own`` (the window's samples alone), twice: the prefills against the decode
    steps (the split), then the decode steps in bins of context length (the slope; more labels,
    so it may fail alone). Returns domains, estimated, window_complete, energy_j_window[...],
    prefill (per domain: gross J during the prefills, their time, status, reason), decode_bins and
    each step's interpolated energy (``interpolated``: not observations below an update period)."""
    from ..summary import summarise

    window, domains, estimated, interpolated = {}, [], False, {}
    for res in attribute(np.append(starts, a), np.append(ends, b), chans):
        ch = res["channel"]
        name = f"{ch.sensor}/{ch.domain}"
        domains.append(name)
        interpolated[f"energy_j_interpolated[{name}]"] = res["energy_j"][:-1]
        window[name] = (float(res["energy_j"][-1]), bool(res["complete"][-1]))
        estimated |= ch.estimated
    pre = phase == "prefill"
    dec = ~pre
    bins = context_bins(context[dec], CONTEXT_BINS)
    labels = np.full(len(starts), "prefill", dtype=object)
    labels[dec] = "decode"
    def intervals(labels):
        return pa.table({"label": pa.array(list(labels), pa.string()), "start_ns": pa.array(starts, pa.int64()),
                         "end_ns": pa.array(ends, pa.int64())})

    est = {(row["label"], f"{row['sensor']}/{row['domain']}"): row for row in summarise(intervals(labels), own)}
    labels[dec] = [f"decode@{k}" for k in bins]
    est.update({(row["label"], f"{row['sensor']}/{row['domain']}"): row for row in summarise(intervals(labels), own)
                if row["label"] != "prefill"})
    prefill, decode_bins = {}, []
    for name in domains:
        e = est.get(("prefill", name))
        ok = e is not None and e["status"] == "ok"
        prefill[name] = {"status": e["status"] if e else "not-estimated", "reason": (e["reason"] if e else "no estimate"),
                         "energy_j": e["energy_j_per_call"] * e["calls"] if ok else None,
                         "time_s": e["time_s_per_call"] * e["calls"] if ok else None}
    for k in range(CONTEXT_BINS):
        in_bin = np.flatnonzero(dec)[bins == k] if dec.any() else np.zeros(0, int)
        if in_bin.size == 0:
            continue
        decode_bins.append({
            "bin": k, "steps": int(in_bin.size), "context_tokens": float(context[in_bin].mean()),
            **{f"energy_j_per_step[{n}]": _ok(est.get((f"decode@{k}", n)), "energy_j_per_call") for n in domains},
            **{f"energy_j_per_step_se[{n}]": _se(est.get((f"decode@{k}", n))) for n in domains},
            "time_s_per_step": _ok(est.get((f"decode@{k}", domains[0])), "time_s_per_call") if domains else None})
    return {"domains": ",".join(domains), "estimated": bool(estimated),
            "window_complete": all(c for _, c in window.values()),
            **{f"energy_j_window[{n}]": e for n, (e, _) in window.items()},
            "prefill": prefill, "decode_bins": decode_bins, "interpolated": interpolated}


def runtime_means(timings) -> dict:
    """A runtime's own per-sequence timings of a run's requests (the worker's runtime_timings: a list
    per request of dicts such as {"ttft_s", "queue_s", "e2e_s"}) as their means, runtime_<name>,
    beside the list itself: what the GPU check sets against the marks' ttft_s. {} where it keeps none."""
    if not timings or not any(timings):
        return {}
    flat = [t for per_request in timings for t in per_request]
    names = sorted({k for t in flat for k in t})
    return {"runtime_timings": timings,
            **{f"runtime_{k}": float(np.mean([t[k] for t in flat if k in t])) for k in names}}


def run_counts(starts: np.ndarray, ends: np.ndarray, phase: np.ndarray, tokens: np.ndarray, requests: np.ndarray,
               sequences: int, a: int, b: int) -> dict:
    """A run's tokens, times and rates (its row's counting columns)."""
    pre, dur = phase == "prefill", (ends - starts) * 1e-9
    req_s = (requests[:, 1] - requests[:, 0]) * 1e-9
    n = int(len(requests))
    out_tokens = int(tokens[~pre].sum()) // max(n * sequences, 1) + 1  # per sequence: the prefill's first one too
    return {"window_start_ns": a, "window_end_ns": b, "window_s": (b - a) * 1e-9, "requests": n, "sequences": sequences,
            "prompt_tokens_total": int(tokens[pre].sum()), "decode_tokens_total": int(tokens[~pre].sum()),
            "prefill_time_s": float(dur[pre].sum()), "decode_time_s": float(dur[~pre].sum()),
            "request_time_s": float(req_s.sum()), "ttft_s": float(dur[pre].mean()), "tpot_s": float(dur[~pre].mean()),
            "output_tokens_per_s": float(n * sequences * out_tokens / req_s.sum())}


def _ok(e: Optional[dict], key: str):
    return e[key] if e is not None and e["status"] == "ok" else None


def _se(e: Optional[dict]):
    if e is None or e["status"] != "ok":
        return None
    return (e["energy_j_per_call_high"] - e["energy_j_per_call_low"]) / 2 / max(_t(e["dof"]), 1e-9)


def _t(dof: int) -> float:
    from ..summary import t975

    return t975(max(int(dof), 1))


def context_bins(context: np.ndarray, k: int) -> np.ndarray:
    """Bin index (0..k-1) of each decode step by its context length: equal-width bins over the
    range seen (one bin when every step has the same context)."""
    if context.size == 0:
        return np.zeros(0, int)
    lo, hi = int(context.min()), int(context.max())
    if hi == lo:
        return np.zeros(context.size, int)
    return np.minimum(((context - lo) * k) // (hi - lo + 1), k - 1).astype(int)


# -- the figures -----------------------------------------------------------------------------------
def gen_run_figures(run: dict, domains: list[str], idle: dict) -> dict:
    """One run's figures per domain (the convention in this module's docstring). ``idle``: name ->
    (power W, standard error). A domain whose prefill the estimator could not split has NaN."""
    out = {}
    nreq = run["requests"] * run["sequences"]
    for name in domains:
        p, _ = idle.get(name, (float("nan"), float("nan")))
        net = run[f"energy_j_window[{name}]"] - p * run["window_s"]
        pre = run["prefill"].get(name, {})
        pre_gross = pre.get("energy_j")
        pre_net = (pre_gross - p * pre["time_s"]) if pre_gross is not None else float("nan")
        out_net = net - pre_net
        out[f"energy_j_per_prompt_token_net[{name}]"] = pre_net / run["prompt_tokens_total"]
        out[f"energy_j_per_prompt_token[{name}]"] = (pre_net + p * run["prefill_time_s"]) / run["prompt_tokens_total"]
        out[f"energy_j_per_output_token_net[{name}]"] = out_net / run["decode_tokens_total"]
        out[f"energy_j_per_output_token[{name}]"] = (out_net + p * run["decode_time_s"]) / run["decode_tokens_total"]
        out[f"energy_j_per_request_net[{name}]"] = net / nreq
        out[f"energy_j_per_request[{name}]"] = (net + p * run["request_time_s"]) / nreq
        out[f"energy_j_per_output_token_per_1k_context[{name}]"] = context_slope(run, name, p)
    return out


def context_slope(run: dict, name: str, idle_w: float) -> float:
    """J per output token per 1,000 tokens of context: a weighted line through the decode bins'
    net energy per step (per sequence) against their mean context. NaN with fewer than 2 bins."""
    pts = [(bn["context_tokens"], bn[f"energy_j_per_step[{name}]"] - idle_w * bn["time_s_per_step"],
            bn[f"energy_j_per_step_se[{name}]"]) for bn in run["decode_bins"]
           if bn.get(f"energy_j_per_step[{name}]") is not None and bn.get("time_s_per_step") is not None]
    if len(pts) < 2:
        return float("nan")
    x, y, se = (np.array(v, np.float64) for v in zip(*pts))
    w = 1.0 / np.maximum(se, 1e-12) ** 2 if np.all(np.isfinite(se)) and np.all(se > 0) else np.ones_like(x)
    xm = np.sum(w * x) / w.sum()
    sxx = np.sum(w * (x - xm) ** 2)
    if sxx <= 0:
        return float("nan")
    slope = np.sum(w * (x - xm) * y) / sxx
    return float(slope * 1000.0 / run["sequences"])


FIGURES = ("energy_j_per_prompt_token", "energy_j_per_output_token", "energy_j_per_request")


def idle_coefficients(run: dict, pre_time_s: float) -> dict:
    """How much of each figure is idle power x a time (its coefficient, in s per token or per
    sequence): an error in the idle power moves the figure by that much times the error."""
    dec, seqs = run["decode_tokens_total"], run["requests"] * run["sequences"]
    return {"energy_j_per_prompt_token_net": pre_time_s / run["prompt_tokens_total"],
            "energy_j_per_prompt_token": 0.0,  # gross: its own time's idle is added back
            "energy_j_per_output_token_net": (run["window_s"] - pre_time_s) / dec,
            "energy_j_per_output_token": (run["window_s"] - pre_time_s - run["decode_time_s"]) / dec,
            "energy_j_per_request_net": run["window_s"] / seqs,
            "energy_j_per_request": (run["window_s"] - run["request_time_s"]) / seqs}


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def gen_config_row(cfg_dir: Path, runs_wanted: int, idle_w: dict, sensors: Optional[list] = None) -> Optional[dict]:
    """One generative configuration's summary from its run files (None while runs are missing);
    writes runs.parquet, steps.parquet and result.json. Each figure: the mean over the runs where
    it could be made (a run whose prefill the estimator could not split has none: counted in
    ``runs_split``), with a 95 % interval from their spread and the idle power's error."""
    from .aggregate import disturbance_columns, usage_columns

    runs = sorted((json.loads(p.read_text()) for p in Layout.run_rows_in(cfg_dir)), key=lambda x: x["run"])
    if len(runs) < runs_wanted:
        return None
    domains = [d for d in runs[0]["domains"].split(",") if d]
    tops = [d for d in domains if d in _tops(sensors or [], domains)]
    common: dict = {}  # (figure, "" for the total or "[domain]") -> per run: the idle error's effect
    for r in runs:
        idle = idle_w.get(str(r["session"]), {})
        r.update(gen_run_figures(r, domains, idle))
        r["idle_power_w"] = sum(idle.get(n, (float("nan"), 0.0))[0] for n in tops)
        for fig in FIGURES + ("energy_j_per_output_token_per_1k_context",):
            for net in ("", "_net"):
                key = fig + net if fig in FIGURES else fig
                r[key] = sum(r[f"{key}[{n}]"] for n in tops) if tops else float("nan")
        coef = idle_coefficients(r, _pre_time(r, tops))
        se = {n: idle.get(n, (0.0, 0.0))[1] for n in domains}
        for k, c in coef.items():
            common.setdefault((k, ""), []).append(math.sqrt(sum(se[n] ** 2 for n in tops)) * abs(c))
            for n in domains:
                common.setdefault((k, f"[{n}]"), []).append(se[n] * abs(c))
    flat = [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in runs]
    pq.write_table(pa.Table.from_pylist(flat), cfg_dir / Layout.RUNS_TABLE)
    parts = [pq.read_table(Layout.run_inferences_in(cfg_dir, r["run"])) for r in runs]
    pq.write_table(pa.concat_tables(parts, promote_options="default"), cfg_dir / Layout.STEPS)
    first = runs[0]
    split = [r for r in runs if all(r["prefill"].get(n, {}).get("status") == "ok" for n in tops)]
    row = {"id": cfg_dir.name, **json.loads((cfg_dir / Layout.CONFIG).read_text()), "status": "ok", "error": "",
           "runs": len(runs), "runs_split": len(split), "requests_per_run": first["requests"],
           "prompt_tokens": first["prompt_tokens"], "output_tokens": first["output_tokens"],
           "estimated": any(r["estimated"] for r in runs), "device": first["device"], "domains": first["domains"],
           "total_domains": ",".join(tops), "windows_complete": all(r.get("window_complete", True) for r in runs),
           **usage_columns(runs), **disturbance_columns(cfg_dir, runs)}
    bad = sorted({f"{n}: {p['reason']}" for r in runs for n, p in r["prefill"].items()
                  if p["status"] != "ok" and n in tops})
    row["prefill_status"] = "ok" if not bad else "not-estimated" if not split else "partly"
    row["prefill_reason"] = "; ".join(bad)
    for key in ("ttft_s", "tpot_s", "output_tokens_per_s"):
        m, lo, hi = mean_ci([r[key] for r in runs], positive=True)
        row[key], row[key + "_low"], row[key + "_high"] = m, lo, hi
    nan3 = (float("nan"),) * 3
    for fig in FIGURES:
        for net in ("", "_net"):
            for suffix in [""] + [f"[{n}]" for n in domains]:
                key = f"{fig}{net}{suffix}"
                pairs = [(r[key], c) for r, c in zip(runs, common[(fig + net, suffix)])
                         if r[key] is not None and math.isfinite(r[key])]
                m, lo, hi = (mean_ci_with([v for v, _ in pairs], float(np.mean([c for _, c in pairs])),
                                          positive=not net) if pairs else nan3)  # gross: above zero
                row[key], row[key + "_low"], row[key + "_high"] = m, lo, hi
    for suffix in [""] + [f"[{n}]" for n in domains]:
        key = f"energy_j_per_output_token_per_1k_context{suffix}"
        vals = _finite(r[key] for r in runs)
        m, lo, hi = mean_ci(vals) if len(vals) >= 2 else nan3
        row[key], row[key + "_low"], row[key + "_high"] = m, lo, hi
    write_json(cfg_dir / Layout.RESULT, row)
    return row


def _pre_time(run: dict, tops: list[str]) -> float:
    """The prefills' (estimator's shared) time in a run."""
    for n in tops:
        t = run["prefill"].get(n, {}).get("time_s")
        if t is not None:
            return t
    return run["prefill_time_s"]
