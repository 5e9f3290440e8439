"""What one user's marks can cost the daemon: memory by bytes, and other clients' waiting.

    PYTHONPATH=python .venv/bin/python benchmarks/bench_daemon_hostile.py [--part bytes|drain|both]
        [--seconds 30] [--caps 64M,256M,1G,off] [--rings 16] [--ring-mib 16] [--repeats 3]

Part ``bytes``: a real `greenprobe daemon --out --flush-s 10` and 2 client processes marking as
fast as they can with 7 attributes of 1,000 characters each (~7.2 KB of JSON a mark, under the
ring's 8 KiB), for ``--seconds``, once per ``--max-mark-bytes`` of ``--caps`` (``off``: 100G, as
before the limit, stopped early if the daemon passes 8 GiB). Reports the daemon's peak resident
memory, the marks the clients made, the daemon held, and the clients dropped (their buffers full
while the daemon pushed back); every mark must be held or counted as dropped.

Part ``drain``: an in-process daemon is handed ``--rings`` rings of ``--ring-mib`` MiB, full of
small marks, at once (one user's backlog); right after, a second client registers a ring of its
own, writes one mark and flushes. Reports that client's wait (connect to flush answered) and how
long the backlog took, with each of ``--budgets`` (the daemon's: ring bytes a drain takes at most)
and without (the whole ring in one drain, as before), ``--repeats`` times each.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_daemon_soak import rss  # the daemon's resident memory, from /proc

CLIENT = r"""
import sys, time, greenprobe
seconds = float(sys.argv[1])
blob = {f"a{k}": chr(97 + k) * 1000 for k in range(7)}
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(100):
        with greenprobe.mark("big", **blob):
            pass
    n += 100
from greenprobe.client import default_remote
remote = default_remote()
for _ in range(12):  # what the ring could not take went through gRPC, which may push back for a while
    try:
        remote.flush()
        break
    except greenprobe.DaemonError:
        pass
print(n, remote.mark_sink.pushed, remote._sender.dropped, remote._sender.refused)
print(remote._sender.refused_why, file=sys.stderr)
"""


def part_bytes(cap: str, seconds: float, work: Path) -> dict:
    import grpc

    from greenprobe.v1 import probe_pb2 as pb
    from greenprobe.v1 import probe_pb2_grpc as pb_grpc

    sock, ready = work / "d.sock", work / "ready"
    limit = "100G" if cap == "off" else cap
    daemon = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", "synthetic", "--socket",
                               str(sock), "--ready-file", str(ready), "--out", str(work / "out"), "--flush-s", "10",
                               "--max-mark-bytes", limit], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    clients = []
    try:
        while not ready.exists():
            time.sleep(0.05)
        env = dict(os.environ, GREENPROBE_DAEMON=f"unix:{sock}")
        clients = [subprocess.Popen([sys.executable, "-c", CLIENT, str(seconds)], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
        peak, stopped = 0, False
        while any(c.poll() is None for c in clients):
            peak = max(peak, rss(daemon.pid))
            if peak > 8 << 30 and not stopped:  # no limit: stop before the machine runs out
                stopped = True
                for c in clients:
                    c.send_signal(signal.SIGKILL)
            time.sleep(0.2)
        made = ringed = dropped = refused = 0
        for c in clients:
            out = c.stdout.read().split()
            if len(out) == 4:
                n, r, d, f = map(int, out)
                made, ringed, dropped, refused = made + n, ringed + r, dropped + d, refused + f
        stub = pb_grpc.ProbeStub(grpc.insecure_channel(f"unix:{sock}"))
        held = stub.Status(pb.StatusRequest(), timeout=60).marks
        return {"cap": cap, "peak_rss": peak, "made": made, "ringed": ringed, "held": held, "dropped": dropped,
                "refused": refused, "stopped": stopped}
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=600)


def part_drain(n_rings: int, ring_mib: int, budget: int, work: Path) -> dict:
    import greenprobe
    from greenprobe import _core
    from greenprobe.daemon import Daemon, rings

    saved = rings.DRAIN_BUDGET_BYTES
    rings.DRAIN_BUDGET_BYTES = budget  # 1 << 62: as before, a drain takes all the ring holds
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True)
    probe.start()
    daemon = Daemon(probe, work / "d.sock").start()
    path = f"{work / 'd.sock'}.ring"
    conns = []
    try:
        full = []
        for _ in range(n_rings):
            fallback = []
            ring = _core.MarkRing(ring_mib << 20, fallback)
            ring.attached = True
            i = 0
            while not fallback:  # until the ring is full
                ring.append(("backlog", 10 + i, 20 + i, 1, {"i": i}, True))
                i += 1
            full.append(ring)
        backlog = sum(r.pushed for r in full)
        t0 = time.monotonic()
        for ring in full:  # handed over at once
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            socket.send_fds(s, [b"R"], [ring.fd])
            conns.append(s)
        time.sleep(0.05)  # the rings are registered; their drains begin
        small = _core.MarkRing(1 << 12, [])
        small.attached = True
        t1 = time.monotonic()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(600)
        s.connect(path)
        socket.send_fds(s, [b"R"], [small.fd])
        conns.append(s)
        assert s.recv(64)[:1] == b"A"
        small.append(("mine", 5, 6, 1, None, True))
        s.sendall(b"F")
        assert s.recv(1) == b"D" and small.drained == 1
        wait = time.monotonic() - t1
        backlog_left = backlog - sum(r.drained for r in full)
        while sum(r.drained for r in full) < backlog:
            time.sleep(0.01)
        took = time.monotonic() - t0
        return {"budget": budget, "backlog": backlog, "wait_s": wait, "backlog_left": backlog_left, "took_s": took,
                "refused": sum(r.refused for r in full)}
    finally:
        for c in conns:
            c.close()
        daemon.stop(grace_s=0.5)
        probe.stop()
        rings.DRAIN_BUDGET_BYTES = saved


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("bytes", "drain", "both"), default="both")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the clients mark, part bytes")
    ap.add_argument("--caps", default="64M,256M,1G,off", help="--max-mark-bytes values to try, part bytes")
    ap.add_argument("--rings", type=int, default=16, help="rings of one user's backlog, part drain")
    ap.add_argument("--ring-mib", type=int, default=16, help="their size in MiB (a power of two, at most 64)")
    ap.add_argument("--repeats", type=int, default=3, help="runs with and without the budget, part drain")
    ap.add_argument("--budgets", default="default,whole",
                    help="drain budgets to try in KiB, 'default' (the daemon's) or 'whole' (none), part drain")
    args = ap.parse_args(argv)
    if args.part in ("bytes", "both"):
        print(f"part bytes: 2 clients x {args.seconds:g} s, marks of 7 x 1,000-character attributes, --flush-s 10")
        print("| --max-mark-bytes | daemon peak RSS | marks made | through the ring | held | dropped by the clients "
              "| refused | lost |")
        print("|---|---|---|---|---|---|---|---|")
        for cap in args.caps.split(","):
            with tempfile.TemporaryDirectory(prefix="gp-hostile-") as d:
                r = part_bytes(cap, args.seconds, Path(d))
            note = " (stopped at 8 GiB)" if r["stopped"] else ""
            print(f"| {cap}{note} | {r['peak_rss'] / 2**20:,.0f} MiB | {r['made']:,} | {r['ringed']:,} | {r['held']:,} "
                  f"| {r['dropped']:,} | {r['refused']:,} | {r['made'] - r['held'] - r['dropped'] - r['refused']:,} |",
                  flush=True)
    if args.part in ("drain", "both"):
        print(f"part drain: {args.rings} rings of {args.ring_mib} MiB handed over at once, then one client's first "
              "flush")
        print("| drain | run | backlog marks | the other client's wait | backlog left then | backlog drained in "
              "| refused |")
        print("|---|---|---|---|---|---|---|")
        from greenprobe.daemon.rings import DRAIN_BUDGET_BYTES

        for text in args.budgets.split(","):
            budget = 1 << 62 if text == "whole" else DRAIN_BUDGET_BYTES if text == "default" else int(text) << 10
            name = "whole ring" if text == "whole" else f"{budget >> 10:,} KiB a turn"
            waits = []
            for k in range(args.repeats):
                with tempfile.TemporaryDirectory(prefix="gp-hostile-") as d:
                    r = part_drain(args.rings, args.ring_mib, budget, Path(d))
                waits.append(r["wait_s"])
                print(f"| {name} | {k + 1} | {r['backlog']:,} | {r['wait_s'] * 1e3:,.0f} ms | {r['backlog_left']:,} | "
                      f"{r['took_s']:.2f} s | {r['refused']:,} |", flush=True)
            print(f"median wait, {name}: {statistics.median(waits) * 1e3:,.0f} ms")


if __name__ == "__main__":
    main()
