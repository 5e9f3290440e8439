"""A GPU's energy per cgroup (issue 22), against an exact truth: the fake NVML's FAKE_NVML_PROCS as in
test_consumer_gpu.py (each process keeps GPU 0 busy on its own schedule, the GPU draws idle +
sum_k w_k x (process k busy)), with two of the processes in one cgroup and the third in another
(their /proc/PID/cgroup, and a cgroup v2 stand-in); on a virtual clock."""

from __future__ import annotations

import os

import pytest

from gpu_standin import WATTS, busy_s, proc_tree, schedules
from gpu_standin import run as standin_run
from test_consumer_gpu import DRIFT_W, IDLE_W

JOB = "/system.slice/slurmstepd.scope/job_7/step_0"
SESSION = "/user.slice/user-1000.slice/session-3.scope"
CGROUP = {4101: JOB, 4102: JOB, 4103: SESSION}


def run(tmp_path, fake_nvml, nvml_env, spans, t0, seconds, consumers):
    procs = tmp_path / "procs.txt"
    procs.write_text("".join(f"0 {pid} {WATTS[pid]} {a} {b}\n" for pid, ss in spans.items() for a, b in ss))
    proc, cg = proc_tree(tmp_path / "proc", WATTS, CGROUP), tmp_path / "cgroup"
    cg.mkdir()
    (cg / "cgroup.procs").write_text("1\n")
    for path in set(CGROUP.values()):  # the cgroups hold the processes (and used no CPU)
        d = cg / path.lstrip("/")
        d.mkdir(parents=True)
        (d / "cgroup.procs").write_text("".join(f"{p}\n" for p, c in CGROUP.items() if c == path))
        (d / "cpu.stat").write_text("usage_usec 0\nuser_usec 0\nsystem_usec 0\n")
    nvml_env(gpus=1, update_ms=100, t0_ns=t0, waveform="sine", base_w=IDLE_W, amp_w=DRIFT_W, freq_hz=0.13,
             procs=str(procs), proc_sample_ms=100)
    return standin_run([fake_nvml], t0, seconds, consumers, sensors=["nvml"], nvml_library=str(fake_nvml),
                       nvml_min_period_us=100, proc_root=str(proc), cgroup_root=str(cg))


def test_each_cgroup_gets_its_processes_share_of_the_gpu(tmp_path, fake_nvml, nvml_env):
    """Processes at 50 and 120 W in one cgroup (a Slurm job's step), one at 200 W in another: each
    cgroup's GPU energy within 5 % of the sum of its processes' w x busy seconds, inside its interval;
    the cgroup rows, idle and unattributed add up to the GPU's measured energy, and the cgroups' sum is
    the processes' sum."""
    t0, seconds = 10**12, 60.0
    spans = schedules(3, seconds, t0)
    probe = run(tmp_path, fake_nvml, nvml_env, spans, t0, seconds, "process,cgroup")
    a, b = t0 + 1_000_000_000, t0 + int((seconds - 1) * 1e9)
    table = probe.consumers(a, b, by="cgroup").to_pylist()
    gpu = [r for r in table if r["domain"] == "gpu0"]
    rows = {r["consumer"]: r for r in gpu if r["kind"] == "cgroup"}
    assert set(rows) == {JOB, SESSION}, gpu
    busy = {pid: busy_s(spans[pid], a, b) for pid in WATTS}
    for path, r in rows.items():
        pids = [p for p, c in CGROUP.items() if c == path]
        truth = sum(WATTS[p] * busy[p] for p in pids)
        print(f"{path} ({pids}): {r['energy_j']:.1f} J vs exact {truth:.1f} J ({r['energy_j'] / truth - 1:+.2%}), "
              f"95 % [{r['energy_j_low']:.1f}, {r['energy_j_high']:.1f}], SM-busy {r['cpu_s']:.3f} s")
        assert r["view"] == "cgroup" and r["cgroup"] == path and r["pid"] is None, r
        assert r["cpu_s"] == pytest.approx(sum(busy[p] for p in pids), rel=0.03), "the SM-busy seconds of its processes"
        assert abs(r["energy_j"] - truth) < 0.05 * truth, (path, r["energy_j"], truth)
        assert r["energy_j_low"] <= truth <= r["energy_j_high"], (path, r, truth)
        assert r["coefficient"] == "own" and r["uid"] == os.getuid(), r
    assert rows[JOB]["slurm_job"] == "7" and rows[SESSION]["slurm_job"] == ""
    assert {r["kind"] for r in gpu} == {"cgroup", "idle", "unattributed"}
    measured = probe.energy(a, b)[0]["energy_j"]
    assert sum(r["energy_j"] for r in gpu) == pytest.approx(measured, rel=1e-9), "conservation"
    procs = [r for r in probe.consumers(a, b, by="process").to_pylist() if r["domain"] == "gpu0"]
    assert sum(r["energy_j"] for r in rows.values()) == pytest.approx(
        sum(r["energy_j"] for r in procs if r["kind"] == "process"), rel=1e-9), "the cgroups add up their processes"
    idle = {r["kind"]: r["energy_j"] for r in gpu if r["kind"] != "cgroup"}
    assert idle == pytest.approx({r["kind"]: r["energy_j"] for r in procs if r["kind"] != "process"}, rel=1e-9)


def test_without_process_use_the_cgroup_view_says_how_to_get_it(tmp_path, fake_nvml, nvml_env):
    """consumers='cgroup' alone records no per-process GPU use: the GPU's energy is unattributed, and
    the note says what to record."""
    t0, seconds = 10**12, 3.0
    probe = run(tmp_path, fake_nvml, nvml_env, schedules(3, seconds, t0), t0, seconds, "cgroup")
    gpu = [r for r in probe.consumers(by="cgroup").to_pylist() if r["domain"] == "gpu0"]
    assert [r["kind"] for r in gpu] == ["unattributed"], gpu
    assert "consumers='process,cgroup'" in gpu[0]["note"], gpu[0]
