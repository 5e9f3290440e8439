"""A tiny study end to end: synthetic sensor of known power, tiny models, PyTorch and ONNX Runtime."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from greenprobe.errors import ConfigError
from greenprobe.study import load_spec, run_study
from greenprobe.study.execute import Runner
from greenprobe.summary import t975

POWER_W = 40.0


def tiny_spec(**kw):
    base = dict(runtimes=["torch", "onnxruntime"], sources=["torch"], providers=["cpu"], models=["mobilenet_v2"],
                batch_sizes=[1, 2], size="tiny", image_size=64, seq_len=16, runs=3, min_run_s=0.05,
                min_inferences=4, warmup=1, rest_s=0.05, baseline_s=0.2, seed=1,
                sensors=f"synthetic:waveform=constant;base_w={POWER_W};update_us=1000", period_us=200)
    base.update(kw)
    return load_spec(None, **base)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    run_study(tiny_spec(), out, log=lambda s: None)
    return out


def test_summary_has_one_row_per_configuration_with_the_paper_columns(study):
    rows = pq.read_table(study / "summary.parquet").to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted((r["runtime"], r["source"], r["provider"], r["batch_size"]) for r in ok) == [
        ("onnxruntime", "torch", "cpu", 1), ("onnxruntime", "torch", "cpu", 2),
        ("torch", "torch", "native", 1), ("torch", "torch", "native", 2)]
    for r in ok:
        assert r["model"] == "mobilenet_v2" and r["estimated"] is False and r["runs"] == 3
        assert r["node"].endswith(", no GPU") and r["hosts"]  # the hardware its runs ran on
        for k in ("energy_j_per_inference", "time_s_per_inference"):
            assert r[k + "_low"] <= r[k] <= r[k + "_high"]
        # the synthetic sensor draws a constant 40 W: energy per inference is 40 W x its time
        assert abs(r["energy_j_per_inference"] - POWER_W * r["time_s_per_inference"]) < 0.02 * r["energy_j_per_inference"]
        assert abs(r["energy_j_per_inference_net"]) < 0.05 * r["energy_j_per_inference"]  # idle is 40 W too
        for d in r["domains"].split(","):  # per domain: gross and net, each with its interval
            for key in (f"energy_j_per_inference[{d}]", f"energy_j_per_inference_net[{d}]"):
                assert r[key + "_low"] <= r[key] <= r[key + "_high"]
            assert r[f"energy_j_per_inference_net[{d}]"] == pytest.approx(
                r[f"energy_j_per_inference[{d}]"] - r["idle_power_w"] * r["time_s_per_inference"], rel=1e-6, abs=1e-9)
    env = json.loads((study / "environment.json").read_text())
    assert env["runtimes"]["torch"]["installed"] and env["hardware"]["cpus"] == os.cpu_count()
    assert env["hardware"]["memory_bytes"] > 2**30 and env["hardware"]["gpus"] == []


def test_statistics_match_a_hand_computation_from_the_runs(study):
    """The figure by its definition: per run (window energy - idle power x window) / inferences,
    plus idle power x the inference's duration; mean over runs; its interval Cox's for a log-normal
    mean over their spread (gross energy is above zero, and so is the interval), widened on the log
    scale by the idle power's standard error (common to every run) relative to the mean."""
    rows = {r["id"]: r for r in pq.read_table(study / "summary.parquet").to_pylist() if r["status"] == "ok"}
    (idle,) = json.loads((study / "sessions" / "0" / "baseline.json").read_text())
    for cid, row in rows.items():
        runs = pq.read_table(study / "configs" / cid / "runs.parquet").to_pylist()
        name = f"{idle['sensor']}/{idle['domain']}"
        per_run, common = [], []
        for r in runs:
            net = (r[f"energy_j_window[{name}]"] - idle["power_w"] * r["window_s"]) / r["inferences"]
            per_run.append(net + idle["power_w"] * r["time_s_per_inference"])
            common.append(idle["power_w_se"] * abs(r["window_s"] / r["inferences"] - r["time_s_per_inference"]))
            assert r["window_s"] > r["inferences"] * r["time_s_per_inference"], "a run's window holds its gaps"
        n_runs = row["runs"]
        mean = sum(per_run) / n_runs
        logs = [math.log(x) for x in per_run]
        mu = sum(logs) / n_runs
        s2 = sum((x - mu) ** 2 for x in logs) / (n_runs - 1)
        half = math.hypot(t975(n_runs - 1) * math.sqrt(s2 / n_runs + s2 * s2 / (2 * (n_runs - 1))),
                          1.959963984540054 * float(np.mean(common)) / mean)
        assert row["energy_j_per_inference"] == pytest.approx(mean, rel=1e-9)
        assert row["energy_j_per_inference_high"] == pytest.approx(math.exp(mu + s2 / 2 + half), rel=1e-9)
        assert 0 < row["energy_j_per_inference_low"] == pytest.approx(math.exp(mu + s2 / 2 - half), rel=1e-9)
        assert row["throughput_per_s"] == pytest.approx(row["batch_size"] / row["time_s_per_inference"])
        inf = pq.read_table(study / "configs" / cid / "inferences.parquet")
        assert f"energy_j_interpolated[{name}]" in inf.column_names and "energy_j" not in inf.column_names


def test_every_inference_is_marked_by_its_worker_through_the_daemon(study):
    marks = pq.read_table(study / "sessions" / "0" / "intervals.parquet").to_pylist()
    inf = [m for m in marks if m["label"] == "inference"]
    pids = {m["pid"] for m in inf}
    assert os.getpid() not in pids and len(pids) == 2  # the torch and the ONNX Runtime workers
    rows = [r for r in pq.read_table(study / "summary.parquet").to_pylist() if r["status"] == "ok"]
    for r in rows:  # the scored inferences are exactly the marks the daemon holds of the attempts kept
        # (on a busy machine a run others disturbed is set aside and measured again: its marks stay)
        runs = pq.read_table(study / "configs" / r["id"] / "runs.parquet").to_pylist()
        kept = {(x["run"], x["attempts"] - 1) for x in runs}
        mine = sorted((m["run"], m["i"], m["start_ns"], m["end_ns"]) for m in inf
                      if m["config"] == r["id"] and (m["run"], m["attempt"]) in kept)
        t = pq.read_table(study / "configs" / r["id"] / "inferences.parquet").to_pydict()
        assert mine == sorted(zip(t["run"], t["i"], t["start_ns"], t["end_ns"]))
        assert len(mine) == r["runs"] * r["inferences_per_run"]


def test_runs_are_interleaved_across_configurations_in_rounds(study):
    runs = {}
    for p in (study / "configs").glob("*/runs.parquet"):
        for r in pq.read_table(p).to_pylist():
            runs.setdefault(r["run"], []).append((r["start_ns"], r["end_ns"]))
    assert sorted(runs) == [0, 1, 2] and all(len(v) == 4 for v in runs.values())
    for k in (0, 1):  # every run k ends before any run k + 1 starts
        assert max(e for _, e in runs[k]) < min(s for s, _ in runs[k + 1])


def test_a_study_resumes_where_it_stopped_without_redoing_runs(study):
    files = {p: p.stat().st_mtime_ns for p in (study / "configs").glob("*/runs/r*.json")}
    assert len(files) == 12
    victim = sorted(files)[0]
    victim.unlink()  # as if the study stopped before this run finished
    victim.with_suffix(".parquet").unlink()
    lines = []
    run_study(tiny_spec(), study, log=lines.append)
    assert any("resuming: 11 runs already on disk, 1 to go" in s for s in lines)
    ran = [s for s in lines if s.startswith("[")]
    assert len(ran) == 1 and victim.parent.parent.name in ran[0]
    assert all(p.stat().st_mtime_ns == t for p, t in files.items() if p != victim) and victim.exists()
    assert json.loads(victim.read_text())["session"] == "1"  # measured in the second sitting
    assert (study / "sessions" / "1" / "baseline.json").exists()
    rows = [r for r in pq.read_table(study / "summary.parquet").to_pylist() if r["status"] == "ok"]
    assert len(rows) == 4 and all(r["runs"] == 3 for r in rows)
    with pytest.raises(ConfigError, match="another spec"):
        run_study(tiny_spec(runs=4), study, log=lambda s: None)


def test_blocked_order_and_gpu_use_from_nvml(tmp_path, fake_nvml, monkeypatch):
    monkeypatch.setenv("GREENPROBE_NVML_LIBRARY", str(fake_nvml))
    monkeypatch.setenv("FAKE_NVML_UTIL", "37")
    monkeypatch.setenv("FAKE_NVML_MEM_USED_MB", "2048")
    run_study(tiny_spec(runtimes=["torch"], order="blocked"), tmp_path, log=lambda s: None)
    rows = [r for r in pq.read_table(tmp_path / "summary.parquet").to_pylist()]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["gpu_util_pct"] == pytest.approx(37.0)
        assert r["gpu_memory_used_bytes"] == 2048 * 2**20
    spans = [(r["start_ns"], p.parent.name) for p in (tmp_path / "configs").glob("*/runs.parquet")
             for r in pq.read_table(p).to_pylist()]
    order = [c for _, c in sorted(spans)]
    assert order == [order[0]] * 3 + [order[3]] * 3 and order[0] != order[3]  # one configuration's runs together


def test_a_failing_configuration_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    real = Runner.build

    def build(self, cfg):
        if cfg.runtime == "onnxruntime" and cfg.batch_size == 2:
            raise RuntimeError("boom: the exporter fell over")
        return real(self, cfg)

    monkeypatch.setattr(Runner, "build", build)
    run_study(tiny_spec(runtimes=["onnxruntime"], runs=2), tmp_path, log=lambda s: None)
    rows = {r["batch_size"]: r for r in pq.read_table(tmp_path / "summary.parquet").to_pylist()}
    assert rows[2]["status"] == "failed" and "boom" in rows[2]["error"]
    assert rows[1]["status"] == "ok"


def test_bad_specs_are_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown runtimes"):
        load_spec(None, runtimes=["caffe"])
    with pytest.raises(ConfigError, match="runs must be >= 2"):
        load_spec(None, runs=1)
    toml = tmp_path / "s.toml"
    toml.write_text('[study]\nmodels = ["resnet50"]\nbatch_sizes = [8]\nfrobnicate = 1\n')
    with pytest.raises(ConfigError, match="frobnicate"):
        load_spec(str(toml))
    toml.write_text('[study]\nmodels = ["resnet50"]\nbatch_sizes = [8]\n')
    spec = load_spec(str(toml), quick=True, runs=5)
    assert spec.models == ["resnet50"] and spec.batch_sizes == [8] and spec.runs == 5 and spec.profile == "quick"


def test_report_renders_tables_and_legible_plots(study):
    from greenprobe.study.report import write_report

    path = write_report(study)
    text = path.read_text()
    assert "Batch size 1" in text and "Batch size 2" in text and "Spearman" in text
    assert text.count("data:image/png;base64,") == 3 and "Native against ONNX Runtime" in text
    assert "Throughput and resource use" in text and "interleaved in random order" in text
    assert "Energy per domain" in text and "synthetic/synthetic0: J net [95 %]" in text
    for name in ("energy.png", "time.png", "energy_vs_time.png"):
        data = (study / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 500 and height >= 400, f"{name} is {width}x{height}: too small to read"


def test_provider_against_cpu_compares_the_same_export(study):
    from greenprobe.study.report import provider_vs_provider

    ok = [r for r in pq.read_table(study / "summary.parquet").to_pylist() if r["status"] == "ok"]
    ort = [r for r in ok if r["runtime"] == "onnxruntime"]
    assert provider_vs_provider(ok, study) == []  # CPU only here
    twin = dict(ort[0], provider="cuda")  # the same runs under another provider's name: no difference
    rows = provider_vs_provider(ok + [twin], study)
    assert len(rows) == 1 and rows[0][1] == "cuda" and rows[0][4] == "1x" and rows[0][6] == "no"


def test_spearman_and_welch_against_hand_computed_values():
    from greenprobe.study.stats import spearman, welch

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40])[0] == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
    # ranks x: 1 2 3 4 5, y: 2 1 4 3 5 -> rho = 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 6*4/120 = 0.8
    assert spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50])[0] == pytest.approx(0.8)
    d, lo, hi, sig = welch([1.0, 1.1, 0.9, 1.0], [2.0, 2.1, 1.9, 2.0])
    assert d == pytest.approx(1.0) and lo < 1.0 < hi and sig
    d, lo, hi, sig = welch([1.0, 2.0, 3.0], [1.5, 2.5, 2.0])
    assert lo < 0 < hi and not sig


def test_the_papers_findings_are_held_against_the_data(study):
    """The tiny study (constant 40 W: energy is 40 W x time) reproduces the correlation; what it
    lacks (MXNet, BERT, batch 64, a GPU) is 'cannot test' with the reason."""
    from greenprobe.study.findings import findings, node_types
    from greenprobe.study.report import write_report

    ok = [r for r in pq.read_table(study / "summary.parquet").to_pylist() if r["status"] == "ok"]
    groups = node_types(study, ok)
    assert len(groups) == 1 and len(next(iter(groups.values()))) == 4
    got = {f["finding"].split(" ")[0] + " " + f["finding"].split(" ")[1]: f for f in findings(study, ok)}
    assert got["energy tracks"]["verdict"] == "reproduced" and got["energy tracks"]["detail"].startswith("rho 1.000")
    assert got["MXNet uses"]["verdict"] == "cannot test" and "this study has no MXNet" in got["MXNet uses"]["detail"]
    assert got["PyTorch uses"]["verdict"] == "cannot test"
    assert got["TensorRT uses"]["verdict"] == "cannot test" and got["TensorRT uses"]["detail"].startswith("no GPU here")
    onnx = got["ONNX Runtime"]
    assert onnx["verdict"] in ("reproduced", "not reproduced", "inconclusive") and " of 2 pairs" in onnx["detail"]
    html_text = write_report(study).read_text()
    assert "The paper&#x27;s findings" in html_text or "The paper's findings" in html_text
    assert "cannot test" in html_text and "reproduced" in html_text


def test_nodes_of_different_hardware_get_tables_of_their_own(study, tmp_path):
    """A study whose configurations ran on two kinds of node (a Slurm cluster's): the report splits
    its tables and findings by node type instead of comparing across hardware."""
    import shutil

    import pyarrow as pa

    from greenprobe.study.findings import node_types
    from greenprobe.study.report import write_report

    two = tmp_path / "two-nodes"
    shutil.copytree(study, two)
    other = two / "sessions" / "slurm-9-0"
    other.mkdir()
    (other / "environment.json").write_text(json.dumps({"host": "node-b", "hardware": {
        "cpu_model": "Other CPU 9000", "gpus": ["NVIDIA H200"]}}))
    rows = pq.read_table(two / "summary.parquet").to_pylist()
    for r in rows:
        if r.get("batch_size") == 2:  # ran on node-b; its node type rebuilt from node-b's sitting
            r["hosts"], r["node"] = "node-b", None
    pq.write_table(pa.Table.from_pylist(rows), two / "summary.parquet")
    ok = [r for r in rows if r["status"] == "ok"]
    kinds = node_types(two, ok)
    assert len(kinds) == 2 and sorted(len(v) for v in kinds.values()) == [2, 2]
    assert any(k.startswith("Other CPU 9000, 1 x NVIDIA H200") for k in kinds)
    text = write_report(two).read_text()
    assert text.count("<h2>Node type: ") == 2 and "2 kinds of node" in text
    assert text.count("<h3>Batch size ") == 2 and "<h3>Other CPU 9000" in text
