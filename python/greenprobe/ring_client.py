"""A local client's marks through shared memory: the client writes each mark into a ring in a sealed
memfd (``_core.MarkRing``, a few hundred nanoseconds), and the daemon drains it.

The ring is handed to the daemon over the Unix socket ``<daemon socket>.ring`` (SCM_RIGHTS; the
kernel tells the daemon who sent it, SO_PEERCRED, and the daemon puts that pid in every mark). The
connection stays open for the life of the process: ``F`` asks the daemon to drain now and it answers
``D`` once it holds every mark written before. Until a daemon first takes the ring, and after one
refused it, marks go through the gRPC sender. When the daemon goes away the marks wait in the ring,
in order, until a daemon takes the same ring back and drains it from where the last one stopped:
nothing is lost, doubled or reordered across a restart; what a full ring cannot hold goes through
the gRPC sender, which buffers it.

``GREENPROBE_MARK_RING=0`` turns the ring off (every mark through gRPC); a number sets its size in
bytes (a power of two, 4 KiB to 64 MiB; default 4 MiB, about 80,000 marks without attributes).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import weakref
from typing import Optional

from .errors import ConfigError, DaemonError

RING_ENV = "GREENPROBE_MARK_RING"
RING_BYTES = 1 << 22
BACKOFF_S = (0.05, 2.0)
FIRST_TRY_S = 1.0  # the registration made in connect(): a live daemon answers in about a millisecond


def ring_bytes(raw: Optional[str] = None) -> int:
    """The ring's size from $GREENPROBE_MARK_RING: 0 for none."""
    raw = os.environ.get(RING_ENV, "") if raw is None else raw
    if raw.strip() == "":
        return RING_BYTES
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n != 0 and (n < 4096 or n > 1 << 26 or n & (n - 1)):
        raise ConfigError(f"{RING_ENV}={raw!r} is not 0 or a power of two between 4096 and 67108864",
                          f"unset it (a {RING_BYTES >> 20} MiB ring), or 0 to send every mark through gRPC")
    return n


def ring_socket(address: str) -> Optional[str]:
    """The ring socket beside a daemon's Unix socket; None for a TCP address (marks go through gRPC)."""
    return address[len("unix:"):] + ".ring" if address.startswith("unix:") else None


class RingLink:
    """Keeps this process's ring registered with the daemon; ``ring`` is the mark sink."""

    def __init__(self, path: str, fallback, capacity: int, timeout_s: float = 10.0):
        from . import _core

        if _core is None:  # a client-only install: no compiled extension
            raise ImportError("greenprobe._core is not available")
        self.path = path
        self.timeout_s = timeout_s
        self.ring = _core.MarkRing(capacity, fallback)
        self._start()
        _LINKS.add(self)

    def _start(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._acks = 0          # D replies received on the current connection
        self._generation = 0    # connections made: an ack from an older one answers nothing
        self._stop = threading.Event()
        self.refused_why = ""   # the daemon refused the ring itself (not its marks)
        self.session = ""       # the daemon's name for this process, for its gRPC calls
        self.last_error = ""
        self._seen_drained = self._seen_refused = 0
        # the first try now, not in the thread: with a daemon up, the first mark already goes into
        # the ring (a mark sent through gRPC before it could arrive after later ones)
        first = self._try_register(FIRST_TRY_S)
        self._thread = threading.Thread(target=self._run, args=(first,), name="greenprobe-mark-ring", daemon=True)
        self._thread.start()

    # -- the link thread -----------------------------------------------------------------------
    def _try_register(self, timeout_s: float) -> Optional[socket.socket]:
        try:
            return self._register(timeout_s)
        except OSError as e:
            self.last_error = e.strerror or str(e)
            return None

    def _run(self, first: Optional[socket.socket]) -> None:
        backoff = BACKOFF_S[0]
        while not self._stop.is_set():
            sock, first = (first, None) if first is not None else (self._try_register(self.timeout_s), None)
            if sock is None:
                if self.refused_why:
                    return  # the daemon said no: its gRPC intake takes the marks
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
                continue
            backoff = BACKOFF_S[0]
            self._serve(sock)
            if self.refused_why:
                return

    def _register(self, timeout_s: float) -> Optional[socket.socket]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout_s)
            sock.connect(self.path)
            socket.send_fds(sock, [b"R"], [self.ring.fd])
            reply = sock.recv(256)
        except OSError:
            sock.close()
            raise
        if reply[:1] != b"A":
            self.refused_why = reply[1:].decode(errors="replace") or "the daemon closed the connection"
            self.ring.attached = False  # every mark through gRPC from now on
            sock.close()
            return None
        sock.settimeout(None)
        with self._cond:
            self.session = reply[1:33].decode(errors="replace")
            self._sock, self._acks = sock, 0
            self._generation += 1
            self.ring.attached = True
            self._cond.notify_all()
        return sock

    def _serve(self, sock: socket.socket) -> None:
        """Reads the daemon's acks until the connection ends (the daemon stopped)."""
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                refused = data.find(b"X")  # the daemon dropped the ring (its framing broke): gRPC from now on
                if refused >= 0:
                    self.refused_why = data[refused + 1:].decode(errors="replace")
                    self.ring.attached = False
                    data = data[:refused]
                with self._cond:
                    self._acks += data.count(b"D")
                    self._cond.notify_all()
        except OSError as e:
            self.last_error = e.strerror or str(e)
        with self._cond:
            # the ring stays the marks' way: they wait in it (in order) until a daemon takes it back;
            # only what a full ring cannot hold goes through gRPC
            self._sock = None
            self._cond.notify_all()
        sock.close()

    # -- explicit calls --------------------------------------------------------------------------
    def session_metadata(self, wait_s: float = 1.0) -> list:
        """gRPC metadata naming this process to the daemon (waits up to wait_s for the ring's first
        registration); empty when the ring is not registered."""
        with self._cond:
            self._cond.wait_for(lambda: self._sock is not None or self.refused_why, timeout=wait_s)
            return [("greenprobe-session", self.session)] if self._sock is not None and self.session else []

    def flush(self, timeout_s: Optional[float] = None) -> int:
        """Waits until the daemon holds every mark written into the ring before this call; returns
        how many it took since the previous flush. Raises DaemonError when it refused some, or when
        marks stay in the ring after ``timeout_s`` (they go when a daemon takes the ring)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        target = self.ring.pushed  # every mark in the ring now; the daemon's count of those it took
        while self.ring.drained < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DaemonError(f"{target - self.ring.drained} marks are still in the shared ring after {timeout:g} s:"
                                  f" no daemon took them from {self.path} ({self.last_error or 'not attached'})",
                                  "start it with `greenprobe daemon`; the marks stay in the ring and go when it "
                                  "answers")
            with self._cond:
                sock, generation, want = self._sock, self._generation, self._acks + 1
            if sock is not None:
                try:
                    with self._send_lock:
                        sock.sendall(b"F")  # drain now, not at the next tick
                except OSError:
                    sock = None
            with self._cond:
                self._cond.wait_for(lambda: self.ring.drained >= target or self._generation != generation or (
                    sock is not None and (self._sock is None or self._acks >= want)),
                    timeout=min(left, 0.1) if sock is None else left)
        drained, refused = self.ring.drained, self.ring.refused
        took, self._seen_drained = drained - self._seen_drained, drained
        new_refused, self._seen_refused = refused - self._seen_refused, refused
        if new_refused:
            raise DaemonError(f"{new_refused} marks were refused by the daemon: {self.ring.refused_why}",
                              "fix what the reason names; a refused mark is not sent again")
        return took - new_refused

    def unsent(self) -> int:
        return max(self.ring.pushed - self.ring.drained, 0)

    def report(self) -> str:
        """One line at exit: marks left in the ring (no daemon took them) or refused by the daemon."""
        unsent, refused = self.unsent(), self.ring.refused
        parts = []
        if unsent:
            parts.append(f"{unsent} left in the shared ring, which no daemon held at exit "
                         f"({self.last_error or 'detached'})")
        if refused:
            parts.append(f"{refused} refused ({self.ring.refused_why})")
        return f"greenprobe: {unsent + refused} marks did not reach the daemon at {self.path}: {'; '.join(parts)}" \
            if parts else ""

    def close(self) -> None:
        """At exit. The daemon keeps the ring's memory after this process is gone and drains it when
        the connection closes: a mark written is a mark held, as long as a daemon is attached."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self.ring.attached:
            try:
                self.flush(min(self.timeout_s, 2.0))
            except DaemonError:
                pass
        line = self.report()
        if line:
            print(line, file=sys.stderr, flush=True)
        _hang_up(self)

    def _after_fork_in_child(self) -> None:
        """The child must not write into its parent's ring: a ring of its own, registered anew. Its
        copy of the parent's connection is closed (only the copy: the parent's stays up), so that the
        parent's end is the daemon's sign the parent is gone."""
        if self._sock is not None:
            self._sock.close()  # the descriptor only, no shutdown: that would end the parent's connection too
        self.ring.renew()
        self._start()


class IdentityLink:
    """A client without a ring (no compiled extension, or $GREENPROBE_MARK_RING=0) still names itself
    to a local daemon: ``I`` on the ring socket, answered with a session id that its gRPC calls
    carry, so that its marks and queries are its user's (daemon/identity.py). The connection stays
    open for the life of the process (its end ends the session); a new daemon is asked again."""

    def __init__(self, path: str, timeout_s: float = 10.0):
        self.path = path
        self.timeout_s = timeout_s
        self._start()
        _LINKS.add(self)

    def _start(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.session = ""
        self.refused_why = self.last_error = ""
        first = self._try(FIRST_TRY_S)
        self._thread = threading.Thread(target=self._run, args=(first,), name="greenprobe-identity", daemon=True)
        self._thread.start()

    def _try(self, timeout_s: float) -> Optional[socket.socket]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout_s)
            sock.connect(self.path)
            sock.sendall(b"I")
            reply = sock.recv(256)
        except OSError as e:
            sock.close()
            self.last_error = e.strerror or str(e)
            return None
        if reply[:1] != b"A":
            self.refused_why = reply[1:].decode(errors="replace") or "the daemon closed the connection"
            sock.close()
            return None
        sock.settimeout(None)
        with self._cond:
            self.session, self._sock = reply[1:33].decode(errors="replace"), sock
            self._cond.notify_all()
        return sock

    def _run(self, first: Optional[socket.socket]) -> None:
        backoff = BACKOFF_S[0]
        while not self._stop.is_set():
            sock, first = (first, None) if first is not None else (self._try(self.timeout_s), None)
            if sock is None:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
                continue
            backoff = BACKOFF_S[0]
            try:
                while sock.recv(256):
                    pass
            except OSError:
                pass
            with self._cond:
                self._sock, self.session = None, ""
            sock.close()

    def session_metadata(self, wait_s: float = 1.0) -> list:
        with self._cond:
            self._cond.wait_for(lambda: self._sock is not None, timeout=wait_s)
            return [("greenprobe-session", self.session)] if self._sock is not None and self.session else []

    def close(self) -> None:
        self._stop.set()
        _hang_up(self)

    def _after_fork_in_child(self) -> None:
        """The child names itself anew (the session is the parent's pid)."""
        if self._sock is not None:
            self._sock.close()
        self._start()


def _hang_up(link) -> None:
    """Ends a link's connection to the daemon (its end ends the session; the link's thread sees it)."""
    with link._cond:
        sock = link._sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_LINKS: "weakref.WeakSet" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for link in list(_LINKS):
        link._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
