"""Load test of the daemon: N client processes marking concurrently for S seconds; no mark may be lost.

    .venv/bin/python benchmarks/bench_daemon.py [--clients 16] [--seconds 60] [--rate 1000]

Each client marks ``rate`` times a second (``with greenprobe.mark(...)`` through GREENPROBE_DAEMON,
batched by the client every 50 ms) and reports how many marks it made; the daemon (synthetic
sensor at 1 kHz) must hold exactly their sum. Reports marks per second, the daemon's CPU and
memory, and the clients' mean cost per mark.
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

CLIENT = r"""
import sys, time, greenprobe
seconds, rate = float(sys.argv[1]), float(sys.argv[2])
n, spent, period = 0, 0, 1.0 / rate
end = time.monotonic() + seconds
nxt = time.monotonic()
while time.monotonic() < end:
    t = time.perf_counter_ns()
    with greenprobe.mark("load", i=n):
        pass
    spent += time.perf_counter_ns() - t
    n += 1
    nxt += period
    d = nxt - time.monotonic()
    if d > 0:
        time.sleep(d)
from greenprobe.client import default_remote
default_remote().flush()
print(n, spent)
"""


def proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) and resident memory in bytes of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rate", type=float, default=1000, help="marks per second per client")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="greenprobe-load-"))
    sock, ready = work / "d.sock", work / "ready"
    daemon = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", "synthetic",
                               "--socket", str(sock), "--ready-file", str(ready)], stderr=subprocess.DEVNULL)
    while not ready.exists():
        time.sleep(0.05)
    cpu0, _ = proc_stat(daemon.pid)
    env = dict(os.environ, GREENPROBE_DAEMON=f"unix:{sock}")
    t0 = time.monotonic()
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, str(args.seconds), str(args.rate)], env=env,
                                stdout=subprocess.PIPE, text=True) for _ in range(args.clients)]
    peak_rss = 0
    while any(c.poll() is None for c in clients):
        peak_rss = max(peak_rss, proc_stat(daemon.pid)[1])
        time.sleep(0.5)
    wall = time.monotonic() - t0
    made, spent = 0, 0
    for c in clients:
        n, s = c.stdout.read().split()
        made, spent = made + int(n), spent + int(s)
    import greenprobe

    held = greenprobe.connect(f"unix:{sock}").status()["marks"]
    cpu1, rss = proc_stat(daemon.pid)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)
    print("| clients | seconds | marks made | marks held by the daemon | lost | marks/s | daemon CPU | "
          "daemon peak RSS | client cost per mark |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} | {wall:.1f} | {made:,} | {held:,} | {made - held} | {held / wall:,.0f} | "
          f"{(cpu1 - cpu0) / wall:.1%} of a core | {max(peak_rss, rss) / 2**20:.0f} MiB | {spent / made / 1e3:.1f} µs |")


if __name__ == "__main__":
    main()
