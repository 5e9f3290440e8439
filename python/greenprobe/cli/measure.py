"""`greenprobe measure -- CMD`: a private daemon, the command under it, a perf-stat-like summary, and
the share of each domain that the command's process tree used (regressed on every process's CPU time:
consumer_fit), beside what the whole machine used.

SIGTERM or SIGINT stops the command, not the measurement: measure passes the signal on, waits for
the command, then saves and reports as usual and exits with the command's status (128 + signal
when the signal ended it). A command that outlives the signal by --kill-after seconds gets SIGTERM,
then SIGKILL. A SIGINT ignored by measure's caller (a script's background job) stays ignored. If measure itself is killed (SIGKILL), the kernel kills the command
too (PR_SET_PDEATHSIG), so no orphan runs on unmeasured. A signal before the command starts (during
--baseline) means it is not started: measure saves the idle it measured and exits 128 + the signal. A
signal sent while measure was stopped (SIGSTOP) acts as soon as it goes on (SIGCONT): every wait of
measure's main thread is a timed one (common.StopSignals).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .common import (StopSignals, add_sensor_args, baseline_seconds, check_out, consumer_period, nonempty_path,
                     save_private, seconds)


def cmd_measure(args, cmd: list[str]) -> int:
    from .. import _core
    from ..daemon import Daemon
    from ..session import Probe

    probe = Probe(sensors=args.sensors, period_us=args.period_us, baseline_s=args.baseline,
                  consumers="process" if args.tree else None, consumer_period_s=args.consumer_period)
    out = check_out(args.out)
    with StopSignals() as stop, tempfile.TemporaryDirectory(prefix="greenprobe-") as tmp:
        sock = Path(tmp) / "daemon.sock"
        daemon = Daemon(probe, sock)
        probe.start()
        try:
            daemon.start()
            for s in probe.skipped:
                print(f"greenprobe: skipped {s.kind}: {s.reason}", file=sys.stderr)
            env = dict(os.environ, GREENPROBE_DAEMON=f"unix:{sock}")
            start = _core.now_ns()
            pids: list[int] = []
            if stop.signum is None:
                rc = _run(cmd, env, args.kill_after, stop, pids)
            else:
                print(f"greenprobe: {signal.Signals(stop.signum).name} before the command started: not starting it",
                      file=sys.stderr)
                rc = 128 + stop.signum
            end = _core.now_ns()
            probe.add_mark("command", start, end, cmd=" ".join(cmd), exit_code=rc)
        finally:
            daemon.stop()
            probe.stop()
        paths = save_private(probe, out)
    _report(probe, cmd, rc, start, end, paths)
    if args.tree and pids:
        _report_tree(probe, pids[0], start, end)
    return rc


def _run(cmd: list[str], env: dict, kill_after: float = 10.0, stop: StopSignals | None = None,
         pids: list | None = None) -> int:
    """Runs cmd to its end with SIGTERM/SIGINT passed on to it; its exit status, 128 + signal when
    a signal ended it.

    A SIGINT that measure's caller ignored (a non-interactive shell does so for its background
    jobs) stays ignored, by measure and by the command, as for any program so started. After a
    signal that should end the command, measure waits kill_after seconds, then sends SIGTERM, and as
    long again, then SIGKILL: it never waits for ever on a command that does not end."""
    try:
        proc = subprocess.Popen(_dying_with_us(cmd), env=env)
    except FileNotFoundError:
        print(f"greenprobe: command not found: {cmd[0]}", file=sys.stderr)
        return 127
    if pids is not None:
        pids.append(proc.pid)
    asked = []  # monotonic time of the first signal that should end the command

    def forward(signum, frame):
        if not asked:
            asked.append(time.monotonic())
        if stop is not None:
            stop.note(signum)  # a signal after the command's end cuts measure's saving short
        # The command shares measure's process group, so a Ctrl-C typed at the terminal has reached
        # it already: sending SIGINT again would interrupt its clean-up. Any other signal, or a
        # SIGINT sent to measure alone (kill, no terminal, in the background), is passed on.
        if signum == signal.SIGINT and _terminal_in_front():
            return
        _send(proc, signum)

    passed = [s for s in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(s) != signal.SIG_IGN]
    before = {s: signal.signal(s, forward) for s in passed}
    try:
        escalation = [signal.SIGTERM, signal.SIGKILL]
        while True:
            try:
                returncode = proc.wait(timeout=StopSignals.LOOK_S)  # timed: see common.StopSignals
                break
            except subprocess.TimeoutExpired:
                pass
            if asked and escalation and time.monotonic() - asked[0] >= kill_after * (3 - len(escalation)):
                sig = escalation.pop(0)
                print(f"greenprobe: the command did not end {time.monotonic() - asked[0]:.1f} s after the "
                      f"signal; sending {sig.name}", file=sys.stderr)
                _send(proc, sig)
    finally:
        for s, handler in before.items():  # a second Ctrl-C while saving interrupts the saving
            signal.signal(s, handler)
    return 128 - returncode if returncode < 0 else returncode


def _send(proc: subprocess.Popen, signum: int) -> None:
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass


def _terminal_in_front() -> bool:
    """Whether measure runs in the foreground of a terminal (whose Ctrl-C reaches its whole group)."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            pass
    return False


# Becomes the command after asking the kernel to SIGKILL it when measure dies (PR_SET_PDEATHSIG = 1).
# The setting is the process's own and survives execve (not of a set-user-ID or set-group-ID
# program), not fork: it covers the command, not what the command starts; it fires when the
# thread that started the command ends, and Popen runs on measure's main thread. It is made in a small
# Python that then execs, not in a preexec_fn, because a preexec_fn forces fork() in a process
# whose gRPC and sampler threads make that unsafe (and gRPC logs it); the price is ~10 ms of
# Python start-up inside the command's interval.
_EXEC_DYING_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, *(ctypes.c_ulong(v) for v in (signal.SIGKILL, 0, 0, 0)))
if os.getppid() != int(sys.argv[1]):
    os._exit(128 + signal.SIGKILL)  # measure died before the prctl: nothing would kill us
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    missing = isinstance(e, FileNotFoundError)
    print(f"greenprobe: {'command not found' if missing else e.strerror}: {sys.argv[2]}", file=sys.stderr)
    os._exit(127 if missing else 126)
"""


def _dying_with_us(cmd: list[str]) -> list[str]:
    """cmd, started so that it dies with measure (Linux; elsewhere cmd as it is)."""
    if not sys.platform.startswith("linux") or not sys.executable:
        return cmd
    return [sys.executable, "-I", "-S", "-c", _EXEC_DYING_WITH_PARENT, str(os.getpid()), *cmd]


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
    labels = Counter(label for label in probe.marks_table().column("label").to_pylist() if label != "command")
    if labels:
        print("\n   marks:", ", ".join(f"{k} x{v}" for k, v in labels.most_common()), file=out)
    print(f"\n   {secs:12.3f} s elapsed\n", file=out)
    print(f" wrote {paths['intervals']} (and samples, labels, metadata)", file=out)


def _report_tree(probe, pid: int, start: int, end: int) -> None:
    """The command's process tree's share of each domain, beside the domain's total."""
    from ..errors import ConfigError

    out = sys.stderr
    try:
        rows = probe.process_tree(pid, start, end)
    except ConfigError as e:
        print(f"\n The command's processes: not estimated ({e.message})", file=out)
        return
    print(f"\n The command's processes (pid {pid} and its descendants), by regression on CPU time:\n", file=out)
    for r in rows:
        est = "   ESTIMATED" if r["estimated"] else ""
        where = f"{r['sensor']}/{r['domain']}"
        if r["energy_j"] != r["energy_j"]:  # NaN: not estimated
            print(f"   {'-':>12}    {where:<24} of {r['measured_j']:.3f} J: {r['note']}{est}", file=out)
            continue
        share = r["energy_j"] / r["measured_j"] * 100 if r["measured_j"] > 0 else float("nan")
        print(f"   {r['energy_j']:12.3f} J  {where:<24} [{r['energy_j_low']:.3f}, {r['energy_j_high']:.3f}] of "
              f"{r['measured_j']:.3f} J ({share:.0f} %), {r['processes']} processes, {r['cpu_s']:.2f} CPU-s{est}",
              file=out)
        if r["note"]:
            print(f"   {'':12}    {r['note']}", file=out)


def add_parser(sub) -> None:
    p = sub.add_parser("measure", help="run a command under a private daemon and report its energy",
                       description="Starts a private daemon, runs CMD with GREENPROBE_DAEMON set (so greenprobe.mark() "
                                   "in any of its processes is recorded), records the whole run as one interval, "
                                   "writes OUT/*.parquet and prints time, energy per domain, average power and marks "
                                   "per label. The exit status is CMD's.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  greenprobe measure -- python infer.py --batch 64\n"
                              "  greenprobe measure --sensors nvml,rapl-msr --baseline 3 --out runs/a -- ./bench")
    add_sensor_args(p)
    p.add_argument("--out", type=nonempty_path, default="results/measure",
                   help="output folder (default results/measure; files 0640 in folders 0750, under sudo the "
                        "invoking user's)")
    p.add_argument("--baseline", type=baseline_seconds, default=0.0, metavar="SECONDS",
                   help="measure idle power for SECONDS before and after the command; report energy net of it")
    p.add_argument("--kill-after", type=seconds, default=10.0, metavar="SECONDS",
                   help="after a signal passed on to CMD, wait SECONDS for it to end, then send SIGTERM, and as long "
                        "again, then SIGKILL (default 10; a SIGINT that measure's caller ignored is ignored, as "
                        "shells expect of background jobs)")
    p.add_argument("--no-tree", dest="tree", action="store_false",
                   help="do not record every process's CPU time (by default measure does, and reports the share of "
                        "each domain that CMD's process tree used, beside what the whole machine used, in "
                        "OUT/consumers.parquet too)")
    p.add_argument("--consumer-period", type=consumer_period, default=0.1, metavar="SECONDS",
                   help="how often every process's CPU time is read (default 0.1; a share needs at least 8 periods "
                        "of the command)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run")
    p.set_defaults(run=run)


def run(args, parser) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("measure needs a command after --, e.g. greenprobe measure -- python infer.py")
    return cmd_measure(args, cmd)
