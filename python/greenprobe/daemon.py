"""`greenprobe daemon`: one Probe served over gRPC to many client processes.

Who may connect: by default a Unix socket with mode 0660 (owner and group). High-rate energy data
is a side channel (CVE-2020-8694, PLATYPUS: RAPL at ~1 kHz leaks what the CPU computes, which is
why the kernel made energy_uj root-only), so the daemon, which runs with the rights to read it,
serves it only to users you chose: put them in the socket's group (``--group``). TCP only with
``--listen HOST:PORT``, on loopback unless ``--allow-remote``, which requires a token that every
client sends (``GREENPROBE_TOKEN``).
"""

from __future__ import annotations

import grp
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Optional

import grpc
import numpy as np

from . import __version__
from .errors import ConfigError
from .session import Probe
from .v1 import probe_pb2 as pb
from .v1 import probe_pb2_grpc as pb_grpc

MAX_LABEL_BYTES = 256
MAX_BATCH = 100_000
MAX_ATTRS = 64
STREAM_POLL_S = 0.05


def default_socket() -> Path:
    if os.geteuid() == 0:
        return Path("/run/greenprobe/daemon.sock")
    run = os.environ.get("XDG_RUNTIME_DIR")
    return Path(run) / "greenprobe" / "daemon.sock" if run else Path(f"/tmp/greenprobe-{os.getuid()}/daemon.sock")


class Servicer(pb_grpc.ProbeServicer):
    """The request handlers: validate, then read the Probe. No handler lets an exception escape
    as anything but a gRPC status."""

    def __init__(self, probe: Probe, stopping: threading.Event):
        self.probe = probe
        self.stopping = stopping
        self.marks_lock = threading.Lock()

    # -- status --------------------------------------------------------------------------------
    def Status(self, request, context):
        p = self.probe
        chans = [pb.Channel(channel=c["channel"], sensor=c["sensor"], domain=c["domain"], quantity=c["quantity"],
                            estimated=c["estimated"], resolution=c["resolution"],
                            nominal_update_period_ns=c["nominal_update_period_ns"],
                            averaging_window_ns=c["averaging_window_ns"]) for c in p._channels]
        stats = [pb.SensorStats(sensor=s.get("sensor", ""), state=s.get("state", ""), polls=s.get("polls", 0),
                                late_polls=s.get("late_polls", 0), drops=s.get("drops", 0),
                                max_lag_ns=s.get("max_lag_ns", 0), last_error=s.get("last_error", ""))
                 for s in p.stats()]
        skipped = [pb.SkippedSensor(kind=s.kind, reason=s.reason, fix=s.fix or "") for s in p.skipped]
        return pb.StatusReply(version=__version__, anchor_monotonic_ns=p._anchor["monotonic_ns"],
                              anchor_wall_ns=p._anchor["wall_ns"], now_ns=time.monotonic_ns(), channels=chans,
                              stats=stats, skipped=skipped, marks=len(p.marks()), period_ns=p.period_ns)

    # -- marks ---------------------------------------------------------------------------------
    def RecordMarks(self, request, context):
        try:
            records = _records_of(request)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{e}; no mark of this batch was recorded")
        with self.marks_lock:
            for r in records:
                self.probe._records.append(r)
        return pb.RecordMarksReply(accepted=len(records))

    # -- samples -------------------------------------------------------------------------------
    def StreamSamples(self, request, context):
        since = int(request.since_ns)
        want = set(request.channels)
        known = {c["channel"] for c in self.probe._channels}
        if want - known:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown channels {sorted(want - known)}; "
                                                            f"this daemon has {sorted(known)}")
        batch = int(request.max_batch) or 4096
        if batch > 1_000_000:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_batch must be <= 1,000,000")
        while context.is_active() and not self.stopping.is_set():
            t, prev, v, ch, fl = self.probe._columns()
            m = t > since
            if want:
                m &= np.isin(ch, list(want))
            if m.any():
                order = np.argsort(t[m], kind="stable")
                cols = [c[m][order] for c in (t, prev, v, ch, fl)]
                for i in range(0, cols[0].size, batch):
                    part = [c[i:i + batch] for c in cols]
                    yield pb.SampleBatch(t_ns=part[0].tolist(), prev_t_ns=part[1].tolist(), value=part[2].tolist(),
                                         channel=part[3].tolist(), flags=part[4].tolist())
                since = int(cols[0][-1])
            self.stopping.wait(STREAM_POLL_S)

    # -- queries -------------------------------------------------------------------------------
    def Energy(self, request, context):
        if request.end_ns < request.start_ns:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "end_ns is before start_ns")
        rows = self.probe.energy(request.start_ns, request.end_ns)
        return pb.EnergyReply(domains=[pb.DomainEnergy(**r) for r in rows])

    def Summary(self, request, context):
        rows = self.probe.summary().to_pylist()
        fields = {f.name for f in pb.LabelSummary.DESCRIPTOR.fields}
        return pb.SummaryReply(labels=[pb.LabelSummary(**{k: v for k, v in r.items() if k in fields and v is not None})
                                       for r in rows])

    def Save(self, request, context):
        if not request.directory:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "directory is empty")
        try:
            paths = self.probe.save(request.directory)
        except OSError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot write {request.directory}: {e}")
        return pb.SaveReply(paths={k: str(v) for k, v in paths.items()})

    def Table(self, request, context):
        if request.name not in TABLES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown table {request.name!r}: one of {', '.join(TABLES)}")
        import pyarrow as pa

        table = {"intervals": self.probe.intervals, "labels": self.probe.summary, "samples": self.probe.samples}[
            request.name]()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return pb.TableReply(arrow_ipc=sink.getvalue().to_pybytes())


TABLES = ("intervals", "labels", "samples")


def _records_of(batch) -> list[tuple]:
    """Validated mark records of a MarkBatch (marks one by one, then columns); raises ValueError
    naming the first bad mark."""
    cols = batch.columns
    n_cols = len(cols.start_ns)
    total = len(batch.marks) + n_cols
    if total > MAX_BATCH:
        raise ValueError(f"{total} marks in one batch; send at most {MAX_BATCH} per call")
    records = []
    for i, m in enumerate(batch.marks):
        problem = _mark_problem(m.label, m.start_ns, m.end_ns, len(m.attrs))
        if problem:
            raise ValueError(f"mark {i} ({m.label[:40]!r}): {problem}")
        attrs = dict(m.attrs)
        attrs["pid"] = m.pid
        records.append((m.label, m.start_ns, m.end_ns, m.thread_id, attrs, m.ok))
    if not n_cols:
        return records
    attrs_list = [None] * n_cols
    if cols.attrs_json:
        try:
            attrs_list = json.loads(cols.attrs_json)
        except ValueError:
            raise ValueError("attrs_json is not JSON") from None
        if not isinstance(attrs_list, list):
            raise ValueError("attrs_json must be a JSON array with one entry per mark")
    lengths = {"label_index": len(cols.label_index), "end_ns": len(cols.end_ns), "thread_id": len(cols.thread_id),
               "ok": len(cols.ok), "attrs_json": len(attrs_list)}
    uneven = {k: v for k, v in lengths.items() if v != n_cols}
    if uneven:
        raise ValueError(f"columns of unequal length: start_ns has {n_cols}, " +
                         ", ".join(f"{k} {v}" for k, v in uneven.items()))
    labels = list(cols.labels)
    for j, name in enumerate(labels):
        problem = _mark_problem(name, 1, 1, 0)
        if problem:
            raise ValueError(f"label {j} ({name[:40]!r}): {problem}")
    start = np.array(cols.start_ns, dtype=np.int64)
    end = np.array(cols.end_ns, dtype=np.int64)
    index = np.array(cols.label_index, dtype=np.int64)
    bad = np.flatnonzero((end < start) | (start <= 0) | (index >= len(labels)))
    if bad.size:
        i = int(bad[0])
        why = ("label_index points past labels" if index[i] >= len(labels) else
               _mark_problem("x", int(start[i]), int(end[i]), 0))
        raise ValueError(f"mark {len(batch.marks) + i}: {why}")
    pid = cols.pid
    base = len(batch.marks)
    for i, (li, s, e, tid, ok, more) in enumerate(zip(cols.label_index, cols.start_ns, cols.end_ns, cols.thread_id,
                                                      cols.ok, attrs_list)):
        attrs = {"pid": pid}
        if more:
            if not isinstance(more, dict) or len(more) > MAX_ATTRS:
                raise ValueError(f"mark {base + i}: attributes must be a JSON object of at most {MAX_ATTRS} entries")
            attrs.update(more)
        records.append((labels[li], s, e, tid, attrs, ok))
    return records


def _mark_problem(label: str, start_ns: int, end_ns: int, n_attrs: int) -> Optional[str]:
    if not label:
        return "empty label"
    if len(label.encode()) > MAX_LABEL_BYTES:
        return f"label longer than {MAX_LABEL_BYTES} bytes"
    if end_ns < start_ns:
        return f"ends before it starts (end_ns {end_ns} < start_ns {start_ns})"
    if start_ns <= 0:
        return "start_ns must be a CLOCK_MONOTONIC time (> 0)"
    if n_attrs > MAX_ATTRS:
        return f"more than {MAX_ATTRS} attributes"
    return None


class _TokenCheck(grpc.ServerInterceptor):
    def __init__(self, token: str):
        self.expected = f"Bearer {token}"

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (set GREENPROBE_TOKEN)")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        meta = dict(details.invocation_metadata or ())
        if meta.get("authorization") != self.expected:
            return self._deny
        return continuation(details)


class Daemon:
    """A Probe and a gRPC server on a Unix socket (and optionally TCP)."""

    def __init__(self, probe: Probe, socket_path: Optional[Path] = None, listen: Optional[str] = None,
                 allow_remote: bool = False, token: Optional[str] = None, group: Optional[str] = None,
                 workers: int = 16):
        if listen and not allow_remote and not _is_loopback(listen):
            raise ConfigError(f"--listen {listen} is not a loopback address",
                              "listen on loopback (e.g. --listen 127.0.0.1:50051); energy data is a side channel "
                              "(CVE-2020-8694), so add --allow-remote and a token only if remote readers are intended")
        if allow_remote and not token:
            raise ConfigError("--allow-remote needs a token",
                              "pass --token TOKEN or set GREENPROBE_TOKEN (clients send the same token)")
        self.probe = probe
        self.socket_path = Path(socket_path) if socket_path else None
        self.listen = listen
        self.group = group
        self.stopping = threading.Event()
        interceptors = [_TokenCheck(token)] if token else []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=interceptors,
                                  options=[("grpc.max_receive_message_length", 64 << 20)])
        pb_grpc.add_ProbeServicer_to_server(Servicer(probe, self.stopping), self.server)
        self.addresses: list[str] = []

    def start(self) -> "Daemon":
        if self.socket_path is not None:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            if self.socket_path.exists():
                if _socket_in_use(self.socket_path):
                    raise ConfigError(f"a daemon already serves {self.socket_path}",
                                      "stop it, or give this one another --socket")
                self.socket_path.unlink()
            old = os.umask(0o117)  # the socket is born 0660: never a moment world-accessible
            try:
                self.server.add_insecure_port(f"unix:{self.socket_path}")
            finally:
                os.umask(old)
            self.addresses.append(f"unix:{self.socket_path}")
        if self.listen:
            port = self.server.add_insecure_port(self.listen)
            if port == 0:
                raise ConfigError(f"cannot listen on {self.listen}",
                                  "choose a free port and an address of this host (port 0: any free port)")
            host = self.listen.rsplit(":", 1)[0]
            self.addresses.append(f"{host}:{port}")
        self.server.start()
        if self.socket_path is not None:
            os.chmod(self.socket_path, 0o660)
            if self.group:
                os.chown(self.socket_path, -1, grp.getgrnam(self.group).gr_gid)
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        self.stopping.set()
        self.server.stop(grace_s).wait()
        if self.socket_path is not None and self.socket_path.exists():
            self.socket_path.unlink()


def _flush_loop(writer, done: threading.Event, every_s: float) -> None:
    while not done.wait(every_s):
        try:
            writer.flush()
        except OSError as e:  # a full disk must not stop the measuring; say so and try again later
            print(f"greenprobe daemon: could not write {writer.root}: {e}", file=sys.stderr)


def _is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _socket_in_use(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def run(args) -> int:
    """The CLI entry: start, serve until SIGTERM/SIGINT, stop the probe, save if asked."""
    probe = Probe(sensors=args.sensors, period_us=args.period_us)
    socket_path = None if args.no_socket else Path(args.socket or default_socket())
    token = args.token or os.environ.get("GREENPROBE_TOKEN")
    daemon = Daemon(probe, socket_path, args.listen, args.allow_remote, token, args.group)
    probe.start()
    try:
        daemon.start()
    except Exception:
        probe.stop()
        raise
    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for s in probe.skipped:
        print(f"skipped {s.kind}: {s.reason}", file=sys.stderr)
    kinds = sorted({c["sensor"] for c in probe._channels})
    print(f"greenprobe daemon {__version__}: sampling {', '.join(kinds)} every {args.period_us:g} µs", file=sys.stderr)
    for a in daemon.addresses:
        print(f"serving on {a}   (clients: export GREENPROBE_DAEMON={a})", file=sys.stderr)
    if socket_path is not None:
        print(f"socket mode 0660: only its owner{' and group ' + args.group if args.group else ''} may connect "
              "(energy data is a side channel, CVE-2020-8694)", file=sys.stderr)
    if args.prometheus_port is not None:
        from .prometheus import serve as serve_metrics

        server, _ = serve_metrics(probe, args.prometheus_port, args.prometheus_addr)
        print(f"Prometheus metrics on http://{args.prometheus_addr}:{server.server_port}/metrics", file=sys.stderr)
    writer = None
    if args.out:
        from .parquet import PartWriter

        writer = PartWriter(probe, args.out)
        flush_thread = threading.Thread(target=_flush_loop, args=(writer, done, args.flush_s), daemon=True,
                                        name="greenprobe-flush")
        flush_thread.start()
        print(f"writing {writer.root}/ every {args.flush_s:g} s (readable after a crash), and the full files "
              f"into {args.out} at stop", file=sys.stderr)
    if args.ready_file:
        Path(args.ready_file).write_text("\n".join(daemon.addresses) + "\n")
    sys.stderr.flush()
    done.wait()
    print("stopping: flushing marks and samples", file=sys.stderr)
    daemon.stop()
    probe.stop()
    if writer is not None:
        writer.flush()
    if args.out:
        paths = probe.save(args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0
