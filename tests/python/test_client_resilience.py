"""Nothing lost, nothing doubled, nothing blocked: the mark sender against a missing, restarting,
refusing or reply-losing daemon; the daemon's dedupe; `greenprobe measure` under signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest

import greenprobe
from greenprobe import _core
from greenprobe.daemon import Daemon
from greenprobe.daemon.dedupe import Dedupe
from greenprobe.v1 import probe_pb2 as pb
from greenprobe.v1 import probe_pb2_grpc as pb_grpc


@pytest.fixture
def remotes():
    """Makes RemoteProbes (no status check) and closes them after the test, not at exit."""
    made = []

    def make(address, **kw):
        made.append(greenprobe.connect(address, check=False, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def served(tmp_path):
    """An in-process daemon on a synthetic sensor that can be stopped and started again."""
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    probe.start()
    sock = tmp_path / "d.sock"
    running = []

    def start():
        running.append(Daemon(probe, sock).start())

    def stop():
        running.pop().stop(grace_s=0.5)

    yield probe, f"unix:{sock}", start, stop
    while running:
        stop()
    probe.stop()


class Fake(pb_grpc.ProbeServicer):
    """A daemon that keeps every RecordMarks request and answers with ``answer(k)``: None for OK,
    else the status code of the k-th request's failure."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list = []
        self.accepted: list = []

    durable = 0  # as a daemon without --out: what it holds is as durable as it gets

    def RecordMarks(self, request, context):
        c = request.columns
        if not c.frames and c.write_now:  # a flush asking whether its marks are durable: not a batch
            return pb.RecordMarksReply(durable_seq=self.durable, daemon_id="fake")
        self.requests.append(request)
        code = self.answer(len(self.requests))
        if code is not None:
            context.abort(code, "the fake daemon says no")
        self.accepted.append(request)
        self.durable = max(self.durable, c.first_seq + marks_in(request))
        return pb.RecordMarksReply(accepted=marks_in(request), durable_seq=self.durable, daemon_id="fake")


@pytest.fixture
def fake(tmp_path):
    servers = []

    def serve(answer):
        servicer = Fake(answer)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_ProbeServicer_to_server(servicer, server)
        server.add_insecure_port(f"unix:{tmp_path / 'fake.sock'}")
        server.start()
        servers.append(server)
        return servicer, f"unix:{tmp_path / 'fake.sock'}"

    yield serve
    for s in servers:
        s.stop(0)


def marks_in(request) -> int:
    """A batch's marks: its frames'."""
    c = request.columns
    return len(_core.decode_frames(c.frames, 0)["start_ns"]) if c.frames else 0


def seqs(request) -> list[int]:
    c = request.columns
    return list(range(c.first_seq, c.first_seq + marks_in(request)))


def mark_numbers(probe) -> list[int]:
    return sorted(r[4]["i"] for r in probe.marks())


# -- never block, never raise -------------------------------------------------------------------
def test_marking_with_no_daemon_neither_waits_nor_raises(tmp_path, remotes, capsys):
    remote = remotes(f"unix:{tmp_path / 'nobody.sock'}", timeout_s=0.5)
    t0 = time.monotonic()
    now = time.monotonic_ns()
    for i in range(10_000):  # before, a full buffer made one of these wait 10 s on the network
        remote.add_mark("step", now + i, now + i + 1, i=i)
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(greenprobe.DaemonError, match="not yet accepted"):  # flush is explicit: it may raise
        remote.flush()
    remote.close()
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("greenprobe:")]
    assert "10000 of 10000 marks did not reach the daemon" in line and "10000 unsent at exit" in line
    assert "UNAVAILABLE" in line and "start the daemon" in line


def test_a_full_buffer_drops_counts_and_says_so_at_exit_without_failing_the_program(tmp_path):
    program = ("import greenprobe, time\n"
               "remote = greenprobe.connect(check=False, timeout_s=0.5)\n"
               "t = time.monotonic_ns()\n"
               "for i in range(1000):\n"
               "    remote.add_mark('step', t + i, t + i + 1)\n"
               "print('done')\n")
    env = dict(os.environ, GREENPROBE_DAEMON=f"unix:{tmp_path / 'nobody.sock'}", GREENPROBE_BUFFER_MARKS="100")
    r = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "done\n", r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("greenprobe:")]
    assert "1000 of 1000 marks did not reach the daemon" in line
    assert "900 dropped because the buffer (100 marks) was full" in line and "100 unsent at exit" in line
    assert "raise GREENPROBE_BUFFER_MARKS" in line


def test_the_buffer_size_must_be_a_positive_whole_number(tmp_path, monkeypatch):
    with pytest.raises(greenprobe.ConfigError, match="buffer_marks"):
        greenprobe.connect(f"unix:{tmp_path / 'x.sock'}", check=False, buffer_marks=0)
    monkeypatch.setenv("GREENPROBE_BUFFER_MARKS", "lots")
    with pytest.raises(greenprobe.ConfigError, match="GREENPROBE_BUFFER_MARKS"):
        greenprobe.connect(f"unix:{tmp_path / 'x.sock'}", check=False)


# -- reconnect and resend -----------------------------------------------------------------------
def test_a_daemon_started_after_the_marks_receives_each_once(served, remotes):
    probe, address, start, _ = served
    remote = remotes(address)
    now = time.monotonic_ns()
    for i in range(2000):
        remote.add_mark("early", now + i, now + i + 1, i=i)
    time.sleep(0.3)  # a few failed tries
    start()
    assert remote.flush() == 2000
    assert mark_numbers(probe) == list(range(2000))


def test_marks_made_while_the_daemon_restarts_arrive_once_and_in_order(served, remotes):
    probe, address, start, stop = served
    start()
    remote = remotes(address)
    made = 0
    t0 = time.monotonic()
    for phase_end, action in ((0.5, stop), (2.5, start), (3.0, None)):  # 2 s without a daemon
        while time.monotonic() - t0 < phase_end:
            now = time.monotonic_ns()
            remote.add_mark("step", now, now + 1, i=made)
            made += 1
            time.sleep(0.001)
        if action:
            action()
    remote.flush()
    assert mark_numbers(probe) == list(range(made))
    starts = [r[1] for r in probe.marks()]
    assert starts == sorted(starts), "resent in the order they were made"


def test_while_unreachable_it_backs_off_then_resends_in_order(fake, remotes):
    t0 = time.monotonic()
    daemon, address = fake(lambda k: grpc.StatusCode.UNAVAILABLE if time.monotonic() - t0 < 1.0 else None)
    remote = remotes(address)
    now = time.monotonic_ns()
    for i in range(300):
        remote.add_mark("step", now + i, now + i + 1)
    time.sleep(1.2)
    tries = len(daemon.requests)
    assert 3 <= tries <= 9, f"{tries} tries in 1 s: back-off is 50 ms doubling, not a busy loop"
    remote.flush()
    assert [s for r in daemon.accepted for s in seqs(r)] == list(range(1, 301))
    assert all(r == daemon.requests[0] for r in daemon.requests[:tries]), "the same batch, unchanged"


def test_a_batch_whose_reply_was_lost_is_resent_unchanged_and_recorded_once(fake, remotes):
    # The daemon records the first batch but the client hears DEADLINE_EXCEEDED.
    daemon, address = fake(lambda k: grpc.StatusCode.DEADLINE_EXCEEDED if k == 1 else None)
    remote = remotes(address)
    now = time.monotonic_ns()
    for i in range(100):
        remote.add_mark("step", now + i, now + i + 1)
    remote.flush()
    for i in range(50):
        remote.add_mark("step", now + 100 + i, now + 101 + i)
    remote.flush()
    first, again = daemon.requests[:2]
    assert first == again and first.columns.sender_id != 0 and first.columns.first_seq == 1
    assert {r.columns.sender_id for r in daemon.requests} == {first.columns.sender_id}
    dedupe, held = Dedupe(), []
    for r in daemon.requests:  # what the daemon's RecordMarks does with them
        c = r.columns
        starts = _core.decode_frames(c.frames, 0)["start_ns"].tolist() if c.frames else []
        new = dedupe.fresh(c.sender_id, c.first_seq, len(starts))
        held += starts[new]
        dedupe.record(c.sender_id, c.first_seq, len(starts))
    assert held == [now + i for i in range(150)]


def test_a_refused_batch_is_dropped_counted_and_never_sent_again(fake, remotes, capsys):
    daemon, address = fake(lambda k: grpc.StatusCode.INVALID_ARGUMENT)
    remote = remotes(address, timeout_s=2)
    now = time.monotonic_ns()
    for i in range(10):
        remote.add_mark("step", now + i, now + i + 1)
    with pytest.raises(greenprobe.DaemonError, match="10 marks were refused .*: INVALID_ARGUMENT"):
        remote.flush()
    remote.add_mark("step", now + 10, now + 11)
    with pytest.raises(greenprobe.DaemonError, match="1 marks were refused"):
        remote.flush()
    assert [s for r in daemon.requests for s in seqs(r)] == list(range(1, 12)), "each mark sent once"
    remote.close()
    assert "11 refused (INVALID_ARGUMENT: the fake daemon says no)" in capsys.readouterr().err


def test_marks_with_large_attributes_go_in_batches_the_daemon_reads_none_refused(served, remotes, monkeypatch):
    from greenprobe import sender

    monkeypatch.setenv("GREENPROBE_MARK_RING", "0")  # all through the gRPC sender
    probe, address, start, _ = served
    start()
    sizes, real = [], sender.encode

    def spy(*args):
        msg = real(*args)
        sizes.append(msg.ByteSize())
        return msg

    monkeypatch.setattr(sender, "encode", spy)
    remote = remotes(address)
    blob = {f"a{k}": chr(97 + k) * 1000 for k in range(7)}  # ~7 KB a mark: 10,000 of them are 70 MB
    now = time.monotonic_ns()
    for i in range(5000):
        remote.add_mark("big", now + i, now + i + 1, i=i, **blob)
    assert remote.flush() == 5000
    assert remote._sender.refused == 0 and mark_numbers(probe) == list(range(5000))
    sent = [n for n in sizes if n <= sender.BATCH_BYTES]
    assert len(sent) >= 4 and sum(sent) > 5000 * 7000, "split into batches the daemon's 16 MiB limit lets in"


# -- the daemon's side: Dedupe ------------------------------------------------------------------
def test_dedupe_skips_what_a_sender_sent_before_and_nothing_else():
    d = Dedupe()

    def send(sender, first, n):
        new = d.fresh(sender, first, n)
        d.record(sender, first, n)
        return list(range(first, first + n))[new]

    assert send(7, 1, 100) == list(range(1, 101))
    assert send(7, 1, 100) == [], "a whole resend"
    assert send(7, 51, 100) == list(range(101, 151)), "a partial overlap keeps the new tail"
    assert send(7, 201, 10) == list(range(201, 211)), "past a gap (a refused batch): all new"
    assert send(7, 150, 1) == []
    assert send(8, 1, 5) == [1, 2, 3, 4, 5], "senders are independent"
    assert send(0, 1, 3) == send(0, 1, 3) == [1, 2, 3], "sender_id 0: no sequence, never deduped"
    assert d.fresh(7, 0, 3) == slice(0, 3), "first_seq 0 (an old client): never deduped"
    assert d.fresh(9, 1, 3) == d.fresh(9, 1, 3) == slice(0, 3), "fresh alone changes nothing"


def test_dedupe_forgets_silent_senders_and_keeps_at_most_max_senders():
    clock = [0.0]
    d = Dedupe(max_senders=2, forget_after_s=60, clock=lambda: clock[0])
    d.record(1, 1, 10)
    d.record(2, 1, 10)
    d.record(3, 1, 10)  # three senders, room for two: the least recently heard goes
    assert len(d) == 2 and d.fresh(1, 1, 10) == slice(0, 10) and d.fresh(3, 1, 10) == slice(10, 10)
    d.record(2, 11, 10)  # heard again: now the most recent
    clock[0] = 61
    d.record(4, 1, 1)  # 2 and 3 are silent for over a minute
    assert len(d) == 1 and d.fresh(2, 1, 20) == slice(0, 20)


# -- measure --------------------------------------------------------------------------------------
CHILD = """
import os, signal, sys, time, greenprobe
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    with greenprobe.mark("step"):
        time.sleep(0.01)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie (nobody reaped it yet) is dead


def _ignores(pid: int, sig: int) -> bool:
    """Whether the process ignores sig (the SigIgn mask in /proc/PID/status)."""
    (mask,) = [line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("SigIgn:")]
    return bool(int(mask, 16) >> (sig - 1) & 1)


@pytest.fixture
def measure(tmp_path):
    """Starts `greenprobe measure` over CHILD; returns (measure's Popen, the command's pid). Whatever
    the test's outcome, both are killed at its end: a failed test leaves no process running."""
    started = []

    def start(*flags, child="plain", sigint_ignored=False):
        pid_file = tmp_path / "child.pid"
        # SIGINT's disposition is set either way: the suite itself may run with it ignored (a background job)
        disposition = signal.SIG_IGN if sigint_ignored else signal.SIG_DFL
        proc = subprocess.Popen([sys.executable, "-m", "greenprobe", "measure", "--sensors", "synthetic", "--out",
                                 str(tmp_path / "m"), *flags, "--", sys.executable, "-c", CHILD, str(pid_file), child],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
        started.append([proc, None])
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        started[-1][1] = int(pid_file.read_text())
        return proc, started[-1][1]

    yield start
    for proc, child in started:
        for pid in (proc.pid, child):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


def _saved(tmp_path, exit_code):
    rows = pq.read_table(tmp_path / "m" / "intervals.parquet").to_pylist()
    (cmd,) = [r for r in rows if r["label"] == "command"]
    assert cmd["exit_code"] == exit_code and any(r["label"] == "step" for r in rows)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_measure_passes_a_signal_on_to_the_command_then_saves_and_reports(tmp_path, measure, sig):
    proc, child = measure()
    time.sleep(0.5)  # some marks
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert not _alive(child)
    assert "Energy of" in err and "step x" in err
    _saved(tmp_path, 128 + sig)


def test_measure_started_with_sigint_ignored_keeps_it_ignored_and_still_ends_on_sigterm(tmp_path, measure):
    """A script's background job (`greenprobe measure -- CMD &`) starts with SIGINT ignored. measure
    used to start the command (inheriting the ignore), then forward SIGINT to it and wait for ever."""
    proc, child = measure(sigint_ignored=True)
    assert _ignores(proc.pid, signal.SIGINT), "measure leaves SIGINT ignored, as its caller asked"
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None and _alive(child), "SIGINT ignored by the caller: both run on"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not _alive(child)
    _saved(tmp_path, 128 + signal.SIGTERM)


@pytest.mark.parametrize("sigint_ignored", [False, True])
def test_measure_kills_a_command_that_outlives_the_signal(tmp_path, measure, sigint_ignored):
    proc, child = measure("--kill-after", "0.5", child="ignore-term", sigint_ignored=sigint_ignored)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 128 + signal.SIGKILL, err
    assert "sending SIGTERM" in err and "sending SIGKILL" in err
    assert took >= 1.0, "SIGKILL comes two grace periods after the signal, not before"
    assert not _alive(child)
    _saved(tmp_path, 128 + signal.SIGKILL)


def test_measure_refuses_a_negative_grace(tmp_path):
    r = subprocess.run([sys.executable, "-m", "greenprobe", "measure", "--kill-after", "-1", "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'-1' is not a duration" in r.stderr


def test_the_command_dies_with_a_killed_measure(measure):
    proc, child = measure()
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "PR_SET_PDEATHSIG: the kernel kills the command with measure"
