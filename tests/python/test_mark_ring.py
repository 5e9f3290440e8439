"""Local clients' marks through the shared-memory ring: the attributes' JSON as Python writes it,
every mark once through a daemon restart, the pid the kernel names, forks, the caps per user, and
clients that send the daemon what no client should."""

from __future__ import annotations

import json
import mmap
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import greenprobe
from helpers import mark_batch
from greenprobe import _core
from greenprobe.daemon.rings import columns_table
from test_daemon import start_daemon, stop_daemon

# values the ring encodes itself; the rest go to the fallback
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
NAMES = st.text(min_size=1, max_size=20).filter(lambda k: len(k.encode()) <= 64)


def ring_pair(capacity=1 << 16):
    fallback = []
    ring = _core.MarkRing(capacity, fallback)
    ring.attached = True
    return ring, _core.MarkRingReader(os.dup(ring.fd)), fallback


def json_of(cols, i):
    o = cols["attrs_offsets"]
    return cols["attrs_data"][o[i]:o[i + 1]].decode()


def expected_json(attrs, pid):
    want = dict(attrs or {})
    want["pid"] = pid  # in place when the mark named one: the sender's, as the kernel says
    return json.dumps(want, separators=(",", ":"), default=str)


@settings(max_examples=300, deadline=None)
@given(label=st.text(min_size=1, max_size=30).filter(lambda s: len(s.encode()) <= 256),
       attrs=st.one_of(st.none(), st.dictionaries(NAMES, VALUES, max_size=6)),
       ok=st.booleans(), start=st.integers(1, 2**62), length=st.integers(0, 2**40))
def test_the_daemon_stores_what_json_dumps_writes(label, attrs, ok, start, length):
    ring, reader, fallback = ring_pair()
    ring.append((label, start, start + length, 12345, attrs, ok))
    cols = reader.drain(777)
    assert not fallback
    assert cols["labels"] == [label] and cols["start_ns"].tolist() == [start]
    assert cols["end_ns"].tolist() == [start + length] and cols["ok"].tolist() == [ok]
    assert json_of(cols, 0) == expected_json(attrs, 777)
    assert columns_table(cols).column("attrs").to_pylist() == [expected_json(attrs, 777)]


@pytest.mark.parametrize("value", [2**64, -2**63 - 1, [1, 2], {"a": 1}, (1,), np.int64(3), 1 + 2j, "\ud800",
                                   type("S", (str,), {})("sub"), b"bytes"])
def test_a_value_the_ring_does_not_encode_goes_to_the_fallback_whole(value):
    ring, reader, fallback = ring_pair()
    record = ("infer", 10, 20, 1, {"fine": 1, "odd": value}, True)
    ring.append(record)
    assert fallback == [record]
    assert reader.drain(1)["start_ns"].size == 0
    assert ring.fell_back == 1 and ring.pushed == 0


def test_limits_and_detached_rings_go_to_the_fallback():
    ring, reader, fallback = ring_pair(capacity=1 << 12)
    too_long = ("x" * 257, 1, 2, 0, None, True)
    ring.append(too_long)
    ring.attached = False
    ring.append(("y", 1, 2, 0, None, True))
    ring.attached = True
    n = 0
    while not fallback[2:]:  # until the ring is full
        ring.append(("z", 1 + n, 2 + n, 0, None, True))
        n += 1
    assert fallback[0] == too_long and fallback[1][0] == "y" and fallback[2][0] == "z"
    assert ring.pushed == n - 1 == reader.drain(1)["start_ns"].size


def test_greenprobe_mark_writes_into_the_ring():
    ring, reader, fallback = ring_pair()
    _core._set_mark_sink(ring)
    try:
        with greenprobe.mark("infer", batch=64, runtime="torch"):
            pass
        with pytest.raises(ValueError):
            with greenprobe.mark("fails"):
                raise ValueError
    finally:
        from greenprobe.marks import _default_sink

        _core._set_mark_sink(_default_sink())
    cols = reader.drain(5)
    assert cols["labels"] == ["infer", "fails"] and cols["ok"].tolist() == [True, False]
    assert json_of(cols, 0) == '{"batch":64,"runtime":"torch","pid":5}' and not fallback


# -- through a daemon -------------------------------------------------------------------------------
CLIENT = """
import os, sys, time, greenprobe
from greenprobe.client import default_remote
n, rate = int(sys.argv[1]), float(sys.argv[2])
remote = default_remote()
for i in range(n):
    with greenprobe.mark("work", i=i, who="c"):
        pass
    if rate:
        time.sleep(1 / rate)
    if i == 10:
        open(sys.argv[3], "w").close()  # marking has begun
remote.flush()
ring = remote.mark_sink
print(ring.pushed, ring.fell_back, os.getpid(), flush=True)
"""


def marks_of(out) -> list[dict]:
    rows = []
    for run in sorted(out.glob("run-*")):
        rows += pq.read_table(run / "parts" / "marks").to_pylist()
    return rows


def test_a_local_clients_marks_go_through_the_ring_once_each_with_its_pid(tmp_path):
    proc, address, sock, out = start_daemon(tmp_path)
    try:
        env = dict(os.environ, GREENPROBE_DAEMON=address)
        r = subprocess.run([sys.executable, "-c", CLIENT, "5000", "0", str(tmp_path / "began")], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        pushed, fell_back, pid = map(int, r.stdout.split())
        assert fell_back <= 1 and pushed + fell_back == 5000  # the first mark may precede the ring's attach
        remote = greenprobe.connect(address)
        assert remote.mark_count() == 5000
    finally:
        stop_daemon(proc)
    rows = marks_of(out)
    assert sorted(json.loads(m["attrs"])["i"] for m in rows) == list(range(5000))
    assert {json.loads(m["attrs"])["pid"] for m in rows} == {pid}
    assert {m["label"] for m in rows} == {"work"}


def test_a_daemon_restart_under_a_marking_client_keeps_every_mark_once_and_in_order(tmp_path):
    proc, address, sock, out = start_daemon(tmp_path)
    env = dict(os.environ, GREENPROBE_DAEMON=address)
    began = tmp_path / "began"
    client = subprocess.Popen([sys.executable, "-c", CLIENT, "4000", "1000", str(began)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not began.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        stop_daemon(proc)  # 1.5 s without a daemon while the client marks ~1,000 times a second
        time.sleep(1.5)
        (tmp_path / "ready").unlink()
        proc, _, _, _ = start_daemon(tmp_path)
        stdout, stderr = client.communicate(timeout=120)
        assert client.returncode == 0, stderr
        assert "did not reach" not in stderr
    finally:
        client.kill()
        stop_daemon(proc)
    pushed, fell_back, _ = map(int, stdout.split())
    assert fell_back <= 1, "the ring held the outage's marks"
    rows = marks_of(out)
    numbers = [json.loads(m["attrs"])["i"] for m in rows]
    assert sorted(numbers) == list(range(4000)), "every mark once"
    ring_numbers = [i for i, m in zip(numbers, rows) if i > 0]
    assert ring_numbers == sorted(ring_numbers), "in the order they were made"
    assert len(list(out.glob("run-*"))) == 2


FORKER = """
import os, greenprobe
from greenprobe.client import default_remote
with greenprobe.mark("before"):
    pass
default_remote().flush()
pid = os.fork()
for i in range(300):
    with greenprobe.mark("child" if pid == 0 else "parent", i=i):
        pass
default_remote().flush()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print(pid)
"""


def test_a_forked_child_writes_into_a_ring_of_its_own(tmp_path):
    proc, address, sock, out = start_daemon(tmp_path)
    try:
        r = subprocess.run([sys.executable, "-c", FORKER], env=dict(os.environ, GREENPROBE_DAEMON=address),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        child = int(r.stdout)
    finally:
        stop_daemon(proc)
    rows = marks_of(out)
    by_label = {}
    for m in rows:
        a = json.loads(m["attrs"])
        by_label.setdefault(m["label"], []).append((a["pid"], a.get("i")))
    assert sorted(i for _, i in by_label["child"]) == list(range(300))
    assert {p for p, _ in by_label["child"]} == {child}
    assert sorted(i for _, i in by_label["parent"]) == list(range(300))
    assert child not in {p for p, _ in by_label["parent"]}


# -- hostile clients --------------------------------------------------------------------------------
def register(path, fd=None, first=b"R") -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    if fd is None:
        s.sendall(first)
    else:
        socket.send_fds(s, [first], [fd])
    reply = s.recv(512)
    s.close()
    return reply


def test_what_a_hostile_client_sends_is_refused_and_others_are_served(tmp_path):
    proc, address, sock, out = start_daemon(tmp_path)
    ring_sock = f"{sock}.ring"
    try:
        unsealed = os.memfd_create("x", os.MFD_ALLOW_SEALING)
        os.ftruncate(unsealed, 4096 + 4096)
        assert register(ring_sock, unsealed).startswith(b"Xthe mark ring's memfd is not sealed against shrinking")
        plain_file = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        assert register(ring_sock, plain_file).startswith(b"Xthe mark ring is not a sealable memfd")
        assert register(ring_sock, None, b"F").startswith(b"Xsend R with the ring's memfd, or I, first")
        ring, _, _ = ring_pair(1 << 12)
        assert register(ring_sock, ring.fd, b"Q").startswith(b"Xthe first message must be R")

        # a ring whose framing the client breaks after registering: dropped, the client told why
        bad = _core.MarkRing(1 << 12, [])
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(ring_sock)
        socket.send_fds(s, [b"R"], [bad.fd])
        assert s.recv(64)[:1] == b"A"
        m = mmap.mmap(bad.fd, 4096 + 4096)
        m[4096:4104] = (12).to_bytes(4, "little") + (1).to_bytes(4, "little")  # a frame of 12 bytes: not 8-aligned
        m[64:72] = (16).to_bytes(8, "little")  # head: 16 bytes written
        reply = s.recv(512)
        assert reply.startswith(b"Xring dropped: a frame whose size (12 bytes) breaks the ring's framing"), reply
        m.close()
        s.close()

        # a mark with a bad field in an otherwise sound ring: refused and counted in the client's
        # header, with the reason; the rest held
        odd, _, _ = ring_pair(1 << 12)
        odd.append(("\u00e9t\u00e9", 10, 20, 1, None, True))
        odd.append(("kept", 10, 20, 1, None, True))
        m = mmap.mmap(odd.fd, 4096 + 4096)
        m[4096 + 40] = 0xFF  # the first label's first byte: no longer UTF-8
        m.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(ring_sock)
        socket.send_fds(s, [b"R"], [odd.fd])
        assert s.recv(64)[:1] == b"A"
        s.sendall(b"F")
        assert s.recv(1) == b"D"
        assert (odd.drained, odd.refused, odd.refused_why) == (2, 1, "a label that is not UTF-8")
        s.close()

        good = greenprobe.connect(address)
        now = time.monotonic_ns()
        good.add_mark("still-served", now, now + 1)
        assert good.flush() == 1
    finally:
        err = stop_daemon(proc)
    assert "dropped the mark ring of pid" in err
    assert sorted(m["label"] for m in marks_of(out)) == ["kept", "still-served"]


def test_rings_per_user_are_capped_and_the_rest_go_through_grpc(tmp_path):
    proc, address, sock, out = start_daemon(tmp_path, "--max-rings-per-user", "1")
    try:
        env = dict(os.environ, GREENPROBE_DAEMON=address)
        holder = _core.MarkRing(1 << 12, [])
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(f"{sock}.ring")
        socket.send_fds(s, [b"R"], [holder.fd])
        assert s.recv(64)[:1] == b"A"  # this user's one ring
        r = subprocess.run([sys.executable, "-c", CLIENT, "500", "0", str(tmp_path / "began")], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        pushed, fell_back, _ = map(int, r.stdout.split())
        assert pushed == 0 and fell_back == 500
        assert greenprobe.connect(address).mark_count() == 500
        s.close()
    finally:
        stop_daemon(proc)


def test_sample_streams_are_capped_per_user_known_by_the_rings_session(tmp_path, monkeypatch):
    import grpc

    from greenprobe.daemon import Daemon, Limits
    from greenprobe.v1 import probe_pb2 as pb
    from greenprobe.v1 import probe_pb2_grpc as pb_grpc

    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock", limits=Limits(max_streams=8, max_streams_per_user=2)).start()
    address = f"unix:{tmp_path / 'd.sock'}"
    streams = []
    try:
        local = greenprobe.connect(address)
        assert local.mark_sink.attached or local._ring.session_metadata(5.0)
        for _ in range(2):
            streams.append(local.samples())
            next(streams[-1])
        with pytest.raises(Exception, match=f"uid:{os.getuid()} has 2 sample streams open.*--max-streams-per-user"):
            next(local.samples())
        monkeypatch.setenv("GREENPROBE_MARK_RING", "0")  # a client without a ring still names itself
        ringless = greenprobe.connect(address)
        assert ringless._identity.session_metadata(5.0)
        with pytest.raises(Exception, match=f"uid:{os.getuid()} has 2 sample streams open"):
            next(ringless.samples())
        raw = pb_grpc.ProbeStub(grpc.insecure_channel(address))  # no session: an unverified caller
        unverified = raw.StreamSamples(pb.StreamSamplesRequest())
        next(unverified)  # the first user's streams took nothing from the others
        with pytest.raises(grpc.RpcError, match="unverified callers .* have 1 sample streams open, their share"):
            next(raw.StreamSamples(pb.StreamSamplesRequest()))  # half a user's: with and without a session, not all
        unverified.cancel()
        for s in streams:
            s.close()
        time.sleep(0.3)  # the server sees the cancellations
        again = local.samples()
        assert next(again)["t_ns"]  # a closed stream gives its place back
        again.close()
    finally:
        for s in streams:
            s.close()
        daemon.stop(grace_s=0.5)
        probe.stop()


FRAME = st.one_of(
    st.binary(min_size=0, max_size=120),  # anything at all
    st.builds(lambda size, kind, body: size.to_bytes(4, "little") + kind.to_bytes(4, "little") + body,
              st.sampled_from([0, 8, 16, 40, 48, 64, 12, 2**31]), st.sampled_from([1, 2, 3]),
              st.binary(max_size=64)))


@settings(max_examples=400, deadline=None)
@given(good_before=st.integers(0, 3), junk=st.lists(FRAME, max_size=4),
       head_shift=st.sampled_from([0, 8, -8, 1 << 20]))
def test_whatever_a_client_writes_into_its_ring_the_reader_refuses_or_returns_sound_columns(
        good_before, junk, head_shift):
    """The ring's bytes are the client's: the reader must answer every content with RingCorrupt or
    with columns that are consistent, valid UTF-8 and JSON, never a crash, a hang or a bad read."""
    ring, reader, _ = ring_pair(1 << 12)
    for i in range(good_before):
        ring.append(("ok", 10 + i, 20 + i, 1, {"i": i}, True))
    m = mmap.mmap(ring.fd, 4096 + 4096)
    head = int.from_bytes(m[64:72], "little")
    blob = b"".join(junk)[: 4096 - head - 512]
    m[4096 + head:4096 + head + len(blob)] = blob
    m[64:72] = max(head + len(blob) + head_shift, 0).to_bytes(8, "little")
    try:
        cols = reader.drain(3)
    except _core.RingCorrupt:
        return
    finally:
        m.close()
    n = cols["start_ns"].size
    offsets = cols["attrs_offsets"]
    assert len(offsets) == n + 1 and offsets[0] == 0 and offsets[-1] == len(cols["attrs_data"])
    assert all(offsets[i] <= offsets[i + 1] for i in range(n))
    for i in range(n):
        attrs = json.loads(json_of(cols, i))
        assert attrs["pid"] == 3
    assert all(0 <= k < len(cols["labels"]) for k in cols["label_index"])
    assert (cols["end_ns"] >= cols["start_ns"]).all() and (cols["start_ns"] > 0).all()
    table = columns_table(cols)
    table.validate(full=True)  # the strings are UTF-8, the offsets sound
    assert table.num_rows == n


def test_a_grpc_batch_carries_its_marks_as_frames_the_daemon_decodes_whole_or_refuses_whole(tmp_path):
    from greenprobe.daemon import Daemon
    from greenprobe.sender import encode
    from greenprobe.v1 import probe_pb2 as pb
    from greenprobe.v1 import probe_pb2_grpc as pb_grpc
    import grpc

    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock").start()
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))
    try:
        records = [("infer", 10 + i, 20 + i, 7, {"i": i, "who": "x"}, True) for i in range(100)]
        records[50] = ("odd", 60, 70, 7, {"shape": [3, 224, 224]}, True)  # a list: framed as its JSON text
        batch = encode(pb, records, sender_id=99, first_seq=1)
        assert batch.columns.frames and batch.ByteSize() == len(batch.SerializeToString())
        assert stub.RecordMarks(batch, timeout=10).accepted == 100
        assert stub.RecordMarks(batch, timeout=10).accepted == 100  # sent again: held once
        held = probe.marks()
        assert len(held) == 100
        assert sorted(r[4].get("i", -1) for r in held) == [-1] + [i for i in range(100) if i != 50]
        assert {r[4]["pid"] for r in held} == {batch.columns.pid}
        assert [r[4]["shape"] for r in held if r[0] == "odd"] == ["[3,224,224]"]  # as the tables store it

        bad = encode(pb, [("a", 5, 4, 1, None, True), ("b", 1, 2, 1, None, True)], sender_id=98, first_seq=1)
        with pytest.raises(grpc.RpcError, match="ends before it starts; no mark of this batch was recorded"):
            stub.RecordMarks(bad, timeout=10)
        cut = pb.MarkBatch(columns=pb.MarkColumns(frames=batch.columns.frames[:-8], pid=1))
        with pytest.raises(grpc.RpcError, match="frames: .*framing"):
            stub.RecordMarks(cut, timeout=10)
        assert len(probe.marks()) == 100
    finally:
        daemon.stop(grace_s=0.5)
        probe.stop()


def test_connections_that_send_no_ring_are_closed_so_they_cannot_hold_the_daemons_descriptors(tmp_path,
                                                                                              monkeypatch):
    import greenprobe.daemon.rings as rings
    from greenprobe.daemon import Daemon

    monkeypatch.setattr(rings, "UNREGISTERED_MAX", 3)
    monkeypatch.setattr(rings, "REGISTER_WITHIN_S", 1.0)
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock").start()
    try:
        silent = []
        for _ in range(5):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(f"{tmp_path / 'd.sock'}.ring")
            silent.append(s)
            time.sleep(0.05)  # accepted in this order
        assert silent[0].recv(256).startswith(b"Xmore than 3 connections have not sent a ring")
        assert silent[1].recv(256).startswith(b"Xmore than 3 connections")
        t0 = time.monotonic()
        assert silent[4].recv(256).startswith(b"Xno ring within 1 s of connecting")
        assert time.monotonic() - t0 < 3
        ring, _, _ = ring_pair(1 << 12)
        assert register(f"{tmp_path / 'd.sock'}.ring", ring.fd)[:1] == b"A"  # a client that speaks is served
    finally:
        for s in silent:
            s.close()
        daemon.stop(grace_s=0.5)
        probe.stop()


def test_a_ring_cannot_bring_more_marks_than_the_daemon_holds_and_one_failure_drops_only_its_ring(tmp_path):
    from greenprobe.daemon import Daemon, Limits

    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock", limits=Limits(max_marks=100)).start()
    path = f"{tmp_path / 'd.sock'}.ring"
    try:
        big, _, _ = ring_pair(1 << 16)  # 300 marks written before the ring is handed over, then the client leaves
        for i in range(300):
            big.append(("m", 10 + i, 20 + i, 1, None, True))
        assert register(path, big.fd)[:1] == b"A"
        deadline = time.monotonic() + 10
        while big.drained < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (big.drained, big.refused) == (300, 300) and "--max-marks" in big.refused_why
        assert len(probe.marks()) == 0

        real, calls = daemon.servicer.record_columns, []

        def fails_once(table, names, *rest, **kw):
            calls.append(table.num_rows)
            if len(calls) == 1:
                raise RuntimeError("disk on fire")
            return real(table, names, *rest, **kw)

        daemon.servicer.record_columns = fails_once
        first, _, _ = ring_pair(1 << 12)
        first.append(("a", 10, 20, 1, None, True))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        socket.send_fds(s, [b"R"], [first.fd])
        said = b""
        while chunk := s.recv(512):  # until the daemon closes the connection
            said += chunk
        assert said[:1] == b"A" and b"Xring dropped: RuntimeError" in said  # this ring goes ...
        assert first.refused == 1 and "disk on fire" in first.refused_why
        second, _, _ = ring_pair(1 << 12)  # ... the thread serving every ring does not
        second.append(("b", 10, 20, 1, None, True))
        s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s2.settimeout(10)
        s2.connect(path)
        socket.send_fds(s2, [b"R"], [second.fd])
        assert s2.recv(64)[:1] == b"A"
        s2.sendall(b"F")
        assert s2.recv(1) == b"D" and second.drained == 1 and second.refused == 0
        assert [r[0] for r in probe.marks()] == ["b"]
        s.close()
        s2.close()
    finally:
        daemon.stop(grace_s=0.5)
        probe.stop()


# -- what one client's marks may cost the daemon ---------------------------------------------------
def test_a_mark_over_8_kib_of_attributes_as_json_goes_through_grpc_whole():
    ring, reader, fallback = ring_pair()
    fits = ("m", 10, 20, 1, {f"k{i}": "v" * 1024 for i in range(7)}, True)
    over = ("m", 10, 20, 1, {f"k{i}": "v" * 1024 for i in range(8)}, True)
    escaped = ("m", 10, 20, 1, {f"k{i}": "\u20ac" * 341 for i in range(4)}, True)  # 4 KiB of UTF-8, 8 KiB of JSON
    for record in (fits, over, escaped):
        ring.append(record)
    assert fallback == [over, escaped]
    cols = reader.drain(1)
    assert cols["start_ns"].size == 1 and json_of(cols, 0) == expected_json(fits[4], 1) and not cols["refused"]


def test_marks_held_are_capped_by_their_bytes_with_back_pressure_through_grpc_and_the_ring(tmp_path):
    import grpc

    from greenprobe.daemon import Daemon, Limits
    from greenprobe.parquet import PartWriter
    from greenprobe.v1 import probe_pb2_grpc as pb_grpc

    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock", limits=Limits(max_mark_bytes=250_000)).start()
    writer = PartWriter(probe, tmp_path / "out", metadata={})  # the daemon's writes, made here by hand
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))
    store = probe.marks_store
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        def batch(first):
            return mark_batch([("a", first + i, first + i + 1, 0, {"blob": "x" * 1000}, True) for i in range(150)])

        assert stub.RecordMarks(batch(1), timeout=10).accepted == 150
        held = store.memory_bytes()
        assert 150 * 1000 < held < 250_000  # 150 marks are far below --max-marks: their bytes count
        with pytest.raises(grpc.RpcError) as e:
            stub.RecordMarks(batch(1000), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, "back-pressure: the client keeps them and retries"
        assert "(244 KiB, --max-mark-bytes)" in e.value.details(), e.value.details()
        assert store.memory_marks() == 150 and store.memory_bytes() == held  # none of that batch

        # a ring drained while there is room: held, past the limit by that one drain at most
        ring, _, _ = ring_pair(1 << 20)
        for i in range(150):
            ring.append(("r", 10 + i, 20 + i, 1, {"blob": "x" * 1000}, True))
        s.settimeout(10)
        s.connect(f"{tmp_path / 'd.sock'}.ring")
        socket.send_fds(s, [b"R"], [ring.fd])
        assert s.recv(64)[:1] == b"A"
        s.sendall(b"F")
        assert s.recv(1) == b"D" and (ring.drained, ring.refused) == (150, 0)
        assert store.memory_bytes() > 250_000
        for i in range(10):  # then marks wait in the ring, none lost, until a write makes room
            ring.append(("r", 500 + i, 600 + i, 1, {"blob": "y"}, True))
        s.sendall(b"F")
        assert s.recv(1) == b"D" and ring.drained == 150
        gone, _, _ = ring_pair(1 << 16)  # a client that hands its ring over and leaves cannot wait: refused
        gone.append(("g", 1, 2, 1, {"blob": "z" * 100}, True))
        assert register(f"{tmp_path / 'd.sock'}.ring", gone.fd)[:1] == b"A"
        deadline = time.monotonic() + 10
        while gone.drained < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gone.refused == 1 and "--max-mark-bytes" in gone.refused_why, gone.refused_why
        writer.flush()
        store.forget()
        assert store.memory_bytes() == 0
        s.sendall(b"F")
        assert s.recv(1) == b"D" and (ring.drained, ring.refused) == (160, 0)
        assert stub.RecordMarks(batch(1000), timeout=10).accepted == 150  # the client's retry
        assert len(store) == 150 + 150 + 10 + 150
    finally:
        s.close()
        daemon.stop(grace_s=0.5)
        probe.stop()


def test_one_rings_backlog_is_drained_in_turns_so_another_clients_flush_is_not_held_up(tmp_path, monkeypatch):
    from greenprobe.daemon import Daemon, rings

    monkeypatch.setattr(rings, "DRAIN_BUDGET_BYTES", 4096)  # ~60 small marks a turn
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock").start()
    sizes, real = [], daemon.servicer.record_columns

    def spy(table, names, *rest, **kw):
        sizes.append((table.column("label")[0].as_py(), table.num_rows))
        return real(table, names, *rest, **kw)

    daemon.servicer.record_columns = spy
    path = f"{tmp_path / 'd.sock'}.ring"
    conns = []
    try:
        big, _, _ = ring_pair(1 << 20)
        for i in range(12_000):
            big.append(("big", 10 + i, 20 + i, 1, {"i": i}, True))
        small, _, _ = ring_pair(1 << 12)
        for ring in (big, small):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(path)
            socket.send_fds(s, [b"R"], [ring.fd])
            assert s.recv(64)[:1] == b"A"
            conns.append(s)
        small.append(("small", 5, 6, 1, None, True))
        conns[1].sendall(b"F")
        assert conns[1].recv(1) == b"D" and small.drained == 1
        assert big.drained < 12_000, "the big ring's backlog went first, whole"
        deadline = time.monotonic() + 60
        while big.drained < 12_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert big.drained == 12_000 and big.refused == 0
        big_drains = [n for label, n in sizes if label == "big"]
        assert len(big_drains) > 12_000 // 100 and max(big_drains) <= 4096 // 56  # 56-byte frames
        numbers = [json.loads(a)["i"] for a in probe.marks_store.table().column("attrs").to_pylist() if '"i"' in a]
        assert numbers == list(range(12_000)), "every mark once, in order"
    finally:
        for s in conns:
            s.close()
        daemon.stop(grace_s=0.5)
        probe.stop()


OUTLIVED = """
import os, socket, sys, time
from greenprobe import _core
ring = _core.MarkRing(1 << 16, [])
ring.attached = True
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
socket.send_fds(s, [b"R"], [ring.fd])
assert s.recv(64)[:1] == b"A"
ring.append(("parent", 10, 20, 1, None, True))
if os.fork() == 0:  # the child keeps the parent's connection and ring, and writes on after it exits
    time.sleep(2.5)  # the daemon's ring thread sees the exit within 20 ms when idle
    for i in range(5):
        ring.append(("orphan", 30 + i, 40 + i, 1, None, True))
    time.sleep(1.0)  # ten of its 0.2 s drains, had the ring stayed
    print(ring.pushed, ring.drained, flush=True)
    os._exit(0)
os._exit(0)
"""


def _pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
        return True
    except (AttributeError, OSError):  # Linux < 5.3, gVisor: the ring goes when its connection ends
        return False


@pytest.mark.skipif(not _pidfd_works(), reason="no pidfd on this kernel")
@pytest.mark.parametrize("how", ["SO_PEERPIDFD", "pidfd_open"])
def test_a_ring_goes_when_the_process_that_registered_it_exits_though_a_child_keeps_its_connection(
        tmp_path, monkeypatch, how):
    from greenprobe.daemon import Daemon, rings

    if how == "pidfd_open":  # a kernel before 6.5: the pidfd opened by the pid SO_PEERCRED gives
        monkeypatch.setattr(rings, "SO_PEERPIDFD", -1)

    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock").start()
    try:
        r = subprocess.run([sys.executable, "-c", OUTLIVED, f"{tmp_path / 'd.sock'}.ring"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["6", "1"]  # run() returned once the child closed its output too
        labels = [m[0] for m in probe.marks()]
        assert labels == ["parent"], "the parent's mark, held; none under its pid once it is gone"
        assert not daemon.rings.sessions
    finally:
        daemon.stop(grace_s=0.5)
        probe.stop()


def test_a_resent_batch_keeps_only_its_new_marks_bytes(tmp_path):
    import grpc

    from greenprobe.daemon import Daemon
    from greenprobe.v1 import probe_pb2_grpc as pb_grpc

    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock").start()
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))
    store = probe.marks_store
    try:
        def batch(n):  # the same sender from sequence number 1: a resend of the first 1,000 and n - 1,000 new
            return mark_batch([("a", 1 + i, 2 + i, 0, {"blob": "x" * 1000, "i": i}, True) for i in range(n)],
                              sender_id=77, first_seq=1)

        assert stub.RecordMarks(batch(1000), timeout=10).accepted == 1000
        first = store.memory_bytes()
        assert stub.RecordMarks(batch(1001), timeout=10).accepted == 1001
        assert len(store) == 1001 and store.memory_bytes() < first * 1.01
        # what memory really holds, not only what the rows say: no 1 MB batch kept for its one new mark
        held = sum(t.get_total_buffer_size() for t in store._pending + store._chunks)
        assert held < first * 1.1, (held, first)
    finally:
        daemon.stop(grace_s=0.5)
        probe.stop()


def test_a_forced_drain_ends_though_the_client_writes_on(tmp_path):
    """The last drain of a client that left takes what its ring held then: a process that keeps the
    mapping and writes as fast as the daemon reads cannot keep the thread that serves every ring."""
    from types import SimpleNamespace

    from greenprobe.daemon import rings

    class Endless:  # a ring refilled as fast as it is read
        capacity, pending_bytes, calls, released = 1 << 22, 4 << 20, 0, 0

        def drain(self, pid, max_bytes):
            self.calls += 1
            return {"start_ns": np.zeros(0, np.int64), "end_position": 8 * self.calls}

        def release(self, position):
            self.released = position

    intake = rings.RingIntake(tmp_path / "r.sock", SimpleNamespace(ring_room=lambda owner=None: 1, backlog=None,
                                                                   durable_index=lambda: 0), None, 1, 1)
    client = rings._Client(conn=None, pid=1, uid=0, reader=Endless())
    intake._drain(client, force=True)
    assert client.reader.calls == 2 * (4 << 20) // rings.DRAIN_BUDGET_BYTES + 2 and client.more
    client.reader.calls = 0
    intake._drain(client)  # an ordinary drain: one budget's worth, the rest at its next turn
    assert client.reader.calls == 1 and client.more
    intake._sel.close()
