"""Shared helpers: run marked intervals and compare attributed energy with the exact truth."""

from __future__ import annotations

import os
import time

import numpy as np

import greenprobe


def busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def run_marks(label: str, count: int, duration_s: float, gap_s: float, busy: bool = False) -> None:
    for i in range(count):
        with greenprobe.mark(label, i=i):
            (busy_wait if busy else time.sleep)(duration_s)
        time.sleep(gap_s)


def writer_stalls(log, period_ns: int, factor: float = 1.5, jitter: float = 0.25) -> list[tuple[int, int]]:
    """Windows where a stand-in writer did not tick like a sensor (descheduled on a loaded machine):
    a gap over ``factor`` periods, a tick more than ``jitter`` of a period off its cadence (the
    value it wrote is the energy at its late instant, while a sensor's update lands on its
    lattice), or a value that became visible more than ``jitter`` of a period after its instant.

    Inside one, the stand-in did not behave like a sensor with a regular update period, so the
    exact energy at a mark's edge is not what a regular sensor would have let anyone recover.
    """
    t = np.array([row[0] for row in log], dtype=np.int64)
    written = np.array([row[2] for row in log], dtype=np.int64)
    gaps = np.diff(t)
    odd = (gaps > factor * period_ns) | (np.abs(gaps - period_ns) > jitter * period_ns)
    out = [(int(t[i]), int(t[i + 1])) for i in np.flatnonzero(odd)]
    slow = np.flatnonzero(written - t > jitter * period_ns)
    out += [(int(t[i]), int(written[i]) + period_ns) for i in slow]
    return out


def compare(probe, label: str, truth_by_domain: dict, sensor: str | None = None, stalls=()):
    """Returns {domain: (attributed, true, low, high) arrays} for the intervals with this label.

    Intervals with an edge inside a stand-in stall (see writer_stalls), and intervals across a
    counter step the sampler excluded (counter_glitch: their energy is unknown, their bounds null),
    are left out; at most a third may be, or the run says nothing and fails.
    """
    rows = [r for r in probe.intervals().to_pylist() if r["label"] == label and (sensor is None or r["sensor"] == sensor)]

    def stalled(r):
        if r.get("counter_glitch"):
            return True
        return any(a <= edge <= b for a, b in stalls for edge in (r["start_ns"], r["end_ns"]))

    out = {}
    for domain, wave in truth_by_domain.items():
        mine = [r for r in rows if r["domain"] == domain]
        assert mine, f"no interval rows for domain {domain}"
        kept = [r for r in mine if not stalled(r)]
        assert len(kept) >= 2 * len(mine) / 3, f"{domain}: the stand-in stalled at {len(mine) - len(kept)} edges"
        est = np.array([r["energy_j"] for r in kept])
        true = np.array([wave.energy_between(r["start_ns"], r["end_ns"]) for r in kept])
        low = np.array([r["energy_j_low"] for r in kept])
        high = np.array([r["energy_j_high"] for r in kept])
        out[domain] = (est, true, low, high)
    return out


def assert_accuracy(results: dict, per_interval_rel: float | None = None, summed_rel: float | None = None):
    for domain, (est, true, low, high) in results.items():
        rel = np.abs(est - true) / true
        if per_interval_rel is not None:
            assert rel.max() <= per_interval_rel, f"{domain}: worst interval error {rel.max():.4%}"
        if summed_rel is not None:
            total = abs(est.sum() - true.sum()) / true.sum()
            assert total <= summed_rel, f"{domain}: summed error {total:.4%}"
        # the resolution bounds are hard bounds: the truth must lie inside (1 µJ slack for float rounding)
        outside = (true < low - 1e-6) | (true > high + 1e-6)
        assert not outside.any(), f"{domain}: truth outside bounds for {outside.sum()} of {outside.size} intervals"


def open_as_nobody(sensors: list, **options) -> str:
    """Opens a Probe in a forked child that drops root (so that file modes are enforced: the tests
    run as root) and says how it went: "OPENED", "PERMISSION <message>\n<fix>", or "OTHER ..."."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, try to open, report through the pipe
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                greenprobe.Probe(sensors=sensors, **options).start()
                msg = "OPENED"
            except greenprobe.SensorPermissionError as e:
                msg = "PERMISSION " + e.message + "\n" + e.fix
            except BaseException as e:  # noqa: BLE001
                msg = f"OTHER {type(e).__name__}: {e}"
            os.write(write_end, msg.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def mark_batch(records=(), *, pid: int = 1, sender_id: int = 0, first_seq: int = 0, frames: bytes = b""):
    """A RecordMarks batch of mark records (label, start_ns, end_ns, thread_id, attrs, ok), framed as
    the daemon takes them (greenprobe.frames, which checks no limit: a bad mark reaches the daemon),
    then ``frames`` as they are (hand-made bytes)."""
    from greenprobe.frames import frame
    from greenprobe.v1 import probe_pb2 as pb

    msg = pb.MarkBatch()
    msg.columns.frames = b"".join(frame(tuple(r)) for r in records) + frames
    msg.columns.pid, msg.columns.sender_id, msg.columns.first_seq = pid, sender_id, first_seq
    return msg


def own_channel(address: str):
    """A gRPC channel to a local daemon whose calls name their caller, as a greenprobe client's do (a
    session from the ring socket, daemon/identity.py): the raw calls of this process's user (root
    here: an admin, who sees every owner's marks). A bare grpc channel is an unverified caller."""
    from greenprobe.client import _channel
    from greenprobe.ring_client import IdentityLink, ring_socket

    link = IdentityLink(ring_socket(address))
    assert link.session_metadata(wait_s=5), f"no session from {address}: {link.refused_why or link.last_error}"
    channel = _channel(address, None, session=lambda: link.session_metadata(wait_s=0))
    channel.identity_link = link  # lives as long as the channel
    return channel
