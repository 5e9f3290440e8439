"""A good user's calls beside each load a hostile member of the daemon's group can put on it (issue 23).

    PYTHONPATH=python .venv/bin/python benchmarks/bench_tenancy.py [--seconds 8] [--loads all] [--daemon-tree DIR]

As root: a real `greenprobe daemon --out` (its socket's group 4242), a good client as uid 4244 and a
hostile one as uid 4243, both members (setpriv), both greenprobe's own client, as
tests/python/test_tenancy.py runs them. For each load the hostile user runs alone for --seconds
while the good one loops over Status, a mark and flush through its ring, a mark and flush through
gRPC, Energy over the last second and the first batch of a sample stream. Loads:

  none        nobody else
  batches     8 threads sending 100,000-mark batches as fast as they are taken
  queries     4 threads looping Summary and Table over its own marks
  streams     opening sample streams until refused, and holding them
  sessions    registering sessions on the ring socket until refused, and holding them
  all         all four at once

Prints, per load, each call's p50 and p99 in ms, and the calls made and those refused; every
number comes from this run. ``--daemon-tree``: run the daemon from another checkout's python/
(with its compiled extension), e.g. a worktree of the commit before, with these same clients.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from test_tenancy import FLOOD, GOOD, GOOD_CALLS, GROUP, HOSTILE, as_user  # noqa: E402 - the test's own clients

LOADS = {"none": "", "batches": "batches", "queries": "queries", "streams": "streams", "sessions": "sessions",
         "all": "batches,queries,streams,sessions"}


def quantile(values: list, q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--daemon-tree", type=Path, default=ROOT, help="the checkout whose python/ the daemon runs")
    ap.add_argument("--loads", default="all", help="comma-separated, of: " + ", ".join(LOADS) + " (all: each in turn)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root: the users are made with setpriv", file=sys.stderr)
        return 2
    loads = list(LOADS) if args.loads == "all" else args.loads.split(",")
    folder = Path(tempfile.mkdtemp(prefix="gp-bench-tenancy-", dir="/tmp"))
    os.chmod(folder, 0o711)
    sock, ready = folder / "d.sock", folder / "ready"
    daemon = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", "synthetic", "--socket",
                               str(sock), "--group", str(GROUP), "--out", str(folder / "out"), "--ready-file",
                               str(ready)], stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(args.daemon_tree / "python")))
    try:
        while not ready.exists():
            if daemon.poll() is not None:
                raise SystemExit(daemon.stderr.read())
            time.sleep(0.05)
        address = f"unix:{sock}"
        print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.cpu_count()} CPUs, {args.seconds:g} s per load; good uid {GOOD}, "
              f"hostile uid {HOSTILE}; ms")
        print("| load | " + " | ".join(f"{c} p50 / p99" for c in ("status", "ring mark+flush", "gRPC mark+flush",
                                                                     "energy", "stream")) + " | calls | refused |")
        print("|---" * 8 + "|")
        for load in loads:
            hostile = as_user(HOSTILE, FLOOD, address, args.seconds + 2, LOADS[load], wait=False) if LOADS[load] \
                else None
            good = as_user(GOOD, GOOD_CALLS, address, args.seconds)
            if hostile is not None:
                hostile.communicate(timeout=120)
            if good.returncode:
                raise SystemExit(good.stderr)
            seen = json.loads(good.stdout)
            lat = seen["latencies"]
            cells = [f"{quantile(lat[c], 0.5) * 1e3:.1f} / {quantile(lat[c], 0.99) * 1e3:.1f}"
                     for c in ("status", "ring mark and flush", "grpc mark and flush", "energy", "stream")]
            print(f"| {load} | " + " | ".join(cells) + f" | {seen['calls']} | {len(seen['errors'])} |", flush=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            daemon.kill()
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
