"""Runs a study: every configuration in its runtime's worker, one sampler for all, results written
per configuration as it finishes (an interrupted study resumes without redoing them).

Layout of DIR:
  spec.json, environment.json, skipped.json       what was asked, what this machine has, what not and why
  sessions/<k>/                                   each sitting's samples and marks; baseline.json: idle power
  configs/<id>/config.json                        the configuration
  configs/<id>/runs/rNNNN.parquet, .json          one run: its inferences, then its row (written last: "done")
  configs/<id>/failed.json                        why it failed (the study went on)
  configs/<id>/inferences.parquet                 one row per inference, gross and net energy per domain
  configs/<id>/runs.parquet, result.json          one row per run; the configuration's summary row
  summary.parquet                                 one row per configuration (rebuilt from the run files)
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..attribution import attribute, choose_channels
from ..summary import t975
from ..topology import split_name, top_level
from ..usage import proc_usage
from .spec import StudySpec

#: idle kept before a run's first inference and after its last, at least (see Runner.pad_ns)
MIN_PAD_S = 0.05


@dataclass(frozen=True)
class Config:
    runtime: str
    source: str      # the framework an ONNX model came from; the runtime itself otherwise
    provider: str    # ONNX Runtime execution provider; "native" otherwise
    model: str
    batch_size: int

    @property
    def id(self) -> str:
        src = f"{self.source}-{self.provider}" if self.runtime == "onnxruntime" else "native"
        return f"{self.runtime}-{src}-{self.model}-b{self.batch_size}"


def environment(spec: StudySpec) -> dict:
    """What this machine offers for the runtimes asked (versions, devices, ONNX Runtime providers)."""
    from ..runtimes import describe_all

    needed = set(spec.runtimes) | (set(spec.sources) if "onnxruntime" in spec.runtimes else set())
    return {d["runtime"]: d for d in describe_all(sorted(needed))}


def hardware(gpus, proc_root: str = "/proc") -> dict:
    """CPU model and count, memory, GPUs (NVML names, or why there are none)."""
    info = {"cpus": os.cpu_count(), "cpu_model": "", "memory_bytes": 0, "gpus": list(gpus.names),
            "gpu_reason": "" if gpus.available else gpus.reason.splitlines()[0]}
    try:
        for line in Path(proc_root, "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path(proc_root, "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return info


def matrix(spec: StudySpec, env: dict) -> tuple[list[Config], list[dict]]:
    """The configurations this machine can run, and the ones it cannot with the reason."""
    configs, skipped = [], []

    def skip(rt, source, provider, why, fix=""):
        for m in spec.models:
            for b in spec.batch_sizes:
                skipped.append({"id": Config(rt, source, provider, m, int(b)).id, "runtime": rt, "source": source,
                                "provider": provider, "model": m, "batch_size": int(b), "reason": why, "fix": fix})

    def add(rt, source, provider):
        for m in spec.models:
            for b in spec.batch_sizes:
                configs.append(Config(rt, source, provider, m, int(b)))

    for rt in spec.runtimes:
        if rt == "onnxruntime":
            continue
        e = env.get(rt, {})
        if e.get("installed"):
            add(rt, rt, "native")
        else:
            skip(rt, rt, "native", e.get("reason", "not installed"), e.get("fix", ""))
    if "onnxruntime" in spec.runtimes:
        e = env.get("onnxruntime", {})
        providers = e.get("providers", []) if e.get("installed") else []
        wanted = None if "all" in spec.providers else set(spec.providers)
        for source in spec.sources:
            src_env = env.get(source, {})
            for p in providers:
                if wanted is not None and p["name"] not in wanted:
                    continue
                if not p["available"]:
                    skip("onnxruntime", source, p["name"], p["reason"])
                elif not src_env.get("installed"):
                    skip("onnxruntime", source, p["name"], f"the {source} exporter is not installed: "
                                                            f"{src_env.get('reason', '')}", src_env.get("fix", ""))
                else:
                    add("onnxruntime", source, p["name"])
            if not e.get("installed"):
                skip("onnxruntime", source, "cpu", e.get("reason", "not installed"), e.get("fix", ""))
    return configs, skipped


@dataclass
class Plan:
    """A prepared configuration: built in its worker's slot, warm, with its run length."""
    n: int
    one_s: float
    device: str


class Runner:
    """Runs the configurations' runs in the spec's order. ``interleaved`` (default): round r runs
    run r of every configuration, in a fresh random order each round, every model kept built in
    its worker, so slow drift (heat, background load) spreads over all configurations alike;
    ``blocked``: one configuration's runs after another (one model in memory at a time).

    Every inference is marked by the worker through the daemon at ``address``; each run is
    attributed as soon as it ends and written to ``configs/<id>/runs/`` (nothing is lost when the
    study stops; a resumed study skips the runs on disk)."""

    def __init__(self, spec: StudySpec, out: Path, probe, address: str, session: int = 0, gpus=None,
                 log: Callable[[str], None] = None):
        self.spec, self.out = spec, Path(out)
        self.probe, self.address, self.session, self.gpus = probe, address, session, gpus
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.workers: dict = {}
        self.plans: dict = {}
        self.rng = random.Random(spec.seed)
        self.cursor = 0  # marks read so far

    # -- workers -------------------------------------------------------------------------------
    def worker(self, runtime: str):
        from ..runtimes import Worker

        w = self.workers.get(runtime)
        if w is None or w.proc.poll() is not None:
            if w is not None:  # it died
                self.drop_worker(runtime)
            w = self.workers[runtime] = Worker(runtime, env={"GREENPROBE_DAEMON": self.address})
        return w

    def drop_worker(self, runtime: str) -> None:
        """Closes a runtime's worker; the models it held go with it."""
        self.workers.pop(runtime).close()
        self.plans = {c: p for c, p in self.plans.items() if c.runtime != runtime}

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
        self.workers.clear()
        self.plans.clear()

    # -- one configuration ---------------------------------------------------------------------
    def build(self, cfg: Config) -> dict:
        s = self.spec
        shape = dict(size=s.size, batch_size=cfg.batch_size, image_size=s.image_size, seq_len=s.seq_len)
        if cfg.runtime != "onnxruntime":
            return self.worker(cfg.runtime).build(cfg.model, slot=cfg.id, **shape)
        onnx_dir = self.out / "onnx"
        onnx_dir.mkdir(parents=True, exist_ok=True)
        # every exporter writes a dynamic batch axis: one export per (source, model) serves all batch sizes,
        # and exporting at batch 1 is far cheaper (MXNet's BERT at batch 64: minutes)
        path = onnx_dir / f"{cfg.source}-{cfg.model}-{s.size}-{s.image_size}-{s.seq_len}.onnx"
        if not path.exists():
            src = self.worker(cfg.source)
            slot = f"export-{cfg.model}"
            src.build(cfg.model, slot=slot, **dict(shape, batch_size=1))
            tmp = path.with_suffix(".tmp.onnx")
            try:
                src.export_onnx(str(tmp), finalize=False, slot=slot)  # finalized here: MXNet's protobuf is
                from ..runtimes import finalize_export                # slow on big models

                finalize_export(str(tmp), cfg.source)
                os.replace(tmp, path)
            finally:
                src.release(slot)
        return self.worker("onnxruntime").build(cfg.model, slot=cfg.id, onnx_path=str(path), provider=cfg.provider,
                                                **shape)

    def prepare(self, cfg: Config) -> Plan:
        """Builds the configuration, warms it up, and sizes its runs from one warm inference."""
        plan = self.plans.get(cfg)
        if plan is not None:
            return plan
        s = self.spec
        built = self.build(cfg)
        w = self.worker(cfg.runtime)
        w.run(0, warmup=s.warmup, slot=cfg.id)
        iv = w.run(1, slot=cfg.id)  # a warm inference times the plan
        one_s = max((iv[0][1] - iv[0][0]) * 1e-9, 1e-6)
        n = int(min(max(s.min_inferences, math.ceil(s.min_run_s / one_s)), s.max_inferences))
        plan = self.plans[cfg] = Plan(n=n, one_s=one_s, device=built.get("device") or "")
        return plan

    def release(self, cfg: Config) -> None:
        self.plans.pop(cfg, None)
        w = self.workers.get(cfg.runtime)
        if w is not None and w.proc.poll() is None:
            w.release(cfg.id)

    def run_once(self, cfg: Config, r: int) -> dict:
        """Run r of a configuration: dithered inferences marked through the daemon, then scored."""
        s = self.spec
        plan = self.prepare(cfg)
        w = self.worker(cfg.runtime)
        gaps = np.random.default_rng(s.seed * 1000 + r).uniform(0, plan.one_s, plan.n)  # phase dithering
        gaps[0] = 0.0
        if r and s.order == "interleaved" and s.warmup:  # another model ran since: caches are cold
            w.run(0, warmup=1, slot=cfg.id)
        pad = self.pad_ns()
        # idle before the run: its window opens pad before the first inference (see score_run), and
        # the counter update period around that edge must hold no work either, or interpolating
        # there would move the warm-up's energy (and a runtime's threads spinning after it) into the
        # window: pad is at least two update periods, so 1.5 pad leaves one between them
        time.sleep(1.5 * pad * 1e-9)
        cpu0, t0 = proc_usage(w.proc.pid)[0], time.monotonic_ns()
        w.run(plan.n, gaps_s=gaps, slot=cfg.id, mark={"label": "inference", "attrs": {"config": cfg.id, "run": r}})
        t1, (cpu1, rss) = time.monotonic_ns(), proc_usage(w.proc.pid)
        marks = self.marks_of(cfg, r)
        if len(marks) != plan.n:
            raise RuntimeError(f"the daemon holds {len(marks)} of the {plan.n} inference marks of run {r}")
        start, end = marks[0][1], max(m[2] for m in marks)
        self.probe.add_mark("run", start, end, config=cfg.id, run=r)
        time.sleep(max(0.0, (end + pad - time.monotonic_ns()) * 1e-9))  # and idle after it
        self.probe._settle(after_ns=end + pad)  # counters updated after the window closes
        usage = {"cpu_util": (cpu1 - cpu0) / ((t1 - t0) * 1e-9) / (os.cpu_count() or 1), "rss_bytes": rss}
        usage.update(self.gpus.window(start, end) if self.gpus is not None else {})
        return self.score_run(cfg, r, marks, usage, plan, pad)

    def pad_ns(self) -> int:
        """Idle time kept before a run's first inference and after its last, inside its window: two
        of the slowest channel's update periods (at least MIN_PAD_S). The window's edges then fall
        in idle time, where a counter's interpolation between updates is exact (the power there is
        the idle power), and what a runtime leaves running after its last call is inside."""
        periods = [c.learned_update_period_ns()[0] for c in choose_channels(self.probe.channels(
            time.monotonic_ns() - int(30e9)))] or [0]
        return int(max(MIN_PAD_S * 1e9, 2 * max(periods)))

    def marks_of(self, cfg: Config, r: int) -> list[tuple]:
        """The inference marks of run r that reached the daemon, in order of their index."""
        new = self.probe._records.snapshot(self.cursor)
        self.cursor += len(new)
        mine = [m for m in new if m[0] == "inference" and m[4] and m[4].get("config") == cfg.id
                and m[4].get("run") == r]
        return sorted(mine, key=lambda m: m[4]["i"])

    def score_run(self, cfg: Config, r: int, marks: list, usage: dict, plan: Plan, pad: int) -> dict:
        """A run's energy per domain over its window (its inferences with ``pad_ns`` of idle on each
        side), the window's length and the number of inferences: config_row turns them into the
        back-to-back figure once the sitting's idle power is known. Its inferences one by one, with
        interpolated energies (labelled so: below a counter's update period they are not
        observations), go to configs/<id>/runs/rNNN.parquet, then the row to rNNN.json (its
        presence: the run is done)."""
        starts = np.array([m[1] for m in marks], np.int64)
        ends = np.array([m[2] for m in marks], np.int64)
        a, b = int(starts[0]) - pad, int(ends.max()) + pad
        # enough samples around the run to bracket its edges and learn each sensor's update period
        margin = int(2e9) + 20 * max((c["nominal_update_period_ns"] for c in self.probe._channels), default=0)
        chans = self.probe.channels(a - margin, b + margin)
        dur = (ends - starts) * 1e-9
        cols = {"config": [cfg.id] * len(marks), "run": np.full(len(marks), r), "i": np.arange(len(marks)),
                "start_ns": starts, "end_ns": ends, "duration_s": dur}
        window = {}
        estimated, domains = False, []
        # the inferences and, last, the run's window: one timeline per channel serves both
        for res in attribute(np.append(starts, a), np.append(ends, b), chans):
            ch = res["channel"]
            name = f"{ch.sensor}/{ch.domain}"
            domains.append(name)
            cols[f"energy_j_interpolated[{name}]"] = res["energy_j"][:-1]
            window[name] = (float(res["energy_j"][-1]), bool(res["complete"][-1]),
                            float(res["energy_j_high"][-1] - res["energy_j_low"][-1]))
            estimated |= ch.estimated
        d = self.out / "configs" / cfg.id / "runs"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), d / f"r{r:04d}.parquet")
        row = {"run": r, "session": self.session, "start_ns": int(starts[0]), "end_ns": int(ends.max()),
               "window_start_ns": a, "window_end_ns": b, "window_s": (b - a) * 1e-9,
               "inferences": len(marks), "device": plan.device, "estimated": bool(estimated),
               "domains": ",".join(domains), "time_s_per_inference": float(dur.mean()),
               "window_complete": all(c for _, c, _ in window.values()),
               **{f"energy_j_window[{n}]": e for n, (e, _, _) in window.items()},
               **{f"energy_j_window_bounds_width[{n}]": w for n, (_, _, w) in window.items()},
               **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in usage.items()}}
        _write_json(d / f"r{r:04d}.json", row)
        return row

    # -- the study -----------------------------------------------------------------------------
    def schedule(self, configs: list[Config]) -> list[tuple[Config, int]]:
        """(configuration, run) pairs still to do, in the spec's order."""
        s = self.spec
        left = {}
        for c in configs:
            d = self.out / "configs" / c.id
            if (d / "failed.json").exists():
                continue
            done = {int(p.stem[1:]) for p in (d / "runs").glob("r*.json")}
            todo = [r for r in range(s.runs) if r not in done]
            if todo:
                left[c] = todo
        order = list(left)
        self.rng.shuffle(order)
        if s.order == "blocked":
            return [(c, r) for c in order for r in left[c]]
        out = []
        for k in range(s.runs):  # round k: every configuration's k-th remaining run, in a new random order
            self.rng.shuffle(order)
            out += [(c, left[c][k]) for c in order if k < len(left[c])]
        return out

    def run(self, configs: list[Config]) -> None:
        steps = self.schedule(configs)
        n_done = len(configs) * self.spec.runs - len(steps)
        if n_done:
            self.log(f"resuming: {n_done} runs already on disk, {len(steps)} to go")
        last = {}
        for k, (cfg, r) in enumerate(steps):
            last[cfg] = k
        failed: set = set()
        took: dict = {}  # configuration -> seconds its last run took (rest included, building not)
        for k, (cfg, r) in enumerate(steps):
            if cfg in failed:
                continue
            left = ""
            if took:  # what the runs still to do took last time (the mean of all for those not run yet)
                mean = sum(took.values()) / len(took)
                secs = sum(took.get(c, mean) for c, _ in steps[k:] if c not in failed)
                left = f", about {secs / 60:.1f} min left"
            self.log(f"[{k + 1}/{len(steps)}] {cfg.id} run {r + 1}/{self.spec.runs}{left}")
            try:
                self.prepare(cfg)
                t0 = time.monotonic()
                row = self.run_once(cfg, r)
                gross = sum(v for k, v in row.items() if k.startswith("energy_j_window[")) / row["inferences"]
                self.log(f"    {row['time_s_per_inference'] * 1e3:.2f} ms, {gross:.4g} J per inference over its "
                         f"window, idle included{' (ESTIMATED)' if row['estimated'] else ''}")
            except Exception as e:  # noqa: BLE001 - recorded with its error; the study goes on
                from ..runtimes import WorkerError

                msg = str(e) if isinstance(e, WorkerError) else f"{type(e).__name__}: {e}"
                self.log(f"    failed: {msg.splitlines()[0]}")
                failed.add(cfg)
                d = self.out / "configs" / cfg.id
                d.mkdir(parents=True, exist_ok=True)
                _write_json(d / "failed.json", {"error": msg, "run": r})
                if isinstance(e, WorkerError) and cfg.runtime in self.workers:  # a broken worker is not reused
                    self.drop_worker(cfg.runtime)
                elif cfg in self.plans:  # the worker is sound: free the failed configuration's model
                    self.release(cfg)
                continue
            if last[cfg] == k:
                self.release(cfg)  # its last run: free the model
            time.sleep(self.spec.rest_s)
            took[cfg] = time.monotonic() - t0


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and its 95 % interval (t distribution) over independent runs."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, m, m
    half = t975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m, m - half, m + half


def mean_ci_with(values, common_se: float) -> tuple[float, float, float]:
    """As mean_ci, widened by an error common to every run (the idle power's, which repeating runs
    does not average away): the two half-widths added in quadrature, the common one at 1.96."""
    m, lo, hi = mean_ci(values)
    half = math.hypot((hi - lo) / 2, 1.959963984540054 * common_se)
    return m, m - half, m + half


def _tops(sensors: list[dict], names: list[str]) -> set[str]:
    """The 'sensor/domain' names a total may add (top-level domains), from the study's channels
    (sensors.json) where they state their parents, else by RAPL's naming."""
    chans = [c for c in sensors if f"{c['sensor']}/{c['domain']}" in names]
    have = {f"{c['sensor']}/{c['domain']}" for c in chans}
    chans += [dict(zip(("sensor", "domain"), split_name(n))) for n in names if n not in have]
    return {f"{s}/{d}" for s, d in top_level(chans)}


def run_figures(run: dict, domains: list[str], idle: dict) -> dict:
    """One run's back-to-back figures per domain: net = (window energy - idle power x window) /
    inferences, what the run cost above idle, its dithering gaps' idle excluded; gross = net + idle
    power x the inference's own duration. ``idle``: name -> (power W, its standard error)."""
    n, dur, win = run["inferences"], run["time_s_per_inference"], run["window_s"]
    out = {}
    for name in domains:
        p, _ = idle.get(name, (float("nan"), float("nan")))
        net = (run[f"energy_j_window[{name}]"] - p * win) / n
        out[f"energy_j_per_inference_net[{name}]"] = net
        out[f"energy_j_per_inference[{name}]"] = net + p * dur
    return out


def config_row(cfg_dir: Path, runs_wanted: int, idle_w: dict, calls: dict | None = None,
               sensors: Optional[list] = None) -> Optional[dict]:
    """One configuration's summary from its run files (None while runs are missing); writes
    runs.parquet, inferences.parquet and result.json.

    The figure (docs/SCHEMA.md, "The study's figure"): per run, the back-to-back convention without
    the idle energy of the dithering gaps (run_figures), per domain and in total over top-level
    domains; per configuration, the mean over runs with a 95 % interval from their spread (t, R - 1)
    and the idle power's own uncertainty. Beside it, from the sitting's estimator (``calls``), the
    energy during the calls alone, and the difference, the after-effect: what the runtime spent
    after its calls returned."""
    runs = sorted((json.loads(p.read_text()) for p in (cfg_dir / "runs").glob("r*.json")), key=lambda x: x["run"])
    if len(runs) < runs_wanted:
        return None
    domains = [d for d in runs[0]["domains"].split(",") if d]
    tops = [d for d in domains if d in _tops(sensors or [], domains)]
    idle_se_terms = {k: [] for k in ("net", "gross")}
    for r in runs:
        idle = idle_w.get(r["session"], {})
        r.update(run_figures(r, domains, idle))
        r["idle_power_w"] = sum(idle.get(n, (float("nan"), 0.0))[0] for n in tops)
        for net in ("", "_net"):
            r[f"energy_j_per_inference{net}"] = sum(r[f"energy_j_per_inference{net}[{n}]"] for n in tops)
        idle_se = math.sqrt(sum(idle.get(n, (0.0, 0.0))[1] ** 2 for n in tops))
        idle_se_terms["net"].append(idle_se * r["window_s"] / r["inferences"])
        idle_se_terms["gross"].append(idle_se * abs(r["window_s"] / r["inferences"] - r["time_s_per_inference"]))
    pq.write_table(pa.Table.from_pylist(runs), cfg_dir / "runs.parquet")
    parts = []
    for r in runs:
        t = pq.read_table(cfg_dir / "runs" / f"r{r['run']:04d}.parquet")
        total = np.sum([t[f"energy_j_interpolated[{n}]"].to_numpy() for n in tops], axis=0) if tops else None
        if total is not None:
            t = t.append_column("energy_j_interpolated", pa.array(total))
        parts.append(t)
    pq.write_table(pa.concat_tables(parts, promote_options="default"), cfg_dir / "inferences.parquet")
    first = runs[0]
    row = {"id": cfg_dir.name, **json.loads((cfg_dir / "config.json").read_text()), "status": "ok", "error": "",
           "runs": len(runs), "inferences_per_run": first["inferences"], "estimated": any(r["estimated"] for r in runs),
           "device": first["device"], "domains": first["domains"], "total_domains": ",".join(tops),
           "windows_complete": all(r.get("window_complete", True) for r in runs),
           "idle_power_w": float(np.mean([r["idle_power_w"] for r in runs])),
           "cpu_util": float(np.mean([r["cpu_util"] for r in runs])),
           "rss_bytes": int(max(r["rss_bytes"] for r in runs))}
    for key in ("gpu_util_pct", "gpu_memory_util_pct"):
        vals = [r.get(key) for r in runs if r.get(key) is not None]
        row[key] = float(np.mean(vals)) if vals else None
    mem = [r.get("gpu_memory_used_bytes") for r in runs if r.get("gpu_memory_used_bytes") is not None]
    row["gpu_memory_used_bytes"] = float(max(mem)) if mem else None
    mean, low, high = mean_ci([r["time_s_per_inference"] for r in runs])
    row["time_s_per_inference"], row["time_s_per_inference_low"], row["time_s_per_inference_high"] = mean, low, high
    for net, which in (("", "gross"), ("_net", "net")):
        common = float(np.mean(idle_se_terms[which]))
        for suffix in [""] + [f"[{n}]" for n in domains]:
            key = f"energy_j_per_inference{net}{suffix}"
            m, lo, hi = mean_ci_with([r[key] for r in runs], common if not suffix else 0.0)
            row[key], row[key + "_low"], row[key + "_high"] = m, lo, hi
    row.update(during_calls(cfg_dir.name, calls or {}, row, tops))
    row["throughput_per_s"] = row["batch_size"] / row["time_s_per_inference"] if row["time_s_per_inference"] else 0.0
    row["energy_j_per_sample"] = row["energy_j_per_inference"] / row["batch_size"]
    _write_json(cfg_dir / "result.json", row)
    return row


def during_calls(cfg_id: str, calls: dict, row: dict, tops: list[str]) -> dict:
    """The energy during the calls alone (the estimator, over every sitting's marks) per inference,
    gross and net, with its 95 % interval, and the after-effect: the back-to-back net minus the
    during-calls net (what ran on after the calls returned: spinning threads, clocks ramping
    down). Null where the estimator could not say."""
    mine = calls.get(cfg_id, {})
    out = {"during_calls_status": "ok" if mine else "not-estimated",
           "during_calls_reason": "" if mine else "no estimate for this configuration's calls"}
    totals = {"": [0.0, 0.0], "_net": [0.0, 0.0]}
    for name, est in mine.items():
        if est.get("status") != "ok":
            out["during_calls_status"], out["during_calls_reason"] = "not-estimated", f"{name}: {est.get('reason')}"
            continue
        for net in ("", "_net"):
            v, half = est[f"energy_j_per_call{net}"], est[f"half{net}"]
            out[f"energy_j_per_inference_during_calls{net}[{name}]"] = v
            if name in tops:
                totals[net][0] += v
                totals[net][1] += half
    for net, (v, half) in totals.items():
        ok = out["during_calls_status"] == "ok"
        out[f"energy_j_per_inference_during_calls{net}"] = v if ok else None
        out[f"energy_j_per_inference_during_calls{net}_low"] = v - half if ok else None
        out[f"energy_j_per_inference_during_calls{net}_high"] = v + half if ok else None
    ok = out["during_calls_status"] == "ok"
    out["energy_j_per_inference_after_effect"] = (row["energy_j_per_inference_net"]
                                                  - out["energy_j_per_inference_during_calls_net"]) if ok else None
    return out


def idle_power(out: Path) -> dict:
    """Session index -> {"sensor/domain": (idle power W, its standard error)}, from
    sessions/<k>/baseline.json."""
    powers = {}
    for p in sorted((Path(out) / "sessions").glob("*/baseline.json")):
        powers[int(p.parent.name)] = {f"{b['sensor']}/{b['domain']}": (float(b["power_w"]), float(b["power_w_se"]))
                                      for b in json.loads(p.read_text())}
    return powers


def calls_estimates(out: Path) -> dict:
    """Configuration -> {"sensor/domain": estimate} from sessions/<k>/calls.json, sittings
    combined by their calls (a resumed study has several)."""
    merged: dict = {}
    for p in sorted((Path(out) / "sessions").glob("*/calls.json")):
        for cfg, by_domain in json.loads(p.read_text()).items():
            for name, est in by_domain.items():
                merged.setdefault(cfg, {}).setdefault(name, []).append(est)
    out_: dict = {}
    for cfg, by_domain in merged.items():
        for name, ests in by_domain.items():
            ok = [e for e in ests if e.get("status") == "ok"]
            if not ok:
                out_.setdefault(cfg, {})[name] = ests[0]
                continue
            w = np.array([e["calls"] for e in ok], np.float64)
            w /= w.sum()
            comb = {"status": "ok", "calls": int(sum(e["calls"] for e in ok))}
            for net in ("", "_net"):
                comb[f"energy_j_per_call{net}"] = float(sum(wi * e[f"energy_j_per_call{net}"] for wi, e in zip(w, ok)))
                comb[f"half{net}"] = float(math.sqrt(sum((wi * e[f"half{net}"]) ** 2 for wi, e in zip(w, ok))))
            out_.setdefault(cfg, {})[name] = comb
    return out_


def estimate_calls(probe, out_dir: Path) -> dict:
    """The estimator over one sitting: every configuration's inferences and runs as labels of their
    own (a run holds its inferences and the gaps between them), so each configuration's energy
    during its calls is told apart from the others' and from idle. Written to calls.json."""
    from ..summary import summarise

    records = []
    for m in probe.marks():
        attrs = m[4] or {}
        if m[0] == "inference" and "config" in attrs:
            records.append((f"inference:{attrs['config']}",) + tuple(m[1:]))
        elif m[0] == "run" and "config" in attrs:
            records.append((f"run:{attrs['config']}",) + tuple(m[1:]))
    if not records:
        return {}
    channels = probe.channels()
    rows = summarise(records, channels, probe.baseline(channels))
    calls: dict = {}
    for r in rows:
        if not r["label"].startswith("inference:") or r["sensor"] == "all":
            continue
        half = (r["energy_j_per_call_high"] - r["energy_j_per_call_low"]) / 2
        half_net = (r["energy_j_per_call_net_high"] - r["energy_j_per_call_net_low"]) / 2
        calls.setdefault(r["label"].split(":", 1)[1], {})[f"{r['sensor']}/{r['domain']}"] = {
            "status": r["status"], "reason": r["reason"], "calls": r["calls"], "model": r["model"],
            "energy_j_per_call": r["energy_j_per_call"], "half": half,
            "energy_j_per_call_net": r["energy_j_per_call_net"], "half_net": half_net}
    _write_json(Path(out_dir) / "calls.json", calls)
    return calls


def collect(out: Path, skipped: list[dict], runs_wanted: int) -> pa.Table:
    """summary.parquet: one row per configuration (finished, failed, unfinished or skipped)."""
    out = Path(out)
    idle_w = idle_power(out)
    calls = calls_estimates(out)
    sensors = json.loads((out / "sensors.json").read_text()) if (out / "sensors.json").exists() else []
    rows = []
    for d in sorted(p for p in (out / "configs").glob("*") if (p / "config.json").exists()):
        cfg = json.loads((d / "config.json").read_text())
        if (d / "failed.json").exists():
            rows.append({"id": d.name, **cfg, "status": "failed", "error": json.loads((d / "failed.json").read_text())["error"]})
            continue
        row = config_row(d, runs_wanted, idle_w, calls, sensors)
        if row is None:
            n = len(list((d / "runs").glob("r*.json")))
            row = {"id": d.name, **cfg, "status": "unfinished", "error": f"{n} of {runs_wanted} runs done: run the "
                                                                          "study again to finish it"}
        rows.append(row)
    have = {r["id"] for r in rows}
    rows += [{**s, "status": "skipped", "error": s["reason"]} for s in skipped if s["id"] not in have]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out / "summary.parquet")
    return table


def _write_json(path: Path, obj) -> None:
    """Written whole or not at all (a crash leaves the old file or none)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
