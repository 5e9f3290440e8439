import functools
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from standins import build_fake_amd_smi, build_fake_nvml  # noqa: E402


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory) -> Path:
    """Path of the fake libnvidia-ml.so.1, compiled once per test session."""
    return build_fake_nvml(tmp_path_factory.mktemp("nvml"))


@pytest.fixture
def nvml_env(monkeypatch):
    """Sets FAKE_NVML_* variables for one test (the fake reads them in nvmlInit)."""

    def setenv(**values):
        for k, v in values.items():
            monkeypatch.setenv(f"FAKE_NVML_{k.upper()}", str(v))

    return setenv


@pytest.fixture(scope="session")
def fake_amd_smi(tmp_path_factory) -> Path:
    """Path of the fake libamd_smi.so, compiled once per test session."""
    return build_fake_amd_smi(tmp_path_factory.mktemp("amd_smi"))


@pytest.fixture
def amd_env(monkeypatch):
    """Sets FAKE_AMD_SMI_* variables for one test (the fake reads them in amdsmi_init)."""

    def setenv(**values):
        for k, v in values.items():
            monkeypatch.setenv(f"FAKE_AMD_SMI_{k.upper()}", str(v))

    return setenv


# The caller's environment must not steer a test: a daemon address, token or TLS setting, or the
# GPUs CUDA would show, each changes what greenprobe does.
LEAKY_ENV = ("GREENPROBE_DAEMON", "GREENPROBE_TOKEN", "GREENPROBE_TLS_CA", "GREENPROBE_TLS_CERT", "GREENPROBE_TLS_KEY",
             "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "ROCR_VISIBLE_DEVICES",
             "HIP_VISIBLE_DEVICES")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in LEAKY_ENV:
        monkeypatch.delenv(name, raising=False)


# -- the suite's own child processes ---------------------------------------------------------------
# Every subprocess.Popen a test starts is recorded; at the test's end, whatever still runs is ended
# (SIGTERM, a grace period, SIGKILL) and reaped, so a test that fails before its own cleanup leaves no
# daemon or client behind. This fixture is set up before the test's other function-scoped fixtures,
# so it is torn down after them: a fixture that stops its process in its own teardown has done so.

def _state(pid: int) -> str | None:
    """The process's state letter (/proc/PID/stat), None where there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _group_alive(pgid: int) -> bool:
    """Whether a process of group pgid runs (a zombie waiting to be reaped does not count)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _leads_group(pid: int) -> bool:
    """Whether pid leads its own process group (start_new_session, process_group=0, setsid). Asked
    only of a child not yet reaped: its pid, and so its group's id, is then nobody else's."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _send(proc: subprocess.Popen, group: bool, sig: int) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def end_processes(procs, grace_s: float = 5.0) -> list:
    """Ends what still runs of procs (subprocess.Popen objects): SIGTERM (and SIGCONT, for a stopped
    one) to the process, or to its whole group where it leads one; up to grace_s for them all to end;
    SIGKILL to what is left; then reaps each. One the caller has already reaped (returncode set) is
    left alone: its pid may be another process's by now. Returns the ones it had to end."""
    targets = []
    for p in procs:
        if p.returncode is not None:
            continue
        group = _leads_group(p.pid)
        if group and _group_alive(p.pid) or not group and p.poll() is None:
            targets.append((p, group))
        else:
            p.wait()  # ended by itself (a group whose members have all ended): reap it
    for p, group in targets:
        _send(p, group, signal.SIGTERM)
        _send(p, group, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    running = list(targets)
    while running and time.monotonic() < deadline:
        time.sleep(0.02)
        running = [(p, g) for p, g in running if (_group_alive(p.pid) if g else p.poll() is None)]
    for p, group in running:
        _send(p, group, signal.SIGKILL)
    for p, group in targets:
        deadline = time.monotonic() + 10
        while group and _group_alive(p.pid) and time.monotonic() < deadline:  # the leader stays unreaped till
            time.sleep(0.02)  # its group has ended, so the group's id cannot pass to another process
        p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()
    return [p for p, _ in targets]


_NOT_FOLLOWED = (str, bytes, bytearray, int, float, complex, bool, type, types.ModuleType, types.FrameType,
                 types.CodeType, Path)


def _held(roots, limit: int = 20_000) -> set:
    """ids of the Popen objects reachable from roots through containers, attributes, closures and
    bound methods (pytest's own objects are not followed: they reach every test's values)."""
    found, seen = set(), set()
    todo = [(r, 0) for r in roots]
    while todo and len(seen) < limit:
        obj, depth = todo.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, subprocess.Popen):
            found.add(id(obj))
            continue
        if depth >= 8 or isinstance(obj, _NOT_FOLLOWED) or isinstance(obj, ProcessRegistry):
            continue
        if type(obj).__module__.split(".")[0] in ("_pytest", "pytest", "pluggy"):
            continue
        if isinstance(obj, dict):
            kids = list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            kids = list(obj)
        elif isinstance(obj, types.FunctionType):
            kids = [c.cell_contents for c in obj.__closure__ or () if c.cell_contents is not None] + \
                   list(obj.__defaults__ or ())
        elif isinstance(obj, types.MethodType):
            kids = [obj.__self__, obj.__func__]
        elif isinstance(obj, functools.partial):
            kids = [obj.func, *obj.args, *obj.keywords.values()]
        else:
            kids = list(getattr(obj, "__dict__", {}).values())
            kids += [getattr(obj, n, None) for n in getattr(type(obj), "__slots__", ()) if isinstance(n, str)]
        todo += [(k, depth + 1) for k in kids]
    return found


class ProcessRegistry:
    """The processes one test started (``started``), and the end of them (``end``)."""

    def __init__(self, request, left_to_wider: list):
        self.started: list = []
        self._request, self._left_to_wider = request, left_to_wider

    def _held_by_wider_fixtures(self) -> set:
        """A module- or session-scoped fixture may start a process on first use, inside a test, and
        end it in its own teardown (test_runtimes.py's workers): what such a fixture's value still
        holds is left to it."""
        roots = []
        for d in self._fixture_defs():
            cached = getattr(d, "cached_result", None)
            module = getattr(getattr(d, "func", None), "__module__", "") or ""
            if cached and cached[0] is not self._left_to_wider and getattr(d, "scope", "function") != "function" \
                    and module.split(".")[0] not in ("_pytest", "pytest"):
                roots.append(cached[0])
        return _held(roots)

    def _fixture_defs(self) -> list:
        """Every fixture definition pytest knows (its internals differ between versions: each is asked)."""
        request, found = self._request, {}
        manager = getattr(request, "_fixturemanager", None)
        defs = list(getattr(manager, "_get_all_fixture_defs", list)())  # pytest 9
        for table in (getattr(manager, "_arg2fixturedefs", {}), getattr(request, "_arg2fixturedefs", {})):
            for some in table.values():  # pytest 7 and 8; the test's own
                defs += list(some)
        defs += list(getattr(request, "_fixture_defs", {}).values())  # those asked for by name (getfixturevalue)
        for d in defs:
            found[id(d)] = d
        return list(found.values())

    def end(self, grace_s: float = 5.0) -> list:
        """The fixture's teardown: ends and reaps what still runs of ``started``, but what a wider
        fixture holds (it is ended at the session's end if its fixture forgets to). Returns what it ended."""
        held = self._held_by_wider_fixtures()
        mine = [p for p in self.started if id(p) not in held]
        self._left_to_wider += [p for p in self.started if id(p) in held and p not in self._left_to_wider]
        self.started = []
        return end_processes(mine, grace_s)


@pytest.fixture(scope="session", autouse=True)
def _processes_left_to_wider_fixtures():
    left: list = []
    yield left
    end_processes(left)


@pytest.fixture(autouse=True)
def started_processes(request, monkeypatch, _processes_left_to_wider_fixtures):
    """Records each subprocess.Popen started during the test; at its end, ends what still runs."""
    registry = ProcessRegistry(request, _processes_left_to_wider_fixtures)
    init = subprocess.Popen.__init__

    @functools.wraps(init)
    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        registry.started.append(self)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    yield registry
    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    registry.end()
