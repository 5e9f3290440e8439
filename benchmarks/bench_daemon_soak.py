"""Soak: does the daemon's memory stay flat however long it runs and however many marks it takes?

    PYTHONPATH=python .venv/bin/python benchmarks/bench_daemon_soak.py [--marks 10000000] [--hours 24]
                                                                       [--transport grpc|ring]

Part 1, marks: a real `greenprobe daemon --out` (synthetic sensor at 1 kHz, parts every 2 s) takes
``--marks`` marks, each with two attributes, as fast as one client sends them: ``grpc`` over its
Unix socket in columnar batches of 10,000; ``ring`` from a client process marking with
``greenprobe.mark`` into its shared-memory ring, 150,000 a second. Its resident memory is read from /proc every half
second against the marks it holds.

Part 2, a simulated day of samples: the daemon's own sample store and part writer, fed ``--hours``
of one 1 kHz channel in 2-second drains (the sampler's drain), a part written per drain and memory
kept to the last 300 s and every 1,800 parts merged into one file (an hour's, --compact-s 3600) as
the daemon does, as fast as the machine goes; resident memory per simulated hour, and an energy
query about the first hour at the end (read back from the merged parts).

Flat means: the peak after warm-up (the first 10 %) minus the resident memory at warm-up.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

BATCH = 10_000
RING_RATE = 150_000  # marks/s from the ring client: what the daemon's writes keep up with (--max-backlog 500k per 2 s
                     # flush); a client that marks faster fills its ring, then its gRPC buffer, and drops (counted)


def rss(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flatness(points: list[tuple[float, int]]) -> tuple[int, int]:
    """(resident memory at warm-up, peak after it minus that)."""
    warm = points[max(len(points) // 10, 1) - 1][1]
    return warm, max(r for _, r in points[len(points) // 10:]) - warm


RING_CLIENT = """
import sys, time, greenprobe
from greenprobe.client import default_remote
n, rate, mark = int(sys.argv[1]), float(sys.argv[2]), greenprobe.mark
t0 = time.monotonic()
for i in range(n):
    with mark("soak", i=i, who="soak"):
        pass
    if i % 1000 == 999:  # paced in blocks of 1,000 marks
        wait = t0 + (i + 1) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
remote = default_remote()
remote.flush()
print(remote.mark_sink.pushed, remote.mark_sink.fell_back)
"""


def _ring_marks(n_marks, daemon, sock, ready, grpc, pb, pb_grpc) -> dict:
    while not ready.exists():
        time.sleep(0.05)
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(f"unix:{sock}"))
    cpu0, t0 = cpu_s(daemon.pid), time.monotonic()
    client = subprocess.Popen([sys.executable, "-c", RING_CLIENT, str(n_marks), str(RING_RATE)], stdout=subprocess.PIPE,
                              text=True,
                              env=dict(os.environ, GREENPROBE_DAEMON=f"unix:{sock}"))
    points = []
    while client.poll() is None:
        points.append((stub.Status(pb.StatusRequest(), timeout=30).marks, rss(daemon.pid)))
        time.sleep(0.5)
    wall = time.monotonic() - t0
    pushed, fell_back = map(int, client.stdout.read().split())
    held = stub.Status(pb.StatusRequest(), timeout=30).marks
    points.append((held, rss(daemon.pid)))
    cpu = cpu_s(daemon.pid) - cpu0
    warm, growth = flatness(points)
    return {"marks": n_marks, "held": held, "wall_s": wall, "retries": fell_back, "cpu_s": cpu, "warm_rss": warm,
            "growth": growth, "final_rss": points[-1][1], "points": points, "ring": pushed}


def soak_marks(n_marks: int, work: Path, transport: str = "grpc") -> dict:
    import grpc

    from greenprobe.v1 import probe_pb2 as pb
    from greenprobe.v1 import probe_pb2_grpc as pb_grpc

    sock, ready = work / "d.sock", work / "ready"
    daemon = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", "synthetic", "--socket",
                               str(sock), "--ready-file", str(ready), "--out", str(work / "out"), "--flush-s", "2"],
                              stderr=subprocess.DEVNULL)
    try:
        send = _ring_marks if transport == "ring" else _send_marks
        return send(n_marks, daemon, sock, ready, grpc, pb, pb_grpc)
    finally:  # a failed run must not leave its daemon behind
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=600)


def _send_marks(n_marks, daemon, sock, ready, grpc, pb, pb_grpc) -> dict:
    while not ready.exists():
        time.sleep(0.05)
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(f"unix:{sock}"))
    t = time.monotonic_ns()
    from greenprobe.frames import encode

    points, sent, retries = [], 0, 0
    cpu0, t0, last = cpu_s(daemon.pid), time.monotonic(), 0.0
    sender = int.from_bytes(os.urandom(8), "little") or 1
    while sent < n_marks:
        n = min(BATCH, n_marks - sent)
        base = t + sent * 1000
        batch = pb.MarkBatch()
        batch.columns.frames = encode([("soak", base + k * 1000, base + k * 1000 + 500, 0, {"i": k, "who": "soak"}, True)
                                       for k in range(n)])
        batch.columns.pid, batch.columns.sender_id, batch.columns.first_seq = 1, sender, sent + 1
        try:
            stub.RecordMarks(batch, timeout=30)
        except grpc.RpcError as e:  # back-pressure (writes behind): wait and send the same batch again
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            retries += 1
            time.sleep(0.05)
            continue
        sent += n
        now = time.monotonic()
        if now - last >= 0.5:
            points.append((sent, rss(daemon.pid)))
            last = now
    wall = time.monotonic() - t0
    held = stub.Status(pb.StatusRequest(), timeout=30).marks
    points.append((sent, rss(daemon.pid)))
    cpu = cpu_s(daemon.pid) - cpu0
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=600)
    warm, growth = flatness(points)
    return {"marks": sent, "held": held, "wall_s": wall, "retries": retries, "cpu_s": cpu, "warm_rss": warm,
            "growth": growth, "final_rss": points[-1][1], "points": points}


def soak_samples(hours: float, work: Path) -> dict:
    from greenprobe.attribution import Channel, attribute
    from greenprobe.parquet import PartWriter
    from greenprobe.store import MarkStore, SampleStore

    probe = SimpleNamespace(samples_store=SampleStore(), marks_store=MarkStore(),  # what PartWriter reads of a Probe
                            channel_info=lambda: [{"channel": 0, "quantity": "energy"}])
    writer = PartWriter(probe, work / "day", metadata={})
    power_w, step_ns, drain_ns, keep_ns = 40.0, 1_000_000, 2_000_000_000, 300_000_000_000
    t0 = 10 ** 12
    per = drain_ns // step_ns
    every_ns = max(int(hours * 3600e9) // 24 // drain_ns, 1) * drain_ns
    points, t_end, merged = [], t0 + int(hours * 3600e9), 0
    start = time.monotonic()
    t = t0
    while t < t_end:
        tt = t + np.arange(1, per + 1, dtype=np.int64) * step_ns
        probe.samples_store.append((tt, tt - step_ns, (tt - t0) * 1e-9 * power_w, np.zeros(per, np.uint32),
                               np.full(per, 1, np.uint32)))
        writer.flush()
        probe.samples_store.forget(tt[-1] - keep_ns)  # simulated time: the window is the simulated one
        merged += writer.compact(1800)
        t += drain_ns
        if (t - t0) % every_ns == 0:  # 24 points over the run: each simulated hour of a day
            points.append(((t - t0) / 3.6e12, rss()))
    wall = time.monotonic() - start
    a = t0 + min(1_000_000_000_000, (t_end - t0) // 4)  # in the first hour (or quarter), long forgotten
    b = a + 60_000_000_000  # one minute
    cols = probe.samples_store.columns(a - 5_000_000_000, b + 5_000_000_000)
    ch = Channel(channel=0, sensor="sim", domain="sim0", quantity="energy", estimated=False, resolution_j=1e-6,
                 nominal_update_period_ns=step_ns, averaging_window_ns=0, t_ns=cols[0], prev_t_ns=cols[1],
                 energy_j_or_power_w=cols[2], flags=cols[4])
    e = float(attribute(np.array([a]), np.array([b]), [ch])[0]["energy_j"][0])
    warm, growth = flatness(points)
    files = len(list((work / "day" / "parts" / "samples").iterdir()))
    return {"hours": hours, "samples": len(probe.samples_store), "parts": writer.parts, "wall_s": wall,
            "files": files, "index": len(probe.samples_store._parts), "merged": merged,
            "in_memory": probe.samples_store.memory_rows(), "warm_rss": warm, "growth": growth, "final_rss": points[-1][1],
            "energy_j": e, "truth_j": power_w * (b - a) * 1e-9, "points": points}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--marks", type=int, default=10_000_000)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--transport", choices=("grpc", "ring"), default="grpc")
    args = ap.parse_args(argv)
    mib = 2 ** 20
    with tempfile.TemporaryDirectory(prefix="greenprobe-soak-") as d:
        m = soak_marks(args.marks, Path(d), args.transport) if args.marks else None
        if m is not None:
            how = (f"{m['ring']:,} through the ring, {m['retries']:,} through gRPC" if args.transport == "ring" else
                   f"{m['retries']} back-pressure retries")
            print(f"marks ({args.transport}): {m['marks']:,} sent, {m['held']:,} held, {m['wall_s']:.1f} s "
                  f"({m['marks'] / m['wall_s']:,.0f}/s), {how}, daemon CPU {m['cpu_s'] / m['wall_s']:.0%} of a core")
            print(f"  daemon RSS at warm-up {m['warm_rss'] / mib:.0f} MiB, growth after {m['growth'] / mib:.1f} MiB, "
                  f"final {m['final_rss'] / mib:.0f} MiB")
            print("  RSS by marks held: " + ", ".join(f"{n / 1e6:.1f}M {r / mib:.0f}"
                                                      for n, r in m["points"][::max(len(m["points"]) // 10, 1)]))
        if not args.hours:
            return
        s = soak_samples(args.hours, Path(d))
        print(f"samples: {s['hours']:g} simulated hours, {s['samples']:,} samples, {s['parts']:,} parts, "
              f"{s['wall_s']:.0f} s, {s['in_memory']:,} rows in memory at the end; {s['files']} files and "
              f"{s['index']} index entries left ({s['merged']:,} parts merged away)")
        print(f"  RSS at warm-up {s['warm_rss'] / mib:.0f} MiB, growth after {s['growth'] / mib:.1f} MiB, "
              f"final {s['final_rss'] / mib:.0f} MiB")
        print("  RSS by hour: " + ", ".join(f"{h:.3g}h {r / mib:.0f}" for h, r in s["points"]))
        print(f"  energy of a minute in hour 1, read back from parts: {s['energy_j']:.6f} J (truth {s['truth_j']:.6f} J)")


if __name__ == "__main__":
    main()
