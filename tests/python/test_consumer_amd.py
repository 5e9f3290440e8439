"""An AMD GPU's energy split among the processes that use it (issue 22), against an exact truth: the fake
AMD SMI's FAKE_AMD_SMI_PROCS, where each process keeps amdgpu0 busy on a schedule of its own, the GPU
draws its ramp + sum_k w_k x (process k busy), and amdsmi_get_gpu_process_list reports each process's
cumulative GFX engine ns, as the driver does; on a virtual clock."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from greenprobe import _core
from gpu_standin import WATTS, busy_s, proc_tree, run, schedules

IDLE_W = 60.0
SLOPE_W_PER_S = 0.05  # the idle power drifts: nothing the processes do explains it
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("version", ["24.7.0.0", "26.1.0"])  # amdsmi_proc_info_t with name[32], name[256]
def test_each_process_gets_its_share_of_the_amd_gpu(tmp_path, fake_amd_smi, amd_env, version):
    """Three processes at 50, 120 and 200 W on amdgpu0, whose counter moves every ms and whose idle
    power drifts: each one's GPU energy within 5 % of w x its busy seconds, inside its interval; the
    GPU's rows add up to its measured energy."""
    t0, seconds = 10**12, 40.0
    spans = schedules(5, seconds, t0)
    procs = tmp_path / "procs.txt"
    procs.write_text("".join(f"0 {pid} {WATTS[pid]} {a} {b}\n" for pid, ss in spans.items() for a, b in ss))
    amd_env(gpus=1, t0_ns=t0, base_w=IDLE_W, slope_w_per_s=SLOPE_W_PER_S, procs=str(procs), version=version)
    probe = run([fake_amd_smi], t0, seconds, sensors=["amd-gpu"], amd_smi_library=str(fake_amd_smi),
                amd_counter_check_ms=0, proc_root=str(proc_tree(tmp_path / "proc", WATTS)))
    a, b = t0 + 1_000_000_000, t0 + int((seconds - 1) * 1e9)
    table = probe.consumers(a, b).to_pylist()
    rows = {r["pid"]: r for r in table if r["domain"] == "amdgpu0" and r["kind"] == "process"}
    assert set(rows) == set(WATTS), table
    for pid, w in WATTS.items():
        busy = busy_s(spans[pid], a, b)
        truth = w * busy
        r = rows[pid]
        print(f"pid {pid} ({w:g} W): {r['energy_j']:.1f} J vs exact {truth:.1f} J ({r['energy_j'] / truth - 1:+.2%}), "
              f"95 % [{r['energy_j_low']:.1f}, {r['energy_j_high']:.1f}], GFX-busy {r['cpu_s']:.3f} s of {busy:.3f}")
        assert r["comm"] == f"gpu-job-{pid}" and r["coefficient"] == "own", r
        assert r["cpu_s"] == pytest.approx(busy, rel=0.01), "the GFX-busy seconds AMD SMI's counts add up to"
        assert abs(r["energy_j"] - truth) < 0.05 * truth, (pid, r["energy_j"], truth)
        assert r["energy_j_low"] <= truth <= r["energy_j_high"], (pid, r, truth)
    gpu = [r for r in table if r["domain"] == "amdgpu0"]
    assert sum(r["energy_j"] for r in gpu) == pytest.approx(probe.energy(a, b)[0]["energy_j"], rel=1e-9)
    idle = next(r for r in gpu if r["kind"] == "idle")
    ta, tb = (a - t0) / 1e9, (b - t0) / 1e9
    idle_truth = IDLE_W * (tb - ta) + SLOPE_W_PER_S * (tb**2 - ta**2) / 2
    assert idle["energy_j_low"] <= idle_truth <= idle["energy_j_high"], (idle, idle_truth)
    tree = {r["domain"]: r for r in probe.process_tree(4102, a, b)}
    assert tree["amdgpu0"]["energy_j"] == pytest.approx(rows[4102]["energy_j"], rel=1e-9)


def test_an_nvidia_and_an_amd_gpu_of_one_index_keep_their_own_processes(tmp_path, fake_amd_smi, amd_env, fake_nvml,
                                                                        nvml_env):
    """gpu0 (NVML) and amdgpu0 (AMD SMI) at once, each with processes of its own: each GPU's rows name
    only its own processes (pid@gpu0, pid@amdgpu0), each process's share within 5 % of the truth."""
    t0, seconds = 10**12, 30.0
    amd_watts, nv_watts = {4201: 80.0, 4202: 150.0}, {4301: 60.0, 4302: 140.0}
    amd_spans, nv_spans = schedules(7, seconds, t0, amd_watts), schedules(8, seconds, t0, nv_watts)
    (tmp_path / "amd.txt").write_text("".join(f"0 {p} {amd_watts[p]} {a} {b}\n" for p, ss in amd_spans.items()
                                              for a, b in ss))
    (tmp_path / "nv.txt").write_text("".join(f"0 {p} {nv_watts[p]} {a} {b}\n" for p, ss in nv_spans.items()
                                             for a, b in ss))
    amd_env(gpus=1, t0_ns=t0, base_w=IDLE_W, procs=str(tmp_path / "amd.txt"))
    nvml_env(gpus=1, update_ms=100, t0_ns=t0, waveform="constant", base_w=IDLE_W, procs=str(tmp_path / "nv.txt"),
             proc_sample_ms=100)
    probe = run([fake_amd_smi, fake_nvml], t0, seconds, sensors=["nvml", "amd-gpu"], amd_smi_library=str(fake_amd_smi),
                amd_counter_check_ms=0, nvml_library=str(fake_nvml), nvml_min_period_us=100,
                proc_root=str(proc_tree(tmp_path / "proc", [*amd_watts, *nv_watts])))
    a, b = t0 + 1_000_000_000, t0 + int((seconds - 1) * 1e9)
    table = probe.consumers(a, b).to_pylist()
    for domain, watts, spans in (("amdgpu0", amd_watts, amd_spans), ("gpu0", nv_watts, nv_spans)):
        rows = {r["pid"]: r for r in table if r["domain"] == domain and r["kind"] == "process"}
        assert set(rows) == set(watts), (domain, table)
        for pid, w in watts.items():
            truth = w * busy_s(spans[pid], a, b)
            assert abs(rows[pid]["energy_j"] - truth) < 0.05 * truth, (domain, pid, rows[pid], truth)
        measured = next(e["energy_j"] for e in probe.energy(a, b) if e["domain"] == domain)
        assert sum(r["energy_j"] for r in table if r["domain"] == domain) == pytest.approx(measured, rel=1e-9)
    keys = {c.key for c in probe.use_recorder.use("gpu").consumers}
    assert {f"{p}@amdgpu0" for p in amd_watts} | {f"{p}@gpu0" for p in nv_watts} == keys


def test_a_gpu_that_cannot_list_its_processes_is_unattributed_with_why(tmp_path, fake_amd_smi, amd_env):
    """amdgpu1 answers AMDSMI_STATUS_NO_PERM to amdsmi_get_gpu_process_list: its energy is one
    unattributed row that says so, not idle; amdgpu0 goes on being split."""
    t0, seconds = 10**12, 6.0
    spans = schedules(9, seconds, t0, {4101: 100.0})[4101]
    (tmp_path / "procs.txt").write_text("".join(f"{g} 4101 100 {a} {b}\n" for g in (0, 1) for a, b in spans))
    amd_env(gpus=2, t0_ns=t0, base_w=IDLE_W, procs=str(tmp_path / "procs.txt"), proc_rc=10, proc_rc_gpu=1)
    probe = run([fake_amd_smi], t0, seconds, sensors=["amd-gpu"], amd_smi_library=str(fake_amd_smi),
                amd_counter_check_ms=0, proc_root=str(proc_tree(tmp_path / "proc", [4101])))
    table = probe.consumers().to_pylist()
    lost = [r for r in table if r["domain"] == "amdgpu1"]
    assert [r["kind"] for r in lost] == ["unattributed"], lost
    assert "per-process use of amdgpu1 is not known" in lost[0]["note"] and "NO_PERM" in lost[0]["note"], lost
    assert "amdsmi_get_gpu_process_list" in lost[0]["note"]
    assert lost[0]["energy_j"] == pytest.approx(next(e["energy_j"] for e in probe.energy(
        probe.use_recorder.use("gpu").t_ns[0], probe.use_recorder.use("gpu").t_ns[-1]) if e["domain"] == "amdgpu1"),
        rel=1e-9)
    kinds = {r["kind"] for r in table if r["domain"] == "amdgpu0"}
    assert {"process", "idle"} <= kinds, table


@pytest.fixture(scope="session")
def fake_amd_smi_without_process_list(tmp_path_factory) -> Path:
    """The fake built without amdsmi_get_gpu_process_list, as some libamd_smi.so builds are."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    lib = tmp_path_factory.mktemp("amd_smi_bare") / "libamd_smi.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-DFAKE_AMD_SMI_NO_PROCESS_LIST", "-o", str(lib),
                    str(FIXTURES / "fake_amd_smi.c"), "-lm"], check=True)
    return lib


def test_a_library_without_the_process_list_says_so(tmp_path, fake_amd_smi_without_process_list, amd_env):
    """No amdsmi_get_gpu_process_list: process_support says so, and the GPU's energy is unattributed
    with that reason."""
    lib = fake_amd_smi_without_process_list
    amd_env(gpus=1, t0_ns=10**12, base_w=IDLE_W)
    usage = _core.open_gpu_usage("amd-gpu", {"amd_smi_library": str(lib)})
    assert "has no amdsmi_get_gpu_process_list" in usage.process_support
    assert usage.processes(0) == [] and usage.process_errors() == []
    del usage
    probe = run([lib], 10**12, 2.0, sensors=["amd-gpu"], amd_smi_library=str(lib), amd_counter_check_ms=0)
    rows = [r for r in probe.consumers().to_pylist() if r["domain"] == "amdgpu0"]
    assert [r["kind"] for r in rows] == ["unattributed"], rows
    assert "has no amdsmi_get_gpu_process_list" in rows[0]["note"], rows
