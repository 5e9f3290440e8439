"""The study through a real one-node Slurm (scripts/slurm-local.sh: Debian's slurm-wlm and munge):
each configuration an array task, runs written into the shared folder with their job id and host,
a cancelled task recorded with Slurm's state and resubmitted by running the command again.

Set GREENPROBE_REQUIRE_SERVICES=1 (scripts/test.sh does) to fail instead of skip without Slurm.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from greenprobe.study import load_spec
from greenprobe.study.slurm import SlurmOptions, queued_tasks, run_study_slurm

POWER_W = 40.0


@pytest.fixture(scope="module")
def slurm():
    up = shutil.which("sbatch") and subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.find(
        "is UP") >= 0
    if not up:
        if os.environ.get("GREENPROBE_REQUIRE_SERVICES") == "1":
            pytest.fail("no Slurm here: run bash scripts/slurm-local.sh start (as root)")
        pytest.skip("no Slurm here (bash scripts/slurm-local.sh start)")


def tiny(**kw):
    base = dict(runtimes=["torch"], sources=["torch"], providers=["cpu"], models=["mobilenet_v2"], batch_sizes=[1, 2],
                size="tiny", image_size=64, runs=2, min_run_s=0.05, min_inferences=4, warmup=1, rest_s=0.05,
                baseline_s=0.2, seed=3, sensors=f"synthetic:waveform=constant;base_w={POWER_W:g};update_us=1000",
                period_us=200)
    base.update(kw)
    return load_spec(None, **base)


def test_each_configuration_runs_as_an_array_task_and_the_summary_holds_them(slurm, tmp_path):
    lines = []
    path = run_study_slurm(tiny(), tmp_path, SlurmOptions(), log=lines.append, poll_s=0.5)
    rows = pq.read_table(path).to_pylist()
    assert sorted(r["id"] for r in rows if r["status"] == "ok") == ["torch-native-mobilenet_v2-b1",
                                                                     "torch-native-mobilenet_v2-b2"], rows
    sub = json.loads((tmp_path / "slurm" / "submissions.json").read_text())
    assert len(sub) == 1 and len(sub[0]["configs"]) == 2
    job = sub[0]["job_id"]
    for r in rows:
        assert r["hosts"] == socket.gethostname() and r["slurm_job_ids"]
        # the constant 40 W stand-in: energy per inference is 40 W x its time
        assert r["energy_j_per_inference"] == pytest.approx(POWER_W * r["time_s_per_inference"], rel=0.02)
        runs = pq.read_table(tmp_path / "configs" / r["id"] / "runs.parquet").to_pylist()
        assert {x["slurm_job_id"] for x in runs} == {r["slurm_job_ids"]}
        assert all(x["session"].startswith("slurm-") for x in runs)
    for i in range(2):  # each task's log, and its sitting with the node's own environment
        assert "greenprobe study task" in (tmp_path / "slurm" / "sub-0" / f"{job}_{i}.log").read_text()
    envs = [json.loads(p.read_text()) for p in (tmp_path / "sessions").glob("slurm-*/environment.json")]
    assert len(envs) == 2 and all(e["slurm"]["SLURM_ARRAY_JOB_ID"] == job for e in envs)
    assert any("runs done" in x for x in lines) and not (tmp_path / "slurm" / "failed.json").exists()


def test_a_cancelled_task_is_recorded_with_slurms_state_and_resubmitted(slurm, tmp_path):
    spec = tiny(batch_sizes=[1])
    assert run_study_slurm(spec, tmp_path, SlurmOptions(), wait=False, log=lambda s: None) is None
    job = json.loads((tmp_path / "slurm" / "submissions.json").read_text())[0]["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and queued_tasks([job]).get(f"{job}_0", ("",))[0] != "RUNNING":
        time.sleep(0.2)
    subprocess.run(["scancel", job], check=True)
    while queued_tasks([job]) and time.monotonic() < deadline + 30:
        time.sleep(0.2)
    # the same command, again (here through the CLI, as a person would): it records how the task
    # ended, resubmits the configuration and waits for it
    (tmp_path / "tiny.toml").write_text("[study]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in
                                                                spec.as_dict().items()) + "\n")
    r = subprocess.run([sys.executable, "-m", "greenprobe", "study", str(tmp_path / "tiny.toml"), "--out",
                        str(tmp_path), "--executor", "slurm"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"Slurm task {job}_0 (torch-native-mobilenet_v2-b1) ended CANCELLED" in r.stderr
    failed = json.loads((tmp_path / "slurm" / "failed.json").read_text())
    assert [(f["task"], f["state"]) for f in failed] == [(f"{job}_0", "CANCELLED")]
    subs = json.loads((tmp_path / "slurm" / "submissions.json").read_text())
    assert len(subs) == 2 and subs[1]["configs"] == ["torch-native-mobilenet_v2-b1"]
    (row,) = pq.read_table(tmp_path / "summary.parquet").to_pylist()
    assert row["status"] == "ok" and row["runs"] == 2 and subs[1]["job_id"] in row["slurm_job_ids"]


def test_without_slurm_the_error_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    r = subprocess.run([sys.executable, "-m", "greenprobe", "study", "--executor", "slurm", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode != 0 and "sbatch" in r.stderr and "slurm-local.sh start" in r.stderr, r.stderr
