"""Where a study keeps what: the one description of its folder, used by planning, the executors
(local and Slurm) and aggregation alike (docs/SCHEMA.md describes the files).

  spec.json, environment.json, skipped.json       what was asked, what the machine has, what not and why
  sensors.json                                    the channels measured with (each sitting keeps its own)
  sessions/<name>/                                one sitting: its samples and marks, baseline.json (idle
                                                  power), environment.json and sensors.json of its node;
                                                  <name> is a number locally, slurm-<job id>-<restart> in Slurm
  configs/<id>/config.json                        a configuration
  configs/<id>/runs/rNNNN.parquet, rNNNN.json     one run: its inferences, then its row (written last: "done")
  configs/<id>/failed.json                        why the configuration failed, or was skipped when it was
                                                  built (a converter's refusal: "skipped": true); the study went on
  configs/<id>/runs.parquet, inferences.parquet, result.json   its runs, inferences and summary row
  onnx/<source>-<model>-<size>-<image>-<seq>.onnx the ONNX export cache (one per source and model)
  models/<model>-<size>/                          generate: the random-weight checkpoint every runtime converts
  converted/<runtime>-<model>-<size>-<precision>/ generate: each runtime's conversion of it (its own tools)
  configs/<id>/steps.parquet                      generate: one row per prefill or decode step of every run
  slurm/submissions.json, slurm/failed.json       array jobs submitted; tasks that ended without their runs
  slurm/sub-N/job.sh, configs.txt, <job>_<task>.log   one submission: its script, its tasks, their logs
  summary.parquet, report.html                    one row per configuration; the report
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


#: what to do about a study's table that cannot be read (parquet.read_table's fix)
DAMAGED_FIX = "pass the folder a study wrote; if it did, its tables are damaged: run the study again into another --out"


@dataclass(frozen=True)
class Layout:
    root: Path

    # The files' names, for code that holds a configuration's or a sitting's folder already.
    SPEC = "spec.json"
    ENVIRONMENT = "environment.json"
    SKIPPED = "skipped.json"
    SENSORS = "sensors.json"
    SUMMARY = "summary.parquet"
    REPORT = "report.html"
    BASELINE = "baseline.json"  # a sitting's idle power, before and after
    CALLS = "calls.json"  # a sitting's energy during the calls, per configuration
    CONFIG = "config.json"  # a configuration's: what it is
    RESULT = "result.json"  # its summary row
    RUNS_TABLE = "runs.parquet"
    INFERENCES = "inferences.parquet"
    STEPS = "steps.parquet"  # generate: one row per prefill or decode step
    FAILED = "failed.json"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # -- the study -----------------------------------------------------------------------------
    @property
    def spec(self) -> Path:
        return self.root / self.SPEC

    @property
    def environment(self) -> Path:
        return self.root / self.ENVIRONMENT

    @property
    def skipped(self) -> Path:
        return self.root / self.SKIPPED

    @property
    def sensors(self) -> Path:
        return self.root / self.SENSORS

    @property
    def summary(self) -> Path:
        return self.root / self.SUMMARY

    @property
    def report(self) -> Path:
        return self.root / self.REPORT

    @property
    def onnx(self) -> Path:
        return self.root / "onnx"

    def checkpoint(self, model: str, size: str) -> Path:
        return self.root / "models" / f"{model}-{size}"

    @property
    def converted(self) -> Path:
        return self.root / "converted"

    # -- sittings ------------------------------------------------------------------------------
    @property
    def sessions(self) -> Path:
        return self.root / "sessions"

    def session(self, name: str) -> Path:
        return self.sessions / str(name)

    def next_session(self) -> str:
        """The next local sitting's name: one more than the largest number there."""
        numbers = [int(p.name) for p in self.sessions.glob("*") if p.is_dir() and p.name.isdigit()]
        return str(max(numbers) + 1 if numbers else 0)

    def session_files(self, name: str) -> list[Path]:
        """That file (baseline.json, calls.json, environment.json, sensors.json) of every sitting."""
        return sorted(self.sessions.glob(f"*/{name}"))

    # -- configurations ------------------------------------------------------------------------
    @property
    def configs(self) -> Path:
        return self.root / "configs"

    def config(self, cfg_id: str) -> Path:
        return self.configs / cfg_id

    def runs(self, cfg_id: str) -> Path:
        return self.config(cfg_id) / "runs"

    def run_row(self, cfg_id: str, r: int) -> Path:
        return self.runs(cfg_id) / f"r{r:04d}.json"

    def run_inferences(self, cfg_id: str, r: int) -> Path:
        return self.runs(cfg_id) / f"r{r:04d}.parquet"

    def runs_done(self, cfg_id: str) -> set[int]:
        """The runs of a configuration on disk (its row written: done)."""
        return {int(p.stem[1:]) for p in self.runs(cfg_id).glob("r*.json")}

    def runs_table(self, cfg_id: str) -> Path:
        return self.config(cfg_id) / self.RUNS_TABLE

    def config_file(self, cfg_id: str) -> Path:
        return self.config(cfg_id) / self.CONFIG

    def failed(self, cfg_id: str) -> Path:
        return self.config(cfg_id) / self.FAILED

    # -- Slurm ---------------------------------------------------------------------------------
    @property
    def slurm(self) -> Path:
        return self.root / "slurm"

    @property
    def submissions(self) -> Path:
        return self.slurm / "submissions.json"

    @property
    def slurm_failed(self) -> Path:
        return self.slurm / self.FAILED

    def new_submission(self) -> Path:
        self.slurm.mkdir(parents=True, exist_ok=True)
        n = len([p for p in self.slurm.glob("sub-*") if p.is_dir()])
        sub = self.slurm / f"sub-{n}"
        sub.mkdir()
        return sub
