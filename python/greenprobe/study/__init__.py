"""`greenprobe study`: the paper's experiment (runtimes x models x batch sizes, ONNX Runtime on each
framework's export and every working execution provider), measured with one sampler, written as a
Parquet dataset with 95 % intervals; `greenprobe report` turns it into tables and plots."""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from .aggregate import collect, estimate_calls
from .execute import Executor, LocalExecutor, Runner
from .layout import Layout
from .plan import Config, environment, hardware, matrix
from .spec import QUICK, StudySpec, load_spec

__all__ = ["StudySpec", "load_spec", "QUICK", "Config", "Layout", "Executor", "LocalExecutor", "run_study"]


def prepare_study(spec: StudySpec, out: Path, log, only: Optional[list] = None, gpus=None):
    """The matrix on this machine, its configuration folders, and (unless ``only`` names the
    configurations of a task sharing ``out``) spec.json, environment.json and skipped.json.
    Returns (configurations, skipped, environment.json's text)."""
    from .. import __version__
    from ..errors import ConfigError
    from ..usage import GpuMonitor

    out.mkdir(parents=True, exist_ok=True)
    lay = Layout(out)
    old = lay.spec
    shared = only is not None
    if old.exists() and json.loads(old.read_text()) != spec.as_dict():
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
                              "skipped.json for why")
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
        (d / "config.json").write_text(json.dumps(c.as_dict()))
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
    gpus = GpuMonitor(sensors=spec.sensors)  # the GPUs the nvml sensor measures, with its gpus= option
    configs, skipped, environment_json = prepare_study(spec, out, log, only, gpus)
    lay = Layout(out)
    k = session = session if session is not None else lay.next_session()
    here = lay.session(session)
    here.mkdir(parents=True)
    (here / "environment.json").write_text(environment_json)
    gpus.start()
    if not gpus.available:
        log(f"no GPU use recorded: {gpus.reason.splitlines()[0]}")
    probe = Probe(sensors=spec.sensors, period_us=spec.period_us, baseline_s=spec.baseline_s)
    probe.start()  # measures the idle baseline before any worker exists
    (here / "baseline.json").write_text(json.dumps(probe.baseline(), indent=2))
    # one daemon samples for every worker: each marks its inferences through it
    sock_dir = Path(tempfile.mkdtemp(prefix="greenprobe-study-"))
    daemon = Daemon(probe, socket_path=sock_dir / "daemon.sock").start()
    if spec.task == "generate":
        from .generate import GenRunner as runner_class
    else:
        runner_class = Runner
    runner = runner_class(spec, out, probe, daemon.addresses[0], session=k, gpus=gpus, log=log)
    try:
        for s in probe.skipped:
            log(f"sensor {s.kind} skipped: {s.reason}")
        runner.run(configs)
    finally:
        runner.close()
        daemon.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
        probe.stop()  # and the idle baseline after
        gpus.stop()
        probe.save(here)
        (here / "baseline.json").write_text(json.dumps(probe.baseline(), indent=2))
        sensors_json = json.dumps(probe.metadata()["channels"], indent=2, default=str)
        (here / "sensors.json").write_text(sensors_json)
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


def slurm_env() -> dict:
    """The Slurm job this runs in (empty outside one)."""
    import os

    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION", "SLURM_JOB_NODELIST",
            "SLURM_CLUSTER_NAME")
    return {k: os.environ[k] for k in keys if k in os.environ}
