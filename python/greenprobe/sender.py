"""The background mark sender: marks reach the daemon without the marking code ever waiting on it
or hearing from it.

``append`` puts a record into a bounded buffer and returns; one thread takes batches out and sends
them every ~50 ms. While the daemon is unreachable the batch waits and is tried again with back-off
(50 ms doubling to 2 s), unchanged: its (sender_id, first_seq) let the daemon record a batch whose
reply was lost once. A full buffer drops new marks and counts them; a batch the daemon refuses is
dropped and counted, never retried.

A batch the daemon accepted is kept until a reply says it is durable (written to --out and
fsynced: ``durable_seq``); a daemon killed before that is followed by one that answers
``restarted``, and the kept batches are sent to it again, oldest first, before anything new (the
new daemon skips what the old one wrote: its run's progress record). ``flush`` returns once every
mark before it is durable. At exit what is left is sent for at most ``timeout_s``, and one
line on stderr says how many marks did not arrive, why, and what to do; the exit status stays the
program's own.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
import weakref
from typing import Callable, Optional

from .errors import ConfigError, DaemonError

BUFFER_ENV = "GREENPROBE_BUFFER_MARKS"
BUFFER_MARKS = 300_000  # five minutes at 1,000 marks/s: a daemon restart loses nothing
BATCH_MARKS = 10_000  # per RecordMarks call (the daemon takes up to 100,000)
BATCH_BYTES = 8 << 20  # and at most this much of message: the daemon reads 16 MiB at most (limits.py)
SEND_EVERY_S = 0.05
DURABLE_POLL_S = 0.003  # a flush asks the daemon whether its marks are on disk this often
BACKOFF_S = (0.05, 2.0)  # first and longest wait between tries while the daemon is unreachable
# Reconnect as often as we retry: gRPC's own back-off would otherwise grow to 120 s.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 2000)]
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED")  # worth sending again


def buffer_marks(value=None) -> int:
    """The buffer's capacity in marks: ``value``, else $GREENPROBE_BUFFER_MARKS, else 300,000."""
    raw = value if value is not None else os.environ.get(BUFFER_ENV) or BUFFER_MARKS
    try:
        n = int(raw)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f"mark buffer size {raw!r} ({'buffer_marks' if value is not None else BUFFER_ENV}) "
                          "is not a positive whole number",
                          f"give the most marks to hold while the daemon is unreachable, e.g. {BUFFER_MARKS}")
    return n


def encode(pb, records: list, sender_id: int, first_seq: int):
    """A MarkBatch of records (label, start_ns, end_ns, thread_id, attrs, ok): the ring's frames
    (frames.py: in C where greenprobe's extension is here, else in Python), which the daemon decodes
    in C++."""
    from .frames import encode as encode_frames

    msg = pb.MarkBatch()
    cols = msg.columns
    cols.frames = encode_frames(records)
    cols.pid = os.getpid()
    cols.sender_id, cols.first_seq = sender_id, first_seq
    return msg


class MarkSender:
    """A bounded mark buffer and the thread that empties it into the daemon's RecordMarks.

    ``open_channel()`` makes the gRPC channel (called again in a forked child). Counters, all in
    marks: ``queued`` (into the buffer), ``accepted`` and ``refused`` (by the daemon), ``dropped``
    (the buffer was full)."""

    def __init__(self, address: str, open_channel: Callable, timeout_s: float = 10.0,
                 capacity: Optional[int] = None):
        import grpc

        from .v1 import probe_pb2, probe_pb2_grpc

        self._grpc, self._pb, self._pb_grpc = grpc, probe_pb2, probe_pb2_grpc
        self._transient = {getattr(grpc.StatusCode, c) for c in TRANSIENT}
        self.address = address
        self.timeout_s = timeout_s
        self.capacity = buffer_marks(capacity)
        self._open_channel = open_channel
        self._reset()
        _SENDERS.add(self)

    def _reset(self) -> None:
        """Fresh state: at start, and in a forked child, which must neither send its parent's marks
        (the parent does) nor reuse its sequence numbers, locks, thread or channel."""
        self.sender_id = int.from_bytes(os.urandom(8), "little") or 1
        self._next_seq = 1
        self._buffer: collections.deque = collections.deque()
        self._batch = None  # (MarkBatch, n): taken from the buffer, neither accepted nor refused yet
        self._unacked: collections.deque = collections.deque()  # (MarkBatch, n, end seq): accepted, not durable
        # to send again to a new daemon, oldest first: (MarkBatch, n, end seq, counted accepted already)
        self._resend: collections.deque = collections.deque()
        self._daemon_id = ""  # the daemon that holds the unacknowledged batches
        self._durable_seq = 0  # marks below it are durable
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._channel = self._record_marks = None
        self._closed = False
        self._deadline = float("inf")  # when closing: stop trying at this time.monotonic()
        self.queued = self.accepted = self.refused = self.dropped = 0
        self.refused_why = self.last_error = ""
        self._flushed = self._refused_told = 0

    # -- the marking side: never waits, never raises --------------------------------------------
    def append(self, record: tuple) -> None:
        with self._lock:
            if self._closed:  # interpreter exit: the last line is printed, nothing sends any more
                return
            if self.queued - self.accepted - self.refused >= self.capacity:  # held: buffered or in flight
                self.dropped += 1
                return
            self._buffer.append(record)
            self.queued += 1
            n = len(self._buffer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="greenprobe-mark-sender", daemon=True)
                self._thread.start()
                atexit.register(self._close_at_exit)
        if n == BATCH_MARKS:  # a full batch goes now, not at the next tick
            self._wake.set()

    # -- the sending thread ----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = BACKOFF_S[0]
        while True:
            batch = self._batch or self._take_resend() or self._take()
            if batch is None or time.monotonic() >= self._deadline:
                if self._closed:
                    return
                self._wake.wait(SEND_EVERY_S)
                self._wake.clear()
                continue
            if self._send(*batch):
                backoff = BACKOFF_S[0]
                continue
            self._wake.wait(min(backoff, max(self._deadline - time.monotonic(), 0)))  # flush/close cut it short
            self._wake.clear()
            backoff = min(backoff * 2, BACKOFF_S[1])

    def _take_resend(self):
        """The oldest batch a new daemon must have again (counted accepted once already)."""
        with self._lock:
            if self._resend:
                msg, n, _, counted = self._resend.popleft()
                self._batch = (msg, n, counted)
            return self._batch

    def _take(self):
        with self._lock:
            n = min(len(self._buffer), BATCH_MARKS)
            if not n:
                return None
            records = [self._buffer.popleft() for _ in range(n)]
            first, self._next_seq = self._next_seq, self._next_seq + n
        try:  # outside the lock: append() must not wait while 10,000 marks are encoded
            msg = encode(self._pb, records, self.sender_id, first)
            while n > 1 and msg.ByteSize() > BATCH_BYTES:  # marks with large attributes: fewer a batch
                keep = max(min(n * BATCH_BYTES // msg.ByteSize(), n - 1), 1)
                with self._lock:  # the rest go back to the front of the buffer, their numbers with them
                    self._buffer.extendleft(reversed(records[keep:]))
                    self._next_seq = first + keep
                records, n = records[:keep], keep
                msg = encode(self._pb, records, self.sender_id, first)
        except (TypeError, ValueError) as e:  # a record protobuf cannot hold: no retry makes it valid
            msg, why = None, f"could not encode a mark: {e}"
        with self._lock:
            self._batch = (msg, n, False)
            if msg is None:
                self._settle(n, why)
        return self._batch

    def _send(self, msg, n: int, again: bool = False) -> bool:
        """True when the batch is settled (accepted or refused) or must wait behind the batches a new
        daemon needs again, False to try it again later. ``again``: a resend, accepted before."""
        try:
            record_marks = self._rpc()
            timeout = min(self.timeout_s, max(self._deadline - time.monotonic(), 0.01))
            with self._lock:
                msg.columns.daemon_id = self._daemon_id if self._unacked else ""
            reply = record_marks(msg, timeout=timeout)
        except self._grpc.RpcError as e:
            why = f"{e.code().name}: {' '.join(str(e.details()).split())}"
            if e.code() in self._transient:
                self.last_error = why
                return False
            with self._lock:
                self._settle(n, why)
            return True
        except ValueError as e:  # the channel was closed under us (close() timed out): stop here
            self.last_error = str(e)
            return False
        end = msg.columns.first_seq + n
        with self._lock:
            if reply.restarted:
                self._to_new_daemon(reply)
                self._resend.append((msg, n, end, again))  # then this batch
                self._batch = None
                return True
            self._daemon_id = reply.daemon_id
            self._unacked.append((msg, n, end))
            # a daemon of API 2 names itself not and says nothing of its disk: taken is all it promises
            self._acknowledge(reply.durable_seq if reply.daemon_id else end)
            if again:  # counted accepted the first time
                self._batch = None
                self._settled.notify_all()
            else:
                self._settle(n)
        return True

    def _rpc(self):
        """RecordMarks, on a channel made at first use (again in a forked child), by whichever thread
        comes first: the sending one, or a flush."""
        with self._lock:
            if self._record_marks is None:
                self._channel = self._open_channel()
                self._record_marks = self._pb_grpc.ProbeStub(self._channel).RecordMarks
            return self._record_marks

    def _to_new_daemon(self, reply) -> None:
        """With the lock held: a daemon answered ``restarted``. What the one before held and had not
        written goes to it again, oldest first, before anything new."""
        self._resend.extend((m, k, e, True) for m, k, e in self._unacked)
        self._unacked.clear()
        self._daemon_id = reply.daemon_id
        self._acknowledge(reply.durable_seq)
        self._wake.set()

    def _durable_through(self, target: int) -> bool:
        """With the lock held: every mark below ``target`` is durable, none waits to be sent again (a
        batch still kept is past ``_durable_seq``: _acknowledge lets go of the others at once)."""
        return self._durable_seq >= target and not self._resend

    def _acknowledge(self, durable_seq: int) -> None:
        """With the lock held: the batches the daemon has made durable are let go."""
        self._durable_seq = max(self._durable_seq, durable_seq)
        while self._unacked and self._unacked[0][2] <= self._durable_seq:
            self._unacked.popleft()
        self._settled.notify_all()

    def _settle(self, n: int, refused_why: str = "") -> None:
        """With the lock held: the current batch is done with."""
        self._batch = None
        if refused_why:
            self.refused += n
            self.refused_why = refused_why
        else:
            self.accepted += n
        self._settled.notify_all()

    # -- explicit calls ---------------------------------------------------------------------------
    def flush(self, timeout_s: Optional[float] = None) -> int:
        """Waits until every mark appended before this call is durable (the daemon wrote it to disk;
        without --out, holds it); returns how many it accepted since the previous flush. Raises
        DaemonError after ``timeout_s`` (the marks stay buffered and are sent when the daemon
        answers), or when the daemon refused some."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        self._wake.set()  # try now, not after the back-off
        with self._settled:
            target = self.queued
            while self.accepted + self.refused < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    waiting = target - self.accepted - self.refused
                    raise DaemonError(f"{waiting} marks not yet accepted by the daemon at {self.address} after "
                                      f"{timeout:g} s ({self.last_error or 'no reply'})",
                                      "start it with `greenprobe daemon` and point GREENPROBE_DAEMON at its socket; "
                                      "the marks stay buffered and go when it answers")
                self._settled.wait(left)
            sent, self._flushed = self.accepted - self._flushed, self.accepted
            refused, self._refused_told = self.refused - self._refused_told, self.refused
            durable_target = max((e for _, _, e in self._unacked), default=0)
        self._wait_durable(durable_target, deadline, timeout)
        if refused:
            raise DaemonError(f"{refused} marks were refused and will never reach the daemon at {self.address}: "
                              f"{self.refused_why}", "fix what the reason names; a refused batch is not sent again")
        return sent

    def _wait_durable(self, target: int, deadline: float, timeout: float) -> None:
        """Asks the daemon to write now, and waits until its replies say the marks below ``target``
        are durable (the resends to a new daemon included)."""
        poll = self._pb.MarkBatch()
        poll.columns.sender_id, poll.columns.write_now = self.sender_id, True
        while True:
            with self._lock:
                if self._durable_through(target):
                    return
                poll.columns.daemon_id = self._daemon_id if self._unacked else ""
            left = deadline - time.monotonic()
            if left <= 0:
                raise DaemonError(f"marks accepted by the daemon at {self.address} are not yet on its disk after "
                                  f"{timeout:g} s ({self.last_error or 'no reply'})",
                                  "they stay here and are sent again if the daemon restarts; check its --out disk")
            try:
                reply = self._rpc()(poll, timeout=min(left, self.timeout_s))
            except self._grpc.RpcError as e:
                self.last_error = f"{e.code().name}: {' '.join(str(e.details()).split())}"
                reply = None
            with self._lock:
                if reply is not None and reply.restarted:  # the sending thread resends, woken
                    self._to_new_daemon(reply)
                elif reply is not None:
                    self._acknowledge(reply.durable_seq if reply.daemon_id else target)
                if self._durable_through(target):
                    return
            time.sleep(DURABLE_POLL_S)

    def close(self) -> None:
        """Sends what is left for at most timeout_s, then says on stderr what did not arrive."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._deadline = time.monotonic() + self.timeout_s
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout_s + 1)  # the thread stops at the deadline itself
        with self._lock:
            target = max((e for _, _, e in self._unacked), default=0)
        if target and self._record_marks is not None:  # what the daemon took, on its disk before this process goes
            try:
                self._wait_durable(target, self._deadline, self.timeout_s)
            except DaemonError:
                pass  # said in the report
        line = self.report()
        if line:
            print(line, file=sys.stderr, flush=True)
        if self._channel is not None:
            self._channel.close()

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except BaseException as e:  # Ctrl-C while waiting, or a broken stderr: the exit status stays ours
            try:
                print(f"greenprobe: marks not sent at exit ({type(e).__name__}); {self.report()}", file=sys.stderr)
            except BaseException:
                pass

    def report(self) -> str:
        """One line: how many marks did not reach the daemon, why, and what to do; "" when all did."""
        with self._lock:
            unsent = len(self._buffer) + (self._batch[1] if self._batch else 0) + sum(r[1] for r in self._resend)
            unsaved = sum(u[1] for u in self._unacked)
            dropped, refused = self.dropped, self.refused
        if not (unsent or dropped or refused or unsaved):
            return ""
        parts, fixes = [], []
        if dropped:
            parts.append(f"{dropped} dropped because the buffer ({self.capacity} marks) was full")
        if unsent:
            parts.append(f"{unsent} unsent at exit ({self.last_error or 'no reply'})")
        if unsaved:
            parts.append(f"{unsaved} taken by the daemon but not yet on its disk at exit (lost if it is killed "
                         "before it writes them)")
        if dropped or unsent:
            fixes.append("start the daemon (`greenprobe daemon`) before marking and point GREENPROBE_DAEMON at it"
                         + (f", or raise {BUFFER_ENV} to hold a longer outage" if dropped else ""))
        if refused:
            parts.append(f"{refused} refused ({self.refused_why})")
            fixes.append("fix what the reason names")
        return (f"greenprobe: {dropped + unsent + refused + unsaved} of {self.queued + dropped} marks did not reach the "
                f"daemon at {self.address}: {'; '.join(parts)}. fix: {'; '.join(fixes)}")


_SENDERS: "weakref.WeakSet[MarkSender]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sender in list(_SENDERS):
        sender._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
