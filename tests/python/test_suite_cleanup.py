"""The suite ends its own child processes: what a test started and left running (it failed before its
cleanup) is ended at its teardown, even when it ignores SIGTERM; a hung daemon is killed by
stop_daemon; what a fixture ends in its own teardown, or a wider fixture holds, is left to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_daemon import start_daemon, stop_daemon

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

IGNORES_TERM = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)\n"


def _alive(pid: int) -> bool:
    """Whether pid runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


def ignoring_sigterm(**kw) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE, text=True, **kw)
    assert proc.stdout.readline() == "ready\n"  # its SIGTERM is ignored from here on
    return proc


def test_a_child_ignoring_sigterm_is_killed_and_reaped_at_the_tests_end(started_processes):
    proc = ignoring_sigterm()
    assert proc in started_processes.started, "subprocess.Popen records what the test starts"
    t0 = time.monotonic()
    ended = started_processes.end(grace_s=0.5)  # what the teardown of a test that failed here does
    assert ended == [proc] and time.monotonic() - t0 >= 0.5, "SIGTERM first, SIGKILL after the grace"
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)  # neither running nor a zombie: reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)


def test_a_child_that_obeys_sigterm_gets_it_and_one_already_reaped_is_left_alone(started_processes):
    obeys = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"],
                             stdout=subprocess.PIPE, text=True)
    assert obeys.stdout.readline() == "ready\n"
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(timeout=60)
    assert started_processes.end(grace_s=30) == [obeys]
    assert obeys.returncode == -signal.SIGTERM and done.returncode == 0


def test_a_new_session_is_ended_as_a_group_even_after_its_leader_has_exited(started_processes):
    """start_new_session: the leader starts a grandchild that ignores SIGTERM and exits. The
    grandchild is no child of the suite's; its process group names it."""
    leader = subprocess.Popen([sys.executable, "-c",
                               "import signal, subprocess, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                               "p = subprocess.Popen(['sleep', '600'], stdout=subprocess.DEVNULL)\nprint(p.pid)\n"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    grandchild = int(leader.stdout.readline())
    assert _alive(grandchild) and os.getpgid(grandchild) == leader.pid
    started_processes.end(grace_s=0.5)
    assert leader.returncode == 0 and _gone(grandchild), "the group is killed, not only its leader"


@pytest.fixture
def stops_its_own():
    """A fixture that leaves its process running through the test and stops it in its teardown."""
    proc = ignoring_sigterm()
    yield proc
    assert proc.poll() is None, "the suite's cleanup must not end a process before the fixture's teardown"
    proc.kill()
    proc.wait()


def test_a_fixture_that_stops_its_process_in_its_teardown_finds_it_running(stops_its_own):
    assert stops_its_own.poll() is None


@pytest.fixture(scope="module")
def lazy_worker():
    """Like test_runtimes.py's workers: a process started on first use, inside a test, ended at the
    module's end."""
    started = {}

    def get():
        if "w" not in started:
            started["w"] = ignoring_sigterm()
        return started["w"]

    yield get
    for p in started.values():
        p.kill()
        p.wait()


def test_a_process_held_by_a_module_fixture_is_left_to_it(started_processes, lazy_worker):
    w = lazy_worker()
    mine = ignoring_sigterm()
    assert started_processes.end(grace_s=0.2) == [mine]
    assert w.poll() is None, "the module's worker runs on, for the module's next tests"


def test_stop_daemon_kills_a_daemon_that_does_not_end_and_fails_with_its_output(tmp_path):
    proc, *_ = start_daemon(tmp_path)
    proc.send_signal(signal.SIGSTOP)  # a hung daemon: SIGTERM stays pending
    try:
        with pytest.raises(AssertionError, match=r"(?s)had not ended 1 s after SIGTERM and was killed.*serving on"):
            stop_daemon(proc, grace_s=1)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


FAILING = """
import subprocess, sys
def test_fails_before_its_cleanup():
    p = subprocess.Popen([sys.executable, "-c", {code!r}], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\\n"
    open({pid_file!r}, "w").write(str(p.pid))
    assert False, "fails with its child running"
"""


def test_a_real_failing_test_leaves_no_child_running(tmp_path):
    """A pytest run of one test that starts a child ignoring SIGTERM and fails: the child has ended
    by the time that run has."""
    pid_file = tmp_path / "child.pid"
    (tmp_path / "test_inner.py").write_text(FAILING.format(code=IGNORES_TERM, pid_file=str(pid_file)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT / "python")]))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                        "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    pid = int(pid_file.read_text())
    try:
        assert "1 failed" in r.stdout, r.stdout + r.stderr
        assert _gone(pid, timeout=1.0), "the failed test's child outlived its run"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
