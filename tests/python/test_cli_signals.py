"""SIGTERM and SIGINT stop `greenprobe record` and `greenprobe measure` cleanly (they save, and exit
128 + the signal), whichever thread the kernel hands the signal to. A signal sent while the command
is stopped (SIGSTOP) waits until SIGCONT and may then go to any thread; its C handler only flags it,
and the main thread runs the Python handler when it next runs Python code: a main thread in an
untimed wait would never do so. The tests send the signal to a thread other than the main one
(tgkill), which is what the kernel may do, so each checks the hard case every time."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import greenprobe

PACKAGE_PARENT = Path(greenprobe.__file__).resolve().parents[1]
LIBC = ctypes.CDLL(None, use_errno=True)
pytestmark = pytest.mark.skipif(not hasattr(LIBC, "tgkill") or not sys.platform.startswith("linux"),
                                reason="needs Linux and glibc's tgkill")

CHILD = "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(60)"  # says it runs, then waits


def _env() -> dict:
    path = [str(PACKAGE_PARENT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GREENPROBE_")},
            "PYTHONPATH": os.pathsep.join(path)}


@pytest.fixture
def greenprobe_cmd(tmp_path):
    """Starts `python -m greenprobe ARGV` (stderr into a file) and waits until ``ready(proc)``; whatever the
    test's outcome, the process is killed (and continued) at its end."""
    started = []

    def start(argv, ready):
        err = open(tmp_path / "stderr", "w")
        proc = subprocess.Popen([sys.executable, "-m", "greenprobe", *map(str, argv)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=_env(), cwd=tmp_path,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        started.append(proc)
        deadline = time.monotonic() + 60
        while not ready(proc):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
            time.sleep(0.05)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            os.kill(proc.pid, signal.SIGCONT)
        proc.communicate()


def _threads(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def stop_signal_continue(proc, sig) -> float:
    """SIGSTOP, then ``sig`` to a thread that is not the main one, then SIGCONT; the seconds from SIGCONT
    to the process's end."""
    os.kill(proc.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while not _stopped(proc.pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    others = [t for t in _threads(proc.pid) if t != proc.pid]
    assert others, "a sampler thread runs beside the main one"
    assert LIBC.tgkill(proc.pid, others[-1], sig) == 0, os.strerror(ctypes.get_errno())
    time.sleep(0.3)
    assert proc.poll() is None, "the signal waits for SIGCONT"
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGCONT)
    proc.wait(timeout=60)
    return time.monotonic() - sent


def _saved(folder: Path) -> list[dict]:
    return pq.read_table(folder / "intervals.parquet").to_pylist()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("period_us", [1000, 250_000], ids=["default-period", "longest-period"])
def test_record_stopped_then_signalled_saves_within_5_s_of_sigcont(tmp_path, greenprobe_cmd, sig, period_us):
    """The longest period the command line takes (250 ms) still stops at once: a sensor's thread
    sleeps a period before it sees the stop (--period-us 1e9 is refused: test_cli_errors.py)."""
    out, err = tmp_path / "rec", tmp_path / "stderr"
    proc = greenprobe_cmd(["record", "--sensors", "synthetic", "--period-us", period_us, "--duration", "0",
                           "--out", out], ready=lambda p: "recording into" in err.read_text())
    time.sleep(0.3)
    took = stop_signal_continue(proc, sig)
    assert proc.returncode == 128 + sig, err.read_text()
    assert took < 5, f"ended {took:.1f} s after SIGCONT"
    (row,) = _saved(out)
    assert row["label"] == "record" and row["duration_s"] > 0.3
    assert f"wrote {out / 'samples.parquet'}" in proc.stdout.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_measure_stopped_then_signalled_passes_it_on_and_saves_within_5_s_of_sigcont(tmp_path, greenprobe_cmd, sig):
    out, ready = tmp_path / "m", tmp_path / "ready"
    proc = greenprobe_cmd(["measure", "--sensors", "synthetic", "--out", out, "--", sys.executable, "-c", CHILD,
                           ready], ready=lambda p: ready.exists())
    took = stop_signal_continue(proc, sig)
    assert proc.returncode == 128 + sig, (tmp_path / "stderr").read_text()
    assert took < 5, f"ended {took:.1f} s after SIGCONT"
    (cmd,) = [r for r in _saved(out) if r["label"] == "command"]
    assert cmd["exit_code"] == 128 + sig


def test_measure_signalled_before_the_command_starts_does_not_start_it_and_saves(tmp_path, greenprobe_cmd):
    """During --baseline (the idle before the command): the command is not started; the idle
    windows run to their end (they are the measurement's reference), then measure saves."""
    out, ready, err = tmp_path / "m", tmp_path / "ready", tmp_path / "stderr"
    baseline_s = 2.0
    proc = greenprobe_cmd(["measure", "--sensors", "synthetic", "--baseline", baseline_s, "--out", out, "--",
                           sys.executable, "-c", CHILD, ready], ready=lambda p: len(_threads(p.pid)) >= 3)
    took = stop_signal_continue(proc, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, err.read_text()
    assert not ready.exists(), "the command was not started"
    assert "SIGTERM before the command started: not starting it" in err.read_text()
    assert took < 5 + 2 * baseline_s, f"ended {took:.1f} s after SIGCONT"
    (cmd,) = [r for r in _saved(out) if r["label"] == "command"]
    assert cmd["exit_code"] == 128 + signal.SIGTERM
