"""The stores that keep a daemon's memory bounded: what is written as parts and forgotten is read
back exactly, once, in order; memory holds only the recent window."""

from __future__ import annotations

import time
from types import SimpleNamespace

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest

import greenprobe
from greenprobe.parquet import PartWriter
from greenprobe.store import SEAL_MARKS, MarkStore, Part, SampleStore
from greenprobe.v1 import probe_pb2 as pb
from greenprobe.v1 import probe_pb2_grpc as pb_grpc
from test_daemon import start_daemon, stop_daemon


def chunk(rng, t0: int, n: int, channels=(0, 1, 2)) -> tuple:
    """n samples from t0 on, 1 ms apart, channels interleaved, values that identify the row."""
    t = t0 + np.arange(n, dtype=np.int64) * 1_000_000 + rng.integers(0, 1000, n)
    ch = np.array([channels[i % len(channels)] for i in range(n)], np.uint32)
    return (t, t - 1_000_000, t.astype(np.float64) * 1e-9, ch, np.full(n, 1, np.uint32))


def stores():
    """What PartWriter reads of a Probe: its two stores, and which channels read power (channel 1)."""
    return SimpleNamespace(samples_store=SampleStore(), marks_store=MarkStore(),
                           channel_info=lambda: [{"channel": 0, "quantity": "energy"}, {"channel": 1, "quantity": "power"}])


def test_samples_written_and_forgotten_are_read_back_exactly_once(tmp_path):
    rng = np.random.default_rng(7)
    probe = stores()
    writer = PartWriter(probe, tmp_path, metadata={})
    truth = []
    t0 = 1_000_000_000
    for k in range(12):  # 12 flushes of 3 drained chunks each: 36 s of samples at 1 kHz
        for j in range(3):
            c = chunk(rng, t0 + (3 * k + j) * 1_000_000_000, 1000)
            probe.samples_store.append(c)
            truth.append(c)
        writer.flush()
        writer_keep_before = t0 + (3 * k - 6) * 1_000_000_000  # keep the last ~9 s in memory
        probe.samples_store.forget(writer_keep_before)
    full = tuple(np.concatenate([c[i] for c in truth]) for i in range(5))
    assert probe.samples_store.memory_rows() < 10_000 < len(probe.samples_store) == full[0].size
    got = probe.samples_store.columns()
    for a, b in zip(got, full):
        np.testing.assert_array_equal(a, b)  # arrival order, no row twice, none missing
    a, b = t0 + 5_500_000_000, t0 + 31_200_000_000  # a window across forgotten and kept rows
    got = probe.samples_store.columns(a, b)
    keep = (full[0] >= a) & (full[0] <= b)
    for x, y in zip(got, full):
        np.testing.assert_array_equal(x, y[keep])
    tail = probe.samples_store.columns(from_index=30_000)
    np.testing.assert_array_equal(tail[0], full[0][30_000:])
    assert probe.samples_store.first_reading(1) == (int(full[0][1]), float(full[2][1]))
    # the parts name their units: joules of the counter (channel 0), watts of the power readings (1)
    part = pq.read_table(tmp_path / "parts" / "samples" / "part-00000001.parquet").to_pydict()
    assert "value" not in part and set(part) == {"t_ns", "prev_t_ns", "channel", "energy_j", "power_w", "flags"}
    for c, e, w in zip(part["channel"], part["energy_j"], part["power_w"]):
        assert (e is None) == (c == 1) and (w is None) == (c != 1)


def test_a_part_out_of_order_is_refused():
    store = SampleStore()
    store.spilled(Part("a", 0, 10, 0, 1))
    with pytest.raises(ValueError, match="starts at row 11, the parts so far end at 10"):
        store.spilled(Part("b", 11, 20, 0, 1))


def test_marks_in_columns_round_trip_through_parts(tmp_path):
    probe = stores()
    writer = PartWriter(probe, tmp_path, metadata={})
    expected = []
    for k in range(5):
        batch = [("infer" if i % 3 else "step", 10 + i, 20 + i, 2 ** 64 - 1 - i, {"i": i, "k": k} if i % 2 else None,
                  i % 5 != 0) for i in range(k * 1000, (k + 1) * 1000)]
        probe.marks_store.extend(batch)
        single = ("one", 5, 6, 1, {"x": [1, 2]}, True)  # what the C mark sink appends
        probe.marks_store.append(single)
        expected += batch + [single]
        writer.flush()
        assert probe.marks_store.memory_bytes() > 1000 * 8 * 3  # three int columns alone
        probe.marks_store.forget()
        assert probe.marks_store.memory_marks() == 0 and probe.marks_store.memory_bytes() == 0
    assert probe.marks_store.snapshot() == expected
    assert probe.marks_store.snapshot(2500) == expected[2500:]
    assert len(probe.marks_store) == len(expected) and probe.marks_store.max_end_ns() == 5019
    parts = pq.read_table(tmp_path / "parts" / "marks")
    assert parts.num_rows == len(expected)


def test_a_daemon_with_a_short_memory_answers_about_its_whole_run(tmp_path):
    """--memory-s 0.5: older samples and every written mark leave memory; Energy about an old
    interval, the status count, the label summary and the intervals table still cover all of it."""
    proc, address, sock, out = start_daemon(tmp_path, "--flush-s", "0.2", "--memory-s", "0.5",
                                            sensors="synthetic:waveform=constant;base_w=40")
    try:
        remote = greenprobe.connect(address)
        t_old = time.monotonic_ns()
        time.sleep(0.3)
        for i in range(200):
            remote.add_mark("early", t_old + i * 1_000_000, t_old + i * 1_000_000 + 500_000, i=i)
        remote.flush()
        time.sleep(2.5)  # several flushes: the early samples and marks are on disk only now
        e = {r["domain"]: r for r in remote.energy(t_old, t_old + 200_000_000)}["synthetic0"]
        assert e["energy_j_low"] <= 40 * 0.2 <= e["energy_j_high"] and abs(e["energy_j"] - 8.0) < 0.1
        assert remote.mark_count() == 200
        (row,) = [r for r in remote.summary() if r["label"] == "early" and r["sensor"] != "all"]
        assert row["calls"] == 200 and abs(row["energy_j_per_call"] - 40 * 0.5e-3) < 2e-3
        table = remote.intervals()
        assert sorted(table.column("i").to_pylist()) == list(range(200))
        stub = pb_grpc.ProbeStub(grpc.insecure_channel(f"unix:{sock}"))
        n_old = sum(len(b.t_ns) for b in _first_batches(stub, t_old))
        assert n_old > 100, "a stream from the past reads the parts"
    finally:
        stop_daemon(proc)  # kills a daemon that hangs, and fails the test with its output
    (run,) = out.glob("run-*")
    assert pq.read_table(run / "intervals.parquet").num_rows == 200


def _first_batches(stub, since_ns):
    stream = stub.StreamSamples(pb.StreamSamplesRequest(since_ns=since_ns, max_batch=100_000), timeout=10)
    try:
        yield next(stream)
    finally:
        stream.cancel()


def test_the_daemons_flush_loop_keeps_memory_to_the_window(tmp_path):
    import threading

    from greenprobe.daemon.server import _flush_loop

    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    writer = PartWriter(probe, tmp_path)
    done = threading.Event()
    loop = threading.Thread(target=_flush_loop, args=(writer, done, 0.1, 300_000_000))
    loop.start()
    try:
        for i in range(1000):
            probe.add_mark("m", 1 + i, 2 + i)
        time.sleep(2.0)
        held, total = probe.samples_store.memory_rows(), len(probe.samples_store)
        assert total > 1500 and held < 0.35 * total, (held, total)  # ~0.3-0.4 s of ~2 s kept
        assert probe.marks_store.memory_marks() == 0 and len(probe.marks()) == 1000
    finally:
        done.set()
        loop.join()
        probe.stop()


def test_nothing_outside_the_probe_reads_its_private_data():
    """The daemon, the writers and the study read a session through Probe's public surface
    (samples_store, marks_store, channel_info, sensor_info, clock_anchor, marks_since, settle)."""
    import re
    from pathlib import Path

    import greenprobe

    private = re.compile(r"\b(?:probe|p)\._(?:records|samples|channels|anchor|sensor_info|columns|settle|sampler)\b")
    root = Path(greenprobe.__file__).parent
    pokes = [f"{f.relative_to(root)}:{n}: {line.strip()}" for f in sorted(root.rglob("*.py")) if f.name != "session.py"
             for n, line in enumerate(f.read_text().splitlines(), 1) if private.search(line)]
    assert not pokes, "\n".join(pokes)


def test_parts_merged_as_the_run_goes_answer_every_query_the_same(tmp_path):
    import shutil
    import threading

    import pyarrow as pa

    from greenprobe.daemon.rings import columns_table  # a ring's drain: marks arriving as a table
    from greenprobe.parquet import read_parts

    rng = np.random.default_rng(11)
    probe = stores()
    writer = PartWriter(probe, tmp_path, metadata={})
    truth, marks = [], []
    t0 = 1_000_000_000
    errors, reading = [], threading.Event()

    def reader():  # queries that race the merges: each must see every row once
        while not reading.is_set():
            try:
                n = len(probe.samples_store)
                got = probe.samples_store.columns()[0][:n]
                want = np.concatenate([c[0] for c in truth])[:n] if truth else got
                if not np.array_equal(got, want):
                    errors.append("samples differ")
                assert len(probe.marks_store.snapshot()) >= 0
            except Exception as e:  # noqa: BLE001 - every failure is the test's to report
                errors.append(repr(e))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for k in range(40):  # 40 flushes; memory keeps ~6 s; every 8 forgotten parts become one file
            c = chunk(rng, t0 + k * 1_000_000_000, 1000)
            truth.append(c)
            probe.samples_store.append(c)
            batch = [("step", 10 + i, 20 + i, 3, {"i": i}, True) for i in range(k * 50, k * 50 + 25)]
            probe.marks_store.extend(batch)
            cols = {"labels": ["infer"], "label_index": np.zeros(25, np.int32),
                    "start_ns": np.arange(25, dtype=np.int64) + 100 + k, "end_ns": np.arange(25, dtype=np.int64) + 200,
                    "thread_id": np.full(25, 4, np.uint64), "ok": np.ones(25, bool),
                    "attrs_data": b"".join(b'{"j":%d}' % (k * 25 + j) for j in range(25)),
                    "attrs_offsets": np.cumsum([0] + [len(b'{"j":%d}' % (k * 25 + j)) for j in range(25)]).astype(np.int32)}
            probe.marks_store.extend_table(columns_table(cols), 224)
            marks += batch + [("infer", 100 + k + j, 200 + j, 4, {"j": k * 25 + j}, True) for j in range(25)]
            writer.flush()
            probe.marks_store.forget()  # every written mark; samples: the last ~6 s stay
            probe.samples_store.forget(t0 + (k - 6) * 1_000_000_000)
            writer.compact(8)
    finally:
        reading.set()
        thread.join()
    assert not errors, errors[:3]
    files = sorted(p.name for p in (tmp_path / "parts" / "samples").iterdir())
    assert "part-00000001-00000008.parquet" in files and "part-00000025-00000032.parquet" in files
    assert "part-00000001.parquet" not in files and "part-00000040.parquet" in files
    assert len(files) < 14 and len(probe.samples_store._parts) == len(files)
    assert len(list((tmp_path / "parts" / "marks").iterdir())) <= 5 + 1  # all written: merged but the last few
    full = tuple(np.concatenate([c[i] for c in truth]) for i in range(5))
    for a, b in zip(probe.samples_store.columns(), full):
        np.testing.assert_array_equal(a, b)
    a, b = t0 + 3_300_000_000, t0 + 27_800_000_000  # across merged files and memory
    keep = (full[0] >= a) & (full[0] <= b)
    for x, y in zip(probe.samples_store.columns(a, b), full):
        np.testing.assert_array_equal(x, y[keep])
    np.testing.assert_array_equal(probe.samples_store.columns(from_index=12_345)[0], full[0][12_345:])
    assert probe.marks_store.snapshot() == marks
    assert probe.marks_store.snapshot(777) == marks[777:]

    # a crash between a merge's rename and the originals' removal leaves rows twice in the folder:
    # read_parts reads each once (pyarrow's folder read would not)
    folder = tmp_path / "parts" / "samples"
    pq.write_table(pq.read_table(folder / "part-00000001-00000008.parquet").slice(0, 1000),
                   folder / "part-00000003.parquet")
    assert pq.read_table(folder).num_rows == full[0].size + 1000
    got = read_parts(folder)
    assert got.num_rows == full[0].size
    np.testing.assert_array_equal(got.column("t_ns").to_numpy(), full[0])
    assert read_parts(tmp_path / "parts" / "marks").num_rows == len(marks)
    assert isinstance(got, pa.Table)
    shutil.rmtree(tmp_path / "parts")


def test_a_query_whose_parts_are_merged_under_it_reads_the_merged_file(tmp_path, monkeypatch):
    import greenprobe.store as store_mod

    rng = np.random.default_rng(5)
    probe = stores()
    writer = PartWriter(probe, tmp_path, metadata={})
    truth = []
    for k in range(8):
        c = chunk(rng, 1_000_000_000 + k * 1_000_000_000, 500)
        truth.append(c)
        probe.samples_store.append(c)
        writer.flush()
    probe.samples_store.forget(10 ** 12)  # all of it on disk only
    real, calls = store_mod.read_samples, []

    def merge_first(path):  # the merge lands between the query's look at the index and its read
        calls.append(path)
        if len(calls) == 1:
            assert writer.compact(8) == 7
        return real(path)

    monkeypatch.setattr(store_mod, "read_samples", merge_first)
    got = probe.samples_store.columns()
    np.testing.assert_array_equal(got[0], np.concatenate([c[0] for c in truth]))
    assert calls[0].endswith("part-00000001.parquet") and calls[-1].endswith("part-00000001-00000008.parquet")


def test_marks_appended_one_way_and_drained_the_other_are_gathered_in_arrival_order(tmp_path):
    from greenprobe.daemon.rings import columns_table
    from greenprobe.store import SEAL_MARKS

    store = MarkStore()
    expected = []
    for k in range(3):  # gRPC batches (records) and ring drains (tables) in turn
        batch = [("grpc", 10 + i, 20 + i, 1, {"k": k}, True) for i in range(SEAL_MARKS // 2)]
        store.extend(batch)
        expected += batch
        cols = {"labels": ["ring"], "label_index": np.zeros(3, np.int32), "start_ns": np.arange(3, dtype=np.int64) + 1,
                "end_ns": np.arange(3, dtype=np.int64) + 2, "thread_id": np.zeros(3, np.uint64), "ok": np.ones(3, bool),
                "attrs_data": b'{"r":0}{"r":1}{"r":2}', "attrs_offsets": np.array([0, 7, 14, 21], np.int32)}
        store.extend_table(columns_table(cols), 4)
        expected += [("ring", 1 + j, 2 + j, 0, {"r": j}, True) for j in range(3)]
    # the records moved into the pending tables count: they are gathered once SEAL_MARKS are waiting
    assert len(store._chunks) >= 1 and store._pending_rows < SEAL_MARKS
    assert store.snapshot() == expected and len(store) == len(expected)


def test_the_bytes_of_marks_in_memory_follow_their_attributes():
    store = stores().marks_store
    store.extend([("m", 1 + i, 2 + i, 0, {"blob": "x" * 1000}, True) for i in range(100)])
    big = store.memory_bytes()
    assert 100 * 1000 < big < 100 * 1200  # the attributes' text, and a little for the other columns
    store.extend([("m", 1 + i, 2 + i, 0, None, True) for i in range(100)])
    assert big < store.memory_bytes() < big + 100 * 64
    for i in range(SEAL_MARKS):  # single marks count once gathered into columns
        store.append(("s", 1 + i, 2 + i, 0, {"k": "v" * 10}, True))
    assert store.memory_bytes() > big + SEAL_MARKS * 10


@pytest.mark.parametrize("ring", ["1", "0"])
def test_the_flush_loop_writes_early_when_marks_held_near_their_byte_limit(tmp_path, monkeypatch, ring):
    import threading

    from greenprobe.daemon import Daemon, Limits
    from greenprobe.daemon.server import _flush_loop

    monkeypatch.setenv("GREENPROBE_MARK_RING", "" if ring == "1" else "0")
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    daemon = Daemon(probe, tmp_path / "d.sock", limits=Limits(max_mark_bytes=1_000_000)).start()
    writer = PartWriter(probe, tmp_path / "out")
    daemon.servicer.backlog = writer.pending_marks
    done = threading.Event()
    loop = threading.Thread(target=_flush_loop, args=(writer, done, 60.0, 300_000_000, 0, daemon.servicer.write_soon))
    loop.start()
    remote = greenprobe.connect(f"unix:{tmp_path / 'd.sock'}")
    try:
        t0 = time.monotonic()
        now = time.monotonic_ns()
        for i in range(4500):  # ~4.7 MB of marks against a 1 MB limit; the writer's tick is a minute away
            remote.add_mark("m", now + i, now + i + 1, i=i, blob="x" * 1000)
            if i % 500 == 499:
                remote.flush()
        remote.flush()
        assert time.monotonic() - t0 < 30
        assert writer.parts >= 4 and remote._sender.refused == 0
        assert sorted(r[4]["i"] for r in probe.marks()) == list(range(4500))
    finally:
        remote.close()
        done.set()
        daemon.servicer.write_soon.set()
        loop.join()
        daemon.stop(grace_s=0.5)
        probe.stop()
