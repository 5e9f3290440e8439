"""`greenprobe sensors`: what this machine can measure, and the fix for what it cannot."""

from __future__ import annotations

import json
import textwrap


def add_parser(sub) -> None:
    p = sub.add_parser("sensors", help="list every sensor kind with its status, domains and the fix where unavailable",
                       description="Tries to open every sensor kind and says what works here and why not.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also each kind's domains and options, with their environment variables")
    p.set_defaults(run=run)


def run(args, parser) -> int:
    from ..sensors import list_sensors

    statuses = list_sensors()
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
        return 0
    roles = {"device": "auto: kept when it opens", "cpu": "auto: the first CPU kind that opens",
             "estimate": "auto: only when no CPU kind opens", "none": "only when named"}
    for s in statuses:
        mark = "ok " if s.available else "-- "
        print(f"{mark} {s.kind:<14} {s.description}")
        if args.verbose:
            print(textwrap.indent(textwrap.fill(f"({roles.get(s.auto, s.auto)}) reports: {s.domains_doc}", 100),
                                  "      "))
            for o in s.options:
                env = f" [{o['env']}]" if o["env"] else ""
                print(textwrap.indent(textwrap.fill(f"{o['key']}{env}: {o['help']}", 100,
                                                    subsequent_indent="    "), "      "))
        if s.available and s.domains:
            est = "  (ESTIMATED, not measured)" if s.estimated else ""
            print(f"      domains: {', '.join(s.domains)}{est}")
        elif not s.available:
            print(textwrap.indent(textwrap.fill(f"why: {s.reason}", 100), "      "))
            if s.fix:
                print(textwrap.indent(textwrap.fill(f"fix: {s.fix}", 100), "      "))
    return 0
