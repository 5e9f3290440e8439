"""`greenprobe top`: power per process, live, like top (issue 22).

Every --interval seconds, each process's power over the last --window seconds, by regression on
every process's CPU time (greenprobe.consumer_fit): the processes with the most first, each with its
95 % interval, and the domain's measured, idle and unattributed power above them. Without a CPU
energy sensor (RAPL), the CPU estimate's power is shown, marked ESTIMATE.
"""

from __future__ import annotations

import argparse
import sys
import time

from .common import StopSignals, add_sensor_args, consumer_period, positive_seconds

CLEAR = "\x1b[H\x1b[2J"


def add_parser(sub) -> None:
    p = sub.add_parser("top", help="power per process, live, with intervals (by regression on CPU time)",
                       description=__doc__.split("\n\n", 1)[1].replace("\n", " "),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  greenprobe top\n  greenprobe top --sensors rapl-powercap --window 30 -n 20\n"
                              "  greenprobe top --iterations 3 > top.txt      (three screens, then exit)")
    add_sensor_args(p)
    p.add_argument("--interval", type=positive_seconds, default=2.0, metavar="SECONDS",
                   help="seconds between screens (default 2)")
    p.add_argument("--window", type=positive_seconds, default=10.0, metavar="SECONDS",
                   help="each screen's power is the mean over the last SECONDS (default 10; at least 8 sweeps)")
    p.add_argument("--consumer-period", type=consumer_period, default=0.25, metavar="SECONDS",
                   help="how often every process's CPU time is read (default 0.25)")
    p.add_argument("-n", "--lines", type=int, default=15, help="processes shown (default 15)")
    p.add_argument("--iterations", type=int, default=0, help="stop after this many screens (default: until Ctrl-C)")
    p.set_defaults(run=run)


def screen(table, window_s: float, lines: int) -> str:
    """The text of one screen from a consumer table (one window)."""
    out = []
    for (sensor, domain), rows in _by_domain(table.to_pylist()).items():
        total = sum(r["energy_j"] for r in rows) / window_s
        est = "   ESTIMATE (no energy sensor for this domain)" if rows[0]["estimated"] else ""
        named = {r["kind"]: r for r in rows if r["kind"] in ("idle", "unattributed")}
        idle = named.get("idle", {}).get("energy_j", float("nan")) / window_s
        un = named.get("unattributed", {}).get("energy_j", float("nan")) / window_s
        out.append(f"{sensor}/{domain}: {total:8.2f} W measured, {idle:.2f} W idle, {un:+.2f} W unattributed, "
                   f"mean of the last {window_s:g} s{est}")
        procs = sorted((r for r in rows if r["kind"] == "process"), key=lambda r: -r["energy_j"])
        if not procs:
            note = named.get("unattributed", {}).get("note", "")
            out.append(f"  {note}" if note else "  no process used the CPU")
            continue
        out.append(f"  {'PID':>7} {'COMMAND':<16} {'POWER W':>9} {'95 % INTERVAL W':>19} {'CPU %':>7}  COEFFICIENT")
        for r in procs[:lines]:
            lo, hi = r["energy_j_low"] / window_s, r["energy_j_high"] / window_s
            out.append(f"  {r['pid']:>7} {r['comm'][:16]:<16} {r['energy_j'] / window_s:9.2f} "
                       f"{f'[{lo:.2f}, {hi:.2f}]':>19} {100 * r['cpu_s'] / window_s:7.1f}  {r['coefficient']}")
        if len(procs) > lines:
            rest = sum(r["energy_j"] for r in procs[lines:]) / window_s
            out.append(f"  {'':>7} {f'({len(procs) - lines} more)':<16} {rest:9.2f}")
    return "\n".join(out)


def _by_domain(rows: list) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault((r["sensor"], r["domain"]), []).append(r)
    return out


def run(args, parser) -> int:
    from ..errors import ConfigError
    from ..session import Probe

    if args.window < 8 * args.consumer_period:
        parser.error(f"--window {args.window:g} holds fewer than 8 sweeps of --consumer-period "
                     f"{args.consumer_period:g}: give a longer window or a shorter period")
    probe = Probe(sensors=args.sensors, period_us=args.period_us, consumers="process",
                  consumer_period_s=args.consumer_period)
    tty = sys.stdout.isatty()
    shown = 0
    with StopSignals() as stop:
        probe.start()
        try:
            start = probe.now_ns()
            while not stop.sleep(args.interval):
                now = probe.now_ns()
                window_s = min(args.window, (now - start) / 1e9)
                try:
                    text = screen(probe.consumers(now - int(window_s * 1e9), now), window_s, args.lines)
                except ConfigError as e:
                    text = f"waiting for enough sweeps ({e.message})"
                print((CLEAR if tty else "") + time.strftime("%H:%M:%S ") + text + ("" if tty else "\n"), flush=True)
                shown += 1
                if args.iterations and shown >= args.iterations:
                    break
        finally:
            probe.stop()
    return 0
