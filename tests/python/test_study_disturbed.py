"""The study notices when the machine is not its own (issue 22): a foreign process that takes a core
during the idle window or in the middle of a run flags it, and it is measured again (the idle window
after the runs, measured at the end, is left out instead); the summary and the report say how many
runs were, and by how much; the figure stays the truth's."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from greenprobe.errors import ConfigError
from greenprobe.study import load_spec, run_study
from greenprobe.study.report import write_report

POWER_W = 40.0


def test_a_run_disturbed_by_another_process_is_run_again(tmp_path):
    spec = load_spec(None, runtimes=["torch"], sources=["torch"], providers=["cpu"], models=["mobilenet_v2"],
                     batch_sizes=[1], size="tiny", image_size=64, runs=2, min_run_s=1.0, min_inferences=4, warmup=1,
                     rest_s=0.2, baseline_s=0.3, seed=3, period_us=1000, disturbed_retries=5,
                     sensors=f"synthetic:waveform=constant;base_w={POWER_W:g};update_us=1000")
    foreign = []
    lines = []

    busy = [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 120: pass"]

    def log(line: str) -> None:
        # a core taken from the idle window's start until the study says it saw it, and again from
        # before the first run (which is prepared first) until the study says it saw that
        lines.append(line)
        if line.startswith("measuring the idle power") and not foreign:
            foreign.append(subprocess.Popen(busy))
        elif line.startswith("idle disturbed") and len(foreign) == 1:
            foreign[0].kill()
        elif "run 1/2" in line and len(foreign) == 1:
            foreign.append(subprocess.Popen(busy))
        elif "disturbed: other processes used" in line and len(foreign) == 2:
            foreign[1].kill()
        elif line.startswith("measuring the idle power after the runs") and len(foreign) == 2:
            foreign.append(subprocess.Popen(busy))  # through the idle window after the runs too
        elif line.startswith("estimating each configuration") and len(foreign) == 3:
            foreign[2].kill()

    try:
        run_study(spec, tmp_path, log=log)
    finally:
        for p in foreign:
            p.kill()
            p.wait()
    assert len(foreign) == 3, "the first run started, and the runs ended"

    # Each disturbance is named, and ours are among them; on a machine busy with other work too, the
    # retries may run out and keep a window or a run flagged, but never one only ours disturbed
    idle_pid, run_pid, after_pid = (f"{p.pid} python" for p in foreign)
    idle = json.loads((tmp_path / "sessions" / "0" / "idle.json").read_text())
    before, after = [w for w in idle if w["which"] == "before"], idle[-1]
    assert before[0]["foreign_cores"] > spec.max_foreign_cores and idle_pid in before[0]["foreign_top"], idle
    assert len(before) >= 2 and idle_pid not in before[-1]["foreign_top"], "measured again once it had gone"
    assert after["which"] == "after" and after["left_out"] and after_pid in after["foreign_top"], after
    baseline = json.loads((tmp_path / "sessions" / "0" / "baseline.json").read_text())
    assert baseline and all(b["after_w"] is None for b in baseline), "the idle power is the one before"
    assert any("idle disturbed" in ln for ln in lines)
    assert any("disturbed: other processes used" in ln and "running it again" in ln for ln in lines), lines
    (row,) = [r for r in pq.read_table(tmp_path / "summary.parquet").to_pylist() if r["status"] == "ok"]
    set_aside = [json.loads(p.read_text()) for p in (tmp_path / "configs" / row["id"] / "disturbed").glob("r*.json")]
    assert row["runs_run_again"] == len(set_aside) >= 1, row
    assert any(run_pid in a["foreign_top"] for a in set_aside), [(a["foreign_top"], run_pid) for a in set_aside]
    runs = pq.read_table(tmp_path / "configs" / row["id"] / "runs.parquet").to_pylist()
    assert max(r["attempts"] for r in runs) >= 2
    for r in runs:  # kept: undisturbed, or disturbed by others than ours with no attempt left
        assert r["foreign_cores"] <= spec.max_foreign_cores or (r["attempts"] == spec.disturbed_retries + 1 and
                                                                 run_pid not in r["foreign_top"]), r
        assert r["disturbed"] == (r["foreign_cores"] > spec.max_foreign_cores)
    assert row["runs_disturbed_kept"] == sum(r["disturbed"] for r in runs)
    # the constant stand-in: gross energy per inference is its power x the inference's time
    assert row["energy_j_per_inference"] == pytest.approx(POWER_W * row["time_s_per_inference"], rel=0.05)
    html = write_report(tmp_path).read_text()
    assert "Other processes on the machine" in html and "run again because other processes used more than" in html


def test_the_threshold_is_checked():
    with pytest.raises(ConfigError, match="max_foreign_cores"):
        load_spec(None, max_foreign_cores=0.0)
    with pytest.raises(ConfigError, match="disturbed_retries"):
        load_spec(None, disturbed_retries=-1)


def test_a_set_aside_attempt_is_not_its_configurations_calls(tmp_path, monkeypatch):
    """estimate_calls labels the marks of a disturbed attempt apart (their time explains its energy,
    not the configuration's calls)."""
    import greenprobe
    from greenprobe.study import aggregate

    aside = tmp_path / "configs" / "cfg-a" / "disturbed"
    aside.mkdir(parents=True)
    (aside / "r0000-slurm-7-0-0.json").write_text("{}")
    here = tmp_path / "sessions" / "slurm-7-0"
    here.mkdir(parents=True)
    seen = {}

    def summarise(marks, channels, baseline):
        seen["labels"] = marks.column("label").to_pylist()
        return []

    with greenprobe.Probe(sensors=["synthetic"], clock="virtual") as probe:
        t = probe.now_ns()
        for k in range(1, 50):
            probe.poll_at(t + k * 1_000_000)
        probe.add_mark("inference", t + 1_000_000, t + 2_000_000, config="cfg-a", run=0, attempt=0)
        probe.add_mark("inference", t + 3_000_000, t + 4_000_000, config="cfg-a", run=0, attempt=1)
    monkeypatch.setattr("greenprobe.summary.summarise", summarise)
    aggregate.estimate_calls(probe, here)
    assert seen["labels"] == ["disturbed-inference:cfg-a", "inference:cfg-a"], seen
    assert json.loads((here / "calls.json").read_text()) == {}
