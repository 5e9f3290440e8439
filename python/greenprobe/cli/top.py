"""`greenprobe top`: power and energy per process, live, like top (issue 22).

Every --interval seconds, each process's power over the last --window seconds, by regression on
every process's CPU time (greenprobe.consumer_fit): the processes with the most first, each with its
95 % interval, and the domain's measured, idle and unattributed power above them. Beside it, each
process's energy since top started (ENERGY J) with its 95 % interval: the sum of its energy over
windows that tile the time since then (each --energy-window long, the last one running to now: a
longer window gives more processes a coefficient of their own, and sharper intervals), its
interval the sum of theirs (conservative: the spread of a sum is at most the sum of the spreads,
however the windows' errors are correlated). Without
a CPU energy sensor (RAPL), the CPU estimate's power is shown, marked ESTIMATE.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from .common import StopSignals, add_sensor_args, consumer_period, positive_seconds

CLEAR = "\x1b[H\x1b[2J"


def add_parser(sub) -> None:
    p = sub.add_parser("top", help="power and energy per process, live, with intervals (by regression on CPU time)",
                       description=__doc__.split("\n\n", 1)[1].replace("\n", " "),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  greenprobe top\n  greenprobe top --sensors rapl-powercap --window 30 -n 20\n"
                              "  greenprobe top --iterations 3 > top.txt      (three screens, then exit)")
    add_sensor_args(p)
    p.add_argument("--interval", type=positive_seconds, default=2.0, metavar="SECONDS",
                   help="seconds between screens (default 2)")
    p.add_argument("--window", type=positive_seconds, default=10.0, metavar="SECONDS",
                   help="each screen's power is the mean over the last SECONDS (default 10; at least 8 sweeps)")
    p.add_argument("--energy-window", type=positive_seconds, default=60.0, metavar="SECONDS",
                   help="the energy since top started is summed over windows this long (default 60; at least "
                        "--window)")
    p.add_argument("--consumer-period", type=consumer_period, default=0.25, metavar="SECONDS",
                   help="how often every process's CPU time is read (default 0.25)")
    p.add_argument("-n", "--lines", type=int, default=15, help="processes shown (default 15)")
    p.add_argument("--iterations", type=int, default=0, help="stop after this many screens (default: until Ctrl-C)")
    p.set_defaults(run=run)


class Cumulative:
    """Each consumer's energy since ``start_ns``, per (sensor, domain, consumer): the sum of its rows
    over windows that tile the time since then, each closed once it is ``tile_ns`` long
    (``--energy-window``), and the open one up to now. Its interval is the sum of the windows'
    bounds: conservative, as the standard deviation of a sum is at most the sum of the standard
    deviations, whatever the correlation of the windows' errors. Every domain's rows still add up to
    its measured energy (each window's do)."""

    def __init__(self, start_ns: int, tile_ns: int):
        self.start_ns = self.closed_ns = int(start_ns)
        self.tile_ns = int(tile_ns)
        self.totals: dict[tuple, list] = {}  # (sensor, domain, consumer) -> [J, low J, high J]

    @staticmethod
    def _add(into: dict, table) -> None:
        for r in table.to_pylist():
            t = into.setdefault((r["sensor"], r["domain"], r["consumer"]), [0.0, 0.0, 0.0])
            for k, col in enumerate(("energy_j", "energy_j_low", "energy_j_high")):
                v = r[col] if r[col] is not None and r[col] == r[col] else r["energy_j"]  # no bounds: the estimate
                t[k] += v

    def update(self, consumers, now_ns: int, table=None, table_from_ns: Optional[int] = None) -> dict:
        """The totals to ``now_ns``: ``consumers(a, b)`` (Probe.consumers) gives the open window's table
        (``table`` when it is already that of [closed_ns, now_ns]: ``table_from_ns`` == closed_ns);
        the window is closed into the totals once it is ``tile_ns`` long."""
        from ..errors import ConfigError

        now_ns = int(now_ns)
        if now_ns <= self.closed_ns:
            return {k: list(v) for k, v in self.totals.items()}
        if table is None or table_from_ns != self.closed_ns:
            try:
                table = consumers(self.closed_ns, now_ns)
            except ConfigError:  # too few sweeps yet
                table = None
        if table is not None and now_ns - self.closed_ns >= self.tile_ns:
            self._add(self.totals, table)
            self.closed_ns = now_ns
            table = None
        shown = {k: list(v) for k, v in self.totals.items()}
        if table is not None:
            self._add(shown, table)
        return shown


def screen(table, window_s: float, lines: int, since: Optional[dict] = None, since_s: float = 0.0) -> str:
    """The text of one screen from a consumer table (one window); ``since``: Cumulative.update's
    totals, each consumer's energy over the ``since_s`` seconds since top started."""
    out = []
    since = since or {}
    for (sensor, domain), rows in _by_domain(table.to_pylist()).items():
        total = sum(r["energy_j"] for r in rows) / window_s
        est = "   ESTIMATE (no energy sensor for this domain)" if rows[0]["estimated"] else ""
        named = {r["kind"]: r for r in rows if r["kind"] in ("idle", "unattributed")}
        idle = named.get("idle", {}).get("energy_j", float("nan")) / window_s
        un = named.get("unattributed", {}).get("energy_j", float("nan")) / window_s
        spent = sum(v[0] for k, v in since.items() if k[:2] == (sensor, domain))
        out.append(f"{sensor}/{domain}: {total:8.2f} W measured, {idle:.2f} W idle, {un:+.2f} W unattributed, "
                   f"mean of the last {window_s:g} s; {spent:.1f} J in the {since_s:.0f} s since top started{est}")
        procs = sorted((r for r in rows if r["kind"] == "process"), key=lambda r: -r["energy_j"])
        if not procs:
            note = named.get("unattributed", {}).get("note", "")
            out.append(f"  {note}" if note else "  no process used the CPU")
            continue
        out.append(f"  {'PID':>7} {'COMMAND':<16} {'POWER W':>9} {'95 % INTERVAL W':>19} {'CPU %':>7} "
                   f"{'ENERGY J':>10} {'95 % INTERVAL J':>21}  COEFFICIENT")
        for r in procs[:lines]:
            lo, hi = r["energy_j_low"] / window_s, r["energy_j_high"] / window_s
            j, jlo, jhi = since.get((sensor, domain, r["consumer"]), (float("nan"),) * 3)
            out.append(f"  {r['pid']:>7} {r['comm'][:16]:<16} {r['energy_j'] / window_s:9.2f} "
                       f"{f'[{lo:.2f}, {hi:.2f}]':>19} {100 * r['cpu_s'] / window_s:7.1f} "
                       f"{j:10.1f} {f'[{jlo:.1f}, {jhi:.1f}]':>21}  {r['coefficient']}")
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
            total = Cumulative(start, int(max(args.energy_window, args.window) * 1e9))
            while not stop.sleep(args.interval):
                now = probe.now_ns()
                a = max(now - int(args.window * 1e9), start)
                window_s = (now - a) / 1e9
                try:
                    table = probe.consumers(a, now)
                    since = total.update(probe.consumers, now, table, a)
                    text = screen(table, window_s, args.lines, since, (now - start) / 1e9)
                except ConfigError as e:
                    text = f"waiting for enough sweeps ({e.message})"
                print((CLEAR if tty else "") + time.strftime("%H:%M:%S ") + text + ("" if tty else "\n"), flush=True)
                shown += 1
                if args.iterations and shown >= args.iterations:
                    break
        finally:
            probe.stop()
    return 0
