"""`greenprobe study`: the paper's experiment (runtimes x models x batch sizes, ONNX Runtime on each
framework's export and every working execution provider), measured with one sampler, written as a
Parquet dataset with 95 % intervals; `greenprobe report` turns it into tables and plots."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from .runner import Config, Runner, collect, environment, matrix
from .spec import QUICK, StudySpec, load_spec

__all__ = ["StudySpec", "load_spec", "QUICK", "Config", "run_study"]


def run_study(spec: StudySpec, out="results", log=None) -> Path:
    """Runs (or resumes) a study into ``out``; returns the path of summary.parquet."""
    from .. import __version__
    from ..session import Probe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    old = out / "spec.json"
    if old.exists() and json.loads(old.read_text()) != spec.as_dict():
        from ..errors import ConfigError

        raise ConfigError(f"{out} holds a study with another spec", "use another --out, or delete the folder "
                                                                   "to start over")
    old.write_text(json.dumps(spec.as_dict(), indent=2))
    log("looking at the runtimes this machine has ...")
    env = environment(spec)
    configs, skipped = matrix(spec, env)
    (out / "environment.json").write_text(json.dumps(
        {"greenprobe": __version__, "python": sys.version, "platform": platform.platform(),
         "machine": platform.machine(), "processor": platform.processor(), "runtimes": env}, indent=2, default=str))
    (out / "skipped.json").write_text(json.dumps(skipped, indent=2))
    for s in {(s["runtime"], s["source"], s["provider"], s["reason"]) for s in skipped}:
        log(f"skipping {s[0]} ({s[1]}, {s[2]}): {s[3]}")
    runner = Runner(spec, out, log)
    probe = Probe(sensors=spec.sensors, period_us=spec.period_us, baseline_s=spec.baseline_s)
    probe.start()
    try:
        for s in probe.skipped:
            log(f"sensor {s.kind} skipped: {s.reason}")
        runner.run(configs, probe, skipped)
    finally:
        runner.close()
        probe.stop()
        probe.save(out / "session")
        (out / "sensors.json").write_text(json.dumps(probe.metadata()["channels"], indent=2, default=str))
    collect(out, skipped)
    return out / "summary.parquet"
