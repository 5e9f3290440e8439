"""`greenprobe study`: the paper's experiment (runtimes x models x batch sizes, ONNX Runtime on each
framework's export and every working execution provider), measured with one sampler, written as a
Parquet dataset with 95 % intervals; `greenprobe report` turns it into tables and plots."""

from __future__ import annotations

from .execute import Executor, LocalExecutor, Runner, prepare_study, run_study, slurm_env
from .layout import Layout
from .plan import Config
from .spec import QUICK, StudySpec, load_spec

__all__ = ["StudySpec", "load_spec", "QUICK", "Config", "Layout", "Executor", "LocalExecutor", "Runner",
           "run_study", "prepare_study", "slurm_env"]
