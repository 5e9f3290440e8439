"""The daemon's client: pure Python on grpcio + protobuf, no compiled greenprobe extension.

    probe = greenprobe.connect("unix:/run/greenprobe/daemon.sock")   # or "localhost:50051"
    with greenprobe.mark("infer"):      # goes to the daemon named by GREENPROBE_DAEMON when no local Probe runs
        model(x)
    probe.flush()
    probe.energy(start_ns, end_ns); probe.summary(); probe.save("/results/run1")

Every timestamp is CLOCK_MONOTONIC (time.monotonic_ns), one clock for all processes on a Linux
host: a mark is stamped where it happens and sent later, in batches.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import time
from typing import Any, Callable, Iterator, Optional

from .errors import GreenprobeError

DAEMON_ENV = "GREENPROBE_DAEMON"
TOKEN_ENV = "GREENPROBE_TOKEN"
FLUSH_INTERVAL_S = 0.05
FLUSH_MARKS = 5000


def _stubs():
    import grpc

    from .v1 import probe_pb2, probe_pb2_grpc

    return grpc, probe_pb2, probe_pb2_grpc


def _json(value) -> str:
    import json

    return json.dumps(value, default=str, separators=(",", ":"))


class DaemonError(GreenprobeError, RuntimeError):
    """The daemon could not be reached or refused a request; ``message`` says which and why, ``fix``
    what to do."""


def _channel(address: str, token: Optional[str]):
    grpc, _, _ = _stubs()
    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    channel = grpc.insecure_channel(address, options=opts)
    if token:  # the daemon's --allow-remote mode; over plain TCP a token is as private as the network
        channel = grpc.intercept_channel(channel, _token_interceptor(grpc, token))
    return channel


def _token_interceptor(grpc, token: str):
    """Adds ``authorization: Bearer TOKEN`` to every call."""

    class Details(grpc.ClientCallDetails):
        def __init__(self, d):
            self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
            self.wait_for_ready = getattr(d, "wait_for_ready", None)
            self.compression = getattr(d, "compression", None)
            self.metadata = list(d.metadata or []) + [("authorization", f"Bearer {token}")]

    class Interceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            return continuation(Details(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(Details(details), request)

    return Interceptor()


def _to_dict(msg) -> dict:
    """Every field of a message, defaults included (json_format drops them, and its switch for that
    was renamed across protobuf versions)."""
    out = {}
    for f in msg.DESCRIPTOR.fields:
        v = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            out[f.name] = dict(v)
        elif _repeated(f):
            out[f.name] = [_to_dict(x) if f.message_type is not None else x for x in v]
        elif f.message_type is not None:
            out[f.name] = _to_dict(v)
        else:
            out[f.name] = v
    return out


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5; `label` is gone in 7
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


class RemoteProbe:
    """A daemon's probe, with the local Probe's query surface (status, channels, energy, summary,
    save, samples) and a mark buffer that sends completed marks in batches."""

    def __init__(self, address: str, token: Optional[str] = None, timeout_s: float = 10.0):
        grpc, self._pb, pb_grpc = _stubs()
        self._grpc = grpc
        self.address = address
        self.timeout_s = timeout_s
        self._channel = _channel(address, token if token is not None else os.environ.get(TOKEN_ENV))
        self._stub = pb_grpc.ProbeStub(self._channel)
        self._pending: list = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one batch in flight: flush() returns once all before it arrived
        self._flusher: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._last_error: Optional[str] = None

    # -- calls ---------------------------------------------------------------------------------
    def _call(self, name: str, request, timeout: Optional[float] = None):
        try:
            return getattr(self._stub, name)(request, timeout=timeout or self.timeout_s)
        except self._grpc.RpcError as e:
            code = e.code()
            if code == self._grpc.StatusCode.UNAVAILABLE:
                raise DaemonError(f"greenprobe daemon at {self.address} is not reachable ({e.details()})",
                                  f"start it with `greenprobe daemon` and point {DAEMON_ENV} at its socket") from None
            if code == self._grpc.StatusCode.UNAUTHENTICATED:
                raise DaemonError(f"the daemon at {self.address} refused the token",
                                  f"set {TOKEN_ENV} to the token it was started with") from None
            fix = ""
            if code == self._grpc.StatusCode.DEADLINE_EXCEEDED:
                fix = (f"the daemon did not answer within {timeout or self.timeout_s:g} s: pass a larger timeout_s "
                       "to greenprobe.connect()")
            raise DaemonError(f"{name} failed: {code.name}: {e.details()}", fix) from None

    def status(self) -> dict:
        """Version, clock anchor, channels, per-sensor statistics, skipped sensors, marks held."""
        return _to_dict(self._call("Status", self._pb.StatusRequest()))

    def channels(self) -> list[dict]:
        return self.status().get("channels", [])

    def now_ns(self) -> int:
        return int(self._call("Status", self._pb.StatusRequest()).now_ns)

    def energy(self, start_ns: int, end_ns: int) -> list[dict]:
        reply = self._call("Energy", self._pb.EnergyRequest(start_ns=int(start_ns), end_ns=int(end_ns)))
        return [_to_dict(d) for d in reply.domains]

    def summary(self) -> list[dict]:
        self.flush()
        reply = self._call("Summary", self._pb.SummaryRequest(), timeout=max(self.timeout_s, 60))
        return [_to_dict(r) for r in reply.labels]

    def save(self, directory: str) -> dict:
        self.flush()
        reply = self._call("Save", self._pb.SaveRequest(directory=str(directory)), timeout=max(self.timeout_s, 300))
        return dict(reply.paths)

    def stats(self) -> list[dict]:
        """Per sensor: polls, late polls, drops, lag, state, last error."""
        return self.status()["stats"]

    def marks(self) -> int:
        """How many marks the daemon holds (a local Probe returns the records themselves)."""
        return int(self.status()["marks"])

    def _table(self, name: str):
        import pyarrow as pa  # only these calls need it; everything else is grpcio + protobuf

        self.flush()
        reply = self._call("Table", self._pb.TableRequest(name=name), timeout=max(self.timeout_s, 300))
        return pa.ipc.open_stream(reply.arrow_ipc).read_all()

    def intervals(self):
        """One row per (mark, sensor, domain), as a pyarrow Table (as Probe.intervals)."""
        return self._table("intervals")

    def summary_table(self):
        """The label summary as a pyarrow Table (as Probe.summary)."""
        return self._table("labels")

    def samples_table(self):
        """Every sample as a pyarrow Table (as Probe.samples)."""
        return self._table("samples")

    def samples(self, since_ns: int = 0, channels=(), max_batch: int = 4096) -> Iterator[dict]:
        """Streams samples as column batches (dicts of lists) until the caller stops iterating."""
        req = self._pb.StreamSamplesRequest(since_ns=int(since_ns), channels=list(channels), max_batch=max_batch)
        stream = self._stub.StreamSamples(req)
        try:
            for batch in stream:
                yield {"t_ns": list(batch.t_ns), "prev_t_ns": list(batch.prev_t_ns), "value": list(batch.value),
                       "channel": list(batch.channel), "flags": list(batch.flags)}
        finally:
            stream.cancel()

    # -- marks ---------------------------------------------------------------------------------
    def append(self, record: tuple) -> None:
        """A mark record (label, start_ns, end_ns, thread_id, attrs, ok), as greenprobe.mark makes."""
        with self._lock:
            self._pending.append(record)
            n = len(self._pending)
        if self._flusher is None:
            self._start_flusher()
        if n >= FLUSH_MARKS:
            self.flush()

    def add_mark(self, label: str, start_ns: int, end_ns: int, *, thread_id: int = 0, ok: bool = True, **attrs):
        self.append((label, int(start_ns), int(end_ns), int(thread_id), attrs or None, bool(ok)))

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_loop, name="greenprobe-mark-flush", daemon=True)
            self._flusher.start()
        atexit.register(self.close)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            try:
                self.flush()
            except DaemonError as e:  # keep the marks; say it once
                if self._last_error != str(e):
                    self._last_error = str(e)
                    import warnings

                    warnings.warn(f"greenprobe: marks not sent yet: {e}", RuntimeWarning)

    def flush(self) -> int:
        """Sends every buffered mark now; returns how many the daemon accepted."""
        with self._send_lock:
            return self._send()

    def _send(self) -> int:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        msg = self._pb.MarkBatch()
        cols = msg.columns
        index: dict = {}
        cols.label_index.extend([index.setdefault(r[0], len(index)) for r in batch])
        cols.labels.extend(list(index))
        cols.start_ns.extend([r[1] for r in batch])
        cols.end_ns.extend([r[2] for r in batch])
        cols.thread_id.extend([r[3] & 0xFFFFFFFFFFFFFFFF for r in batch])
        cols.ok.extend([bool(r[5]) for r in batch])
        if any(r[4] for r in batch):  # one JSON array for the batch: one call into the C encoder
            cols.attrs_json = _json([r[4] or None for r in batch])
        cols.pid = os.getpid()
        try:
            reply = self._call("RecordMarks", msg)
        except DaemonError:
            with self._lock:  # put them back, in order, for the next try
                self._pending[:0] = batch
            raise
        return reply.accepted

    def close(self) -> None:
        """Sends what is left and waits for it (also at interpreter exit): no mark made before is lost."""
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=self.timeout_s)
        try:
            self.flush()
        except DaemonError as e:
            import sys

            print(f"greenprobe: {len(self._pending)} marks could not be sent: {e}", file=sys.stderr)
        self._channel.close()


def connect(address: Optional[str] = None, token: Optional[str] = None, timeout_s: float = 10.0,
            check: bool = True) -> RemoteProbe:
    """A probe served by ``greenprobe daemon`` at ``address`` (gRPC target: ``unix:/path.sock`` or
    ``host:port``; default: ``$GREENPROBE_DAEMON``). ``check`` asks the daemon for its status now,
    so a wrong address fails here with the fix."""
    address = address or os.environ.get(DAEMON_ENV)
    if not address:
        raise DaemonError("no daemon address",
                          f"pass one (unix:/path/to.sock or host:port) or set {DAEMON_ENV}")
    probe = RemoteProbe(address, token, timeout_s)
    if check:
        probe.status()
    return probe


_default: Optional[RemoteProbe] = None
_default_lock = threading.Lock()


def default_remote() -> Optional[RemoteProbe]:
    """The RemoteProbe for $GREENPROBE_DAEMON (made on first use), or None when it is not set."""
    global _default
    address = os.environ.get(DAEMON_ENV)
    if not address:
        return None
    with _default_lock:
        if _default is None or _default.address != address:
            _default = RemoteProbe(address)
        return _default


class PyMark:
    """``mark`` in pure Python, for environments without greenprobe's compiled extension: same
    arguments and records as the C type, sent to the daemon named by $GREENPROBE_DAEMON."""

    __slots__ = ("label", "attrs", "sync", "_start")

    def __init__(self, label: str, sync: Optional[Callable[[], Any]] = None, **attrs):
        if not isinstance(label, str) or not label:
            raise TypeError("mark() needs a non-empty label string")
        self.label, self.sync, self.attrs, self._start = label, sync, attrs, None

    def __enter__(self):
        if self.sync is not None:
            self.sync()
        self._start = time.monotonic_ns()
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.sync is not None:
            self.sync()
        end = time.monotonic_ns()
        sink = default_remote()
        if sink is None:
            import warnings

            warnings.warn(f"greenprobe.mark without the compiled extension needs {DAEMON_ENV}: mark not recorded",
                          RuntimeWarning, stacklevel=2)
            return False
        sink.append((self.label, self._start, end, threading.get_ident(), self.attrs or None, exc_type is None))
        return False

    def __call__(self, fn):
        label, attrs, sync = self.label, self.attrs, self.sync

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with PyMark(label, sync=sync, **attrs):
                return fn(*args, **kwargs)

        return wrapper
