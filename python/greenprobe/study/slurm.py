"""The study on a Slurm cluster: ``greenprobe study SPEC --executor slurm``.

Every configuration still to run becomes one task of a Slurm array job. A task gets a whole node
(``--exclusive``: a measurement alone on its node), starts that node's own sampler, daemon and
workers as the local study does, runs its configuration's runs and writes them into the shared
``--out`` folder under the same layout, in a sitting of its own (``sessions/slurm-<job id>-<restart>/``
with the node's environment.json, sensors.json and idle baseline). Each run row records its host
and Slurm job id. The submitting command waits with progress (or, with ``--no-wait``, returns; the
same command run later picks up where the jobs are), records the tasks that ended without their
runs with Slurm's state, reason and exit code (``slurm/failed.json``), and builds summary.parquet
from every run on disk. Running the same command again resubmits what is missing (resume is by
run, as in a local study).

Submission is a plain ``sbatch`` array script, written to ``OUT/slurm/sub-N/job.sh`` beside the
list of configurations its tasks run: a person can read it, and resubmit it by hand. (submitit
would pickle a Python callable into the shared folder and unpickle it on the node; a script that
runs ``python -m greenprobe.study.slurm task`` needs nothing of the submitting process and is what
cluster users already read.) Job states come from ``squeue`` while jobs are queued or running, then
from ``scontrol show job`` (Slurm keeps finished jobs for MinJobAge) or ``sacct`` where accounting
is on.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import ConfigError
from .layout import Layout
from .spec import StudySpec

FINISHED_OK = "COMPLETED"


@dataclass
class SlurmOptions:
    partition: Optional[str] = None
    account: Optional[str] = None
    time_limit: Optional[str] = None      # sbatch --time, e.g. "4:00:00"
    gpus_per_job: Optional[int] = None    # sbatch --gpus
    sbatch_args: list = field(default_factory=list)  # passed to sbatch as they are
    python: str = sys.executable          # the interpreter the tasks run (same path on every node)

    @classmethod
    def load(cls, spec_path: Optional[str] = None, **overrides) -> "SlurmOptions":
        """From the spec file's [slurm] table, then command-line overrides (None: not given)."""
        values: dict = {}
        if spec_path:
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                import tomli as tomllib
            table = tomllib.loads(Path(spec_path).read_text()).get("slurm", {})
            known = {f for f in cls.__dataclass_fields__}
            unknown = set(table) - known
            if unknown:
                raise ConfigError(f"{spec_path}: unknown keys in [slurm]: {sorted(unknown)}",
                                  f"known keys: {', '.join(sorted(known))}")
            values.update(table)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def require_slurm() -> None:
    for tool in ("sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            raise ConfigError(f"--executor slurm needs Slurm's {tool}, which is not on PATH",
                              "run on a Slurm login node, or try it on this machine with "
                              "bash scripts/slurm-local.sh start (as root)")


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# -- what runs where ------------------------------------------------------------------------------
def _runs_done(out: Path, cfg_id: str) -> int:
    return len(Layout(out).runs_done(cfg_id))


def _load_submissions(out: Path) -> list[dict]:
    p = Layout(out).submissions
    return json.loads(p.read_text()) if p.exists() else []


def _save(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def queued_tasks(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """'<job>_<task>' -> (state, reason) of the array tasks Slurm still queues or runs."""
    if not job_ids:
        return {}
    r = _run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T|%r"])
    out = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def task_outcome(task: str) -> dict:
    """How a finished array task ended: state, reason, exit code (Slurm's words), from scontrol or
    sacct; state UNKNOWN when Slurm no longer holds it."""
    r = _run(["scontrol", "show", "job", "-o", task])
    if r.returncode == 0 and "JobState=" in r.stdout:
        fields = dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)
        return {"state": fields.get("JobState", "UNKNOWN"), "reason": fields.get("Reason", ""),
                "exit_code": fields.get("ExitCode", "")}
    if shutil.which("sacct"):
        r = _run(["sacct", "-n", "-P", "-X", "-j", task, "-o", "State,ExitCode,Reason"])
        line = r.stdout.strip().splitlines()[:1]
        if r.returncode == 0 and line:
            state, code, reason = (line[0].split("|") + ["", "", ""])[:3]
            return {"state": state.split()[0], "reason": reason, "exit_code": code}
    return {"state": "UNKNOWN", "reason": "Slurm no longer holds this job (past MinJobAge, no accounting)",
            "exit_code": ""}


# -- the job script ------------------------------------------------------------------------------
def job_script(out: Path, sub: Path, n_tasks: int, options: SlurmOptions) -> str:
    q = shlex.quote
    lines = ["#!/bin/bash", "# greenprobe study: one configuration per array task, each alone on its node.",
             "# Resubmit by hand with: sbatch " + str(Layout.job_script(sub)),
             "#SBATCH --job-name=greenprobe-study", f"#SBATCH --array=0-{n_tasks - 1}", "#SBATCH --nodes=1",
             "#SBATCH --exclusive", f"#SBATCH --output={Layout.task_log(sub, '%A_%a')}"]
    if options.partition:
        lines.append(f"#SBATCH --partition={options.partition}")
    if options.account:
        lines.append(f"#SBATCH --account={options.account}")
    if options.time_limit:
        lines.append(f"#SBATCH --time={options.time_limit}")
    if options.gpus_per_job:
        lines.append(f"#SBATCH --gpus={int(options.gpus_per_job)}")
    lines += ["set -euo pipefail", f"exec {q(options.python)} -m greenprobe.study.slurm task {q(str(out))} {q(str(sub))}"]
    return "\n".join(lines) + "\n"


def submit(out: Path, cfg_ids: list[str], options: SlurmOptions) -> dict:
    sub = Layout(out).new_submission()
    Layout.task_configs(sub).write_text("\n".join(cfg_ids) + "\n")
    Layout.job_script(sub).write_text(job_script(out, sub, len(cfg_ids), options))
    r = _run(["sbatch", "--parsable", *options.sbatch_args, str(Layout.job_script(sub))])
    if r.returncode != 0:
        raise ConfigError(f"sbatch refused the study's array job: {r.stderr.strip() or r.stdout.strip()}",
                          "check the partition, account, time limit and extra arguments; the script is "
                          f"{Layout.job_script(sub)}")
    job = r.stdout.strip().split(";")[0]
    return {"job_id": job, "dir": str(sub), "configs": cfg_ids, "submitted": time.time()}


# -- the submitting command ----------------------------------------------------------------------
def run_study_slurm(spec: StudySpec, out, options: SlurmOptions, wait: bool = True,
                    log: Optional[Callable[[str], None]] = None, poll_s: float = 10.0) -> Optional[Path]:
    """Submits what is missing, waits for it (unless ``wait`` is false) and builds summary.parquet;
    returns its path, or None when it did not wait."""
    from .execute import prepare_study
    from .aggregate import collect

    require_slurm()
    out = Path(out).resolve()  # the tasks run elsewhere: an absolute path
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    configs, skipped, _ = prepare_study(spec, out, log)
    lay = Layout(out)
    subs_path = lay.submissions
    lay.slurm.mkdir(parents=True, exist_ok=True)
    submissions = _load_submissions(out)

    def record_ended() -> list[dict]:
        """Tasks that left the queue without all their runs: recorded once with Slurm's words."""
        failed_path = lay.slurm_failed
        failed = json.loads(failed_path.read_text()) if failed_path.exists() else []
        known = {f["task"] for f in failed}
        queued = queued_tasks([s["job_id"] for s in submissions])
        new = []
        for s in submissions:
            for i, cfg in enumerate(s["configs"]):
                task = f"{s['job_id']}_{i}"
                if task in queued or task in known or _runs_done(out, cfg) >= spec.runs:
                    continue
                if lay.failed(cfg).exists():
                    continue  # the configuration itself failed (the task recorded why)
                entry = {"task": task, "config": cfg, **task_outcome(task), "runs_done": _runs_done(out, cfg),
                         "log": str(Layout.task_log(s["dir"], task))}
                new.append(entry)
                log(f"Slurm task {task} ({cfg}) ended {entry['state']} (reason {entry['reason'] or '-'}, exit "
                    f"{entry['exit_code'] or '-'}) with {entry['runs_done']} of {spec.runs} runs; log {entry['log']}")
        if new:
            _save(failed_path, failed + new)
        return new

    record_ended()
    queued = queued_tasks([s["job_id"] for s in submissions])
    busy = {cfg for s in submissions for i, cfg in enumerate(s["configs"]) if f"{s['job_id']}_{i}" in queued}
    todo = [c.id for c in configs if _runs_done(out, c.id) < spec.runs and c.id not in busy
            and not lay.failed(c.id).exists()]
    if todo:
        sub = submit(out, todo, options)
        submissions.append(sub)
        _save(subs_path, submissions)
        log(f"submitted Slurm array job {sub['job_id']}: {len(todo)} configurations, one node each "
            f"({Layout.job_script(sub['dir'])})")
    elif busy:
        log(f"{len(busy)} configurations are still in Slurm's queue; waiting for them")
    if not wait:
        log("not waiting (--no-wait): run the same command again to follow the jobs and build the summary; "
            f"squeue -j {','.join(s['job_id'] for s in submissions)} shows them meanwhile")
        return None
    total = len(configs) * spec.runs
    last = None
    while True:
        queued = queued_tasks([s["job_id"] for s in submissions])
        done = sum(min(_runs_done(out, c.id), spec.runs) for c in configs)
        states: dict = {}
        for state, _ in queued.values():
            states[state] = states.get(state, 0) + 1
        line = f"{done}/{total} runs done; Slurm tasks: " + (", ".join(f"{n} {s.lower()}" for s, n in
                                                                     sorted(states.items())) or "none left")
        if line != last:
            log(line)
            last = line
        if not queued:
            break
        time.sleep(poll_s)
    ended = record_ended()
    collect(out, skipped, spec.runs)
    if ended:
        log(f"{len(ended)} Slurm tasks ended without their runs ({lay.slurm_failed.relative_to(lay.root)}): run the "
            "same command again to resubmit them")
    return lay.summary


class SlurmExecutor:
    """The study's Executor on a Slurm cluster (execute.Executor): submits, waits, aggregates."""

    def __init__(self, options: SlurmOptions, wait: bool = True, poll_s: float = 10.0):
        self.options, self.wait, self.poll_s = options, wait, poll_s

    def run(self, spec: StudySpec, out: Path, log: Callable[[str], None]) -> Optional[Path]:
        return run_study_slurm(spec, out, self.options, wait=self.wait, log=log, poll_s=self.poll_s)


# -- an array task, on its node ------------------------------------------------------------------
def run_task(out: Path, sub: Path) -> int:
    from .execute import run_study
    from .spec import load_spec

    task = int(os.environ["SLURM_ARRAY_TASK_ID"])
    cfg = Layout.task_configs(sub).read_text().split()[task]
    spec = load_spec(None, **json.loads(Layout(out).spec.read_text()))
    session = f"slurm-{os.environ.get('SLURM_JOB_ID', 'x')}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    from datetime import datetime

    def log(s: str) -> None:  # each line timed: where a task's time went shows in its log
        print(f"{datetime.now().isoformat(timespec='milliseconds')} {s}", flush=True)

    log(f"greenprobe study task {task}: {cfg} on {os.uname().nodename}, session {session}")
    run_study(spec, out, only=[cfg], session=session, log=log)
    log("task done")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "task":
        sys.exit(run_task(Path(sys.argv[2]), Path(sys.argv[3])))
    print("usage: python -m greenprobe.study.slurm task OUT SUBMISSION_DIR (what the job script runs)", file=sys.stderr)
    sys.exit(2)
