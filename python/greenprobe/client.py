"""The daemon's client: pure Python on grpcio + protobuf, no compiled greenprobe extension.

    probe = greenprobe.connect("unix:/run/greenprobe/daemon.sock")   # or "localhost:50051"
    with greenprobe.mark("infer"):      # goes to the daemon named by GREENPROBE_DAEMON when no local Probe runs
        model(x)
    probe.flush()
    probe.energy(start_ns, end_ns); probe.summary(); probe.save("/results/run1")

Every timestamp is CLOCK_MONOTONIC (time.monotonic_ns), one clock for all processes on a Linux
host: a mark is stamped where it happens and sent later, in batches, by sender.py (which never
makes the marking code wait and keeps the marks while the daemon is away).
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import time
from typing import Any, Callable, Iterator, Optional

from .addresses import is_loopback, target_host
from .errors import DaemonError
from .records import Mark
from .sender import CHANNEL_OPTIONS, MarkSender

DAEMON_ENV = "GREENPROBE_DAEMON"
TOKEN_ENV = "GREENPROBE_TOKEN"
TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV = "GREENPROBE_TLS_CA", "GREENPROBE_TLS_CERT", "GREENPROBE_TLS_KEY"
__all__ = ["DaemonError", "PyMark", "RemoteProbe", "connect", "default_remote"]


def _stubs():
    import grpc

    from .v1 import probe_pb2, probe_pb2_grpc

    return grpc, probe_pb2, probe_pb2_grpc


def _channel(address: str, token: Optional[str], options=(), session: Optional[Callable[[], list]] = None):
    """A channel to the daemon: TLS when $GREENPROBE_TLS_CA names the CA to trust (the daemon's
    --allow-remote mode; $GREENPROBE_TLS_CERT and $GREENPROBE_TLS_KEY add a client certificate for
    --tls-client-ca), and the token, when there is one, on every call. On the Unix socket, every
    call carries what ``session`` returns: this process's session id (ring_client.py), which tells
    the daemon whose call it is."""
    grpc, _, _ = _stubs()
    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20), *options]
    if address.startswith("unix:"):  # the kernel guards the socket: no token to hand to whoever listens there
        channel = grpc.insecure_channel(address, options=opts)
        return grpc.intercept_channel(channel, _metadata_interceptor(grpc, session)) if session else channel
    if os.environ.get(TLS_CA_ENV):
        channel = grpc.secure_channel(address, _tls_credentials(grpc), options=opts)
    elif not is_loopback(target_host(address)):
        raise DaemonError(f"{address} is not on this host and {TLS_CA_ENV} is not set: the marks, and the token, "
                          "would cross the network in clear",
                          f"set {TLS_CA_ENV} to the CA that signed the daemon's --tls-cert")
    else:
        channel = grpc.insecure_channel(address, options=opts)
    if token:
        channel = grpc.intercept_channel(channel, _metadata_interceptor(grpc, lambda: [("authorization",
                                                                                      f"Bearer {token}")]))
    return channel


def _tls_credentials(grpc):
    def read(env: str) -> Optional[bytes]:
        path = os.environ.get(env)
        if not path:
            return None
        try:
            return open(path, "rb").read()
        except OSError as e:
            raise DaemonError(f"cannot read ${env} ({path}): {e.strerror}", f"point {env} at a PEM file") from None

    cert, key = read(TLS_CERT_ENV), read(TLS_KEY_ENV)
    if (cert is None) != (key is None):
        raise DaemonError(f"${TLS_CERT_ENV} and ${TLS_KEY_ENV} go together",
                          "set both (the client certificate and its key) or neither")
    return grpc.ssl_channel_credentials(read(TLS_CA_ENV), key, cert)


def _metadata_interceptor(grpc, extra: Callable[[], list]):
    """Adds what ``extra()`` returns (``authorization: Bearer TOKEN``, the session id) to every call."""

    class Details(grpc.ClientCallDetails):
        def __init__(self, d):
            self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
            self.wait_for_ready = getattr(d, "wait_for_ready", None)
            self.compression = getattr(d, "compression", None)
            self.metadata = list(d.metadata or []) + list(extra())

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
        elif f.containing_oneof is not None and not msg.HasField(f.name):
            out[f.name] = None  # an optional field the daemon left out: no value, not 0
        else:
            out[f.name] = v
    return out


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5; `label` is gone in 7
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


class RemoteProbe:
    """A daemon's probe, with the local Probe's query surface (status, channels, energy, summary,
    save, samples), and ``append``/``add_mark`` that hand marks to a MarkSender (sender.py).

    ``timeout_s`` bounds each call, ``flush()``, and the sending of what is left at exit;
    ``buffer_marks`` how many marks are kept while the daemon is unreachable (default
    $GREENPROBE_BUFFER_MARKS, else 300,000)."""

    def __init__(self, address: str, token: Optional[str] = None, timeout_s: float = 10.0,
                 buffer_marks: Optional[int] = None):
        grpc, self._pb, pb_grpc = _stubs()
        self._grpc = grpc
        self.address = address
        self.timeout_s = timeout_s
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._ring = self._identity = None
        self._channel = _channel(address, token, session=self._session)
        self._stub = pb_grpc.ProbeStub(self._channel)
        self._sender = MarkSender(address, lambda: _channel(address, token, CHANNEL_OPTIONS, self._session), timeout_s,
                                  buffer_marks)
        self._ring = _ring_link(address, self._sender, timeout_s)
        # a local client without a ring still names itself, so that its marks are its user's
        self._identity = self._ring if self._ring is not None else _identity_link(address, timeout_s)
        # what greenprobe.mark appends to: the shared-memory ring of a local daemon, else the sender
        self.mark_sink = self._ring.ring if self._ring is not None else self._sender

    def _session(self) -> list:
        """The metadata naming this process to a local daemon (none over TCP, or while unregistered)."""
        link = self._identity
        return link.session_metadata(wait_s=0) if link is not None else []

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

    def channel_info(self) -> list[dict]:
        """Each channel's descriptor (as Probe.channel_info): channel, sensor and every ChannelInfo
        field, no samples."""
        status = self.status()
        chans = status.get("channels", [])
        if status.get("api_version", 0) < 4:  # its field 6 held a power channel's resolution in W
            chans = [{**c, "resolution_j": 0.0, "resolution_w": c.get("resolution_j", 0.0)}
                     if c.get("quantity") == "power" else c for c in chans]
        return chans

    def channels(self, start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> list:
        """Each channel with its samples (attribution.Channel, as Probe.channels), from the daemon's
        samples table; only those from ``start_ns`` to ``end_ns`` when given."""
        import numpy as np

        from .attribution import channels_of
        from .store import sample_columns

        cols = sample_columns(self.samples_table())
        keep = np.ones(cols[0].size, bool)
        if start_ns is not None:
            keep &= cols[0] >= start_ns
        if end_ns is not None:
            keep &= cols[0] <= end_ns
        return channels_of(self.channel_info(), tuple(c[keep] for c in cols))

    def now_ns(self) -> int:
        return int(self._call("Status", self._pb.StatusRequest()).now_ns)

    def energy(self, start_ns: int, end_ns: int) -> list[dict]:
        reply = self._call("Energy", self._pb.EnergyRequest(start_ns=int(start_ns), end_ns=int(end_ns)))
        return [_to_dict(d) for d in reply.domains]

    def summary(self, owner: Optional[str] = None) -> list[dict]:
        """The label summary of this user's marks (an admin's: every owner's, or ``owner``'s), as rows."""
        self.flush()
        reply = self._call("Summary", self._pb.SummaryRequest(owner=owner or ""), timeout=max(self.timeout_s, 60))
        return [_to_dict(r) for r in reply.labels]

    def save(self, name: str) -> dict:
        """The daemon writes the session's files into ``name``, a folder under its ``--save-dir``
        (files 0640 of the socket's group); returns their paths. To write where you choose, with
        your own rights: ``save_local``."""
        self.flush()
        reply = self._call("Save", self._pb.SaveRequest(directory=str(name)), timeout=max(self.timeout_s, 300))
        return dict(reply.paths)

    def save_local(self, directory) -> dict:
        """Writes DIR/intervals.parquet, labels.parquet, samples.parquet and metadata.json from the
        daemon's tables, as this process (the daemon writes nothing); returns the paths."""
        import json
        from pathlib import Path

        from .parquet import METADATA_KEY, _atomic_write_table, _atomic_write_text  # as a local save writes

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {}
        metadata = None
        for name, table in (("intervals", self.intervals()), ("labels", self.summary_table()),
                            ("samples", self.samples_table())):
            paths[name] = d / f"{name}.parquet"
            _atomic_write_table(table, paths[name])
            metadata = metadata or (table.schema.metadata or {}).get(METADATA_KEY)
        paths["metadata"] = d / "metadata.json"
        _atomic_write_text(json.dumps(json.loads(metadata), indent=2) if metadata else "{}", paths["metadata"])
        return {k: str(v) for k, v in paths.items()}

    def stats(self) -> list[dict]:
        """Per sensor: polls, late polls, drops, lag, state, last error."""
        return self.status()["stats"]

    def mark_count(self) -> int:
        """How many marks the daemon holds."""
        return int(self.status()["marks"])

    def _table(self, name: str, owner: Optional[str] = None):
        import pyarrow as pa  # only these calls need it; everything else is grpcio + protobuf

        self.flush()
        reply = self._call("Table", self._pb.TableRequest(name=name, owner=owner or ""),
                           timeout=max(self.timeout_s, 300))
        return pa.ipc.open_stream(reply.arrow_ipc).read_all()

    def intervals(self, owner: Optional[str] = None):
        """One row per (mark, sensor, domain), as a pyarrow Table (as Probe.intervals): this user's
        marks (an admin's: every owner's, or ``owner``'s)."""
        return self._table("intervals", owner)

    def summary_table(self, owner: Optional[str] = None):
        """The label summary as a pyarrow Table (as Probe.summary), whose marks as ``intervals``."""
        return self._table("labels", owner)

    def requests(self, owner: Optional[str] = None):
        """Energy per request, each one's share of every step it was in by its tokens (as
        Probe.requests): this user's requests (an admin's: every owner's, or ``owner``'s)."""
        return self._table("requests", owner)

    def consumers(self):
        """Energy per process or cgroup, window by window, from a daemon started with --consumers
        (daemon/consumers.py): every consumer for an admin; else this user's own, everyone else's
        added up as ``others``."""
        return self._table("consumers")

    def samples_table(self):
        """Every sample as a pyarrow Table (as Probe.samples)."""
        return self._table("samples")

    def samples(self, since_ns: int = 0, channels=(), max_batch: int = 4096) -> Iterator[dict]:
        """Streams samples as column batches (dicts of lists: t_ns, prev_t_ns, channel, flags, and
        energy_j for energy counters (cumulative J) or power_w for power readings (W), None in the
        other) until the caller stops iterating."""
        power = {c["channel"] for c in self.channel_info() if c["quantity"] == "power"}
        req = self._pb.StreamSamplesRequest(since_ns=int(since_ns), channels=list(channels), max_batch=max_batch)
        stream = self._stub.StreamSamples(req)
        try:
            for batch in stream:
                ch, v = list(batch.channel), list(batch.energy_j_or_power_w)
                yield {"t_ns": list(batch.t_ns), "prev_t_ns": list(batch.prev_t_ns), "channel": ch,
                       "energy_j": [None if c in power else x for c, x in zip(ch, v)],
                       "power_w": [x if c in power else None for c, x in zip(ch, v)], "flags": list(batch.flags)}
        finally:
            stream.cancel()

    # -- marks ---------------------------------------------------------------------------------
    def append(self, record: Mark) -> None:
        """A mark record (records.Mark, or the C mark's tuple in its order), as greenprobe.mark makes.
        Returns at once and never raises: a local daemon drains it from shared memory, or a
        background thread sends it."""
        self.mark_sink.append(record)

    def add_mark(self, label: str, start_ns: int, end_ns: int, *, thread_id: int = 0, ok: bool = True, **attrs):
        if not isinstance(label, str) or not label:  # as mark(): a wrong call fails here, not in a batch later
            raise TypeError("add_mark() needs a non-empty label string")
        self.append(Mark(label, int(start_ns), int(end_ns), int(thread_id), attrs or None, bool(ok)))

    def flush(self) -> int:
        """Waits until the daemon holds every mark appended before; returns how many it accepted since
        the previous flush. Raises DaemonError after timeout_s or when it refused some."""
        took = self._ring.flush() if self._ring is not None else 0
        return took + self._sender.flush()  # marks the ring could not take went this way

    def close(self) -> None:
        """Sends what is left for at most timeout_s (also at interpreter exit), then says on stderr
        how many marks did not arrive and why."""
        if self._identity is not None:
            self._identity.close()
        self._sender.close()
        self._channel.close()


def _ring_link(address: str, sender: MarkSender, timeout_s: float):
    """The shared-memory ring for a daemon on this host's Unix socket (ring_client.py), or None:
    for TCP, with $GREENPROBE_MARK_RING=0, or where greenprobe's compiled extension is missing."""
    from .ring_client import RingLink, ring_bytes, ring_socket

    path, size = ring_socket(address), ring_bytes()
    if path is None or not size:
        return None
    try:
        link = RingLink(path, sender, size, timeout_s)
    except ImportError:  # the pure-Python client: every mark through gRPC
        return None
    atexit.register(link.close)
    return link


def _identity_link(address: str, timeout_s: float):
    """This process's session with a daemon on this host's Unix socket, without a ring (IdentityLink), or None for TCP."""
    from .ring_client import IdentityLink, ring_socket

    path = ring_socket(address)
    if path is None:
        return None
    link = IdentityLink(path, timeout_s)
    atexit.register(link.close)
    return link


def connect(address: Optional[str] = None, token: Optional[str] = None, timeout_s: float = 10.0,
            check: bool = True, buffer_marks: Optional[int] = None) -> RemoteProbe:
    """A probe served by ``greenprobe daemon`` at ``address`` (gRPC target: ``unix:/path.sock`` or
    ``host:port``; default: ``$GREENPROBE_DAEMON``). ``check`` asks the daemon for its status now,
    so a wrong address fails here with the fix. ``buffer_marks``: how many marks to keep while the
    daemon is unreachable (default $GREENPROBE_BUFFER_MARKS, else 300,000); beyond it new marks are
    dropped and counted."""
    source = "address" if address else DAEMON_ENV
    address = address or os.environ.get(DAEMON_ENV)
    if not address:
        raise DaemonError("no daemon address",
                          f"pass one (unix:/path/to.sock or host:port) or set {DAEMON_ENV}")
    check_environment(address, source, token)
    probe = RemoteProbe(address, token, timeout_s, buffer_marks)
    if check:
        probe.status()
    return probe


def check_environment(address: str, source: str = DAEMON_ENV, token: Optional[str] = None) -> None:
    """The daemon's address (``source``: the variable or argument it came from) and $GREENPROBE_TOKEN
    (unless ``token`` is given), checked when a client is made, at the first mark: a mistake is one
    DaemonError naming it and the fix, not a gRPC error about a target or a header later, or marks
    lost at exit without a word. The token's text is never repeated."""
    shown = f"{source}={address!r}" if source == DAEMON_ENV else f"address {address!r}"
    fix = (f"set {DAEMON_ENV} to the address `greenprobe daemon` prints: unix:/path/to/daemon.sock or "
           "host:port (e.g. 127.0.0.1:50051)")
    if address.startswith(("unix:", "unix-abstract:")):
        if not address.partition(":")[2]:
            raise DaemonError(f"{shown} names no socket", fix)
    else:
        target = address.split("///")[-1]
        for scheme in ("ipv4:", "ipv6:", "dns:"):
            target = target.removeprefix(scheme)
        host, _, port = target.rpartition(":")
        if not host.strip("[]") or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise DaemonError(f"{shown} is not a daemon address: it needs unix:PATH, or HOST:PORT with a port from "
                              "1 to 65535", fix)
    named = "the token" if token is not None else TOKEN_ENV
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token and not all("!" <= c <= "~" for c in token):
        raise DaemonError(f"{named} holds a character a token cannot carry (a space, a newline or a non-ASCII "
                          "character; gRPC refuses the header)",
                          f"give the daemon's token alone in {named} (printable ASCII, as `openssl rand -hex 24` "
                          "makes)")


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
            check_environment(address, DAEMON_ENV)
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
        sink.append(Mark(self.label, self._start, end, threading.get_ident(), self.attrs or None, exc_type is None))
        return False

    def __call__(self, fn):
        label, attrs, sync = self.label, self.attrs, self.sync

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with PyMark(label, sync=sync, **attrs):
                return fn(*args, **kwargs)

        return wrapper
