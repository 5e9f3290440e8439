"""The nvml sensor measures the GPUs this process can see (CUDA_VISIBLE_DEVICES), matched by UUID."""

from __future__ import annotations

import time

import pytest

import greenprobe
from greenprobe.errors import SensorError

VISIBILITY = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


def fake_uuid(i: int) -> str:
    """GPU i's UUID in tests/fixtures/fake_nvml.c."""
    return f"GPU-{0x11111111 * (i + 1):08x}-0000-0000-0000-{i:012x}"


@pytest.fixture
def four_gpus(nvml_env, monkeypatch):
    for var in VISIBILITY:
        monkeypatch.delenv(var, raising=False)
    nvml_env(gpus=4, update_ms=20, base_w=100)  # GPU i draws (i + 1) x 100 W
    return monkeypatch


def test_cuda_visible_devices_by_uuid_measures_one_of_four_gpus(fake_nvml, four_gpus):
    four_gpus.setenv("CUDA_VISIBLE_DEVICES", fake_uuid(2))
    with greenprobe.Probe(sensors=["nvml"], period_us=1000, nvml_library=str(fake_nvml), nvml_min_period_us=100) as probe:
        with greenprobe.mark("work"):
            time.sleep(0.2)
    meta = probe.metadata()
    channels = [c for c in meta["channels"] if c["sensor"] == "nvml"]
    assert {c["domain"] for c in channels} == {"gpu2"}  # its NVML index
    assert all(c["device_uuid"] == fake_uuid(2) and c["device_bus_id"] == "00000000:58:00.0" for c in channels)
    assert not any(c["shared"] for c in channels) and all(c["parent_domain"] == "" for c in channels)
    (info,) = [s["info"] for s in meta["sensors"] if s["kind"] == "nvml"]
    assert info["visible_devices_source"] == "CUDA_VISIBLE_DEVICES"
    assert info["cuda_visible_devices_mapping"] == "exact: by UUID"
    assert info["gpu2_uuid"] == fake_uuid(2) and "gpu0_uuid" not in info
    rows = [r for r in probe.intervals().to_pylist() if r["sensor"] == "nvml" and r["label"] == "work"]
    assert {r["domain"] for r in rows} == {"gpu2"}
    (row,) = rows
    assert abs(row["energy_j"] / ((row["end_ns"] - row["start_ns"]) * 1e-9) - 300.0) < 15.0  # GPU 2's 300 W, not 100


def test_no_visible_gpu_raises_with_the_fix_and_gpus_all_overrides(fake_nvml, four_gpus):
    four_gpus.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SensorError) as e:
        greenprobe.Probe(sensors=["nvml"], nvml_library=str(fake_nvml)).start()
    assert "makes no GPU visible" in str(e.value) and "gpus=all" in e.value.fix
    with greenprobe.Probe(sensors=["nvml:gpus=all"], period_us=1000, nvml_library=str(fake_nvml),
                          nvml_min_period_us=100) as probe:
        time.sleep(0.01)
    channels = probe.metadata()["channels"]
    assert sorted({c["domain"] for c in channels}) == ["gpu0", "gpu1", "gpu2", "gpu3"]
    assert {c["domain"]: c["device_uuid"] for c in channels} == {f"gpu{i}": fake_uuid(i) for i in range(4)}


def test_index_without_pci_bus_order_is_recorded_as_ambiguous(fake_nvml, four_gpus):
    four_gpus.setenv("CUDA_VISIBLE_DEVICES", "1")
    sensor = greenprobe.sensors.open_one("nvml", {"nvml_library": str(fake_nvml)})
    assert {c["domain"] for c in sensor.channels()} == {"gpu1"}
    assert sensor.info()["cuda_visible_devices_mapping"].startswith("ambiguous: CUDA_DEVICE_ORDER is not PCI_BUS_ID")
    four_gpus.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    sensor = greenprobe.sensors.open_one("nvml", {"nvml_library": str(fake_nvml)})
    assert sensor.info()["cuda_visible_devices_mapping"].startswith("exact")
