"""``greenprobe setup-perf``: lets a group read RAPL at full rate without root, once.

RAPL's energy counters are root-only by default because high-rate readings are a side channel
(CVE-2020-8694). perf_event's power PMU opens them for a process with CAP_PERFMON. A capability
attaches to an executable, not to a Python module, so the package ships one small program,
greenprobe-perf-helper, that does nothing but open the RAPL events and hand the descriptors to its
caller (cpp/src/sensors/perf_handoff.hpp). This command makes the helper executable by one group only
and grants it cap_perfmon; the rapl-perf sensor then runs it when it may not open the events itself.
"""

from __future__ import annotations

import grp
import os
import platform
import pwd
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

from ..config import PERF_HELPER
from ..errors import ConfigError

HELPER = "greenprobe-perf-helper"
import argparse


def installed_helper() -> Path:
    """Where the package installs the helper (the wheel's greenprobe/bin/)."""
    return PERF_HELPER


def capability() -> str:
    """cap_perfmon from Linux 5.8; before it perf's system-wide events needed cap_sys_admin."""
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return "cap_perfmon"
    return "cap_perfmon" if (major, minor) >= (5, 8) else "cap_sys_admin"


def commands(helper: Path, group: str, users: list[str]) -> list[list[str]]:
    cap = capability()
    out = []
    try:
        grp.getgrnam(group)
    except KeyError:
        out.append(["groupadd", "--system", group])
    out += [["chown", f"root:{group}", str(helper)],
            ["chmod", "0750", str(helper)],
            ["setcap", f"{cap}=ep", str(helper)]]
    out += [["usermod", "-aG", group, u] for u in users]
    return out


def check(helper: Path, group: str) -> list[str]:
    """What is not yet as setup-perf leaves it (empty when all is)."""
    problems = []
    st = helper.stat()
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return [f"group {group} does not exist"]
    if st.st_uid != 0 or st.st_gid != gid:
        problems.append(f"{helper} is owned by {st.st_uid}:{st.st_gid}, not root:{group}")
    if stat.S_IMODE(st.st_mode) != 0o750:
        problems.append(f"{helper} has mode {stat.S_IMODE(st.st_mode):04o}, not 0750")
    getcap = shutil.which("getcap") or "/usr/sbin/getcap"
    if not os.path.exists(getcap):
        problems.append("getcap is not installed, so the capability cannot be checked (Debian/Ubuntu: apt-get install "
                        "libcap2-bin)")
        return problems
    caps = subprocess.run([getcap, str(helper)], capture_output=True, text=True).stdout
    if capability() not in caps:
        problems.append(f"{helper} has no {capability()} (getcap: {caps.strip() or 'none'})")
    return problems


def cmd_setup_perf(args) -> int:
    helper = Path(args.helper) if args.helper else installed_helper()
    if not helper.is_file():
        raise ConfigError(f"{HELPER} is not at {helper}",
                          "it is built and installed with the package (pip install greenprobe); for a build tree "
                          "pass --helper PATH")
    users = list(args.user or [])
    for u in users:
        try:
            pwd.getpwnam(u)
        except KeyError:
            raise ConfigError(f"no user {u!r} on this machine", "name an existing user with --user") from None
    if args.check:
        problems = check(helper, args.group)
        for p in problems:
            print(f"not set up: {p}")
        if not problems:
            print(f"{helper}: root:{args.group} 0750 {capability()}=ep: members of {args.group} can use rapl-perf")
        return 1 if problems else 0
    todo = commands(helper, args.group, users)
    if not args.apply:
        print(f"# Lets members of group {args.group} read RAPL energy at full rate without root, through {HELPER}")
        print(f"# ({capability()} on that one program, executable by the group only). Run as root:")
        if capability() == "cap_sys_admin":
            print("# (this kernel predates CAP_PERFMON, 5.8: cap_sys_admin grants the helper far more; prefer "
                  "kernel.perf_event_paranoid=0 or a newer kernel)")
        for c in todo:
            print("sudo " + shlex.join(c))
        if not users:
            print(f"sudo usermod -aG {args.group} USER      # each user who measures; they log in again after")
        print("# Again after every reinstall or upgrade of greenprobe (a new file has no capability).")
        print("# Or run it all: sudo greenprobe setup-perf --apply [--user USER]")
        return 0
    if os.geteuid() != 0:
        raise ConfigError("setup-perf --apply changes file capabilities and groups: it needs root",
                          "run: sudo " + shlex.join(["greenprobe", "setup-perf", "--apply", "--group", args.group]
                                                    + [x for u in users for x in ("--user", u)]))
    for tool in ("setcap", "chown", "chmod") + (("groupadd",) if todo[0][0] == "groupadd" else ()) + \
            (("usermod",) if users else ()):
        if shutil.which(tool) is None:
            raise ConfigError(f"{tool} is not installed",
                              "install it (Debian/Ubuntu: apt-get install libcap2-bin passwd; Fedora: dnf install "
                              "libcap shadow-utils)")
    for c in todo:
        r = subprocess.run(c, capture_output=True, text=True)
        print("ran: " + shlex.join(c) + ("" if r.returncode == 0 else f"  -> FAILED: {r.stderr.strip()}"))
        if r.returncode != 0:
            hint = ("the file system may not hold capabilities (nosuid mount, or no extended attributes): install "
                    "greenprobe on another one") if c[0] == "setcap" else "see the message above"
            raise ConfigError(f"{c[0]} failed: {r.stderr.strip()}", hint)
    problems = check(helper, args.group)
    if problems:
        raise ConfigError("the helper is not set up: " + "; ".join(problems), "see the commands above")
    print(f"{helper}: root:{args.group} 0750 {capability()}=ep")
    print(f"members of {args.group} can now use sensors='rapl-perf' without root"
          + (" (users just added: after they log in again)" if users else ""))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("setup-perf", help="let a group read RAPL at full rate without root (prints, or with --apply "
                                          "runs, the setcap and group commands)",
                       description="RAPL energy is root-only (CVE-2020-8694); perf_event's power PMU opens it for a "
                                   "program with CAP_PERFMON. This grants that capability to one small program shipped "
                                   "with greenprobe, greenprobe-perf-helper, executable by one group: it opens the RAPL "
                                   "events and hands the descriptors to the rapl-perf sensor of a group member, who "
                                   "then reads at full rate with no privilege and no daemon.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  greenprobe setup-perf                            print the commands\n"
                              "  sudo greenprobe setup-perf --apply --user alice  run them; alice joins the group")
    p.add_argument("--group", default="greenprobe", help="the group whose members may read (default greenprobe)")
    p.add_argument("--user", action="append", metavar="USER", help="add USER to the group (repeat for more)")
    p.add_argument("--helper", help="the helper's path (default: the one installed with the package)")
    p.add_argument("--apply", action="store_true", help="run the commands (as root) and check the result")
    p.add_argument("--check", action="store_true", help="only say whether the helper is set up (exit 1 if not)")
    p.set_defaults(run=run)


def run(args, parser) -> int:
    return cmd_setup_perf(args)
