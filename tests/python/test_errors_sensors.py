"""Errors a user meets: named sensors fail loudly with the fix; auto skips with reasons recorded."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import greenprobe
from greenprobe.errors import ConfigError
from helpers import open_as_nobody
from standins import make_powercap_tree


def test_named_sensor_that_cannot_open_raises_with_the_fix(tmp_path):
    with pytest.raises(greenprobe.SensorNotFound) as e:
        greenprobe.Probe(sensors=["rapl-powercap"], powercap_root=str(tmp_path / "none")).start()
    assert str(tmp_path / "none") in str(e.value)
    assert "GREENPROBE_POWERCAP_ROOT" in e.value.fix


def test_missing_nvml_names_the_library_and_the_fix(tmp_path):
    lib = str(tmp_path / "libnvidia-ml.so.1")
    with pytest.raises(greenprobe.SensorLibraryMissing) as e:
        greenprobe.Probe(sensors=["nvml"], nvml_library=lib).start()
    assert lib in e.value.message and "NVIDIA driver" in e.value.fix


def test_missing_msr_device_says_modprobe(tmp_path):
    with pytest.raises(greenprobe.SensorNotFound) as e:
        greenprobe.Probe(sensors=["rapl-msr"], msr_path=str(tmp_path / "cpu{cpu}/msr"), cpu_vendor="intel").start()
    assert "modprobe msr" in e.value.fix


def test_unknown_cpu_vendor_suggests_the_override(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: CentaurHauls\n")
    with pytest.raises(greenprobe.SensorUnsupported) as e:
        greenprobe.Probe(sensors=["rapl-msr"], proc_root=str(proc)).start()
    assert "GREENPROBE_CPU_VENDOR" in e.value.fix


def test_auto_skips_with_reasons_and_records_them(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENPROBE_NVML_LIBRARY", str(tmp_path / "nope.so"))
    monkeypatch.setenv("GREENPROBE_POWERCAP_ROOT", str(tmp_path / "nope"))
    monkeypatch.setenv("GREENPROBE_MSR_PATH", str(tmp_path / "nope{cpu}"))
    monkeypatch.setenv("GREENPROBE_PERF_EVENT_ROOT", str(tmp_path / "nope"))
    with greenprobe.Probe(sensors="auto", period_us=10000) as probe:
        pass
    kinds = {s.kind for s in probe.skipped}
    assert {"nvml", "rapl-perf", "rapl-msr", "rapl-powercap"} <= kinds
    md = probe.metadata()
    assert {s["kind"] for s in md["skipped"]} >= {"nvml", "rapl-msr", "rapl-powercap"}
    assert md["estimated"] is True  # only the CPU estimate was left
    assert all(c["estimated"] for c in md["channels"])


def test_auto_prefers_a_real_cpu_sensor_over_the_estimate(tmp_path, monkeypatch):
    root = tmp_path / "pc"
    make_powercap_tree(root, [("intel-rapl:0", "package-0", 10**9)])
    monkeypatch.setenv("GREENPROBE_NVML_LIBRARY", str(tmp_path / "nope.so"))
    monkeypatch.setenv("GREENPROBE_MSR_PATH", str(tmp_path / "nope{cpu}"))
    monkeypatch.setenv("GREENPROBE_PERF_EVENT_ROOT", str(tmp_path / "nope"))
    with greenprobe.Probe(sensors="auto", period_us=10000, powercap_root=str(root), settle_timeout_s=0.05) as probe:
        pass
    assert [c["sensor"] for c in probe.channel_info()] == ["rapl-powercap"]


def test_unreadable_energy_file_is_a_permission_error_with_the_cve_fix():
    """Drops root in a forked child so that file modes are enforced (CI runs as root)."""
    d = Path(tempfile.mkdtemp(prefix="gp-perm-"))
    os.chmod(d, 0o755)
    make_powercap_tree(d / "pc", [("intel-rapl:0", "package-0", 1000)])
    for p in d.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o444)
    os.chmod(d / "pc" / "intel-rapl:0" / "energy_uj", 0o400)  # as after CVE-2020-8694
    out = open_as_nobody(["rapl-powercap"], powercap_root=str(d / "pc"))
    assert out.startswith("PERMISSION"), out
    assert "CVE-2020-8694" in out and "chmod" in out


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError):
        greenprobe.Probe(period_us=10)
    with pytest.raises(ConfigError):
        greenprobe.Probe(sensors=["synthetic:waveform"]).start()
    with pytest.raises(greenprobe.SensorError) as e:
        greenprobe.Probe(sensors=["synthetic:waveform=triangle"]).start()
    assert e.value.category == "config"
    with pytest.raises(greenprobe.SensorError):
        greenprobe.Probe(sensors=["warp-drive"]).start()
    with pytest.raises(ConfigError):
        greenprobe.Probe(sensors=["rapl-msr"], cpu_vendor="via")


def test_list_sensors_reports_every_kind(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENPROBE_NVML_LIBRARY", str(tmp_path / "nope.so"))
    statuses = {s.kind: s for s in greenprobe.list_sensors()}
    assert set(statuses) >= {"nvml", "rapl-msr", "rapl-powercap", "cpu-estimate", "synthetic", "replay"}
    assert not statuses["nvml"].available and statuses["nvml"].fix
    assert statuses["cpu-estimate"].estimated


def test_flag_bits_agree_between_the_core_and_pure_python():
    """The sample flags are defined once, in the core, which writes them; attribution.py takes its
    FLAG_* names from the core's table, and keeps a copy only for a client-only install (no
    compiled core): that copy must be the core's table, every flag of it."""
    from greenprobe import _core, attribution

    assert attribution.SAMPLE_FLAGS is _core.SAMPLE_FLAGS or attribution.SAMPLE_FLAGS == _core.SAMPLE_FLAGS
    assert attribution._SAMPLE_FLAGS_WITHOUT_CORE == _core.SAMPLE_FLAGS
    for name, bit in _core.SAMPLE_FLAGS.items():
        assert getattr(attribution, "FLAG_" + name.upper()) == getattr(_core, "FLAG_" + name.upper()) == bit
    assert _core.SAMPLE_FLAGS == {"changed": 1, "keepalive": 2, "first": 4, "gone": 8, "final": 16, "glitch": 32}


def test_auto_order_options_and_help_come_from_the_registry():
    """One row per kind: the order auto tries, the option table and the help all derive from it."""
    from greenprobe import _core, config, sensors
    from greenprobe.cli import _epilog

    rows = _core.sensor_kinds()
    order = [r["name"] for r in sensors.auto_order()]
    roles = [r["auto_role"] for r in sensors.auto_order()]
    assert roles == sorted(roles, key=["device", "cpu", "estimate"].index)  # devices, CPUs, the estimate last
    assert order[-1] == "cpu-estimate" and "synthetic" not in order
    assert order.index("nvml") < order.index("rapl-perf") < order.index("rapl-msr") < order.index("rapl-powercap")
    env = config.environment()
    for row in rows:
        for key, var, text in row["options"]:
            assert (env.get(key) == var) if var else key not in env
            if var:
                assert var in _epilog()
    assert env["powercap_root"] == "GREENPROBE_POWERCAP_ROOT"
    assert config.resolve_options(environ={"GREENPROBE_CPU_TDP_W": "65"})["cpu_tdp_w"] == "65"


def test_a_misspelt_option_is_an_error_not_ignored():
    with pytest.raises(ConfigError) as e:
        greenprobe.Probe(sensors=["synthetic:bsae_w=20"]).start()
    assert "'bsae_w'" in e.value.message and "base_w" in e.value.fix
    with pytest.raises(ConfigError) as e:
        greenprobe.Probe(sensors=["cpu-estimate"], powercap_rot="/x")
    assert "powercap_root" in e.value.fix


def test_sensors_verbose_lists_each_kinds_options(capsys):
    from greenprobe.cli import main

    assert main(["sensors", "-v"]) == 0
    out = capsys.readouterr().out
    for row in greenprobe.sensors.kinds():
        assert row["name"] in out
        for key, var, _ in row["options"]:
            assert f"{key} [{var}]" in out if var else f"{key}:" in out
