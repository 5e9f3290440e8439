"""Load test of the daemon: N client processes marking concurrently for S seconds; no mark may be lost.

    .venv/bin/python benchmarks/bench_daemon.py [--clients 16] [--seconds 60] [--rate 1000]
                                                [--transports ring,grpc,tls]

Each client marks ``rate`` times a second (0: as fast as it can; ``with greenprobe.mark(...)``
through GREENPROBE_DAEMON) and reports how many marks it made and what it spent inside them; the
daemon (synthetic sensor at 1 kHz) must hold their sum, less what the clients counted as dropped.
Transports, one daemon each, in turn: ``ring`` (the Unix socket's shared-memory ring, the default
for a local client), ``grpc`` (the same socket, GREENPROBE_MARK_RING=0: batches through the gRPC
sender), ``tls`` (loopback TCP with TLS and the token). Reports marks per second, the daemon's CPU
and memory, and the clients' mean cost per mark.
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
n, spent, period = 0, 0, 1.0 / rate if rate else 0.0
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
remote = default_remote()
try:
    remote.flush(); remote.flush()  # the second: what the ring could not take went through gRPC
except greenprobe.DaemonError:
    pass
sink = remote.mark_sink
print(n, spent, getattr(sink, "pushed", 0), remote._sender.dropped)

"""


def proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) and resident memory in bytes of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def make_certs(d: Path) -> None:
    """A CA and a server certificate for 127.0.0.1, by openssl."""
    def ossl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "1",
         "-subj", "/CN=bench CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "server.key", "-out", d / "server.csr", "-subj",
         "/CN=server")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key", "-CAcreateserial",
         "-out", d / "server.pem", "-days", "1", "-extfile", d / "ext")


def run(transport: str, clients: int, seconds: float, rate: float) -> str:
    work = Path(tempfile.mkdtemp(prefix="greenprobe-load-"))
    sock, ready = work / "d.sock", work / "ready"
    extra, env = [], dict(os.environ)
    env.pop("GREENPROBE_MARK_RING", None)
    if transport == "grpc":
        env["GREENPROBE_MARK_RING"] = "0"
    if transport == "tls":
        make_certs(work)
        env["GREENPROBE_TOKEN"] = os.urandom(24).hex()
        env["GREENPROBE_TLS_CA"] = str(work / "ca.pem")
        extra = ["--listen", "127.0.0.1:0", "--tls-cert", str(work / "server.pem"), "--tls-key", str(work / "server.key")]
    daemon = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", "synthetic",
                               "--socket", str(sock), "--ready-file", str(ready), *extra], stderr=subprocess.DEVNULL,
                              env=env)
    while not ready.exists() or not ready.read_text().strip():
        time.sleep(0.05)
    address = ready.read_text().split()[-1]  # the TCP address with --tls, else the socket
    cpu0, _ = proc_stat(daemon.pid)
    env["GREENPROBE_DAEMON"] = address
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, str(seconds), str(rate)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    peak_rss = 0
    while any(c.poll() is None for c in procs):
        peak_rss = max(peak_rss, proc_stat(daemon.pid)[1])
        time.sleep(0.5)
    wall = time.monotonic() - t0
    made = spent = ringed = dropped = 0
    for c in procs:
        n, s, r, d = map(int, c.stdout.read().split())
        made, spent, ringed, dropped = made + n, spent + s, ringed + r, dropped + d
    import greenprobe

    held = greenprobe.connect(f"unix:{sock}", check=False).status()["marks"]  # the socket needs no token
    cpu1, rss = proc_stat(daemon.pid)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)
    return (f"| {clients}{' as fast as it can' if not rate else f' x {rate:,.0f}/s'} | {transport} | {wall:.1f} | "
            f"{made:,} | {ringed:,} | {held:,} | {dropped:,} | {made - dropped - held} | {held / wall:,.0f} | "
            f"{(cpu1 - cpu0) / wall:.1%} of a core | {max(peak_rss, rss) / 2**20:.0f} MiB | {spent / made / 1e3:.2f} µs |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rate", type=float, default=1000, help="marks per second per client (0: as fast as it can)")
    ap.add_argument("--transports", default="ring,grpc", help="comma-separated: ring, grpc, tls (default ring,grpc)")
    args = ap.parse_args(argv)
    print("| clients | transport | seconds | marks made | through the ring | held by the daemon | dropped by the "
          "clients | lost | marks/s held | daemon CPU | daemon peak RSS | client cost per mark |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in args.transports.split(","):
        print(run(t, args.clients, args.seconds, args.rate), flush=True)


if __name__ == "__main__":
    main()
