"""Marks: same clock as the samples, thread-safe, nesting, decorator, attributes, sync."""

from __future__ import annotations

import threading
import time

import pytest

import greenprobe


def synthetic(**extra):
    opts = {"waveform": "constant", "base_w": 10, "update_us": 1000, **extra}
    return ["synthetic:" + ";".join(f"{k}={v}" for k, v in opts.items())]


def test_now_ns_is_the_monotonic_clock():
    a = time.monotonic_ns()
    b = greenprobe.now_ns()
    c = time.monotonic_ns()
    assert a <= b <= c


def test_samples_and_marks_share_one_clock():
    # record_all: every 200 µs poll is kept (by default only the 1 ms updates are, and a late wake-up
    # that merges two of them left 19 in a 20 ms mark on a loaded CI machine)
    with greenprobe.Probe(sensors=synthetic(), period_us=200, record_all=True) as probe:
        with greenprobe.mark("x"):
            time.sleep(0.02)
    (label, start, end, *_), = probe.marks()
    t = probe.samples().column("t_ns").to_numpy()
    inside = (t >= start) & (t <= end)
    assert inside.sum() >= 20, "a 20 ms mark must contain the 200 µs polls taken during it"


def test_mark_nests_and_records_attributes_and_failures():
    with greenprobe.Probe(sensors=synthetic(), period_us=500) as probe:
        with greenprobe.mark("outer", runtime="torch", batch=64):
            with greenprobe.mark("inner"):
                time.sleep(0.001)
        with pytest.raises(ValueError):
            with greenprobe.mark("fails"):
                raise ValueError("boom")
    marks = {m[0]: m for m in probe.marks()}
    assert marks["outer"][1] <= marks["inner"][1] <= marks["inner"][2] <= marks["outer"][2]
    assert marks["outer"][4] == {"runtime": "torch", "batch": 64}
    assert marks["fails"][5] is False and marks["outer"][5] is True
    table = probe.intervals()
    assert {"runtime", "batch"} <= set(table.column_names)
    rows = {r["label"]: r for r in table.to_pylist()}
    assert rows["outer"]["runtime"] == "torch" and rows["outer"]["batch"] == 64
    assert rows["inner"]["runtime"] is None


def test_decorator_marks_every_call_and_keeps_the_function():
    @greenprobe.mark("step", phase="decode")
    def step(x):
        """doc"""
        return x * 2

    with greenprobe.Probe(sensors=synthetic(), period_us=500) as probe:
        assert [step(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert step.__name__ == "step" and step.__doc__ == "doc"
    assert [m[0] for m in probe.marks()] == ["step"] * 5
    assert all(m[4] == {"phase": "decode"} for m in probe.marks())


def test_marks_from_many_threads_are_all_kept():
    n_threads, per_thread = 8, 500
    with greenprobe.Probe(sensors=synthetic(), period_us=1000) as probe:
        alive = threading.Barrier(n_threads)  # keep every thread alive so that their ids differ

        def work():
            alive.wait()
            for _ in range(per_thread):
                with greenprobe.mark("t"):
                    pass
            alive.wait()

        threads = [threading.Thread(target=work) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    marks = probe.marks()
    assert len(marks) == n_threads * per_thread
    assert len({m[3] for m in marks}) == n_threads
    assert all(m[1] <= m[2] for m in marks)


def test_sync_is_called_at_both_ends():
    calls = []
    with greenprobe.Probe(sensors=synthetic(), period_us=1000):
        with greenprobe.mark("gpu", sync=lambda: calls.append(time.monotonic_ns())):
            calls.append("body")
    assert len(calls) == 3 and calls[1] == "body"


def test_mark_without_probe_warns_once():
    import greenprobe.marks as marks_mod

    marks_mod._warned = False
    with pytest.warns(RuntimeWarning, match="no active Probe"):
        with greenprobe.mark("lonely"):
            pass


def test_bad_label_is_rejected():
    with pytest.raises(TypeError):
        greenprobe.mark("")
