"""What the commands of the command line share: argument types, the sensor options, text layout."""

from __future__ import annotations

import argparse
import textwrap

from ..config import MIN_PERIOD_US, PERIOD_US


def parse_bytes(text: str) -> int:
    """A size for argparse: 123, 512K, 20M, 20G, 1T (powers of 1024)."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().rstrip("B").rstrip("I")
    try:
        n = float(t[:-1]) * scale[t[-1]] if t and t[-1] in scale else float(t)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give bytes, or a number with K, M, G or T (e.g. 20G)")
    return int(n)


def seconds(text: str) -> float:
    """A duration for argparse: seconds, 0 or more."""
    try:
        n = float(text)
    except ValueError:
        n = -1.0
    if not n >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give seconds, 0 or more (e.g. 10 or 0.5)")
    return n


def at_least(parse, least: int, least_text: str, why: str = ""):
    """A parser for argparse that refuses values under ``least`` (``why``: the reason, in words)."""
    def check(text: str) -> int:
        n = parse(text)
        if n < least:
            raise argparse.ArgumentTypeError(f"{text!r} is under {least_text}, the least this limit may be"
                                             + (f" ({why})" if why else ""))
        return n
    return check


def sensor_list() -> str:
    from ..sensors import kinds

    return ", ".join(r["name"] + ("[:k=v;k=v]" if r["name"] == "synthetic" else ":path=FILE" if r["name"] == "replay" else "")
                     for r in kinds())


def add_sensor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sensors", default="auto",
                   help=f"'auto' or a comma list of: {sensor_list()}; options as kind:key=value;key=value "
                        "(default: auto; `greenprobe sensors -v` lists each kind's options)")
    p.add_argument("--period-us", type=float, default=PERIOD_US,
                   help=f"polling period per sensor, >= {MIN_PERIOD_US} (default {PERIOD_US})")


def paragraphs(*texts: str) -> str:
    return "\n\n".join(textwrap.fill(t, 100) for t in texts)
