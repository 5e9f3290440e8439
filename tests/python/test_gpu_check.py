"""scripts/gpu-check.sh, the prepared check for a lent GPU machine, run here against the fake NVML
(--standin): every step must pass and its tables must hold what a GPU machine's would, so that the
script works the first time it meets a GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_every_step_against_the_standin(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--standin"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    report = (out / "gpu-check.md").read_text() if (out / "gpu-check.md").exists() else ""
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    steps = (out / "steps.txt").read_text().splitlines()
    assert [s.split(":")[0] for s in steps] == ["build", "sensors", "nvml-tests", "bench", "study", "gen-study"], steps
    assert all(": ok (" in s for s in steps), steps
    # the driver tests' table: idle 80 W, the load's power above it, counter and power readings agreeing
    row = re.search(r"^\| gpu0 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", report, re.M)
    assert row, report
    idle, load, _, _, ratio, period = map(float, row.groups())
    assert abs(idle - 80) < 3 and load > idle + 20 and abs(ratio - 1) < 0.05 and abs(period - 20) < 1
    assert "| nvml @ 1 kHz |" in report and "| nvml | gpu0 (energy) | adaptive @ 10 kHz |" in report
    # the study's table: the configuration ran, its energy per inference above idle (the fake GPU follows the workers)
    ok = [line for line in report.splitlines() if line.startswith("| onnxruntime |") and "| ok |" in line]
    assert ok, report
    cells = [c.strip() for c in ok[0].strip("|").split("|")]
    assert float(cells[6]) > 0 and float(cells[7].split()[0]) > 0 and float(cells[8]) > 0, ok[0]
    # the generative study's table: the tiny model ran; its energy per output and prompt token above 0
    gen = [line for line in report.splitlines() if line.startswith("| torch-fp32-tiny-b1 |") and "| ok" in line]
    assert gen, report
    cells = [c.strip() for c in gen[0].strip("|").split("|")]
    assert float(cells[4].split()[0]) > 0 and float(cells[5].split()[0]) > 0, gen[0]
