"""What the commands of the command line share: argument types, the sensor options, text layout,
the checks of an output folder, how files are written, and how SIGTERM and SIGINT stop a command."""

from __future__ import annotations

import argparse
import math
import os
import signal
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Optional

from ..config import MAX_BASELINE_S, MAX_PERIOD_US, MIN_PERIOD_US, PERIOD_US
from ..errors import ConfigError


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


# -- argument types: each rule written once, each refusal names what to give -----------------------
def _text(n: float) -> str:
    return str(int(n)) if n == int(n) else str(n)


def number(what: str, unit: str, least: float = 0.0, most: float = math.inf, *, above: bool = False,
           example: str = "10 or 0.5"):
    """An argparse type: a finite number from ``least`` (more than it with ``above``) to ``most``, so
    that nan, inf and 1e30 are refused where they are read, not deep inside the run."""
    bounds = (f"more than {_text(least)}" if above else f"{_text(least)} or more") + \
        (f" and at most {_text(most)}" if math.isfinite(most) else "")

    def parse(text: str) -> float:
        try:
            n = float(text)
        except ValueError:
            n = math.nan
        if not (math.isfinite(n) and (n > least if above else n >= least) and n <= most):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}: give {unit}, {bounds} (e.g. {example})")
        return n

    return parse


#: a duration: seconds, 0 or more
seconds = number("a duration", "seconds")
#: a duration that must pass: seconds, more than 0
positive_seconds = number("a duration", "seconds", above=True, example="2 or 0.5")
#: --baseline: the idle time measured before and after
baseline_seconds = number("an idle time", "seconds", most=MAX_BASELINE_S, example="3")
def consumer_kinds(text: str) -> str:
    """--consumers: 'process', 'cgroup' or both, comma-separated."""
    from ..consumers import parse_kinds
    from ..errors import ConfigError

    try:
        return ",".join(parse_kinds(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(f"{e.message}; {e.fix}") from None


#: --consumer-period: how often every consumer's CPU time is read
consumer_period = number("a sweep period", "seconds", least=0.01, most=60, example="0.1 or 0.25")
#: --period-us (its least, MIN_PERIOD_US, is Probe's to refuse, with the fix for the Python API too)
period_us = number("a polling period", "microseconds", above=True, most=MAX_PERIOD_US, example=str(PERIOD_US))


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= 65535


def port(text: str) -> int:
    """A TCP port for argparse: 0 to 65535 (0: any free port)."""
    if not _is_port(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a whole number from 0 to 65535 "
                                         "(0: any free port)")
    return int(text)


def host_port(text: str) -> str:
    """HOST:PORT for argparse (an IPv6 host in brackets: [::1]:50051), the port 0 to 65535."""
    host, _, port_text = text.rpartition(":")
    if not host.strip("[]") or not _is_port(port_text):
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT with a port from 0 to 65535: give e.g. "
                                         "127.0.0.1:50051 (port 0: any free port)")
    return text


def nonempty_path(text: str) -> str:
    """A file or folder name for argparse: not empty (an empty one would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a path: give a file or folder name, e.g. results/run1")
    return text


def at_least(parse, least: int, least_text: str, why: str = ""):
    """A parser for argparse that refuses values under ``least`` (``why``: the reason, in words)."""
    def check(text: str) -> int:
        n = parse(text)
        if n < least:
            raise argparse.ArgumentTypeError(f"{text!r} is under {least_text}, the least this limit may be"
                                             + (f" ({why})" if why else ""))
        return n
    check.__name__ = getattr(parse, "__name__", "number")  # argparse's "invalid int value: 'x'"
    return check


def sensor_list() -> str:
    from ..sensors import kinds

    return ", ".join(r["name"] + ("[:k=v;k=v]" if r["name"] == "synthetic" else ":path=FILE" if r["name"] == "replay" else "")
                     for r in kinds())


def add_sensor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sensors", default="auto",
                   help=f"'auto' or a comma list of: {sensor_list()}; options as kind:key=value;key=value "
                        "(default: auto; `greenprobe sensors -v` lists each kind's options)")
    p.add_argument("--period-us", type=period_us, default=PERIOD_US,
                   help=f"polling period per sensor, {MIN_PERIOD_US} to {MAX_PERIOD_US} (default {PERIOD_US})")


def paragraphs(*texts: str) -> str:
    return "\n\n".join(textwrap.fill(t, 100) for t in texts)


# -- output folders and the files written into them --------------------------------------------------
#: files 0640 in folders 0750, as the daemon writes them (daemon/access.py): energy readings are a side
#: channel (CVE-2020-8694), not for every user of the machine
UMASK = 0o027


def check_folder(folder, flag: str, make: Optional[int] = None, given=None) -> Path:
    """Refuses (ConfigError), before a command starts, a folder it could not write into: ``folder``
    where it exists, else the nearest folder above it, where it would be made. ``make``: how many
    missing levels the command makes (None: any); ``given``: what the user gave, if not the folder
    (a socket in it). The test is real, a folder made there and removed at once: access(2) says yes
    to root on /proc and on a file system mounted read-only."""
    folder = Path(os.path.abspath(folder))
    given = f"{flag} {given if given is not None else folder}"
    there, missing = folder, 0
    while not os.path.lexists(there):
        there, missing = there.parent, missing + 1

    def said(path: Path, what: str) -> str:
        return f"{given} {what}" if given.endswith(f" {path}") else f"{given}: {path} {what}"

    if not there.is_dir():
        raise ConfigError(said(folder, "is not a folder") if there == folder else
                          said(folder, f"cannot be made: {there} is not a folder"),
                          f"give {flag} a path in a folder")
    if make is not None and missing > make:
        lacking = folder.parents[make - 1] if make else folder
        raise ConfigError(said(lacking, "does not exist"), f"make it first (mkdir -p {lacking}), or give {flag} "
                          + ("a folder that exists" if lacking == folder else "a path in a folder that exists"))
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".greenprobe-check-", dir=there))
    except OSError as e:
        raise ConfigError(f"{given}: cannot write in {there} ({e.strerror})",
                          f"give {flag} a folder this user may write to") from None
    return folder


def sudo_owner() -> Optional[tuple[int, int]]:
    """Who the files belong to when root runs a command through sudo: ($SUDO_UID, $SUDO_GID, else
    that user's group); None otherwise (they stay the running user's)."""
    uid_text = os.environ.get("SUDO_UID")
    if os.geteuid() != 0 or not uid_text:
        return None
    gid_text = os.environ.get("SUDO_GID")
    try:
        uid = int(uid_text)
        if gid_text:
            return uid, int(gid_text)
        import pwd

        return uid, pwd.getpwuid(uid).pw_gid
    except (ValueError, KeyError):
        raise ConfigError(f"SUDO_UID={uid_text!r} and SUDO_GID={gid_text!r} do not name a user and a group: the "
                          "files would go to that user", "unset SUDO_UID and SUDO_GID, or set them to the numeric "
                          "ids the files should belong to") from None


def check_out(folder, flag: str = "--out") -> Path:
    """What ``save_private`` will need, checked before the command starts: a folder it may write into
    (made with its missing parents) and, under sudo, a user to give the files to."""
    sudo_owner()
    return check_folder(folder, flag)


def save_private(probe, folder) -> dict:
    """``probe.save(folder)`` with the daemon's modes (files 0640 in folders 0750, umask UMASK: only
    while saving, so a command `measure` runs keeps its caller's umask) and, run as root through
    sudo, the files and the folders this made given to the user who ran sudo. A folder that was
    there keeps its owner and mode."""
    folder = Path(os.path.abspath(folder))
    made = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    old = os.umask(UMASK)
    try:
        paths = probe.save(folder)
    finally:
        os.umask(old)
    owner = sudo_owner()
    if owner is not None:
        for p in [*made, *paths.values()]:
            os.chown(p, *owner, follow_symlinks=False)
    return paths


# -- signals -----------------------------------------------------------------------------------------
class StopSignals:
    """While entered, SIGTERM and SIGINT stop the command instead of ending the process: the first is
    noted (``signum``), and the command winds down (stops sampling, saves) and exits 128 + it. A
    signal after that acts as it would without this (SIGINT raises KeyboardInterrupt, SIGTERM ends the
    process), so a wind-down that hangs can still be cut short. A signal the caller ignored (SIGINT in
    a shell's background job) stays ignored.

    Waits must be timed (``sleep``): after SIGSTOP and SIGCONT the kernel may hand a pending signal to
    any thread, whose C handler only flags it; Python runs the handler when the main thread next runs
    Python code, which an untimed wait (a join, a lock, a long sleep) would put off for its length."""

    LOOK_S = 0.1  # the longest the main thread waits before looking for a signal

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: Optional[int] = None
        self._before: dict = {}

    def __enter__(self) -> "StopSignals":
        for s in self.SIGNALS:
            if signal.getsignal(s) != signal.SIG_IGN:
                self._before[s] = signal.signal(s, self._handle) or signal.SIG_DFL  # None: not set from Python
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._before.items():
            signal.signal(s, handler)

    def note(self, signum: int) -> None:
        """A signal that someone else's handler acted on (measure's, passing it to the command)."""
        if self.signum is None:
            self.signum = signum

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        before = self._before[signum]
        signal.signal(signum, before)
        if callable(before):
            before(signum, frame)
        else:  # SIG_DFL: end as the signal would have ended the process
            os.kill(os.getpid(), signum)

    def sleep(self, seconds: float) -> bool:
        """Sleeps ``seconds`` in steps of at most LOOK_S; whether a stop was asked for (at once if so)."""
        end = time.monotonic() + seconds
        while self.signum is None:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(self.LOOK_S, left))
        return self.signum is not None
