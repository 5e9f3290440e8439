"""The study's overhead per configuration under Slurm against the local executor, on the one-node
cluster of scripts/slurm-local.sh (issue 10's benchmark).

The same tiny study (PyTorch, tiny MobileNetV2, N batch sizes = N configurations, 2 runs each, a
synthetic sensor) runs once locally (one process: one sampler, one daemon, one worker for all
configurations) and once through `--executor slurm` (one array task per configuration: each task
starts Python, its sampler and idle baseline, its daemon and its worker). Side by side in one run:
wall time of each, the difference per configuration, and per task its time in Slurm (from its log's
first line to its end) against the local time per configuration.

    bash scripts/slurm-local.sh start     # as root
    PYTHONPATH=python .venv/bin/python benchmarks/bench_study_slurm.py --batches 1,2,4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from greenprobe.study import load_spec, run_study  # noqa: E402
from greenprobe.study.slurm import SlurmOptions, run_study_slurm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,2,4", help="batch sizes: one configuration each")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    spec = load_spec(None, runtimes=["torch"], sources=["torch"], providers=["cpu"], models=["mobilenet_v2"],
                     batch_sizes=batches, size="tiny", image_size=64, runs=args.runs, min_run_s=0.2, min_inferences=4,
                     warmup=1, rest_s=0.05, baseline_s=0.5, seed=1,
                     sensors="synthetic:waveform=constant;base_w=40;update_us=1000", period_us=500)
    n = len(batches)
    work = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    t0 = time.monotonic()
    run_study(spec, work / "local", log=lambda s: None)
    local_s = time.monotonic() - t0
    t0 = time.monotonic()
    run_study_slurm(spec, work / "slurm", SlurmOptions(), log=lambda s: None, poll_s=0.5)
    slurm_s = time.monotonic() - t0
    # per task, from its log's timed lines: Python start-up and imports come before the first line;
    # start-up = first line to its first run (runtime discovery, sampler, idle baseline, daemon,
    # worker, model); the whole task = first line to "task done"
    from datetime import datetime

    def stamp(line: str) -> float:
        return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()

    tasks = []
    for log in sorted((work / "slurm" / "slurm").glob("sub-*/*.log")):
        lines = [x for x in log.read_text().splitlines() if x[:2] == "20"]
        first_run = next(x for x in lines if " [1/" in x)
        tasks.append((log.stem, stamp(first_run) - stamp(lines[0]), stamp(lines[-1]) - stamp(lines[0])))
    print(f"{n} configurations x {args.runs} runs, {os.cpu_count()} cores")
    print(f"local executor: {local_s:.1f} s ({local_s / n:.1f} s per configuration)")
    print(f"slurm executor: {slurm_s:.1f} s ({slurm_s / n:.1f} s per configuration)")
    print(f"overhead: {(slurm_s - local_s) / n:+.1f} s per configuration; ratio slurm/local {slurm_s / local_s:.2f}")
    for task, startup, whole in tasks:
        print(f"  task {task}: start-up {startup:.1f} s (first log line to first run), whole task {whole:.1f} s")


if __name__ == "__main__":
    main()
