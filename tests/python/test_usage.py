"""GPU use through the fake NVML (same dlopen path as the real library) and process CPU use."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from greenprobe.usage import GpuMonitor, proc_usage


def test_gpu_monitor_summarises_a_window(fake_nvml, nvml_env, tmp_path):
    # with a load schedule, the fake GPUs are 100 % busy inside the work and idle outside
    now = time.monotonic_ns()
    work = (now + 300_000_000, now + 700_000_000)
    load = tmp_path / "load.bin"
    np.array(work, dtype=np.int64).tofile(load)
    nvml_env(gpus=2, load_file=load, mem_used_mb=512)
    mon = GpuMonitor(period_s=0.02, nvml_library=str(fake_nvml)).start()
    assert mon.available and mon.names == ["Fake GPU 0", "Fake GPU 1"]
    time.sleep(1.0)
    mon.stop()
    busy = mon.window(work[0] + 50_000_000, work[1] - 50_000_000)
    idle = mon.window(work[1] + 50_000_000, work[1] + 250_000_000)
    assert busy["gpu_util_pct"] == 100.0 and busy["gpu_memory_util_pct"] == 100.0
    assert idle["gpu_util_pct"] == 0.0
    assert busy["gpu_memory_used_bytes"] == (1 + 2) * 512 * 2**20  # summed over GPUs: GPU i uses (i+1) x 512 MiB


def _fake_uuid(i: int) -> str:  # as tests/fixtures/fake_nvml.c names GPU i
    return "GPU-%08x-0000-0000-0000-%012x" % (0x11111111 * (i + 1), i)


def test_gpu_monitor_counts_only_the_gpus_this_process_measures(fake_nvml, nvml_env, monkeypatch):
    """Four GPUs on the machine, this job sees one (CUDA_VISIBLE_DEVICES by UUID): the monitor reads
    that one, as the nvml sensor measures it, not the machine's average. GPU i uses (i+1) x 100 MiB,
    so the figure says which GPU was read."""
    nvml_env(gpus=4, mem_used_mb=100, util=40)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", _fake_uuid(2))
    mon = GpuMonitor(period_s=0.02, nvml_library=str(fake_nvml)).start()
    time.sleep(0.1)
    assert [(r["index"], r["uuid"]) for r in mon.readers[0].read()] == [(2, _fake_uuid(2))]
    mon.stop()
    assert mon.readers == [], "stopped, it lets its readers (NVML's handle) go"
    assert mon.available and mon.names == ["Fake GPU 2"]
    assert mon.selection == f"CUDA_VISIBLE_DEVICES='{_fake_uuid(2)}'"
    w = mon.window(0, time.monotonic_ns())
    assert w["gpu_memory_used_bytes"] == 3 * 100 * 2**20 and w["gpu_util_pct"] == 40.0

    # the nvml sensor's gpus= option, as the Probe is given it, wins over the environment
    mon = GpuMonitor(period_s=0.02, sensors=["nvml:gpus=1,3", "cpu-estimate"], options={"nvml_library": str(fake_nvml)})
    assert [r["uuid"] for r in mon.readers[0].read()] == [_fake_uuid(1), _fake_uuid(3)]
    mon.start().stop()
    assert mon.names == ["Fake GPU 1", "Fake GPU 3"] and mon.selection == "option gpus='1,3'"
    assert mon.window(0, time.monotonic_ns())["gpu_memory_used_bytes"] == (2 + 4) * 100 * 2**20

    # a listed GPU the machine lacks: no GPU use, and the reason says which
    mon = GpuMonitor(nvml_library=str(fake_nvml), gpus="7")
    assert not mon.available and "7" in mon.reason


def test_gpu_monitor_without_nvml_says_why_and_reports_nothing():
    mon = GpuMonitor(nvml_library="/nonexistent/libnvidia-ml.so.1").start()
    mon.stop()
    assert not mon.available and "/nonexistent/libnvidia-ml.so.1" in mon.reason
    assert all(np.isnan(v) for v in mon.window(0, time.monotonic_ns()).values())


def test_gpu_monitor_where_the_device_does_not_report_use(fake_nvml, nvml_env):
    nvml_env(no_usage=1)
    mon = GpuMonitor(period_s=0.01, nvml_library=str(fake_nvml)).start()
    time.sleep(0.05)
    mon.stop()
    assert mon.available and all(np.isnan(v) for v in mon.window(0, time.monotonic_ns()).values())


def test_proc_usage_counts_this_process_cpu_time():
    cpu0, rss = proc_usage(os.getpid())
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    cpu1, _ = proc_usage(os.getpid())
    assert cpu1 - cpu0 == pytest.approx(0.3, abs=0.05) and rss > 10 * 2**20
    assert np.isnan(proc_usage(2**22 + 12345)[0])
