"""The daemon's side of local clients' shared-memory mark rings (client: ring_client.py).

A Unix socket beside the gRPC one (``<socket>.ring``, the same mode and group, so the same users
may reach it) takes one ring per client process: the client sends ``R`` with its memfd
(SCM_RIGHTS), the kernel says who it is (SO_PEERCRED), and the daemon answers ``A`` and a session
id (which the client's gRPC calls carry, so that the daemon knows whose they are: gRPC's Unix peers
carry no credentials; daemon/identity.py), or ``X`` and why. A client without a ring (pure Python,
or its ring turned off) sends ``I`` alone for its session. The connection stays open: ``F`` asks for a drain now (answered
``D``), and its end means the client is gone, after which the ring is drained one last time and let
go. So does the exit of the process that registered it (its pidfd), even while a child it forked
keeps the connection: marks carry the registering pid, which must not outlive its process.

One thread serves every ring: it looks at each every ``LOOK_EVERY_S`` and drains it when it is an
eighth full or was last drained ``DRAIN_EVERY_S`` ago (a drain costs ~0.2 ms whatever it holds; a
flush asks for one at once), at most ``DRAIN_BUDGET_BYTES`` a turn, into the mark store as
columns (the attributes' JSON is written in C++, no Python object per mark). While the store is at
a limit (marks held, writes behind) a ring is simply not drained: the marks wait in the client's
memory, and a client whose ring fills sends through gRPC, which answers with back-pressure. What
the ring holds is the client's to corrupt: a ring whose framing breaks is dropped (the client falls
back to gRPC); marks with bad fields are refused and counted in the client's own report.
"""

from __future__ import annotations

import collections
import os
import selectors
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .identity import uid_owner
from .limits import Busy, Full

LOOK_EVERY_S = 0.02
REGISTER_WITHIN_S = 5.0  # a connection that has sent no ring by then is closed
UNREGISTERED_MAX = 64    # connections waiting for their ring at once; beyond, the oldest are closed
DRAIN_EVERY_S = 0.2  # marks wait in the ring meanwhile: in the client's memory, which a daemon crash leaves intact
# Ring bytes one drain takes at most (~4,700 small marks, ~5 ms to decode and hold); a ring holding
# more is drained again at once, after every other ring's turn: one user's 16 rings of 16 MiB kept
# another client's first flush waiting 80 ms, against 2 s when a drain took a whole ring, with the
# same throughput (benchmarks/bench_daemon_hostile.py; 128 KiB cost a third of it).
DRAIN_BUDGET_BYTES = 256 << 10
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5: the peer's pidfd, no race with pid reuse


def ring_socket_path(socket_path: Path) -> Path:
    return socket_path.with_name(socket_path.name + ".ring")


@dataclass
class _Client:
    conn: socket.socket
    pid: int
    uid: int
    reader: object = None  # _core.MarkRingReader once registered
    session: str = ""  # given once registered (a ring, R) or identified (I)
    drained_at: float = 0.0  # time.monotonic() of the last drain
    accepted_at: float = 0.0
    more: bool = False  # the last drain stopped at its budget
    pidfd: Optional[int] = None  # readable once the process that registered is gone

    @property
    def owner(self) -> str:
        """Whose marks the ring's are: the kernel's uid of the client (identity.uid_owner)."""
        return uid_owner(self.uid)
    # drains held but not yet durable, oldest first: (the store's length once they are in it, the
    # ring's position after them, marks to commit); released to the client once written
    unreleased: collections.deque = field(default_factory=collections.deque)
    flushes: collections.deque = field(default_factory=collections.deque)  # D owed: the store length each waits for


@dataclass(eq=False)
class _Exited:
    """Selector data of a client's pidfd."""
    client: _Client


def columns_table(cols: dict, owner: Optional[str] = None, pid_verified: Optional[bool] = None):
    """A drain's columns as a pyarrow Table of store.mark_schema(), built from the buffers: the
    marks of ``owner`` (daemon/identity.py), the pid in their attributes vouched for by the kernel
    or not (``pid_verified``)."""
    import pyarrow as pa

    from ..store import mark_schema

    n = len(cols["start_ns"])
    labels = pa.array(cols["labels"], pa.string()).take(pa.array(cols["label_index"]))
    attrs = pa.StringArray.from_buffers(n, pa.py_buffer(cols["attrs_offsets"]), pa.py_buffer(cols["attrs_data"]))
    return pa.table([labels, pa.array(cols["start_ns"]), pa.array(cols["end_ns"]), pa.array(cols["thread_id"]),
                     pa.array(cols["ok"]), attrs, pa.repeat(pa.scalar(owner, pa.string()), n),
                     pa.repeat(pa.scalar(pid_verified, pa.bool_()), n)], schema=mark_schema())


class RingIntake:
    def __init__(self, path: Path, servicer, gid: Optional[int], max_rings: int, max_rings_per_user: int):
        self.path = Path(path)
        self.servicer = servicer
        self.gid = gid
        self.max_rings, self.max_rings_per_user = max_rings, max_rings_per_user
        self._clients: dict[int, _Client] = {}  # by connection fd
        self._sel = selectors.DefaultSelector()
        # wake(): the writer wrote, what waited for it goes back to the clients now, not at the next look
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stop = threading.Event()
        self._closed = False
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        # session id -> (pid, uid) of each registered client, handed to it alone over its connection:
        # its gRPC calls carry it, so the daemon knows whose they are (gRPC's Unix peers carry no credentials)
        self.sessions: dict[str, tuple[int, int]] = {}
        # ring id -> the position a previous run under the same --out wrote it up to (parquet.latest_progress)
        self.resume: dict[int, int] = {}

    def start(self) -> None:
        import numpy as np

        # pyarrow's first table (its imports, its compute kernels) costs ~0.5 s, in which a client
        # marking at full speed fills its ring: paid now, before any client comes
        columns_table({"labels": ["x"], "label_index": np.zeros(1, np.int32), "start_ns": np.ones(1, np.int64),
                       "end_ns": np.ones(1, np.int64), "thread_id": np.zeros(1, np.uint64), "ok": np.ones(1, bool),
                       "attrs_data": b"{}", "attrs_offsets": np.array([0, 2], np.int32)})
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o117)  # 0660 from birth, as the gRPC socket
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        if self.gid is not None:
            os.chown(self.path, -1, self.gid)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._sel.register(listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="greenprobe-rings", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """The writer wrote: the rings thread hands back what that made durable at once."""
        if self._wake_w < 0:
            return  # closed: its number may be another file's by now
        try:
            os.write(self._wake_w, b"w")
        except OSError:
            pass  # already woken (the pipe is full)

    def stop(self) -> None:
        """Drains every ring one last time, then stops taking any; ``close`` hands back what is durable
        and lets the rings go (with a writer: after its last write)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for c in list(self._clients.values()):
            if c.reader is not None:
                try:
                    self._drain(c, force=True)
                except Exception as e:  # noqa: BLE001 - that ring's marks stay in it, for the next daemon
                    print(f"greenprobe daemon: the last drain of pid {c.pid}'s ring failed: {type(e).__name__}: {e}",
                          file=sys.stderr)

    def close(self) -> None:
        """After stop() and the last write: hands back to each client what is durable (what is not
        stays in its ring, for the next daemon to read), and closes every ring."""
        self.stop()
        if self._closed:
            return
        self._closed = True
        durable = self.servicer.durable_index()
        for c in list(self._clients.values()):
            self._release_durable(c, durable)
            self._drop(c, drain=False)
        if self._listener is not None:
            self._sel.unregister(self._listener)
            self._listener.close()
            if self.path.is_socket():
                self.path.unlink()
        self._sel.close()
        wake_r, wake_w, self._wake_w = self._wake_r, self._wake_w, -1
        os.close(wake_r)
        os.close(wake_w)

    # -- the thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            # a ring with more to drain gets its next turn at once, after the others' events
            more = any(c.more for c in self._clients.values())
            for key, _ in self._sel.select(0 if more else LOOK_EVERY_S):
                try:
                    if key.data == "wake":
                        while True:
                            try:
                                if not os.read(self._wake_r, 4096):
                                    break
                            except BlockingIOError:
                                break
                    elif key.data is None:
                        self._accept()
                    elif isinstance(key.data, _Exited):  # its last marks, then the ring goes
                        self._drop(key.data.client)
                    else:
                        self._readable(key.data)
                except Exception as e:  # one client's trouble must not stop the others' rings
                    print(f"greenprobe daemon: mark ring: {type(e).__name__}: {e}", file=sys.stderr)
            now = time.monotonic()
            durable = self.servicer.durable_index()
            for c in list(self._clients.values()):
                if c.unreleased or c.flushes:
                    self._release_durable(c, durable)
                if not c.session and now - c.accepted_at > REGISTER_WITHIN_S:
                    self._refuse(c, f"no ring within {REGISTER_WITHIN_S:g} s of connecting")
                    continue
                r = c.reader
                if r is not None and (c.more or now - c.drained_at >= DRAIN_EVERY_S or
                                      r.pending_bytes >= r.capacity // 8):
                    try:
                        self._drain(c)
                    except Exception as e:  # noqa: BLE001 - that client's ring goes; the others are still served
                        print(f"greenprobe daemon: dropped the mark ring of pid {c.pid} (uid {c.uid}): "
                              f"{type(e).__name__}: {e}", file=sys.stderr)
                        self._refuse(c, f"ring dropped: {type(e).__name__}")

    def _accept(self) -> None:
        for _ in range(UNREGISTERED_MAX):  # a burst of clients is taken in one round, not one a round
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self._accept_one(conn)

    def _accept_one(self, conn: socket.socket) -> None:
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        conn.setblocking(False)
        client = _Client(conn, pid, uid, accepted_at=time.monotonic())
        self._clients[conn.fileno()] = client
        self._sel.register(conn, selectors.EVENT_READ, client)
        # The pid goes into every mark, but a child that kept the connection after its parent
        # exited could write on under the parent's pid, which the system may give to another
        # process: the ring goes when the process that registered it does.
        client.pidfd = _pidfd(conn, pid)
        if client.pidfd is not None:
            self._sel.register(client.pidfd, selectors.EVENT_READ, _Exited(client))
        waiting = [c for c in self._clients.values() if not c.session]
        if len(waiting) > UNREGISTERED_MAX:  # connections that hold a descriptor and say nothing: the oldest go
            for c in sorted(waiting, key=lambda c: c.accepted_at)[:len(waiting) - UNREGISTERED_MAX]:
                self._refuse(c, f"more than {UNREGISTERED_MAX} connections have not sent a ring")

    def _readable(self, c: _Client) -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(c.conn, 64, 4)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            msg, fds = b"", []
        if not c.session and fds:  # R and the ring's memfd
            for fd in fds[1:]:
                os.close(fd)
            self._register(c, msg, fds[0])
            return
        for fd in fds:  # descriptors where none is due: closed, never used
            os.close(fd)
        if not msg:  # the client is gone: its last marks, then the ring goes
            self._drop(c)
            return
        if not c.session:
            if msg[:1] == b"I":  # a client without a ring (pure Python, or its ring off) names itself
                self._identify(c)
            else:
                self._refuse(c, "send R with the ring's memfd, or I, first")
            return
        flushes = msg.count(b"F")
        if flushes:
            if c.reader is not None:
                self._drain(c)  # within the limits: at one, the client's flush waits, as a gRPC batch would
            # D once what the client wrote before is durable: at once when nothing waits for a write
            wait_for = c.unreleased[-1][0] if c.unreleased else 0
            c.flushes.extend([wait_for] * flushes)
            if c.unreleased:
                self.servicer.write_soon.set()  # written now, not at the next --flush-s tick
            self._release_durable(c)

    def _full(self, c: _Client) -> Optional[str]:
        """Why one more registration of this client's user would pass --max-rings or
        --max-rings-per-user (each holds a descriptor), or None."""
        per_user = Counter(x.uid for x in self._clients.values() if x.session)
        if sum(per_user.values()) >= self.max_rings:
            return f"the daemon serves {self.max_rings} clients' rings and sessions, its limit (--max-rings)"
        if per_user[c.uid] >= self.max_rings_per_user:
            return (f"user {c.uid} has {self.max_rings_per_user} rings and sessions, the daemon's limit per user "
                    "(--max-rings-per-user)")
        return None

    def _open_session(self, c: _Client) -> None:
        """Names the client: a random id its gRPC calls carry, which the daemon knows as its uid and pid."""
        c.session = os.urandom(16).hex()
        self.sessions[c.session] = (c.pid, c.uid)
        try:
            c.conn.send(b"A" + c.session.encode())
        except OSError:
            self._drop(c)

    def _identify(self, c: _Client) -> None:
        why = self._full(c)
        if why:
            return self._refuse(c, why)
        self._open_session(c)

    def _register(self, c: _Client, msg: bytes, fd: int) -> None:
        from .. import _core

        if msg[:1] != b"R":
            os.close(fd)
            return self._refuse(c, "the first message must be R with the ring's memfd")
        why = self._full(c)
        if why:
            os.close(fd)
            return self._refuse(c, why)
        try:
            c.reader = _core.MarkRingReader(fd)  # owns fd from here, closed on failure too
        except ValueError as e:
            return self._refuse(c, str(e))
        written = self.resume.pop(c.reader.ring_id, 0)
        if written > c.reader.released:  # a daemon before this one wrote these and died before handing them back
            if c.reader.skip_to(written) < 0:
                print(f"greenprobe daemon: the ring of pid {c.pid} does not hold the place the last run wrote up "
                      "to; its marks since are read again", file=sys.stderr)
        self._open_session(c)

    def _refuse(self, c: _Client, why: str) -> None:
        try:
            c.conn.send(b"X" + why.encode()[:250])
        except OSError:
            pass
        self._drop(c, drain=False)

    def _drop(self, c: _Client, drain: bool = True) -> None:
        if drain and c.reader is not None:
            try:
                self._drain(c, force=True)
            except Exception as e:  # noqa: BLE001 - refused and counted in the client's header already
                print(f"greenprobe daemon: the last drain of pid {c.pid}'s ring failed: {type(e).__name__}: {e}",
                      file=sys.stderr)
        if self._clients.get(c.conn.fileno()) is c:
            del self._clients[c.conn.fileno()]
        self.sessions.pop(c.session, None)
        for f in (c.conn, c.pidfd):
            try:
                if f is not None:
                    self._sel.unregister(f)
            except (KeyError, ValueError):
                pass
        if c.pidfd is not None:
            os.close(c.pidfd)
            c.pidfd = None
        c.conn.close()
        c.reader = None  # unmaps the ring and closes the memfd

    def _drain(self, c: _Client, force: bool = False) -> None:
        """One drain of at most DRAIN_BUDGET_BYTES; ``force``: all the ring holds, limits or not
        (the last drain of a client that left)."""
        from .. import _core

        reader = c.reader
        c.drained_at = time.monotonic()
        c.more = False
        if not reader.pending_bytes:
            return
        sv = self.servicer
        # at a limit the marks wait in the client's ring (a full ring sends through gRPC, which is
        # answered with back-pressure); only the last drain of a client that left takes them anyway
        if not force and sv.ring_room(c.owner) <= 0:
            return
        # a forced drain takes what the ring held at its start: a writer that goes on writing (a
        # child with the mapping) cannot keep the thread that serves every ring. Each turn takes a
        # budget's worth or more with the next turn, so twice the budgets it held is enough.
        pending = reader.pending_bytes
        turns = 2 * (pending // DRAIN_BUDGET_BYTES) + 2 if force else 1
        for _ in range(turns):
            try:
                cols = reader.drain(c.pid, DRAIN_BUDGET_BYTES)
            except _core.RingCorrupt as e:
                print(f"greenprobe daemon: dropped the mark ring of pid {c.pid} (uid {c.uid}): {e}", file=sys.stderr)
                self._refuse(c, f"ring dropped: {e}")
                return
            # a drain that began with room may pass --max-mark-bytes by itself; a client that left
            # cannot wait for room, and what would pass the limit is refused
            self._hold(c, cols, room_found=not force or sv.ring_room(c.owner) > 0)
            if not reader.pending_bytes:
                return
        # cut by the budget: the rest after every other ring's turn (marks written since the drain
        # began wait for the ring's next look, as always)
        c.more = pending > DRAIN_BUDGET_BYTES

    def _hold(self, c: _Client, cols: dict, room_found: bool) -> None:
        n = len(cols["start_ns"])
        sv, reader = self.servicer, c.reader
        position = cols["end_position"]
        if not n:  # a skip frame, or marks refused as they were decoded: their bytes go back in turn
            c.unreleased.append((0, position, 0))
        else:
            try:  # the kernel said who wrote the ring, and its pid (SO_PEERCRED)
                end = sv.record_columns(columns_table(cols, c.owner, True), cols["attr_names"], room_found, c.owner,
                                        source=("ring", reader.ring_id, position))
                # the client's flush returns, and the ring's bytes are its own again, once the marks are durable
                c.unreleased.append((end, position, n))
                if position - reader.released > reader.capacity // 2:  # the ring fills with what waits for a write:
                    sv.write_soon.set()  # written now, or the client's marks would spill into gRPC
            except (Full, Busy) as e:
                reader.refuse(n, str(e))
                c.unreleased.append((0, position, 0))  # refused: done with, released in turn
            except Exception as e:  # taken from the ring but not held: the client hears of it at exit
                reader.refuse(n, f"the daemon could not hold them ({type(e).__name__}: {e})")
                raise  # the caller drops this ring
        self._release_durable(c)  # what needs no write goes back now (all of it, without a writer)

    def _release_durable(self, c: _Client, durable: Optional[int] = None) -> None:
        """Hands back to the client the ring's bytes whose marks the writer has written (the store's
        first ``durable`` marks), in order, commits their marks (its flush waits for that) and sends
        the D its flushes are owed."""
        if c.reader is None:
            return
        durable = self.servicer.durable_index() if durable is None else durable
        while c.unreleased and c.unreleased[0][0] <= durable:
            _, position, n = c.unreleased.popleft()
            c.reader.release(position)  # False for a drain of a skip frame alone, already passed: nothing to do
            if n:
                c.reader.commit(n)
        owed = 0
        while c.flushes and c.flushes[0] <= durable:
            c.flushes.popleft()
            owed += 1
        if owed:
            try:
                c.conn.send(b"D" * owed)
            except OSError:
                pass  # the connection's end is seen by the selector


def _pidfd(conn: socket.socket, pid: int) -> Optional[int]:
    """A pidfd of the peer that connected: from the socket itself (Linux 6.5+), else opened by pid
    (a race with pid reuse only between connect() and accept); None when neither works (a peer in
    another pid namespace has pid 0), and the ring then goes only when its connection ends."""
    try:
        fd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        os.set_inheritable(fd, False)
        return fd
    except OSError:
        pass
    if pid <= 0 or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None
