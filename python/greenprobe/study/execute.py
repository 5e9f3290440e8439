"""Executing a study: the local executor runs configurations' runs on this machine (every
configuration in its runtime's worker process, one sampler and daemon for all, the ONNX export
cache, scoring each run as it ends); study/slurm.py's runs each configuration as a Slurm array task
that runs this same local executor on its node. Both stand behind ``Executor``: given the spec,
the folder and the configurations, run what is missing and say where the summary is.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..attribution import attribute, choose_channels
from ..consumers import tree_of
from ..store import marks_where
from ..usage import proc_usage
from .aggregate import _tops, collect, estimate_calls, run_figures, write_json
from .layout import Layout
from .plan import Config, environment, hardware, matrix
from .spec import StudySpec

#: idle kept before a run's first inference and after its last, at least (see Runner.pad_ns)
MIN_PAD_S = 0.05


def time_left(todo: list, took: dict, prep: dict, prepared: set, failed: set, shared: Optional[set] = None) -> Optional[float]:
    """Seconds the (configuration, run) pairs ``todo`` will take: each run as long as that
    configuration's last run (for configurations not run yet, the mean of those of the same model
    and batch size, else of the same batch size, else of all: a study's first timed run, ResNet-50
    at batch 64, made the first estimate 3 times too long when it stood for every one), and each
    configuration not yet built as long as the builds seen so far: a fresh build (a model, an
    export, a conversion) as the mean fresh one, one whose model another configuration of the same
    runtime already built (only its batch differs) as the mean such one. Builds dominate a quick
    study's first round: leaving them out held the estimate still while they ran, and counting every
    build as a fresh one tripled it. None before anything was timed."""
    if not took:  # the first run is still to time
        return None
    shared = shared or set()

    def mean(values, default=0.0):
        values = list(values)
        return sum(values) / len(values) if values else default

    mean_run = mean(took.values())

    def run_s(c) -> float:
        if c in took:
            return took[c]
        for alike in (("model", "batch_size"), ("batch_size",)):
            key = tuple(getattr(c, k, None) for k in alike)
            same = [v for d, v in took.items() if tuple(getattr(d, k, None) for k in alike) == key]
            if same and None not in key:
                return mean(same)
        return mean_run
    fresh_s = mean(v for c, v in prep.items() if c not in shared)
    # before one is timed, a shared build (a warm-up and the timing calls) is taken to be a run's length
    shared_s = mean((v for c, v in prep.items() if c in shared), default=mean_run)
    live = [c for c, _ in todo if c not in failed]
    runs = sum(run_s(c) for c in live)
    built = {_model_key(c) for c in list(prepared) + list(prep)}
    builds = 0.0
    for c in dict.fromkeys(c for c in live if c not in prepared and c not in prep):
        builds += shared_s if _model_key(c) in built else fresh_s
        built.add(_model_key(c))
    return runs + builds


def _model_key(c) -> tuple:
    """What a worker builds once for every batch size (study/plan.Config, or a test's stand-in)."""
    return tuple(getattr(c, k, c) for k in ("runtime", "source", "provider", "model", "precision"))


def format_seconds(secs: float) -> str:
    if secs < 90:
        return f"{secs:.0f} s"
    return f"{secs / 60:.1f} min"


class Executor(Protocol):
    """Runs a study's missing runs into its folder: ``LocalExecutor`` here, ``slurm.SlurmExecutor``
    on a cluster. ``run`` returns the path of summary.parquet, or None when it did not wait for it."""

    def run(self, spec: StudySpec, out: Path, log: Callable[[str], None]) -> Optional[Path]: ...


class LocalExecutor:
    """On this machine (``greenprobe study``), or on a node for a Slurm task: ``only`` names its
    configurations and ``session`` its sitting."""

    def __init__(self, only: Optional[list] = None, session: Optional[str] = None):
        self.only, self.session = only, session

    def run(self, spec: StudySpec, out: Path, log: Callable[[str], None]) -> Optional[Path]:
        return run_study(spec, out, log=log, only=self.only, session=self.session)


@dataclass
class Plan:
    """A prepared configuration: built in its worker's slot, warm, with its run length."""
    n: int
    one_s: float
    device: str
    shared: bool = False  # its model was already built for another configuration (only its batch differs)


class Runner:
    """Runs the configurations' runs in the spec's order. ``interleaved`` (default): round r runs
    run r of every configuration, in a fresh random order each round, every model kept built in
    its worker, so slow drift (heat, background load) spreads over all configurations alike;
    ``blocked``: one configuration's runs after another (one model in memory at a time).

    Every inference is marked by the worker through the daemon at ``address``; each run is
    attributed as soon as it ends and written to ``configs/<id>/runs/`` (nothing is lost when the
    study stops; a resumed study skips the runs on disk)."""

    task = "classify"  # the workers' task (study/generate.py's GenRunner: "generate")

    def __init__(self, spec: StudySpec, out: Path, probe, address: str, session: str = "0", gpus=None,
                 log: Callable[[str], None] = None):
        self.spec, self.out = spec, Path(out)
        self.probe, self.address, self.session, self.gpus = probe, address, str(session), gpus
        self.layout = Layout(out)
        # where each run ran: the host, and the Slurm job when it ran in one
        self.where = {"host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID", "")}
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.workers: dict = {}
        self.plans: dict = {}
        self.rng = random.Random(spec.seed)
        self.cursor = 0  # marks read so far

    # -- workers -------------------------------------------------------------------------------
    #: the attempt at the run being measured (a disturbed run is measured again: disturbed)
    attempt = 0

    def worker(self, runtime: str):
        from ..runtimes import Worker

        w = self.workers.get(runtime)
        if w is None or w.proc.poll() is not None:
            if w is not None:  # it died
                self.drop_worker(runtime)
            w = self.workers[runtime] = Worker(runtime, env={"GREENPROBE_DAEMON": self.address}, task=self.task)
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
        onnx_dir = self.layout.onnx
        onnx_dir.mkdir(parents=True, exist_ok=True)
        # every exporter writes a dynamic batch axis: one export per (source, model) serves all batch sizes,
        # and exporting at batch 1 is far cheaper (MXNet's BERT at batch 64: minutes)
        path = self.layout.onnx_export(cfg.source, cfg.model, s.size, s.image_size, s.seq_len)
        if not path.exists():
            src = self.worker(cfg.source)
            slot = f"export-{cfg.model}"
            src.build(cfg.model, slot=slot, **dict(shape, batch_size=1))
            # a name of this process's own: Slurm tasks on other nodes may export the same model at once
            tmp = Layout.onnx_export_tmp(path, f"{socket.gethostname()}-{os.getpid()}")
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
        one_s = max(self.time_one(cfg, self.worker(cfg.runtime)), 1e-6)
        n = int(min(max(s.min_inferences, math.ceil(s.min_run_s / one_s)), s.max_inferences))
        plan = self.plans[cfg] = Plan(n=n, one_s=one_s, device=built.get("device") or "", shared=bool(built.get("shared")))
        return plan

    def time_one(self, cfg: Config, w) -> float:
        """Seconds of one call after the warm-up: a warm inference times the plan."""
        w.run(0, warmup=self.spec.warmup, slot=cfg.id)
        iv = w.run(1, slot=cfg.id)
        return (iv[0][1] - iv[0][0]) * 1e-9

    def release(self, cfg: Config) -> None:
        self.plans.pop(cfg, None)
        w = self.workers.get(cfg.runtime)
        if w is not None and w.proc.poll() is None:
            w.release(cfg.id)

    def run_once(self, cfg: Config, r: int) -> dict:
        """Run r of a configuration (measure_run), again while other processes disturb it (disturbed)."""
        for attempt in range(self.spec.disturbed_retries + 1):
            self.attempt = attempt
            row = self.measure_run(cfg, r)
            if not self.disturbed(cfg, r, row, attempt):
                return row
            time.sleep(self.spec.rest_s)
        return row

    def measure_run(self, cfg: Config, r: int) -> dict:
        """Run r of a configuration: dithered inferences marked through the daemon, then scored."""
        s = self.spec
        plan = self.prepare(cfg)
        w = self.worker(cfg.runtime)
        gaps = np.random.default_rng(s.seed * 1000 + r).uniform(0, plan.one_s, plan.n)  # phase dithering
        gaps[0] = 0.0
        # interleaved: another model ran since, caches are cold. Every run gets it, the first too, so
        # that each run of a configuration costs the same (the progress estimate rests on that)
        if s.order == "interleaved" and s.warmup:
            w.run(0, warmup=1, slot=cfg.id)
        pad = self.pad_ns()
        _, usage = self.worked(w, pad, lambda: w.run(plan.n, gaps_s=gaps, slot=cfg.id, mark={
            "label": "inference", "attrs": {"config": cfg.id, "run": r, "attempt": self.attempt}}))
        marks = self.marks_of(cfg, r)
        if marks.num_rows != plan.n:
            raise RuntimeError(f"the daemon holds {marks.num_rows} of the {plan.n} inference marks of run {r}")
        start, end = marks.column("start_ns")[0].as_py(), pc.max(marks.column("end_ns")).as_py()
        self.close_run(cfg, r, start, end, pad, usage)
        return self.score_run(cfg, r, marks, usage, plan, pad)

    def disturbed(self, cfg: Config, r: int, row: dict, attempt: int) -> bool:
        """Whether other processes used more than spec.max_foreign_cores over the run's window (the
        sitting's Probe sweeps every process: consumers.py) and it has attempts left; such a run is
        set aside under configs/<id>/disturbed/ and run again. The row kept says how many attempts it
        took and how many cores others used."""
        s = self.spec
        rec = self.probe.use_recorder
        if rec is None:
            return False
        # the study's own: this process (its sampler) and its workers with what they started
        row.update(others_use(rec, row["window_start_ns"], row["window_end_ns"],
                              [w.proc.pid for w in self.workers.values()]))
        why = disturbance(row, s)
        row.update(attempts=attempt + 1, disturbed=bool(why))
        again = row["disturbed"] and attempt < s.disturbed_retries
        if again:
            aside = self.layout.disturbed_row(cfg.id, r, self.session, attempt)  # a later sitting keeps its own
            aside.parent.mkdir(parents=True, exist_ok=True)
            write_json(aside, row)
            self.layout.run_row(cfg.id, r).unlink()
            self.log(f"    disturbed: {why} over the run; running it again")
        else:
            write_json(self.layout.run_row(cfg.id, r), row)
        return again

    def worked(self, w, pad: int, work: Callable):
        """A run's work with idle before it: its window opens pad before the first call (see
        score_run), and the counter update period around that edge must hold no work either, or
        interpolating there would move the warm-up's energy (and a runtime's threads spinning after
        it) into the window: pad is at least two update periods, so 1.5 pad leaves one between
        them. Returns work()'s answer and the worker's CPU use (% of all cores) and RSS."""
        time.sleep(1.5 * pad * 1e-9)
        cpu0, t0 = proc_usage(w.proc.pid)[0], time.monotonic_ns()
        out = work()
        t1, (cpu1, rss) = time.monotonic_ns(), proc_usage(w.proc.pid)
        return out, {"cpu_util_pct": 100 * (cpu1 - cpu0) / ((t1 - t0) * 1e-9) / (os.cpu_count() or 1),
                     "rss_bytes": rss}

    def close_run(self, cfg: Config, r: int, start: int, end: int, pad: int, usage: dict) -> None:
        """Marks the run, keeps idle after it until its window closes, waits for the counters'
        updates after that, and adds the GPUs' use over it to ``usage``."""
        self.probe.add_mark("run", start, end, config=cfg.id, run=r, attempt=self.attempt)
        time.sleep(max(0.0, (end + pad - time.monotonic_ns()) * 1e-9))  # idle after it
        self.probe.settle(after_ns=end + pad)  # counters updated after the window closes
        usage.update(self.gpus.window(start, end) if self.gpus is not None else {})

    def pad_ns(self) -> int:
        """Idle time kept before a run's first inference and after its last, inside its window: two
        of the slowest channel's update periods (at least MIN_PAD_S). The window's edges then fall
        in idle time, where a counter's interpolation between updates is exact (the power there is
        the idle power), and what a runtime leaves running after its last call is inside."""
        periods = [c.learned_update_period_ns()[0] for c in choose_channels(self.probe.channels(
            time.monotonic_ns() - int(30e9)))] or [0]
        return int(max(MIN_PAD_S * 1e9, 2 * max(periods)))

    def marks_of(self, cfg: Config, r: int):
        """The inference marks of run r that reached the daemon, in order of their index (a table
        of store.mark_schema())."""
        new, self.cursor = self.probe.marks_since(self.cursor)
        return marks_where(new, {"inference"}, order_by=("i",), config=cfg.id, run=r)[0]

    def score_run(self, cfg: Config, r: int, marks, usage: dict, plan: Plan, pad: int) -> dict:
        """A run's energy per domain over its window (its inferences with ``pad_ns`` of idle on each
        side), the window's length and the number of inferences: config_row turns them into the
        back-to-back figure once the sitting's idle power is known. Its inferences one by one, with
        interpolated energies (labelled so: below a counter's update period they are not
        observations), go to configs/<id>/runs/rNNN.parquet, then the row to rNNN.json (its
        presence: the run is done)."""
        starts = marks.column("start_ns").to_numpy().astype(np.int64)
        ends = marks.column("end_ns").to_numpy().astype(np.int64)
        a, b = int(starts[0]) - pad, int(ends.max()) + pad
        # enough samples around the run to bracket its edges and learn each sensor's update period
        margin = int(2e9) + 20 * max((c["nominal_update_period_ns"] for c in self.probe.channel_info()), default=0)
        chans = self.probe.channels(a - margin, b + margin)
        dur = (ends - starts) * 1e-9
        n = marks.num_rows
        cols = {"config": [cfg.id] * n, "run": np.full(n, r), "i": np.arange(n),
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
        d = self.layout.runs(cfg.id)
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), self.layout.run_inferences(cfg.id, r))
        row = {"run": r, "session": self.session, **self.where, "start_ns": int(starts[0]), "end_ns": int(ends.max()),
               "window_start_ns": a, "window_end_ns": b, "window_s": (b - a) * 1e-9,
               "inferences": n, "device": plan.device, "estimated": bool(estimated),
               "domains": ",".join(domains), "time_s_per_inference": float(dur.mean()),
               "window_complete": all(c for _, c, _ in window.values()),
               **{f"energy_j_window[{n}]": e for n, (e, _, _) in window.items()},
               **{f"energy_j_window_bounds_width[{n}]": w for n, (_, _, w) in window.items()},
               **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in usage.items()}}
        write_json(self.layout.run_row(cfg.id, r), row)
        return row

    def run_line(self, row: dict) -> str:
        """The progress line under a finished run."""
        gross = sum(v for k, v in row.items() if k.startswith("energy_j_window[")) / row["inferences"]
        return (f"    {row['time_s_per_inference'] * 1e3:.2f} ms, {gross:.4g} J per inference over its "
                f"window, idle included{' (ESTIMATED)' if row['estimated'] else ''}")

    # -- the study -----------------------------------------------------------------------------
    #: the figures the stopping rule (spec.target_rel_ci) holds to its target, as run_totals names them
    TARGET_FIGURES = ("energy_j_per_inference",)

    def run_totals(self, run: dict, idle: dict, tops: list) -> dict:
        """A run's gross figures over the top-level domains, with the sitting's idle power so far."""
        domains = [d for d in run["domains"].split(",") if d]
        f = run_figures(run, domains, idle)
        return {"energy_j_per_inference": sum(f[f"energy_j_per_inference[{n}]"] for n in tops)}

    def max_runs(self) -> int:
        return self.spec.max_runs or 3 * self.spec.runs

    def needs_more(self, cfg: Config) -> str:
        """Why configuration cfg needs another run under the stopping rule (spec.target_rel_ci): the
        figures whose 95 % interval over its runs so far is wider than the target, in words; "" when
        none is (or the rule is off, or it has max_runs)."""
        from .stats import mean_ci

        s = self.spec
        runs = [json.loads(p.read_text()) for p in self.layout.run_rows(cfg.id)]
        if not s.target_rel_ci or len(runs) < 2 or len(runs) >= self.max_runs():
            return ""
        idle = {f"{b['sensor']}/{b['domain']}": (float(b["power_w"]), float(b["power_w_se"]))
                for b in self.probe.baseline()}
        names = [d for d in runs[0]["domains"].split(",") if d]
        tops = [d for d in names if d in _tops(self.probe.channel_info(), names)]
        totals = [self.run_totals(r, idle, tops) for r in runs]
        wide = []
        for key in self.TARGET_FIGURES:
            values = [t[key] for t in totals if t[key] is not None and math.isfinite(t[key])]
            if len(values) < 2:
                continue
            m, lo, hi = mean_ci(values, positive=True)
            if m > 0 and (hi - lo) / 2 / m > s.target_rel_ci:
                wide.append(f"{key} +-{(hi - lo) / 2 / m:.1%}")
        return ", ".join(wide)

    def schedule(self, configs: list[Config]) -> list[tuple[Config, int]]:
        """(configuration, run) pairs still to do, in the spec's order."""
        s = self.spec
        left = {}
        for c in configs:
            failed = self.layout.failed(c.id)
            if failed.exists():
                # a failure is not retried (delete the folder to retry); a skip is, since its fix (a
                # runtime installed, a converter updated) may have come since
                if not json.loads(failed.read_text()).get("skipped"):
                    continue
                failed.unlink()
            done = self.layout.runs_done(c.id)
            todo = [r for r in range(s.runs) if r not in done]
            if not todo and self.needs_more(c):  # a resumed sitting goes on with the stopping rule
                todo = [max(done) + 1]
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
        n_done = max(len(configs) * self.spec.runs - len(steps), 0)
        if n_done:
            self.log(f"resuming: {n_done} runs already on disk, {len(steps)} to go")
        last = {}
        for k, (cfg, r) in enumerate(steps):
            last[cfg] = k
        failed: set = set()
        took: dict = {}  # configuration -> seconds its last run took (rest included, building not)
        prep: dict = {}  # configuration -> seconds its building, conversion and warm-up took
        shared: set = set()  # configurations whose model was built before (for another batch size)
        for k, (cfg, r) in enumerate(steps):
            if cfg in failed:
                continue
            left = time_left(steps[k:], took, prep, set(self.plans), failed, shared)
            left = f", about {format_seconds(left)} left" if left is not None else ""
            self.log(f"[{k + 1}/{len(steps)}] {cfg.id} run {r + 1}/{max(self.spec.runs, r + 1)}{left}")
            try:
                if cfg not in self.plans:
                    t0 = time.monotonic()
                    plan = self.prepare(cfg)
                    prep[cfg] = time.monotonic() - t0
                    if plan.shared:
                        shared.add(cfg)
                t0 = time.monotonic()
                row = self.run_once(cfg, r)
                self.log(self.run_line(row))
            except Exception as e:  # noqa: BLE001 - recorded with its error; the study goes on
                from ..runtimes import WorkerError

                msg = str(e) if isinstance(e, WorkerError) else f"{type(e).__name__}: {e}"
                # a runtime that cannot run this (a converter's refusal, a precision it lacks) is skipped
                # with its reason; anything else failed
                skipped = isinstance(e, WorkerError) and e.unavailable
                self.log(f"    {'skipped' if skipped else 'failed'}: {msg.splitlines()[0]}")
                failed.add(cfg)
                d = self.layout.config(cfg.id)
                d.mkdir(parents=True, exist_ok=True)
                write_json(self.layout.failed(cfg.id), {"error": e.message if skipped else msg, "run": r,
                                                        "skipped": skipped, "fix": e.fix if skipped else ""})
                if isinstance(e, WorkerError) and not skipped and cfg.runtime in self.workers:
                    self.drop_worker(cfg.runtime)  # a broken worker is not reused (a refusal leaves it sound)
                elif cfg in self.plans:  # the worker is sound: free the failed configuration's model
                    self.release(cfg)
                continue
            if last[cfg] == k:
                why = self.needs_more(cfg)  # the stopping rule: one more run while an interval is too wide
                if why:
                    self.log(f"    another run: {why} (target {self.spec.target_rel_ci:.1%}, at most "
                             f"{self.max_runs()} runs)")
                    steps.append((cfg, max(self.layout.runs_done(cfg.id)) + 1))
                    last[cfg] = len(steps) - 1
                else:
                    self.release(cfg)  # its last run: free the model
            time.sleep(self.spec.rest_s)
            took[cfg] = time.monotonic() - t0


# -- a sitting: the matrix on this machine, one sampler and daemon, the runs, the summary ------------
def prepare_study(spec: StudySpec, out: Path, log, only: Optional[list] = None, gpus=None):
    """The matrix on this machine, its configuration folders, and (unless ``only`` names the
    configurations of a task sharing ``out``) spec.json, environment.json and skipped.json.
    Returns (configurations, skipped, environment.json's text)."""
    from .._version import __version__
    from ..errors import ConfigError
    from ..usage import GpuMonitor

    out.mkdir(parents=True, exist_ok=True)
    lay = Layout(out)
    old = lay.spec
    shared = only is not None
    # a key the saved spec lacks (written by a version before it existed) holds its default
    if old.exists() and {**StudySpec().as_dict(), **json.loads(old.read_text())} != spec.as_dict():
        raise ConfigError(f"{out} holds a study with another spec",
                          f"to resume it, pass the options it was started with (they are in {old}); otherwise use "
                          "another --out, or delete the folder to start over")
    if not shared:
        old.write_text(json.dumps(spec.as_dict(), indent=2))
    log("looking at the runtimes this machine has ...")
    env = environment(spec)
    configs, skipped = matrix(spec, env)
    if only is not None:
        unknown = set(only) - {c.id for c in configs}
        if unknown:
            raise ConfigError(f"this node cannot run {sorted(unknown)}: not in its matrix (a runtime or provider "
                              "missing here?)", "install the same runtimes on every node, or look at "
                              f"{Layout.SKIPPED} for why")
        configs = [c for c in configs if c.id in set(only)]
    environment_json = json.dumps(
        {"greenprobe": __version__, "python": sys.version, "platform": platform.platform(),
         "machine": platform.machine(), "processor": platform.processor(), "host": platform.node(),
         "hardware": hardware(gpus if gpus is not None else GpuMonitor(sensors=spec.sensors)), "runtimes": env,
         "slurm": slurm_env()},
        indent=2, default=str)
    if not shared:
        lay.environment.write_text(environment_json)
        lay.skipped.write_text(json.dumps(skipped, indent=2))
    for s in {(s["runtime"], s["source"], s["provider"], s["reason"]) for s in skipped}:
        log(f"skipping {s[0]} ({s[1]}, {s[2]}): {s[3]}")
    for c in configs:
        d = lay.config(c.id)
        d.mkdir(parents=True, exist_ok=True)
        (d / Layout.CONFIG).write_text(json.dumps(c.as_dict()))
    return configs, skipped, environment_json


def run_study(spec: StudySpec, out="results", log=None, only: Optional[list] = None,
              session: Optional[str] = None) -> Path:
    """Runs (or resumes) a study into ``out`` on this machine; returns the path of summary.parquet.

    ``only``: the configuration ids to run (a Slurm array task runs one); the study's top-level
    files (environment.json, skipped.json, sensors.json, summary.parquet) are then left to the
    command that submitted it, since several tasks share ``out``. ``session``: the sitting's folder
    name under sessions/ (default: the next number)."""
    from ..daemon import Daemon
    from ..session import Probe
    from ..usage import GpuMonitor

    out = Path(out)
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    shared = only is not None
    # A start refused (a sensor that does not open, a daemon that does not start, Ctrl-C during the
    # idle baseline) undoes itself: what it started stops and what it wrote goes, so that the corrected
    # command runs into the same OUT (a spec.json left there would hold OUT to the refused spec). A
    # Slurm task's folder is shared with the other tasks: it leaves OUT to them.
    with contextlib.ExitStack() as refused:
        if not shared:
            refused.callback(undo_writes(out))
        gpus = GpuMonitor(sensors=spec.sensors)  # the GPUs the nvml sensor measures, with its gpus= option
        configs, skipped, environment_json = prepare_study(spec, out, log, only, gpus)
        lay = Layout(out)
        k = session = session if session is not None else lay.next_session()
        here = lay.session(session)
        here.mkdir(parents=True)
        (here / Layout.ENVIRONMENT).write_text(environment_json)
        gpus.start()
        refused.callback(gpus.stop)
        if not gpus.available:
            log(f"no GPU use recorded: {gpus.reason.splitlines()[0]}")
        # every process's CPU time too: a run during which others used the machine is run again
        probe = Probe(sensors=spec.sensors, period_us=spec.period_us, baseline_s=spec.baseline_s,
                      consumers="process")  # swept every 0.25 s: about 1 % of a core
        if spec.baseline_s:
            log(f"measuring the idle power for {spec.baseline_s:g} s ...")
        probe.start()  # measures the idle baseline before any worker exists
        refused.callback(probe.stop)
        idle_undisturbed(probe, spec, log, here)
        (here / Layout.BASELINE).write_text(json.dumps(probe.baseline(), indent=2))
        # one daemon samples for every worker: each marks its inferences through it
        sock_dir = Path(tempfile.mkdtemp(prefix="greenprobe-study-"))
        refused.callback(shutil.rmtree, sock_dir, ignore_errors=True)
        daemon = Daemon(probe, socket_path=sock_dir / "daemon.sock").start()
        refused.callback(daemon.stop)
        if spec.task == "generate":
            from .generate import GenRunner as runner_class
        else:
            runner_class = Runner
        runner = runner_class(spec, out, probe, daemon.addresses[0], session=k, gpus=gpus, log=log)
        refused.pop_all()  # started: from here on what is written is the study's, kept for a resume
    try:
        for s in probe.skipped:
            log(f"sensor {s.kind} skipped: {s.reason}")
        runner.run(configs)
    finally:
        runner.close()
        daemon.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
        if spec.baseline_s:
            log(f"measuring the idle power after the runs for {spec.baseline_s:g} s ...")
        probe.stop()  # and the idle baseline after
        idle_after_undisturbed(probe, spec, log, here)
        gpus.stop()
        probe.save(here)
        (here / Layout.BASELINE).write_text(json.dumps(probe.baseline(), indent=2))
        sensors_json = json.dumps(probe.metadata()["channels"], indent=2, default=str)
        (here / Layout.SENSORS).write_text(sensors_json)
        if not shared:
            lay.sensors.write_text(sensors_json)
        log("estimating each configuration's energy during its calls ...")
        try:
            estimate_calls(probe, here)
        except Exception as e:  # noqa: BLE001 - the runs are on disk; the summary says why this column is empty
            log(f"the energy during the calls could not be estimated: {type(e).__name__}: {e}")
    if not shared:
        collect(out, skipped, spec.runs)
    return lay.summary


def others_use(rec, a: int, b: int, worker_pids=()) -> dict:
    """How much processes other than the study's used the machine over [a, b] (the sweep after b
    waited for): foreign_cores (their mean CPU cores) and foreign_top (those that used a tenth of a
    core or more, in words); where the GPUs' per-process use is recorded (NVML's), foreign_gpu (the
    GPUs' worth of SMs they kept busy, on average) and foreign_gpu_top. The study's own: this
    process, and each worker pid's tree."""
    rec.wait_past(b)
    use = rec.use("process")
    own = {i for i, c in enumerate(use.consumers) if c.pid == os.getpid()}
    for pid in worker_pids:
        own |= tree_of(use.consumers, pid)
    cores, top = use.foreign(a, b, own)
    out = {"foreign_cores": cores, "foreign_top": "; ".join(f"{n} {c:.2f}" for n, c in top)}
    if "gpu" in rec.readers:
        gpu = rec.use("gpu")
        pids = {use.consumers[i].pid for i in own}
        busy, gtop = gpu.foreign(a, b, {i for i, c in enumerate(gpu.consumers) if c.pid in pids})
        out.update(foreign_gpu=busy, foreign_gpu_top="; ".join(f"{n} {g:.2f}" for n, g in gtop))
    return out


def disturbance(seen: dict, spec: StudySpec) -> str:
    """Why a window over which others used the machine is disturbed, in words; "" when it is not."""
    why = []
    if seen["foreign_cores"] > spec.max_foreign_cores:
        why.append(f"other processes used {seen['foreign_cores']:.2f} cores (more than {spec.max_foreign_cores:g}: "
                   f"{seen['foreign_top']})")
    if (seen.get("foreign_gpu") or 0.0) > spec.max_foreign_gpu:
        why.append(f"other processes kept {seen['foreign_gpu']:.2f} GPUs' SMs busy (more than "
                   f"{spec.max_foreign_gpu:g}: {seen['foreign_gpu_top']})")
    return " and ".join(why)


def idle_undisturbed(probe, spec: StudySpec, log, here: Path) -> None:
    """The idle window just measured, again while other processes used more than
    spec.max_foreign_cores over it (up to spec.disturbed_retries times); each window's foreign use
    goes to the session's idle.json."""
    rec = probe.use_recorder
    if rec is None or not probe.baseline_windows:
        return
    seen = []
    for attempt in range(spec.disturbed_retries + 1):
        which, a, b = probe.baseline_windows[-1]
        seen.append({"which": which, "start_ns": a, "end_ns": b, **others_use(rec, a, b)})
        why = disturbance(seen[-1], spec)
        if not why:
            break
        if attempt == spec.disturbed_retries:
            log(f"the idle power was measured while {why}: kept, flagged in {Layout.IDLE}; net figures are low by "
                "their power")
            break
        log(f"idle disturbed: {why}; measuring it again")
        probe.measure_idle_again()
    write_json(here / Layout.IDLE, seen)


def idle_after_undisturbed(probe, spec: StudySpec, log, here: Path) -> None:
    """The idle window measured after the runs (at stop, so it cannot be measured again): left out
    of the idle power if other processes used more than spec.max_foreign_cores (or max_foreign_gpu)
    over it, said in the log and in idle.json."""
    rec = probe.use_recorder
    if rec is None or not probe.baseline_windows or probe.baseline_windows[-1][0] != "after":
        return
    which, a, b = probe.baseline_windows[-1]
    idle = here / Layout.IDLE
    seen = json.loads(idle.read_text()) if idle.exists() else []
    seen.append({"which": which, "start_ns": a, "end_ns": b, **others_use(rec, a, b)})
    why = disturbance(seen[-1], spec)
    seen[-1]["left_out"] = bool(why)
    if why and len(probe.baseline_windows) > 1:
        probe.baseline_windows.pop()
        log(f"the idle power after the runs was measured while {why}: left out, the idle power is the one before")
    write_json(idle, seen)


def undo_writes(out: Path) -> Callable[[], None]:
    """A function that removes what was written under ``out`` since this call, and ``out`` itself
    (with the folders above it) if it was not there; what was there stays (a file rewritten stays
    rewritten)."""
    out = Path(os.path.abspath(out))
    made = [p for p in (out, *out.parents) if not os.path.lexists(p)]
    before = set() if made else {os.path.join(root, n) for root, dirs, files in os.walk(out) for n in dirs + files}

    def undo() -> None:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
            return
        for root, dirs, files in os.walk(out):
            for name in [*files, *dirs]:
                path = os.path.join(root, name)
                if path in before:
                    continue
                if name in dirs:
                    dirs.remove(name)  # not walked into: it goes whole
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)

    return undo


def slurm_env() -> dict:
    """The Slurm job this runs in (empty outside one)."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION", "SLURM_JOB_NODELIST",
            "SLURM_CLUSTER_NAME")
    return {k: os.environ[k] for k in keys if k in os.environ}
