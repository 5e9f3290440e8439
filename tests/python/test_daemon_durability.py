"""Nothing lost: a daemon writing its run to a disk that fills up, and one whose writes fall behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest

import greenprobe
from helpers import mark_batch
from greenprobe.daemon import Daemon, Limits
from greenprobe.parquet import PartWriter
from greenprobe.v1 import probe_pb2 as pb
from greenprobe.v1 import probe_pb2_grpc as pb_grpc


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a disk this test can fill."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); CI runs as root with mount rights")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):  # to the last byte
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def marks(n: int, label: str) -> pb.MarkBatch:
    t = time.monotonic_ns()
    return mark_batch([(label, t + i, t + i + 1, 0, None, True) for i in range(n)], pid=7)


def test_a_full_disk_is_reported_retried_and_loses_nothing(small_disk, tmp_path):
    sock, ready, log = tmp_path / "d.sock", tmp_path / "ready", tmp_path / "stderr"
    out = small_disk / "out"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", "synthetic", "--period-us",
                                 "5000", "--socket", str(sock), "--ready-file", str(ready), "--out", str(out),
                                 "--flush-s", "0.2"], stderr=err)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        filler = fill(small_disk)
        stub = pb_grpc.ProbeStub(grpc.insecure_channel(f"unix:{sock}"))
        assert stub.RecordMarks(marks(1000, "during-full-disk"), timeout=10).accepted == 1000
        deadline = time.monotonic() + 10
        while "could not write" not in log.read_text():
            assert time.monotonic() < deadline, "a failing write was not reported"
            time.sleep(0.1)
        assert proc.poll() is None, "a full disk must not stop the daemon"
        assert stub.Status(pb.StatusRequest(), timeout=5).stats[0].polls > 0  # sampling goes on
        filler.unlink()
        (run,) = out.glob("run-*")
        deadline = time.monotonic() + 10
        while True:  # the next flush writes what the failed ones could not
            try:
                if pq.read_table(run / "parts" / "marks").num_rows == 1000:
                    break
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, "the marks were not written once the disk had room"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()
    rows = pq.read_table(run / "intervals.parquet", columns=["label"]).column("label").to_pylist()
    assert rows.count("during-full-disk") == 1000
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], "no temporary file is left behind"


def test_intake_waits_when_writes_fall_behind(tmp_path):
    """With the writer more than --max-backlog marks behind, RecordMarks answers UNAVAILABLE (the
    client keeps the batch and retries), so a crash loses at most that much."""
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    daemon = Daemon(probe, tmp_path / "d.sock", limits=Limits(max_backlog=1500))
    probe.start()
    daemon.start()
    writer = PartWriter(probe, tmp_path / "out")
    daemon.servicer.backlog = writer.pending_marks
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))
    try:
        assert stub.RecordMarks(marks(1000, "a"), timeout=10).accepted == 1000
        with pytest.raises(grpc.RpcError) as e:
            stub.RecordMarks(marks(1000, "b"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "1000 marks behind (--max-backlog 1500)" in \
            e.value.details()
        writer.flush()
        assert writer.pending_marks() == 0
        assert stub.RecordMarks(marks(1000, "b"), timeout=10).accepted == 1000
    finally:
        daemon.stop()
        probe.stop()
    assert len(probe.marks()) == 2000


STEADY_CLIENT = """
import json, os, sys, time, greenprobe
from greenprobe.client import default_remote
os.environ["GREENPROBE_DAEMON"], n, ring = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if ring == "0":
    os.environ["GREENPROBE_MARK_RING"] = "0"  # every mark through gRPC
remote = default_remote()
start = time.monotonic()
for i in range(n):  # 1,000 marks a second
    with greenprobe.mark("k", i=i):
        pass
    time.sleep(max(start + (i + 1) / 1000 - time.monotonic(), 0))
remote.flush()
print(n)
"""


def run_marks(out: Path) -> list:
    """Every mark "k" the runs under ``out`` wrote, as its attribute i, from the parts (each run's)."""
    import json

    from greenprobe.parquet import read_parts

    seen = []
    for run in sorted(out.glob("run-*")):
        table = read_parts(run / "parts" / "marks")
        seen += [json.loads(a)["i"] for label, a in zip(table.column("label").to_pylist(),
                                                          table.column("attrs").to_pylist()) if label == "k"]
    return seen


@pytest.mark.parametrize("ring", ["1", "0"], ids=["ring", "grpc"])
def test_a_daemon_killed_under_a_steady_client_loses_no_mark_and_doubles_none(tmp_path, ring):
    """SIGKILL under a client marking 1,000 times a second, then a new daemon on the same socket and
    --out: the client's marks wait (in its ring, or its sender) until a daemon has them on disk, and
    every mark is in the runs' parts exactly once."""
    sock, out = tmp_path / "d.sock", tmp_path / "out"

    def daemon(k: int) -> subprocess.Popen:
        ready = tmp_path / f"ready{k}"
        proc = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", "synthetic", "--socket",
                                 str(sock), "--ready-file", str(ready), "--out", str(out), "--flush-s", "0.5"],
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        return proc

    first = daemon(1)
    n = 4000
    client = subprocess.Popen([sys.executable, "-c", STEADY_CLIENT, f"unix:{sock}", str(n), ring],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        time.sleep(1.6)  # ~1,600 marks made, the last ones not yet written
        first.kill()
        first.wait()
        second = daemon(2)
        made, err = client.communicate(timeout=120)
        assert client.returncode == 0 and int(made) == n, err
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=60)
    finally:
        for p in (client, first, second):
            if p is not None and p.poll() is None:
                p.kill()
    seen = run_marks(out)
    assert len(out.glob("run-*").__next__().name) > 0
    assert sorted(seen) == list(range(n)), (len(seen), len(set(seen)), n)
