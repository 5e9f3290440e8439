"""The daemon's listeners and its life: a Probe served over gRPC on a Unix socket and, with a token,
on TCP; `greenprobe daemon` starts it, serves until SIGTERM/SIGINT and saves.

The Unix socket and TCP are two gRPC servers with thread pools of their own: the TCP one checks the
token (and speaks TLS off loopback); the socket is guarded by the kernel (its file mode and folder).
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from typing import Optional

import grpc

from .._version import __version__
from ..errors import ConfigError
from ..session import Probe
from ..v1 import probe_pb2_grpc as pb_grpc
from . import access
from .identity import Identities, resolve_group
from .limits import MAX_MESSAGE_BYTES, Limits
from .rings import RingIntake, ring_socket_path
from .servicer import Servicer


IDLE_CONNECTION_MS = 60_000
SIGNAL_LOOK_S = 0.2  # how often the main thread looks for a signal another thread received


def default_socket() -> Path:
    """The socket path when none is given (its folder is the daemon's own, kept private)."""
    if os.geteuid() == 0:
        return Path("/run/greenprobe/daemon.sock")
    run = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(run) / "greenprobe" if run else Path(f"/tmp/greenprobe-{os.getuid()}")
    return folder / "daemon.sock"


class Daemon:
    """A Probe behind a gRPC server on a Unix socket (and optionally one on TCP)."""

    def __init__(self, probe: Probe, socket_path: Optional[Path] = None, listen: Optional[str] = None,
                 allow_remote: bool = False, token: Optional[str] = None, group: Optional[str] = None,
                 tls: Optional[tuple] = None, save_dir: Optional[Path] = None, limits: Optional[Limits] = None,
                 private_socket_dir: bool = False, save_max_bytes: int = 0, admin_group: Optional[str] = None):
        self.listen_host = listen.rsplit(":", 1)[0] if listen else None
        tokens = access.as_tokens(token)
        if listen:
            access.check_tcp(f"--listen {listen}", self.listen_host, allow_remote, tokens, tls is not None)
        self.probe = probe
        self.socket_path = Path(socket_path) if socket_path else None
        self.private_socket_dir = private_socket_dir
        self.listen = listen
        self.gid = access.resolve_group(group)
        self.tls = tls
        self.limits = limits or Limits()
        self.stopping = threading.Event()
        save_root = access.SaveRoot(Path(save_dir), self.gid, save_max_bytes) if save_dir else None
        self.identities = Identities(tokens=tokens, admin_gid=resolve_group(admin_group, "--admin-group"))
        self.servicer = Servicer(probe, self.stopping, self.limits, save_root, self.identities)
        self.servers: list[grpc.Server] = []
        self.local = self._server([]) if self.socket_path is not None else None
        self.tcp = self._server([access.TokenCheck(tokens)]) if listen else None
        self.addresses: list[str] = []
        self._prepared = False
        # local clients' shared-memory mark rings, beside the Unix socket (daemon/rings.py)
        self.rings = RingIntake(ring_socket_path(self.socket_path), self.servicer, self.gid, self.limits.max_rings,
                                self.limits.max_rings_per_user) if self.socket_path is not None else None
        if self.rings is not None:
            self.identities.sessions = self.rings.sessions

    def _server(self, interceptors: list) -> grpc.Server:
        n = self.limits.workers
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="greenprobe-rpc"),
                             interceptors=interceptors, maximum_concurrent_rpcs=8 * n,
                             options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                      # a connection that says nothing (no token, no call) is closed
                                      ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS)])
        pb_grpc.add_ProbeServicer_to_server(self.servicer, server)
        self.servers.append(server)
        return server

    def prepare(self) -> "Daemon":
        """Checks (and makes) the socket's folder and clears a stale socket: before any sensor is
        opened, so a refusal costs nothing."""
        if self.socket_path is not None and not self._prepared:
            access.prepare_socket_dir(self.socket_path.parent, self.gid, self.private_socket_dir)
            access.prepare_socket_path(self.socket_path)
            access.prepare_socket_path(self.rings.path)
        self._prepared = True
        return self

    def start(self) -> "Daemon":
        self.prepare()
        if self.socket_path is not None:
            old = os.umask(0o117)  # the socket is born 0660: never a moment world-accessible
            try:
                self.local.add_insecure_port(f"unix:{self.socket_path}")
            finally:
                os.umask(old)
            if self.gid is not None:
                os.chown(self.socket_path, -1, self.gid)
            self.rings.start()
            self.addresses.append(f"unix:{self.socket_path}")
        if self.listen:
            try:
                if self.tls:
                    port = self.tcp.add_secure_port(self.listen, access.grpc_tls_credentials(self.tls))
                else:
                    port = self.tcp.add_insecure_port(self.listen)
            except RuntimeError:
                port = 0
            if port == 0:
                raise ConfigError(f"cannot listen on {self.listen}",
                                  "choose a free port and an address of this host (port 0: any free port)")
            self.addresses.append(f"{self.listen_host}:{port}")
        for s in self.servers:
            s.start()
        return self

    def stop(self, grace_s: float = 2.0, close_rings: bool = True) -> None:
        """Stops serving. The rings' last marks are drained; ``close_rings`` False leaves the rings
        open until ``rings.close()``, after the writer's last write: what it wrote is handed back to
        the clients then, and what it did not stays in their rings for the next daemon."""
        self.stopping.set()
        for s in self.servers:
            s.stop(grace_s).wait()
        if self.rings is not None:
            self.rings.stop()  # the rings' last marks: drained before the store is written
            if close_rings:
                self.rings.close()
        if self.servicer.save_root is not None:
            self.servicer.save_root.close()
        if self.socket_path is not None and self.socket_path.is_socket():
            self.socket_path.unlink()


def _flush_loop(writer, done: threading.Event, every_s: float, keep_ns: int, compact: int = 0,
                soon: Optional[threading.Event] = None, disk=None, written=None) -> None:
    """Writes a part every ``every_s``, or at once when ``soon`` is set (the marks held have passed
    half a limit: written early, they leave memory before clients are pushed back), and then lets
    memory go of what the parts hold (samples older than ``keep_ns``): the daemon's memory is a
    bounded recent window however long it runs. Every ``compact`` parts that memory let go are
    merged into one file (0: never), so that a long run keeps a few files an hour, and its part
    index stays small."""
    soon = soon or threading.Event()
    while True:
        soon.wait(every_s)
        soon.clear()
        if done.is_set():
            return
        try:
            writer.flush()
        except OSError as e:  # a full disk must not stop the measuring; say so and try again later
            print(f"greenprobe daemon: could not write {writer.root}: {e}", file=sys.stderr)
            continue
        if written is not None:
            written()  # what this write made durable goes back to the clients now
        if disk is not None:
            disk.measure()  # against --max-out-bytes: marks are refused once the parts take it
        writer.forget(keep_ns)
        if compact > 1:
            try:
                writer.compact(compact)
            except OSError as e:  # the parts stay as they are, readable; merged at a later try
                print(f"greenprobe daemon: could not merge parts in {writer.root}: {e}", file=sys.stderr)


# At stop, the whole-run files are written when the run fits this comfortably in memory (the
# intervals table holds every mark once per domain); a longer run's record is its parts.
FULL_FILES_MAX_SAMPLES = 20_000_000
FULL_FILES_MAX_MARKS = 1_000_000


def _run_dir(out: Path, gid: Optional[int]) -> Path:
    """OUT/run-<UTC time>-<pid>: each run's parts and files in a folder of its own, so a second run
    into the same --out neither mixes with nor overwrites the first."""
    os.close(access.make_output_dir(out, gid))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run = out / f"run-{stamp}-{os.getpid()}"
    os.close(access.make_output_dir(run, gid))  # its parents are trusted: nobody else can swap it later
    return run


def run(args) -> int:
    """The CLI entry: start, serve until SIGTERM/SIGINT, stop the probe, save if asked."""
    old = os.umask(access.UMASK)  # whatever the daemon makes: files 0640, folders 0750
    try:
        return _run(args)
    finally:
        os.umask(old)  # the CLI may run in-process (tests): leave the caller's umask as it was


def _raise_fd_limit() -> None:
    """Many clients each hold a descriptor: take the hard limit, not the 1,024 default."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(args) -> int:
    if args.token is not None:
        raise ConfigError("--token puts the token on the command line, where every user sees it (ps)",
                          f"export {access.TOKEN_ENV}=... or pass --token-file FILE (mode 600)")
    token = access.load_tokens(args.token_file)
    tls = access.tls_files(args.tls_cert, args.tls_key, args.tls_client_ca)
    if args.prometheus_port is not None:
        access.check_tcp("--prometheus-port", args.prometheus_addr, args.allow_remote, token, tls is not None)
    if args.otlp_endpoint:
        from ..otlp import check_endpoint

        check_endpoint(args.otlp_endpoint)  # before anything starts: a bad address fails at once
    private = not (args.no_socket or args.socket)  # the default folder must be the daemon's alone
    socket_path = None if args.no_socket else Path(args.socket) if args.socket else default_socket()
    limits = Limits.from_args(args)
    probe = Probe(sensors=args.sensors, period_us=args.period_us, columnar_marks=True,
                  consumers=args.consumers or None, consumer_period_s=args.consumer_period,
                  cgroup_root=args.cgroup_root, pods_root=getattr(args, "pods_root", None))
    daemon = Daemon(probe, socket_path, args.listen, args.allow_remote, token, args.group, tls=tls,
                    save_dir=args.save_dir, limits=limits, private_socket_dir=private,
                    save_max_bytes=args.save_max_bytes, admin_group=args.admin_group)
    daemon.prepare()
    _raise_fd_limit()
    run_dir = _run_dir(Path(args.out), daemon.gid) if args.out else None
    if run_dir is not None:  # what the runs before under --out wrote, before any client comes: sent again, skipped
        from ..parquet import latest_progress

        done = latest_progress(Path(args.out))
        if daemon.rings is not None:
            daemon.rings.resume.update(done["ring"])
        daemon.servicer.resume(done)
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
    kinds = sorted({c["sensor"] for c in probe.channel_info()})
    print(f"greenprobe daemon {__version__}: sampling {', '.join(kinds)} every {args.period_us:g} µs", file=sys.stderr)
    for a in daemon.addresses:
        print(f"serving on {a}   (clients: export GREENPROBE_DAEMON={a})", file=sys.stderr)
    if socket_path is not None:
        print(f"socket mode 0660: only its owner{' and group ' + args.group if args.group else ''} may connect "
              "(energy data is a side channel, CVE-2020-8694)", file=sys.stderr)
        print(f"local clients' marks through shared memory: {daemon.rings.path} (at most {args.max_rings} rings, "
              f"{args.max_rings_per_user} per user)", file=sys.stderr)
    if args.listen:
        print(f"TCP clients must send the token ({access.TOKEN_ENV})" + (" over TLS" if tls else ""), file=sys.stderr)
    account = None
    if probe.use_recorder is not None:
        from .consumers import ConsumerAccount

        account = daemon.servicer.consumers = ConsumerAccount(probe, None, args.consumer_window_s)
        print(f"recording every {', '.join(probe.consumer_kinds)}'s CPU time every {args.consumer_period:g} s; "
              f"energy per consumer every {args.consumer_window_s:g} s (Table 'consumers', parts/consumers)",
              file=sys.stderr)
    if args.prometheus_port is not None:
        from ..prometheus import serve as serve_metrics

        server, _ = serve_metrics(probe, args.prometheus_port, args.prometheus_addr, token=token, tls=tls,
                                  max_series_per_user=limits.max_label_series_per_user, consumers=account)
        scheme = "https" if tls else "http"
        print(f"Prometheus metrics on {scheme}://{args.prometheus_addr}:{server.server_port}/metrics "
              f"(bearer token required)", file=sys.stderr)
    otlp = None
    if args.otlp_endpoint:
        from ..otlp import OtlpExporter

        try:
            otlp = OtlpExporter(probe, args.otlp_endpoint, args.otlp_interval_s, consumers=account)
        except Exception:
            daemon.stop()
            probe.stop()
            raise
        what = "hw.energy, hw.power and greenprobe.consumer.energy" if account is not None else \
            "hw.energy and hw.power"
        print(f"pushing {what} to {args.otlp_endpoint} every {args.otlp_interval_s:g} s (OTLP)", file=sys.stderr)
    if args.save_dir:
        print(f"clients' Save writes under {daemon.servicer.save_root.root} only", file=sys.stderr)
    from ..parquet import PartWriter

    # without --out the parts go to a spool folder, removed at stop: memory stays bounded either way
    spool = None if run_dir is not None else Path(tempfile.mkdtemp(prefix="greenprobe-spool-", dir=args.spool_dir))
    writer = PartWriter(probe, run_dir if run_dir is not None else spool, progress=daemon.servicer.progress_through)
    daemon.servicer.backlog = writer.pending_marks
    from .servicer import DiskQuota

    daemon.servicer.disk = disk = DiskQuota(writer.root, limits.max_out_bytes)
    compact = round(args.compact_s / args.flush_s) if args.compact_s > 0 else 0
    flush_thread = threading.Thread(target=_flush_loop, args=(writer, done, args.flush_s, int(args.memory_s * 1e9),
                                                              compact, daemon.servicer.write_soon, disk,
                                                              daemon.rings.wake if daemon.rings is not None else None),
                                    daemon=True,
                                    name="greenprobe-flush")
    flush_thread.start()
    account_thread = None
    if account is not None:
        account.write_into(writer.root)
        account_thread = threading.Thread(target=account.run, args=(done,), daemon=True, name="greenprobe-consumers")
        account_thread.start()
    if run_dir is not None:
        print(f"writing {writer.root}/ every {args.flush_s:g} s (readable after a crash), and the full files "
              f"into {run_dir} at stop", file=sys.stderr)
    else:
        print(f"spooling to {spool} (memory keeps the last {args.memory_s:g} s; removed at stop; --out keeps it)",
              file=sys.stderr)
    print(f"the run's parts may take {access.size_text(disk.cap)} (--max-out-bytes), each user's marks half of it",
          file=sys.stderr)
    if args.ready_file:  # a new file, never through a link
        fd = os.open(args.ready_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(daemon.addresses) + "\n")
    sys.stderr.flush()
    # A timed wait: after SIGSTOP then SIGCONT the kernel may hand a pending SIGTERM to any thread,
    # whose C handler only flags it for the main thread; an untimed wait would never look again.
    while not done.wait(SIGNAL_LOOK_S):
        pass
    daemon.servicer.write_soon.set()  # the flush loop ends now, not at its next tick
    print("stopping: flushing marks and samples", file=sys.stderr)
    if otlp is not None:
        otlp.stop()  # a last push while the figures are still live
    daemon.stop(close_rings=False)
    probe.stop()
    flush_thread.join()  # its flush in progress ends first: two writers at once would write rows twice
    if account_thread is not None:
        account_thread.join()
        try:
            account.close_window(final=True)  # the sampler's last sweep is in
        except Exception as e:  # noqa: BLE001 - the marks and samples are written all the same
            print(f"greenprobe daemon: the last consumers' window could not be estimated: {type(e).__name__}: {e}",
                  file=sys.stderr)
    try:
        writer.flush()
        if account is not None and run_dir is not None:
            account.gather(run_dir)
        if daemon.rings is not None:
            daemon.rings.close()  # what the last write made durable goes back to the clients, before the files
        fits = len(probe.samples_store) <= FULL_FILES_MAX_SAMPLES and len(probe.marks_store) <= FULL_FILES_MAX_MARKS
        if run_dir is not None and fits:
            paths = probe.save(run_dir)
            print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
        elif run_dir is not None:
            print(f"the run's {len(probe.samples_store)} samples and {len(probe.marks_store)} marks are in {writer.root} "
                  f"(more than the whole-run files hold at once; read them with greenprobe.parquet.read_parts)",
                  file=sys.stderr)
    except OSError as e:  # the parts written so far stay readable
        print(f"greenprobe daemon: could not write the run's files into {run_dir}: {e}; the parts in "
              f"{writer.root} hold what was flushed", file=sys.stderr)
        return 1
    finally:
        if daemon.rings is not None:
            daemon.rings.close()  # (done above unless the write failed: then what is not durable stays in the rings)
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
    return 0
