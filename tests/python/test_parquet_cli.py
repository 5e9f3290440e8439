"""Parquet output (schema documented, metadata complete), replay, and the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import greenprobe
from greenprobe.cli import main as cli_main
from greenprobe.parquet import read_metadata

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "SCHEMA.md"


def documented_columns() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", SCHEMA_DOC.read_text(), flags=re.M))


def record(tmp_path, **mark_attrs):
    spec = "synthetic:waveform=square;base_w=20;amp_w=30;freq_hz=5;update_us=1000;domains=a,b"
    with greenprobe.Probe(sensors=[spec], period_us=200) as probe:
        for i in range(3):
            with greenprobe.mark("infer", i=i, **mark_attrs):
                time.sleep(0.02)
    paths = probe.save(tmp_path / "run")
    return probe, paths


def test_save_writes_documented_columns_and_metadata(tmp_path):
    probe, paths = record(tmp_path, runtime="torch", label="clash")
    samples = pq.read_table(paths["samples"])
    intervals = pq.read_table(paths["intervals"])
    documented = documented_columns()
    assert set(samples.column_names) <= documented
    assert set(intervals.column_names) - {"i", "runtime", "attr_label"} <= documented
    assert "attr_label" in intervals.column_names  # an attribute may not shadow a column
    assert intervals.num_rows == 3 * 2
    assert intervals.schema.field("start_ns").type == "int64"
    md = read_metadata(paths["intervals"])
    for key in ("anchor", "sensors", "channels", "stats", "drops", "max_lag_ns", "clock", "skipped"):
        assert key in md, key
    assert md["anchor"]["wall_iso"].endswith("+00:00")
    assert {c["update_period_source"] for c in md["channels"]} == {"learned"}
    assert all(abs(c["update_period_ns"] - 1_000_000) < 100_000 for c in md["channels"])
    assert json.loads(Path(paths["metadata"]).read_text())["marks"] == 3
    # the same rows as the in-memory table
    assert intervals.select(["energy_j"]).to_pydict() == probe.intervals().select(["energy_j"]).to_pydict()


def test_samples_keep_energy_and_power_apart(tmp_path):
    spec_e = "synthetic:waveform=constant;base_w=5;domains=e"
    spec_p = "synthetic:waveform=constant;base_w=5;quantity=power;domains=p"
    with greenprobe.Probe(sensors=[spec_e, spec_p], period_us=1000) as probe:
        time.sleep(0.05)
    t = probe.samples()
    dom = t.column("domain").to_pylist()
    energy = t.column("energy_j").to_pylist()
    power = t.column("power_w").to_pylist()
    assert all((e is None) == (d == "p") for d, e in zip(dom, energy))
    assert all((p is None) == (d == "e") for d, p in zip(dom, power))


def test_replay_reemits_a_recording(tmp_path):
    _, paths = record(tmp_path)
    original = pq.read_table(paths["samples"])
    with greenprobe.Probe(sensors=[f"replay:path={paths['samples']}"], period_us=200) as probe:
        time.sleep(0.05)
        with greenprobe.mark("replayed"):
            time.sleep(0.02)
    chans = probe.channels()
    assert {c.domain for c in chans} == {"a", "b"}
    assert all(c.sensor == "replay" for c in chans)
    # the replayed values are values of the recording
    rec_values = set(np.round(original.column("energy_j").to_numpy(), 9).tolist())
    for c in chans:
        assert set(np.round(c.energy_j_or_power_w, 9).tolist()) <= rec_values


def test_cli_sensors_and_record(tmp_path, capsys):
    assert cli_main(["sensors", "--json"]) == 0
    kinds = {s["kind"] for s in json.loads(capsys.readouterr().out)}
    assert {"nvml", "rapl-msr", "rapl-powercap", "cpu-estimate"} <= kinds
    out_dir = tmp_path / "rec"
    rc = cli_main(["record", "--sensors", "synthetic:waveform=constant;base_w=7", "--duration", "0.3",
                   "--period-us", "500", "--out", str(out_dir)])
    assert rc == 0
    text = capsys.readouterr().out
    m = re.search(r"synthetic\s+synthetic0\s+([0-9.]+) J", text)
    assert m and abs(float(m.group(1)) - 7 * 0.3) < 0.1
    assert (out_dir / "samples.parquet").exists() and (out_dir / "intervals.parquet").exists()


def test_cli_help_and_errors():
    out = subprocess.run([sys.executable, "-m", "greenprobe", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "GREENPROBE_POWERCAP_ROOT" in out.stdout and "sensors" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "greenprobe", "record", "--sensors", "rapl-powercap", "--duration",
                          "0.1"], capture_output=True, text=True,
                         env={**__import__("os").environ, "GREENPROBE_POWERCAP_ROOT": "/nonexistent"})
    assert bad.returncode == 1
    assert "fix:" in bad.stderr and "Traceback" not in bad.stderr


def test_every_command_has_help_that_teaches():
    for cmd in ("sensors", "runtimes", "record", "study", "report", "daemon", "measure"):
        out = subprocess.run([sys.executable, "-m", "greenprobe", cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage:" in out.stdout, (cmd, out.stderr[-300:])
