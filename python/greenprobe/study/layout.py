"""Where a study keeps what: the one description of its folder, used by planning, the executors
(local and Slurm) and aggregation alike (docs/SCHEMA.md describes the files).

  spec.json, environment.json, skipped.json       what was asked, what the machine has, what not and why
  sensors.json                                    the channels measured with (each sitting keeps its own)
  sessions/<name>/                                one sitting: its samples and marks, baseline.json (idle
                                                  power), idle.json (other processes' use over its idle
                                                  windows), calls.json (the energy during the calls),
                                                  environment.json and sensors.json of its node;
                                                  <name> is a number locally, slurm-<job id>-<restart> in Slurm
  configs/<id>/config.json                        a configuration
  configs/<id>/runs/rNNNN.parquet, rNNNN.json     one run: its inferences, then its row (written last: "done")
  configs/<id>/disturbed/rNNNN-<sitting>-<attempt>.json   a run's row set aside as disturbed (run again)
  configs/<id>/failed.json                        why the configuration failed, or was skipped when it was
                                                  built (a converter's refusal: "skipped": true); the study went on
  configs/<id>/runs.parquet, inferences.parquet, result.json   its runs, inferences and summary row
  onnx/<source>-<model>-<size>-<image>-<seq>.onnx the ONNX export cache (one per source and model)
  models/<model>-<size>/                          generate: the random-weight checkpoint every runtime converts
                                                  (greenprobe.json in it, written last: complete)
  converted/<runtime>-<model>-<size>-<precision>/ generate: each runtime's conversion of it (its own tools)
  configs/<id>/steps.parquet                      generate: one row per prefill or decode step of every run
  slurm/submissions.json, slurm/failed.json       array jobs submitted; tasks that ended without their runs
  slurm/sub-N/job.sh, configs.txt, <job>_<task>.log   one submission: its script, its tasks, their logs
  summary.parquet, report.html                    one row per configuration; the report
  generate/                                       a generative study beside a classification one (its report
                                                  joins this one's)
  <plot>.png                                      the report's plots, beside it
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
    IDLE = "idle.json"  # a sitting's idle windows and other processes' use over each
    RUNS = "runs"  # a configuration's folder of run files
    DISTURBED = "disturbed"  # a configuration's folder of runs set aside as disturbed
    STAMP = "greenprobe.json"  # in a checkpoint's folder, written last: complete (models/generative.py)
    JOB_SCRIPT = "job.sh"  # a Slurm submission's script
    TASK_CONFIGS = "configs.txt"  # a Slurm submission's configurations, one per array task

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

    def onnx_export(self, source: str, model: str, size: str, image_size: int, seq_len: int) -> Path:
        """The ONNX export of a model from one source (one for every batch size)."""
        return self.onnx / f"{source}-{model}-{size}-{image_size}-{seq_len}.onnx"

    @staticmethod
    def onnx_export_tmp(path: Path, owner: str) -> Path:
        """Where ``owner`` (a process: host and pid) writes that export before renaming it."""
        return path.with_name(f"{path.stem}.{owner}.tmp.onnx")

    @staticmethod
    def plot_file(name: str) -> str:
        """A report plot's file name (written beside the report)."""
        return f"{name}.png"

    def checkpoint(self, model: str, size: str) -> Path:
        return self.root / "models" / f"{model}-{size}"

    @property
    def converted(self) -> Path:
        return self.root / "converted"

    @property
    def generate(self) -> Path:
        """A generative study's folder inside a classification study's (scripts/run.sh: --out <out>/generate):
        the report of the one takes in the other."""
        return self.root / "generate"

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
        return self.config(cfg_id) / self.RUNS

    def run_row(self, cfg_id: str, r: int) -> Path:
        return self.runs(cfg_id) / f"r{r:04d}.json"

    def run_inferences(self, cfg_id: str, r: int) -> Path:
        return self.run_inferences_in(self.config(cfg_id), r)

    def run_rows(self, cfg_id: str) -> list[Path]:
        return self.run_rows_in(self.config(cfg_id))

    def runs_done(self, cfg_id: str) -> set[int]:
        """The runs of a configuration on disk (its row written: done)."""
        return {int(p.stem[1:]) for p in self.run_rows(cfg_id)}

    def disturbed(self, cfg_id: str) -> Path:
        return self.config(cfg_id) / self.DISTURBED

    def disturbed_row(self, cfg_id: str, r: int, session: str, attempt: int) -> Path:
        """Where an attempt at run ``r`` in that sitting, disturbed, is set aside."""
        return self.disturbed(cfg_id) / self.disturbed_name(r, session, attempt)

    @staticmethod
    def disturbed_name(r: int, session: str, attempt: int) -> str:
        return f"r{r:04d}-{session}-{attempt}.json"

    def disturbed_rows(self) -> list[Path]:
        """Every configuration's runs set aside as disturbed."""
        return sorted(self.configs.glob(f"*/{self.DISTURBED}/r*.json"))

    # For code that holds a configuration's folder (aggregation: any folder laid out as one).
    @classmethod
    def run_rows_in(cls, cfg_dir: Path) -> list[Path]:
        """The run rows (rNNNN.json) in a configuration's folder, in run order."""
        return sorted((Path(cfg_dir) / cls.RUNS).glob("r*.json"))

    @classmethod
    def run_inferences_in(cls, cfg_dir: Path, r: int) -> Path:
        return Path(cfg_dir) / cls.RUNS / f"r{r:04d}.parquet"

    @classmethod
    def disturbed_rows_in(cls, cfg_dir: Path) -> list[Path]:
        """The runs set aside as disturbed in a configuration's folder."""
        return sorted((Path(cfg_dir) / cls.DISTURBED).glob("r*.json"))

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

    @classmethod
    def job_script(cls, sub: Path) -> Path:
        return Path(sub) / cls.JOB_SCRIPT

    @classmethod
    def task_configs(cls, sub: Path) -> Path:
        return Path(sub) / cls.TASK_CONFIGS

    @staticmethod
    def task_log(sub, task: str) -> Path:
        """An array task's log (``task``: <job>_<index>, or Slurm's pattern %A_%a)."""
        return Path(sub) / f"{task}.log"

    @property
    def slurm_failed(self) -> Path:
        return self.slurm / self.FAILED

    def new_submission(self) -> Path:
        self.slurm.mkdir(parents=True, exist_ok=True)
        n = len([p for p in self.slurm.glob("sub-*") if p.is_dir()])
        sub = self.slurm / f"sub-{n}"
        sub.mkdir()
        return sub
