"""`greenprobe measure -- CMD`: a private daemon, the command under it, a perf-stat-like summary."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .. import _core
from ..daemon import Daemon
from ..session import Probe


def cmd_measure(args, cmd: list[str]) -> int:
    probe = Probe(sensors=args.sensors, period_us=args.period_us, baseline_s=args.baseline)
    with tempfile.TemporaryDirectory(prefix="greenprobe-") as tmp:
        sock = Path(tmp) / "daemon.sock"
        daemon = Daemon(probe, sock)
        probe.start()
        try:
            daemon.start()
            for s in probe.skipped:
                print(f"greenprobe: skipped {s.kind}: {s.reason}", file=sys.stderr)
            env = dict(os.environ, GREENPROBE_DAEMON=f"unix:{sock}")
            start = _core.now_ns()
            try:
                rc = subprocess.call(cmd, env=env)
            except FileNotFoundError:
                print(f"greenprobe: command not found: {cmd[0]}", file=sys.stderr)
                rc = 127
            except KeyboardInterrupt:
                rc = 130
            end = _core.now_ns()
            probe.add_mark("command", start, end, cmd=" ".join(cmd), exit_code=rc)
        finally:
            daemon.stop()
            probe.stop()
    paths = probe.save(args.out)
    _report(probe, cmd, rc, start, end, paths)
    return rc


def _report(probe, cmd, rc, start, end, paths) -> None:
    secs = (end - start) * 1e-9
    out = sys.stderr
    print(f"\n Energy of '{' '.join(cmd)}' (exit {rc}):\n", file=out)
    rows = [r for r in probe.intervals().to_pylist() if r["label"] == "command"]
    for r in rows:
        est = "   ESTIMATED" if r["estimated"] else ""
        net = f"   net of idle {r['energy_j_net']:10.3f} J" if r.get("energy_j_net") is not None else ""
        print(f"   {r['energy_j']:12.3f} J  {r['sensor']}/{r['domain']:<12} [{r['energy_j_low']:.3f}, "
              f"{r['energy_j_high']:.3f}]   {r['energy_j'] / secs if secs > 0 else 0:8.2f} W avg{net}{est}", file=out)
    labels = Counter(m[0] for m in probe.marks() if m[0] != "command")
    if labels:
        print("\n   marks:", ", ".join(f"{k} x{v}" for k, v in labels.most_common()), file=out)
    print(f"\n   {secs:12.3f} s elapsed\n", file=out)
    print(f" wrote {paths['intervals']} (and samples, labels, metadata)", file=out)
