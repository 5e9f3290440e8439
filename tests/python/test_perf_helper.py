"""greenprobe-perf-helper and `greenprobe setup-perf`: RAPL at full rate without root.

- A process refused the events (the fake perf PMU says EACCES to it, not to the helper, which
  stands for a helper holding CAP_PERFMON) gets the descriptors from the helper and measures the
  exact truth through them.
- As an unprivileged user (a forked child that drops root), against the real kernel: outside the
  helper's group the helper refuses and says how to join; with the helper set up by
  `setup-perf --apply` (cap_perfmon, 0750 root:GROUP) and the user in the group, the helper runs in
  the loader's secure mode and ignores the stand-in trees the environment names.
- The helper's one input, the request, fuzzed with hypothesis: it never crashes and never answers
  anything but the exact request with descriptors.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenprobe.config import PERF_HELPER
from standins import build_fake_perf, make_perf_tree
from test_rapl_perf import check_truth, law, opens, run_child

NOBODY = 65534


@pytest.fixture(scope="module")
def fake_perf(tmp_path_factory) -> Path:
    return build_fake_perf(tmp_path_factory.mktemp("perf"))


@pytest.fixture(scope="module")
def helper() -> Path:
    assert PERF_HELPER.is_file(), f"greenprobe-perf-helper is installed with the package: missing at {PERF_HELPER}"
    return PERF_HELPER


def test_a_process_refused_the_events_measures_through_the_helpers_descriptors(tmp_path, fake_perf, helper):
    cpus = {0: 0, 1: 0, 2: 1, 3: 1}
    options, env = make_perf_tree(tmp_path, cpus, "0,2", {"energy-pkg": 2, "energy-ram": 3})
    law_env, waves = law(time.monotonic_ns(), {(0, 2): 1.0, (0, 3): 0.2, (1, 2): 0.7, (1, 3): 0.25})
    domain = {(0, 2): "package-0", (0, 3): "dram-0", (1, 2): "package-1", (1, 3): "dram-1"}
    cfg = {"options": {**options, "perf_helper": str(helper)}, "waves": {domain[k]: w for k, w in waves.items()},
           "marks": [["long", 6, 0.05, 0.01, False]]}
    # The helper takes its trees from the environment (it takes no arguments).
    tree_env = {"GREENPROBE_PERF_EVENT_ROOT": options["perf_event_root"],
                "GREENPROBE_SYSFS_CPU_ROOT": options["sysfs_cpu_root"], "GREENPROBE_PROC_ROOT": options["proc_root"]}
    log = tmp_path / "perf.log"
    out = run_child(fake_perf, {**env, **law_env, **tree_env, "FAKE_PERF_OPEN_ERRNO": "EACCES",
                                "FAKE_PERF_ALLOW_EXE": helper.name}, cfg, log)
    assert "error" not in out, out
    assert out["info"]["opened_by"] == f"greenprobe-perf-helper {helper}"
    # the helper opened each event once, on its package's CPU; this process adopted the descriptors
    assert opens(log) == sorted(["42 2 0", "42 3 0", "42 2 2", "42 3 2"])
    assert sum(line.startswith("adopt ") for line in log.read_text().splitlines()) == 4
    check_truth(out, "long", per_interval_rel=0.01)


def test_without_the_helper_the_permission_error_stays_with_its_fix(tmp_path, fake_perf):
    options, env = make_perf_tree(tmp_path, {0: 0}, "0", {"energy-pkg": 2})
    cfg = {"options": {**options, "perf_helper": str(tmp_path / "no-helper")}, "waves": {}, "marks": []}
    out = run_child(fake_perf, {**env, "FAKE_PERF_OPEN_ERRNO": "EACCES"}, cfg, tmp_path / "perf.log")
    assert out["category"] == "permission", out
    assert "could not open them either" in out["message"] and "no-helper" in out["message"]
    assert "setup-perf" in out["fix"]
    # GREENPROBE_PERF_HELPER set and empty: the installed helper is not tried either
    cfg["options"].pop("perf_helper")
    out = run_child(fake_perf, {**env, "FAKE_PERF_OPEN_ERRNO": "EACCES", "GREENPROBE_PERF_HELPER": ""}, cfg,
                    tmp_path / "perf.log")
    assert out["category"] == "permission" and "could not open them either" not in out["message"], out


# --- as an unprivileged user, against the real kernel --------------------------------------------

CLIENT = r"""
import json, os, sys
from greenprobe import _core
from greenprobe.errors import SensorError
# everything imported first: the interpreter's own files may be root's alone
gid = int(sys.argv[2])
os.setgroups([gid] if gid else [])
os.setgid(65534)
os.setuid(65534)
try:
    s = _core.open_sensor("rapl-perf", json.loads(sys.argv[1]))
    print(json.dumps({"opened": [c["domain"] for c in s.channels()], "info": s.info()}))
except SensorError as e:
    print(json.dumps({"category": e.category, "message": e.message, "fix": e.fix}))
"""


def _as_nobody(options: dict, extra_gid: int = 0, env: dict | None = None) -> dict:
    r = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(options), str(extra_gid)], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, **(env or {})))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def world_readable_tree():
    """A stand-in tree nobody can read (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="gp-perf-"))
    os.chmod(d, 0o755)
    options, _ = make_perf_tree(d, {0: 0, 1: 0}, "0", {"energy-pkg": 2})
    for root, dirs, files in os.walk(d):
        for n in dirs:
            os.chmod(os.path.join(root, n), 0o755)
        for n in files:
            os.chmod(os.path.join(root, n), 0o644)
    yield d, options
    shutil.rmtree(d)


@pytest.fixture
def test_group():
    name = f"gpperf{os.getpid() % 100000}"
    yield name
    subprocess.run(["groupdel", name], capture_output=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops from root to nobody and sets file capabilities")


@needs_root
def test_outside_the_helpers_group_the_helper_refuses_and_says_how_to_join(world_readable_tree, helper, test_group):
    d, options = world_readable_tree
    subprocess.run(["groupadd", "--system", test_group], check=True)
    copy = d / helper.name
    shutil.copy(helper, copy)
    os.chown(copy, 0, grp.getgrnam(test_group).gr_gid)
    os.chmod(copy, 0o755)  # runnable by anyone: the helper's own check is what refuses
    out = _as_nobody({**options, "perf_helper": str(copy)})
    # the real kernel refuses nobody (perf_event_paranoid 2 here, no CAP_PERFMON), then the helper does
    assert out["category"] == "permission", out
    assert "not a member of the helper's group" in out["message"], out
    assert f"--group {test_group}" in out["fix"] and "setup-perf" in out["fix"]


@needs_root
def test_setup_perf_grants_the_helper_and_it_then_ignores_the_environment(world_readable_tree, helper, test_group,
                                                                           capsys):
    from greenprobe.cli import main
    from greenprobe.cli.setup_perf import check

    d, options = world_readable_tree
    copy = d / helper.name
    shutil.copy(helper, copy)
    assert main(["setup-perf", "--helper", str(copy), "--group", test_group]) == 0  # prints only
    printed = capsys.readouterr().out
    assert f"sudo setcap cap_perfmon=ep {copy}" in printed and f"sudo chmod 0750 {copy}" in printed
    assert check(copy, test_group)  # nothing changed yet
    assert main(["setup-perf", "--helper", str(copy), "--group", test_group, "--check"]) == 1
    assert main(["setup-perf", "--helper", str(copy), "--group", test_group, "--apply"]) == 0
    assert check(copy, test_group) == []
    assert main(["setup-perf", "--helper", str(copy), "--group", test_group, "--check"]) == 0
    assert "cap_perfmon" in subprocess.run(["getcap", str(copy)], capture_output=True, text=True).stdout
    gid = grp.getgrnam(test_group).gr_gid

    # nobody, not in the group: may not even run it
    out = _as_nobody({**options, "perf_helper": str(copy)})
    assert out["category"] == "permission" and "cannot run greenprobe-perf-helper" in out["message"], out
    # nobody in the group: the helper runs with cap_perfmon, so in secure mode: the trees named in its
    # environment are ignored and it reads the real /sys, where this machine has no power PMU
    tree_env = {"GREENPROBE_PERF_EVENT_ROOT": options["perf_event_root"],
                "GREENPROBE_SYSFS_CPU_ROOT": options["sysfs_cpu_root"]}
    out = _as_nobody({**options, "perf_helper": str(copy)}, extra_gid=gid, env=tree_env)
    if "opened" in out:  # a machine with a real power PMU: the helper opened the real events
        assert out["info"]["opened_by"].startswith("greenprobe-perf-helper"), out
    elif "did not hand over" in out["message"] or "moved in 250 ms" in out["message"]:
        # a machine whose real power PMU lacks the stand-in's events or never counts (a VM listing
        # energy-psys only, reading 0): the helper read the real tree, not the one its environment named
        assert Path("/sys/bus/event_source/devices/power").exists(), out
        assert "greenprobe-perf-helper" in out["message"] or "(energy-psys) moved" in out["message"], out
    else:
        assert "/sys/bus/event_source/devices/power" in out["message"], out
        assert options["perf_event_root"] + "/power/type" not in out["message"].split("could not open them either")[1]


# --- the helper's input, fuzzed --------------------------------------------------------------------

def _ask(helper: Path, payload: bytes | None, pass_fd: bool = False) -> tuple[int, bytes, int]:
    """Runs the helper on a socketpair as its descriptor 3; sends payload (None: nothing, then EOF)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    p = subprocess.Popen([str(helper)], close_fds=False,  # the dup2 below makes descriptor 3
                         preexec_fn=lambda fd=theirs.fileno(): os.dup2(fd, 3) if fd != 3 else None,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={"GREENPROBE_PERF_EVENT_ROOT": "/nonexistent"})
    theirs.close()
    try:
        if payload is not None:
            if pass_fd:
                with open(os.devnull, "rb") as f:
                    socket.send_fds(ours, [payload], [f.fileno()])
            else:
                ours.send(payload)
        else:
            ours.shutdown(socket.SHUT_WR)
        ours.settimeout(10)
        try:
            msg, fds, _, _ = socket.recv_fds(ours, 65536, 8)
        except (TimeoutError, ConnectionResetError):
            msg, fds = b"", []
        for fd in fds:
            os.close(fd)
        return p.wait(timeout=10), msg, len(fds)
    finally:
        ours.close()


@settings(max_examples=60, deadline=None)
@given(payload=st.one_of(st.none(), st.binary(max_size=300),
                         st.sampled_from([b"greenprobe-perf-helper 1", b"greenprobe-perf-helper 1\n\n",
                                          b"greenprobe-perf-helper 2\n", b"GREENPROBE-PERF-HELPER 1\n"])),
       pass_fd=st.booleans())
def test_the_helper_refuses_every_request_but_the_one_it_knows(helper, payload, pass_fd):
    pass_fd = pass_fd and payload is not None  # a descriptor travels with a message only
    rc, msg, nfds = _ask(helper, payload, pass_fd)
    assert rc in (0, 1), f"the helper died (rc {rc}) on {payload!r}"
    assert nfds == 0 and not msg.startswith(b"ok"), (payload, msg)
    if msg:
        assert msg.startswith(b"error "), msg
        exact = payload == b"greenprobe-perf-helper 1\n" and not pass_fd
        # the exact request reaches the PMU (none at /nonexistent); anything else is refused as config
        assert msg.startswith(b"error not-found" if exact else b"error config"), (payload, msg)


def test_the_exact_request_reaches_the_pmu(helper):
    rc, msg, nfds = _ask(helper, b"greenprobe-perf-helper 1\n")
    assert rc == 1 and nfds == 0 and msg.startswith(b"error not-found rapl-perf found no power PMU"), msg
