"""What the commands leave on disk: `record` and `measure` write their files as the daemon does
(0640 in folders 0750: energy readings are a side channel), given to the user who ran sudo; a study
whose start is refused leaves nothing in --out, so the corrected command runs into the same folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from greenprobe.cli import main as cli_main

SUDO_UID, SUDO_GID = 4321, 4322
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to $SUDO_UID needs root")


def _owned(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@as_root
def test_record_and_measure_write_0640_in_0750_and_give_it_to_the_sudo_user(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUDO_UID", str(SUDO_UID))
    monkeypatch.setenv("SUDO_GID", str(SUDO_GID))
    umask = os.umask(0o022)
    try:
        made = tmp_path / "new" / "rec"  # both folders made by record
        assert cli_main(["record", "--sensors", "synthetic", "--duration", "0.2", "--out", str(made)]) == 0
        for folder in (tmp_path / "new", made):
            assert _owned(folder) == (0o750, SUDO_UID, SUDO_GID), folder
        files = sorted(made.iterdir())
        assert [f.name for f in files] == ["intervals.parquet", "labels.parquet", "metadata.json", "samples.parquet"]
        for f in files:
            assert _owned(f) == (0o640, SUDO_UID, SUDO_GID), f
        assert _owned(tmp_path)[1:] == (0, 0), "the folders above are left as they were"

        # a folder that is there keeps its mode and owner; the files in it are the user's, 0640; the
        # command measure runs keeps its caller's umask (the daemon's is only for the saving)
        there = tmp_path / "there"
        there.mkdir()
        there.chmod(0o755)
        umask_seen = tmp_path / "umask"
        assert cli_main(["measure", "--sensors", "synthetic", "--out", str(there), "--", "sh", "-c",
                         f"umask > {umask_seen}"]) == 0
        assert _owned(there) == (0o755, 0, 0)
        for f in there.iterdir():
            assert _owned(f) == (0o640, SUDO_UID, SUDO_GID), f
        assert umask_seen.read_text().strip() == "0022"
        assert os.umask(0o022) == 0o022, "the caller's umask is as it was"
    finally:
        os.umask(umask)
    capsys.readouterr()


@as_root
def test_without_sudo_the_files_stay_roots_and_a_bad_sudo_uid_is_refused_before_the_run(tmp_path, monkeypatch,
                                                                                      capsys):
    monkeypatch.delenv("SUDO_UID", raising=False)
    out = tmp_path / "rec"
    assert cli_main(["record", "--sensors", "synthetic", "--duration", "0.1", "--out", str(out)]) == 0
    assert _owned(out) == (0o750, 0, 0) and _owned(out / "samples.parquet") == (0o640, 0, 0)
    monkeypatch.setenv("SUDO_UID", "someone")
    capsys.readouterr()
    assert cli_main(["record", "--sensors", "synthetic", "--duration", "0.1", "--out", str(tmp_path / "rec2")]) == 1
    out_text, err = capsys.readouterr()
    assert err.startswith("greenprobe: SUDO_UID='someone' and SUDO_GID=") and "\n  fix: unset SUDO_UID" in err
    assert not (tmp_path / "rec2").exists()


SPEC = """[study]
runtimes = ["onnxruntime"]
sources = ["torch"]
providers = ["cpu"]
models = ["mobilenet_v2"]
batch_sizes = [1]
size = "tiny"
image_size = 32
runs = 2
min_run_s = 0.05
min_inferences = 2
warmup = 1
rest_s = 0
baseline_s = 0
sensors = "{sensors}"
"""


@pytest.mark.parametrize("there", [False, True], ids=["new-out", "out-with-other-files"])
def test_a_refused_study_start_leaves_nothing_and_the_corrected_rerun_runs(tmp_path, capsys, there):
    """The refusal comes after the study has looked at the machine and laid out its folder (a sensor
    is opened only when the sampling starts): all of that goes again."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    out = tmp_path / "out"
    if there:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    spec = tmp_path / "study.toml"
    spec.write_text(SPEC.format(sensors="caffeine"))
    assert cli_main(["study", str(spec), "--out", str(out)]) == 1
    assert "greenprobe: unknown sensor kind 'caffeine'" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] if there else not out.exists()
    spec.write_text(SPEC.format(sensors="synthetic"))
    assert cli_main(["study", str(spec), "--out", str(out)]) == 0, capsys.readouterr().err
    rows = pq.read_table(out / "summary.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok"]
