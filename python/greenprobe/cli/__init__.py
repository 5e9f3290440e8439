"""The greenprobe command line."""

from __future__ import annotations

import argparse
import sys
import textwrap

from .._version import __version__
from . import daemon, measure, record, report, runtimes, sensors, setup_perf, study, top

EPILOG = """\
examples:
  greenprobe sensors                      what this machine can measure, and how to fix what it cannot
  greenprobe record --duration 10         sample every available sensor for 10 s, write results/record/
  greenprobe record --sensors rapl-msr,nvml --period-us 200 --out run1
  greenprobe measure --out run2 -- python infer.py     run a command under a private daemon: whole-run
                                                       energy plus every mark its processes make
  greenprobe daemon --group greenprobe                 one sampler for many processes (GREENPROBE_DAEMON)
  greenprobe top                                       power per process, live, with intervals
"""


def _epilog() -> str:
    """The examples, then every sensor option that has an environment variable (from the registry):
    each is also a Python argument of greenprobe.Probe and a kind:key=value option of --sensors."""
    from ..sensors import kinds

    lines, seen = [], set()
    for row in kinds():
        for key, var, text in row["options"]:
            if var and var not in seen:
                seen.add(var)
                lines.append(f"  {var:<31} {textwrap.shorten(text, 66, placeholder='...')}")
    return (EPILOG + "\nenvironment (each also a Python argument of greenprobe.Probe, and a kind:key=value option):\n"
            + "\n".join(lines) + "\n")



#: The commands, in the order --help lists them: each module's add_parser adds its subcommand (its
#: arguments, its help) and sets its run(args, parser).
COMMANDS = (sensors, runtimes, record, study, report, daemon, setup_perf, measure, top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="greenprobe",
        description="Measure the energy of deep-learning inference: a native high-rate sampler (NVML, RAPL), "
                    "marks on the same clock, energy per interval with honest bounds.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"greenprobe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args, parser)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # errors the user can act on: what failed, then the fix, no traceback
        from ..errors import GreenprobeError

        if isinstance(e, GreenprobeError):
            print(f"greenprobe: {e.message}", file=sys.stderr)
            if e.fix:
                print(f"  fix: {e.fix}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
