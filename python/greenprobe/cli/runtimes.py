"""`greenprobe runtimes`: each runtime's environment, version, devices and what it can run here."""

from __future__ import annotations

import json
import textwrap


def add_parser(sub) -> None:
    p = sub.add_parser("runtimes", help="list each DL runtime (classification, then generative): environment, version, devices, execution providers or precisions, "
                                        "and what is missing with the fix",
                       description="Starts a worker in each runtime's environment and asks it what it can run here. "
                                   "An ONNX Runtime execution provider counts only if a session really runs on it.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args, parser) -> int:
    from ..runtimes import describe_all

    rows = describe_all() + describe_all(task="generate")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if not r.get("installed"):
            print(f"--  {r['runtime']:<17} not usable from {r['python']}")
            print(textwrap.indent(textwrap.fill(f"why: {r.get('reason', '')}", 100), "      "))
            print(textwrap.indent(textwrap.fill(f"fix: {r.get('fix', '')}", 100), "      "))
            continue
        print(f"ok  {r['runtime']:<17} {r['version']:<12} devices: {', '.join(r.get('devices', []))}   ({r['python']})")
        for dev, precs in (r.get("precisions") or {}).items():
            why = (r.get("reasons") or {}).get(dev, "")
            print(f"      {r['task']} on {dev}: {', '.join(precs) or 'none'}" + (f" ({why})" if why and not precs else ""))
        for p in r.get("providers", []):
            if p["available"]:
                print(f"      provider {p['name']}: runs here")
            else:
                print(textwrap.indent(textwrap.fill(f"provider {p['name']}: skipped: {p['reason']}", 100), "      "))
    return 0
