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

from .runner import Config, Runner, collect, environment, estimate_calls, hardware, matrix
from .spec import QUICK, StudySpec, load_spec

__all__ = ["StudySpec", "load_spec", "QUICK", "Config", "run_study"]


def run_study(spec: StudySpec, out="results", log=None) -> Path:
    """Runs (or resumes) a study into ``out``; returns the path of summary.parquet."""
    from .. import __version__
    from ..daemon import Daemon
    from ..session import Probe
    from ..usage import GpuMonitor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    old = out / "spec.json"
    if old.exists() and json.loads(old.read_text()) != spec.as_dict():
        from ..errors import ConfigError

        raise ConfigError(f"{out} holds a study with another spec",
                          f"to resume it, pass the options it was started with (they are in {old}); otherwise use "
                          "another --out, or delete the folder to start over")
    old.write_text(json.dumps(spec.as_dict(), indent=2))
    log("looking at the runtimes this machine has ...")
    env = environment(spec)
    configs, skipped = matrix(spec, env)
    gpus = GpuMonitor()
    (out / "environment.json").write_text(json.dumps(
        {"greenprobe": __version__, "python": sys.version, "platform": platform.platform(),
         "machine": platform.machine(), "processor": platform.processor(), "hardware": hardware(gpus),
         "runtimes": env}, indent=2, default=str))
    (out / "skipped.json").write_text(json.dumps(skipped, indent=2))
    for s in {(s["runtime"], s["source"], s["provider"], s["reason"]) for s in skipped}:
        log(f"skipping {s[0]} ({s[1]}, {s[2]}): {s[3]}")
    for c in configs:
        d = out / "configs" / c.id
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"runtime": c.runtime, "source": c.source, "provider": c.provider,
                                                   "model": c.model, "batch_size": c.batch_size}))
    sessions = out / "sessions"
    k = len([p for p in sessions.glob("*") if p.is_dir()]) if sessions.exists() else 0
    here = sessions / str(k)
    here.mkdir(parents=True)
    gpus.start()
    if not gpus.available:
        log(f"no GPU use recorded: {gpus.reason.splitlines()[0]}")
    probe = Probe(sensors=spec.sensors, period_us=spec.period_us, baseline_s=spec.baseline_s)
    probe.start()  # measures the idle baseline before any worker exists
    (here / "baseline.json").write_text(json.dumps(probe.baseline(), indent=2))
    # one daemon samples for every worker: each marks its inferences through it
    sock_dir = Path(tempfile.mkdtemp(prefix="greenprobe-study-"))
    daemon = Daemon(probe, socket_path=sock_dir / "daemon.sock").start()
    runner = Runner(spec, out, probe, daemon.addresses[0], session=k, gpus=gpus, log=log)
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
        (out / "sensors.json").write_text(json.dumps(probe.metadata()["channels"], indent=2, default=str))
        log("estimating each configuration's energy during its calls ...")
        try:
            estimate_calls(probe, here)
        except Exception as e:  # noqa: BLE001 - the runs are on disk; the summary says why this column is empty
            log(f"the energy during the calls could not be estimated: {type(e).__name__}: {e}")
    collect(out, skipped, spec.runs)
    return out / "summary.parquet"
