"""The greenprobe command line."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from .. import __version__

EPILOG = """\
examples:
  greenprobe sensors                      what this machine can measure, and how to fix what it cannot
  greenprobe record --duration 10         sample every available sensor for 10 s, write results/record/
  greenprobe record --sensors rapl-msr,nvml --period-us 200 --out run1

environment (each also a Python argument of greenprobe.Probe):
  GREENPROBE_NVML_LIBRARY    path of libnvidia-ml.so.1        GREENPROBE_POWERCAP_ROOT  /sys/class/powercap
  GREENPROBE_MSR_PATH        /dev/cpu/{cpu}/msr template      GREENPROBE_CPU_VENDOR     intel | amd
  GREENPROBE_SYSFS_CPU_ROOT  /sys/devices/system/cpu          GREENPROBE_PROC_ROOT      /proc
  GREENPROBE_CPU_TDP_W       rated CPU power for the cpu-estimate model
"""


def _add_sensor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sensors", default="auto",
                   help="'auto' or a comma list: nvml, rapl-msr, rapl-powercap, cpu-estimate, "
                        "synthetic[:k=v;k=v], replay:path=FILE (default: auto)")
    p.add_argument("--period-us", type=float, default=1000, help="polling period per sensor, >= 50 (default 1000)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="greenprobe",
        description="Measure the energy of deep-learning inference: a native high-rate sampler (NVML, RAPL), "
                    "marks on the same clock, energy per interval with honest bounds.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"greenprobe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sensors", help="list every sensor kind with its status, domains and the fix where unavailable",
                       description="Tries to open every sensor kind and says what works here and why not.")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("runtimes", help="list each DL runtime: environment, version, devices, execution providers, "
                                        "and what is missing with the fix",
                       description="Starts a worker in each runtime's environment and asks it what it can run here. "
                                   "An ONNX Runtime execution provider counts only if a session really runs on it.")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("record", help="sample sensors for a while (or until Ctrl-C) and write Parquet",
                       description="Samples the sensors for --duration seconds (or until Ctrl-C), then writes "
                                   "OUT/samples.parquet, OUT/intervals.parquet (one interval: the whole recording) "
                                   "and prints the energy per domain.")
    _add_sensor_args(p)
    p.add_argument("--duration", type=float, default=5.0, help="seconds to record (default 5; 0 = until Ctrl-C)")
    p.add_argument("--baseline", type=float, default=0.0, metavar="SECONDS",
                   help="also measure idle power for SECONDS before and after, and report energy net of it")
    p.add_argument("--out", default="results/record", help="output folder (default results/record)")

    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "sensors":
            return _cmd_sensors(args)
        if args.command == "runtimes":
            return _cmd_runtimes(args)
        if args.command == "record":
            from .record import cmd_record

            return cmd_record(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # errors the user can act on carry their fix in the message
        from ..errors import GreenprobeError

        if isinstance(e, GreenprobeError):
            print(f"greenprobe: {e}", file=sys.stderr)
            return 1
        raise
    return 0


def _cmd_sensors(args) -> int:
    from ..sensors import list_sensors

    statuses = list_sensors()
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
        return 0
    for s in statuses:
        mark = "ok " if s.available else "-- "
        print(f"{mark} {s.kind:<14} {s.description}")
        if s.available and s.domains:
            est = "  (ESTIMATED, not measured)" if s.estimated else ""
            print(f"      domains: {', '.join(s.domains)}{est}")
        elif not s.available:
            print(textwrap.indent(textwrap.fill(f"why: {s.reason}", 100), "      "))
            if s.fix:
                print(textwrap.indent(textwrap.fill(f"fix: {s.fix}", 100), "      "))
    return 0


def _cmd_runtimes(args) -> int:
    from ..runtimes import describe_all

    rows = describe_all()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if not r.get("installed"):
            print(f"--  {r['runtime']:<12} not usable from {r['python']}")
            print(textwrap.indent(textwrap.fill(f"why: {r.get('reason', '')}", 100), "      "))
            print(textwrap.indent(textwrap.fill(f"fix: {r.get('fix', '')}", 100), "      "))
            continue
        print(f"ok  {r['runtime']:<12} {r['version']:<12} devices: {', '.join(r.get('devices', []))}   ({r['python']})")
        for p in r.get("providers", []):
            if p["available"]:
                print(f"      provider {p['name']}: runs here")
            else:
                print(textwrap.indent(textwrap.fill(f"provider {p['name']}: skipped: {p['reason']}", 100), "      "))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
