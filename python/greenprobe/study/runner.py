"""Runs a study: every configuration in its runtime's worker, one sampler for all, results written
per configuration as it finishes (an interrupted study resumes without redoing them).

Layout of DIR:
  spec.json, environment.json, skipped.json       what was asked, what this machine has, what not and why
  configs/<id>/inferences.parquet                 one row per inference (and sensor domain)
  configs/<id>/runs.parquet                       one row per run
  configs/<id>/result.json                        the configuration's summary row (written last: "done")
  summary.parquet                                 one row per configuration (rebuilt from result.json files)
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

from ..attribution import attribute
from ..summary import t975
from .spec import NATIVE, StudySpec

#: sub-domains counted inside another one (RAPL core and uncore inside package; psys is the platform)
NOT_IN_TOTAL = ("core", "uncore", "psys")


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


class Runner:
    def __init__(self, spec: StudySpec, out: Path, log: Callable[[str], None] = None):
        self.spec, self.out = spec, Path(out)
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.workers: dict = {}
        self.rng = random.Random(spec.seed)

    # -- workers -------------------------------------------------------------------------------
    def worker(self, runtime: str):
        from ..runtimes import Worker

        w = self.workers.get(runtime)
        if w is None or w.proc.poll() is not None:
            w = self.workers[runtime] = Worker(runtime)
        return w

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
        self.workers.clear()

    # -- one configuration ---------------------------------------------------------------------
    def build(self, cfg: Config) -> dict:
        s = self.spec
        shape = dict(size=s.size, batch_size=cfg.batch_size, image_size=s.image_size, seq_len=s.seq_len)
        if cfg.runtime != "onnxruntime":
            return self.worker(cfg.runtime).build(cfg.model, **shape)
        onnx_dir = self.out / "onnx"
        onnx_dir.mkdir(parents=True, exist_ok=True)
        # every exporter writes a dynamic batch axis: one export per (source, model) serves all batch sizes,
        # and exporting at batch 1 is far cheaper (MXNet's BERT at batch 64: minutes)
        path = onnx_dir / f"{cfg.source}-{cfg.model}-{s.size}-{s.image_size}-{s.seq_len}.onnx"
        if not path.exists():
            src = self.worker(cfg.source)
            src.build(cfg.model, **dict(shape, batch_size=1))
            tmp = path.with_suffix(".tmp.onnx")
            src.export_onnx(str(tmp), finalize=False)  # finalized here: MXNet's protobuf is slow on big models
            from ..runtimes import finalize_export

            finalize_export(str(tmp), cfg.source)
            os.replace(tmp, path)
        return self.worker("onnxruntime").build(cfg.model, onnx_path=str(path), provider=cfg.provider, **shape)

    def run_config(self, cfg: Config, probe) -> dict:
        s = self.spec
        built = self.build(cfg)
        w = self.worker(cfg.runtime)
        w.run(0, warmup=s.warmup)
        probe_iv = w.run(1)  # a warm inference times the plan
        one_s = max((probe_iv[0][1] - probe_iv[0][0]) * 1e-9, 1e-6)
        n = int(min(max(s.min_inferences, math.ceil(s.min_run_s / one_s)), s.max_inferences))
        runs, inferences = [], []
        pid = w.proc.pid
        for r in range(s.runs):
            gaps = np.random.default_rng(s.seed * 1000 + r).uniform(0, one_s, n)  # phase dithering
            gaps[0] = 0.0
            cpu0, t0 = _proc_usage(pid)[0], time.monotonic_ns()
            ivs = w.run(n, gaps_s=gaps)
            t1, (cpu1, rss) = time.monotonic_ns(), _proc_usage(pid)
            for k, (a, b) in enumerate(ivs):
                probe.add_mark("inference", a, b, config=cfg.id, run=r, i=k)
            probe.add_mark("run", ivs[0][0], ivs[-1][1], config=cfg.id, run=r)
            runs.append({"run": r, "start_ns": ivs[0][0], "end_ns": ivs[-1][1], "inferences": n,
                         "cpu_util": (cpu1 - cpu0) / ((t1 - t0) * 1e-9) / (os.cpu_count() or 1),
                         "rss_bytes": rss})
            inferences.extend((r, k, a, b) for k, (a, b) in enumerate(ivs))
            time.sleep(s.rest_s)
        probe._settle(after_ns=runs[-1]["end_ns"])  # counters updated after the last inference
        return self.score(cfg, probe, runs, inferences, built)

    def score(self, cfg: Config, probe, runs: list, inferences: list, built: dict) -> dict:
        """Energy per inference per domain from the samples; per-run means; 95 % intervals across runs."""
        d = self.out / "configs" / cfg.id
        d.mkdir(parents=True, exist_ok=True)
        inf = np.array(inferences, dtype=np.int64).reshape(-1, 4)
        chans = probe.channels()
        per_channel = attribute(inf[:, 2], inf[:, 3], chans)
        idle = {(b["sensor"], b["domain"]): b["power_w"] for b in probe.baseline()}
        dur = (inf[:, 3] - inf[:, 2]) * 1e-9
        cols = {"config": [cfg.id] * len(inf), "run": inf[:, 0], "i": inf[:, 1], "start_ns": inf[:, 2],
                "end_ns": inf[:, 3], "duration_s": dur}
        total = np.zeros(len(inf))
        total_net = np.zeros(len(inf))
        estimated = False
        domains = []
        for res in per_channel:
            ch = res["channel"]
            name = f"{ch.sensor}/{ch.domain}"
            domains.append(name)
            cols[f"energy_j[{name}]"] = res["energy_j"]
            if ch.domain not in NOT_IN_TOTAL:
                total += res["energy_j"]
                total_net += res["energy_j"] - idle.get((ch.sensor, ch.domain), 0.0) * dur
                estimated |= ch.estimated
        cols["energy_j"] = total
        cols["energy_j_net"] = total_net
        pq.write_table(pa.table(cols), d / "inferences.parquet")
        run_ids = inf[:, 0]
        per_run = []
        for r in runs:
            m = run_ids == r["run"]
            per_run.append({**r, "time_s_per_inference": float(dur[m].mean()),
                            "energy_j_per_inference": float(total[m].mean()),
                            "energy_j_per_inference_net": float(total_net[m].mean()),
                            **{f"energy_j_per_inference[{n}]": float(cols[f"energy_j[{n}]"][m].mean()) for n in domains}})
        pq.write_table(pa.Table.from_pylist(per_run), d / "runs.parquet")
        row = {"id": cfg.id, "runtime": cfg.runtime, "source": cfg.source, "provider": cfg.provider,
               "model": cfg.model, "batch_size": cfg.batch_size, "status": "ok", "error": "",
               "runs": len(runs), "inferences_per_run": runs[0]["inferences"], "estimated": bool(estimated),
               "device": built.get("device") or "", "domains": ",".join(domains),
               "cpu_util": float(np.mean([r["cpu_util"] for r in runs])),
               "rss_bytes": int(max(r["rss_bytes"] for r in runs))}
        for key in ("time_s_per_inference", "energy_j_per_inference", "energy_j_per_inference_net"):
            mean, low, high = mean_ci([r[key] for r in per_run])
            row[key], row[key + "_low"], row[key + "_high"] = mean, low, high
        for n in domains:
            row[f"energy_j_per_inference[{n}]"] = float(np.mean([r[f"energy_j_per_inference[{n}]"] for r in per_run]))
        row["throughput_per_s"] = cfg.batch_size / row["time_s_per_inference"] if row["time_s_per_inference"] else 0.0
        row["energy_j_per_sample"] = row["energy_j_per_inference"] / cfg.batch_size
        return row

    # -- the study -----------------------------------------------------------------------------
    def run(self, configs: list[Config], probe, skipped: list[dict]) -> None:
        done_dir = self.out / "configs"
        todo = [c for c in configs if not (done_dir / c.id / "result.json").exists()]
        if len(todo) < len(configs):
            self.log(f"resuming: {len(configs) - len(todo)} of {len(configs)} configurations already done")
        self.rng.shuffle(todo)  # randomised order: drift (heat, background load) spreads over all
        t_start = time.monotonic()
        for i, cfg in enumerate(todo):
            elapsed = time.monotonic() - t_start
            left = f", about {elapsed / i * (len(todo) - i) / 60:.1f} min left" if i else ""
            self.log(f"[{i + 1}/{len(todo)}] {cfg.id}{left}")
            try:
                row = self.run_config(cfg, probe)
            except Exception as e:  # noqa: BLE001 - recorded with its error; the study goes on
                from ..runtimes import WorkerError

                msg = str(e) if isinstance(e, WorkerError) else f"{type(e).__name__}: {e}"
                self.log(f"    failed: {msg.splitlines()[0]}")
                row = {"id": cfg.id, "runtime": cfg.runtime, "source": cfg.source, "provider": cfg.provider,
                       "model": cfg.model, "batch_size": cfg.batch_size, "status": "failed", "error": msg}
                if cfg.runtime in self.workers:  # a broken worker is not reused
                    self.workers.pop(cfg.runtime).close()
            d = done_dir / cfg.id
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / "result.json.tmp"
            tmp.write_text(json.dumps(row, indent=2, default=str))
            os.replace(tmp, d / "result.json")
            if row["status"] == "ok":
                self.log(f"    {row['time_s_per_inference'] * 1e3:.2f} ms, {row['energy_j_per_inference']:.4g} J "
                         f"per inference{' (ESTIMATED)' if row['estimated'] else ''}")


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and its 95 % interval (t distribution) over independent runs."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, m, m
    half = t975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m, m - half, m + half


def collect(out: Path, skipped: list[dict]) -> pa.Table:
    """summary.parquet: one row per configuration (finished, failed or skipped)."""
    rows = [json.loads(p.read_text()) for p in sorted((Path(out) / "configs").glob("*/result.json"))]
    have = {r["id"] for r in rows}
    rows += [{**s, "status": "skipped", "error": s["reason"]} for s in skipped if s["id"] not in have]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, Path(out) / "summary.parquet")
    return table


def _proc_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of a process, from one read of /proc/PID/stat."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"), int(f[21]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return float("nan"), 0
