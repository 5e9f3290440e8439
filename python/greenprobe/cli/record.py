"""`greenprobe record`: sample for a while, save, summarise.

SIGTERM or SIGINT ends the recording as --duration would: record stops sampling, saves, reports and
exits 128 + the signal (a second signal cuts the saving short); one sent while record was stopped
(SIGSTOP) acts as soon as it goes on (SIGCONT)."""

from __future__ import annotations

import sys
import time

from .common import StopSignals, add_sensor_args, baseline_seconds, check_out, nonempty_path, save_private, seconds


def cmd_record(args) -> int:
    from ..marks import mark
    from ..session import Probe

    probe = Probe(sensors=args.sensors, period_us=args.period_us, baseline_s=args.baseline)
    out = check_out(args.out)
    with StopSignals() as stop:
        probe.start()
        for s in probe.skipped:
            print(f"skipped {s.kind}: {s.reason}", file=sys.stderr)
        print(f"recording into {out} " + (f"for {args.duration:g} s" if args.duration > 0 else "until stopped")
              + " (Ctrl-C or SIGTERM: stop and save)", file=sys.stderr, flush=True)
        try:
            with mark("record"):
                t_end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
                while not stop.signum:
                    left = t_end - time.monotonic()
                    if left <= 0:
                        break
                    if sys.stderr.isatty():
                        print(f"\rrecording... {left:5.1f} s left (Ctrl-C to stop)", end="", file=sys.stderr)
                    stop.sleep(min(0.25, left))
        finally:
            probe.stop()
            if sys.stderr.isatty():
                print(file=sys.stderr)
        paths = save_private(probe, out)
    table = probe.intervals().to_pylist()
    print(f"wrote {paths['samples']} and {paths['intervals']}")
    for row in table:
        est = "  ESTIMATED" if row["estimated"] else ""
        power = row["energy_j"] / row["duration_s"] if row["duration_s"] > 0 else float("nan")
        print(f"  {row['sensor']:<14} {row['domain']:<12} {row['energy_j']:10.3f} J "
              f"[{row['energy_j_low']:.3f}, {row['energy_j_high']:.3f}]  {power:8.2f} W over "
              f"{row['duration_s']:.2f} s{est}")
        if row.get("energy_j_net") is not None:
            print(f"  {'':<14} {'':<12} {row['energy_j_net']:10.3f} J net of idle {row['baseline_power_w']:.2f} W")
    for st in probe.stats():
        print(f"  {st['sensor']}: {st['polls']} polls at {1e9 / st['period_ns']:.0f} Hz, "
              f"{st['late_polls']} late, max lag {st['max_lag_ns'] / 1e6:.2f} ms, {st['drops']} dropped")
    return 128 + stop.signum if stop.signum else 0


def add_parser(sub) -> None:
    p = sub.add_parser("record", help="sample sensors for a while (or until Ctrl-C) and write Parquet",
                       description="Samples the sensors for --duration seconds (or until Ctrl-C), then writes "
                                   "OUT/samples.parquet, OUT/intervals.parquet (one interval: the whole recording) "
                                   "and prints the energy per domain.")
    add_sensor_args(p)
    p.add_argument("--duration", type=seconds, default=5.0,
                   help="seconds to record (default 5; 0 = until Ctrl-C or SIGTERM)")
    p.add_argument("--baseline", type=baseline_seconds, default=0.0, metavar="SECONDS",
                   help="also measure idle power for SECONDS before and after, and report energy net of it")
    p.add_argument("--out", type=nonempty_path, default="results/record",
                   help="output folder (default results/record; files 0640 in folders 0750, under sudo the "
                        "invoking user's)")
    p.set_defaults(run=run)


def run(args, parser) -> int:
    return cmd_record(args)
