"""`greenprobe daemon`: one sampler served to many processes."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..consumers import PERIOD_S as CONSUMER_PERIOD_S
from .common import (add_sensor_args, at_least, check_folder, consumer_kinds, consumer_period, host_port, nonempty_path,
                     paragraphs, parse_bytes, port, positive_seconds, seconds)


def add_parser(sub) -> None:
    p = sub.add_parser("daemon", help="serve one sampler to many processes over gRPC (Unix socket by default)",
                       description=paragraphs(
                           "Runs the sampler and serves status, marks (batched), sample streams, interval energy, "
                           "label summaries and saving over gRPC. Clients: greenprobe.connect(ADDR), or "
                           "greenprobe.mark() in any process with GREENPROBE_DAEMON=ADDR. Stops cleanly on "
                           "SIGTERM/SIGINT.",
                           "Who may connect: energy data is a side channel (CVE-2020-8694, PLATYPUS), so the socket "
                           "is 0660 (owner and --group) in a folder nobody else can write to; every TCP port (gRPC "
                           "--listen, --prometheus-port), loopback included, needs the token from $GREENPROBE_TOKEN or "
                           "--token-file (never the command line: ps shows it); off loopback only with --allow-remote "
                           "and TLS. Files are written 0640 in folders of the socket's group; clients' Save writes "
                           "only under --save-dir."),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  sudo greenprobe daemon --group greenprobe --out /var/lib/greenprobe   # root reads "
                              "RAPL; group members connect\n"
                              "  greenprobe daemon --socket /tmp/gp/d.sock --sensors synthetic\n"
                              "  export GREENPROBE_TOKEN=$(openssl rand -hex 24)\n"
                              "  greenprobe daemon --listen 127.0.0.1:50051 --prometheus-port 9464   # TCP, loopback\n"
                              "  greenprobe daemon --listen 0.0.0.0:50051 --allow-remote --tls-cert cert.pem "
                              "--tls-key key.pem\n"
                              "    (clients: GREENPROBE_TLS_CA=ca.pem GREENPROBE_TOKEN=... "
                              "GREENPROBE_DAEMON=host:50051)")
    add_sensor_args(p)
    p.add_argument("--socket", type=nonempty_path,
                   help="Unix socket path (default /run/greenprobe/daemon.sock as root, else "
                        "$XDG_RUNTIME_DIR/greenprobe/daemon.sock or /tmp/greenprobe-UID/daemon.sock); its folder (made "
                        "if missing, in a folder that exists) must be this user's and writable by nobody else")
    p.add_argument("--no-socket", action="store_true", help="no Unix socket (needs --listen)")
    p.add_argument("--group", help="group (name or gid) that may connect to the socket and read the output files")
    p.add_argument("--listen", type=host_port, metavar="HOST:PORT",
                   help="also serve TCP, token required (loopback only unless --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --listen or --prometheus-addr; requires TLS and a token")
    p.add_argument("--token", help=argparse.SUPPRESS)  # refused with the fix: a token on the command line leaks
    p.add_argument("--token-file", metavar="FILE",
                   help="read the token from FILE (not readable by other users; default $GREENPROBE_TOKEN): one token "
                        "(its holders are one user, an admin), or one 'NAME TOKEN' line per user ('NAME TOKEN admin' "
                        "for one who sees every user's marks); each user's marks, labels and saves are their own")
    p.add_argument("--admin-group", metavar="GROUP",
                   help="members of GROUP (name or gid) see every user's marks, with the owner as a column; root and "
                        "the daemon's user always do, everyone else sees their own")
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate for TCP (required off loopback)")
    p.add_argument("--tls-key", metavar="PEM", help="its private key")
    p.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--out", type=nonempty_path,
                   help="write OUT/run-<time>-<pid>/parts/ as it goes (readable even after a crash) and the samples, "
                        "intervals, labels and metadata files into that run folder when stopping")
    p.add_argument("--save-dir", type=nonempty_path, metavar="DIR",
                   help="the only folder clients' Save may write under (they name a folder inside it); without it "
                        "Save is refused")
    p.add_argument("--save-max-bytes", type=parse_bytes, default="20G", metavar="SIZE",
                   help="clients' Save is refused once --save-dir holds this much (default 20G; K, M, G, T "
                        "suffixes; 0: no limit)")
    p.add_argument("--flush-s", type=positive_seconds, default=2.0,
                   help="seconds between incremental writes (default 2)")
    p.add_argument("--memory-s", type=seconds, default=300.0, metavar="SECONDS",
                   help="samples kept in memory (default the last 300 s); older ones are read back from the parts "
                        "when a query needs them, so memory does not grow with time")
    p.add_argument("--spool-dir", type=nonempty_path, metavar="DIR",
                   help="an existing folder where the parts go without --out (default the system's temporary folder; "
                        "removed at stop)")
    p.add_argument("--compact-s", type=seconds, default=3600, metavar="SECONDS",
                   help="merge the parts of every SECONDS of the run into one file once memory has let them go "
                        "(default 3600: 24 files a day instead of 43,200 at --flush-s 2; 0: never)")
    p.add_argument("--prometheus-port", type=port, metavar="N",
                   help="serve energy and power per domain at http://ADDR:N/metrics, bearer token required "
                        "(0: any free port)")
    p.add_argument("--prometheus-addr", default="127.0.0.1", help="address for --prometheus-port (default loopback)")
    p.add_argument("--otlp-endpoint", metavar="URL",
                   help="also push hw.energy (J) and hw.power (W) per domain as OpenTelemetry metrics to this OTLP/gRPC "
                        "collector: http://127.0.0.1:4317 on this machine, https://HOST:4317 elsewhere (needs "
                        "pip install 'greenprobe[otlp]')")
    p.add_argument("--otlp-interval-s", type=positive_seconds, default=10.0, metavar="SECONDS",
                   help="seconds between OTLP pushes (default 10)")
    p.add_argument("--consumers", type=consumer_kinds, default="", metavar="KINDS",
                   help="record the CPU time of every process and/or cgroup ('process', 'cgroup' or 'process,cgroup'), and "
                        "with 'process' each process's use of each NVIDIA GPU (NVML's per-process utilisation), and give "
                        "each one's energy per domain with a 95 %% interval, idle and unattributed beside them "
                        "(Table 'consumers': each user sees their own; parts/consumers; Prometheus "
                        "greenprobe_consumer_energy_joules_total)")
    p.add_argument("--consumer-period", type=consumer_period, default=CONSUMER_PERIOD_S, metavar="SECONDS",
                   help=f"how often every consumer's CPU time is read (default {CONSUMER_PERIOD_S:g})")
    p.add_argument("--consumer-window-s", type=positive_seconds, default=30.0, metavar="SECONDS",
                   help="energy per consumer is estimated over windows of this length (default 30; at least 8 sweeps)")
    p.add_argument("--cgroup-root", metavar="DIR", default=None,
                   help="the cgroup tree (default $GREENPROBE_CGROUP_ROOT or /sys/fs/cgroup)")
    p.add_argument("--pods-root", metavar="DIR", default=None,
                   help="kubelet's pod log folders, <namespace>_<name>_<uid>, that name a pod cgroup's namespace and "
                        "pod (default $GREENPROBE_PODS_ROOT or /var/log/pods; missing: those labels stay empty)")
    add_limit_flags(p)
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def run(args, parser) -> int:
    if args.no_socket and not args.listen:
        parser.error("--no-socket needs --listen HOST:PORT")
    check_folders(args)
    from ..daemon import run as run_daemon

    return run_daemon(args)


def check_folders(args) -> None:
    """The folders the daemon writes into, checked before it opens a sensor: --out and --save-dir
    it makes (with their missing parents), the socket's folder it makes in a folder that exists, and
    --spool-dir must exist (a spool folder is made inside it)."""
    for flag, folder, make in (("--out", args.out, None), ("--save-dir", args.save_dir, None),
                               ("--spool-dir", args.spool_dir, 0)):
        if folder:
            check_folder(folder, flag, make)
    if args.socket and not args.no_socket:
        check_folder(Path(args.socket).parent, "--socket", 1, given=args.socket)


def add_limit_flags(p) -> None:
    """--max-* from the daemon's Limits: their defaults and help are defined there, once."""
    from ..daemon.limits import Limits

    for f in Limits.flags():
        m = f.metadata
        if m["kind"] == "bytes":
            parse, metavar, shown = parse_bytes, "SIZE", size_text(f.default)
        else:
            parse, metavar, shown = int, "N", count_text(f.default)
        # every limit is at least 1 (0 or less would refuse everything), some more (their least_why)
        least_n = max(m["least"], 1)
        least = size_text(least_n) if m["kind"] == "bytes" else count_text(least_n)
        parse = at_least(parse, least_n, least, m["least_why"] if m["least"] else "")
        p.add_argument("--" + f.name.replace("_", "-"), type=parse, default=f.default, metavar=metavar,
                       help=f"{m['help']} (default {shown})")


def count_text(n: int) -> str:
    """5000000 -> 5M, 500000 -> 500k, 256 -> 256."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def size_text(n: int) -> str:
    """1073741824 -> 1G, 67108864 -> 64M."""
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)
