"""Energy and power per domain in Prometheus' format: the scale-out path (a daemon per node,
scraped by an existing Prometheus).

Metrics (every series has ``host``; GPU series have ``uuid``):
  greenprobe_energy_joules_total   energy counted since the daemon started (counter; sensor, domain,
                                   uuid, estimated)
  greenprobe_power_watts           mean power over the last second (gauge; the latest reading on
                                   power-only sensors)
  greenprobe_label_calls_total     marks received per label (counter; owner, label)
  greenprobe_label_energy_joules_total
                                   energy of each label's marks per domain, counter-interpolated
                                   (counter; owner, label, sensor, domain)
  greenprobe_consumer_energy_joules_total
                                   energy of each process or cgroup per domain (with --consumers; counter;
                                   view, kind, consumer, sensor, domain, slurm_job, pod, container,
                                   namespace, pod_name): every consumer for an admin's scrape; for
                                   anyone else's, their own processes and cgroups and one series of
                                   consumer "others" per view and domain, everyone else's added up
                                   (the user of a token: the local user of its name, view_uid)
  greenprobe_sampler_polls_total, greenprobe_sampler_drops_total, greenprobe_sampler_late_polls_total
                                   per sensor
A scrape every 15 s is far too coarse to be the side channel high-rate RAPL is (CVE-2020-8694);
still, the daemon serves it like every other listener: bearer token, loopback unless
--allow-remote, and then TLS.

Shared by users who do not trust each other (daemon/identity.py): a scrape with a named token sees
that user's label series only (an admin's token, or the one shared token, sees every owner's);
each owner has at most ``max_series_per_user`` labels of its own, the rest added up under
"(other)". A connection holds one of MAX_CONNECTIONS slots, at most PER_PEER of them per local uid
(the kernel's, from /proc/net/tcp) or remote address, and has HEAD_WITHIN_S to send its request:
one user's idle connections never take the token holders' scrapes away.
"""

from __future__ import annotations

import copy
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .addresses import is_loopback
from .attribution import attribute, choose_channels
from .daemon.consumers import SERIES_LABELS

WINDOW_NS = 1_000_000_000
MAX_CONNECTIONS = 64
PER_PEER = 8           # connections of one local uid or remote address at once
PER_IDENTITY = 4       # authenticated requests of one token's holder at once
HEAD_WITHIN_S = 2.0    # the TLS handshake and the request's head
HANDLER_TIMEOUT_S = 10.0


class EnergyCollector:
    """The metrics, computed at each scrape from the probe's recent samples and the marks that came
    since the previous scrape."""

    def __init__(self, probe, max_series_per_user: int = 1000, consumers=None):
        self.probe = probe
        self.consumers = consumers  # daemon/consumers.ConsumerAccount, with --consumers
        self.host = socket.gethostname()
        self.labels = LabelTotals(probe, max_series_per_user)
        self.view: Optional[str] = None  # collect() shows every owner's label series

    def seen_by(self, owner: Optional[str]) -> "EnergyCollector":
        """The same figures, with the label series of ``owner`` only (None: every owner's)."""
        view = copy.copy(self)
        view.view = owner
        return view

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        names = ["host", "sensor", "domain", "uuid", "estimated"]
        energy = CounterMetricFamily("greenprobe_energy_joules", "Energy since the daemon started, per domain.",
                                     labels=names)
        power = GaugeMetricFamily("greenprobe_power_watts", "Mean power over the last second, per domain.",
                                  labels=names)
        recent = self.probe.channels(time.monotonic_ns() - 2 * WINDOW_NS)
        for r in domain_readings(self.probe, recent):
            key = [self.host, r.sensor, r.domain, r.uuid, "true" if r.estimated else "false"]
            if r.energy_j is not None:
                energy.add_metric(key, r.energy_j)
            if r.power_w is not None:
                power.add_metric(key, r.power_w)
        yield energy
        yield power
        calls, joules = self.labels.update(recent)
        shown = (lambda owner: True) if self.view is None else (lambda owner: owner == self.view)
        fam = CounterMetricFamily("greenprobe_label_calls", "Marks of each label the daemon received.",
                                  labels=["host", "owner", "label"])
        for (owner, label), n in sorted(calls.items()):
            if shown(owner):
                fam.add_metric([self.host, owner, label], float(n))
        yield fam
        fam = CounterMetricFamily("greenprobe_label_energy_joules",
                                  "Energy of the marks of each label, per domain: each mark's interval interpolated "
                                  "on the counter (an estimate below the sensor's update period), counted once the "
                                  "sensor has updated after the mark ended.", labels=["host", "owner", "label",
                                                                                       "sensor", "domain"])
        for (owner, label, sensor, domain), j in sorted(joules.items()):
            if shown(owner):
                fam.add_metric([self.host, owner, label, sensor, domain], j)
        yield fam
        if self.consumers is not None:  # an admin's scrape: everyone's; anyone else's: their own, and "others"
            fam = CounterMetricFamily("greenprobe_consumer_energy_joules",
                                      "Energy of each process or cgroup per domain, by regression on CPU time, "
                                      "added window by window (--consumer-window-s); the most energetic "
                                      "consumers, the rest as consumer (other). A non-admin's scrape: its own "
                                      "consumers, everyone else's added up as consumer others.",
                                      labels=["host", *SERIES_LABELS])
            uid = None if self.view is None else view_uid(self.view)
            for key, j in self.consumers.series(None if self.view is None else (-2 if uid is None else uid)):
                fam.add_metric([self.host, *map(str, key)], j)
            yield fam
        stats = self.probe.stats()
        for name, help_ in (("polls", "Sensor polls."), ("drops", "Samples lost to a full ring."),
                            ("late_polls", "Polls that started more than one period late.")):
            fam = CounterMetricFamily(f"greenprobe_sampler_{name}", help_, labels=["host", "sensor"])
            for s in stats:
                fam.add_metric([self.host, s.get("sensor", "")], float(s.get(name, 0)))
            yield fam



def view_uid(view: str) -> Optional[int]:
    """The local user whose processes and cgroups a scrape's view owns: ``uid:N`` -> N; a token's or
    a certificate's name that is a local user's name (``token:alice`` -> alice's uid: the operator
    names a token after the user it is for); None for any other (such a scrape sees only the
    ``others`` series)."""
    import pwd

    kind, _, name = view.partition(":")
    if kind == "uid":
        return int(name) if name.isdigit() else None
    if kind in ("token", "cert") and name:
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            return None
    return None


@dataclass
class DomainReading:
    """One domain's figures for a metrics backend (Prometheus here, OpenTelemetry in otlp.py)."""
    sensor: str
    domain: str
    uuid: str                 # the device's UUID (GPUs); "" otherwise
    estimated: bool
    energy_j: Optional[float]  # energy since the session started (None: a power-only sensor)
    power_w: Optional[float]   # mean power over the last second, or a power-only sensor's latest reading


def domain_readings(probe, recent: Optional[list] = None) -> list[DomainReading]:
    """Per domain (its energy counter where there is one), from the last seconds only: the total
    since start is the counter now minus its first reading, so a scrape never reads the whole
    session (the daemon keeps older samples on disk)."""
    if recent is None:
        recent = probe.channels(time.monotonic_ns() - 2 * WINDOW_NS)
    infos = probe.channel_info()
    out = []
    for ch in choose_channels(recent):
        use = ch.usable()
        tt, vv = ch.t_ns[use], ch.energy_j_or_power_w[use]
        if not tt.size:
            continue
        info = infos[ch.channel] if ch.channel < len(infos) else {}
        r = DomainReading(ch.sensor, ch.domain, info.get("device_uuid") or "", bool(ch.estimated), None, None)
        if ch.quantity == "energy":
            first = probe.samples_store.first_reading(ch.channel)
            r.energy_j = float(vv[-1] - (first[1] if first else vv[0]))
            k = int(np.searchsorted(tt, tt[-1] - WINDOW_NS))
            if tt[-1] > tt[k]:
                r.power_w = float((vv[-1] - vv[k]) / ((tt[-1] - tt[k]) * 1e-9))
        else:
            r.power_w = float(vv[-1])
        out.append(r)
    return out


class LabelTotals:
    """Per (owner, label): marks received and energy attributed, kept as running totals (Prometheus
    counters). A mark is counted at once and its energy added once every chosen channel has a
    sample after it plus two update periods, so its interval is bracketed by updates. Each owner
    has at most ``max_per_owner`` labels with series of their own; the rest of its marks are added
    up under its "(other)", so one user's labels never fold another's."""

    MAX_PENDING = 200_000

    def __init__(self, probe, max_per_owner: int = 1000):
        self.probe = probe
        self.max_per_owner = max_per_owner
        self.cursor = 0
        self.pending: list[tuple[tuple[str, str], int, int]] = []
        self.calls: dict[tuple[str, str], int] = {}
        self.per_owner: dict[str, int] = {}  # labels with series of their own
        self.joules: dict[tuple[str, str, str, str], float] = {}
        self.lock = threading.Lock()  # scrapes may come at once

    def _key(self, owner: str, label: str) -> tuple[str, str]:
        key = (owner, label)
        if key in self.calls:
            return key
        if self.per_owner.get(owner, 0) >= self.max_per_owner:
            return owner, "(other)"
        self.per_owner[owner] = self.per_owner.get(owner, 0) + 1
        return key

    def _new_marks(self) -> list[tuple[str, str, int, int]]:
        """(owner, label, start_ns, end_ns) of the marks that arrived since the last call, read by name
        (a local Probe's own marks have the owner "")."""
        t = self.probe.marks_store.table(self.cursor).select(["owner", "label", "start_ns", "end_ns"]).to_pydict()
        new = [(o or "", label, s, e) for o, label, s, e in zip(t["owner"], t["label"], t["start_ns"], t["end_ns"])]
        self.cursor += len(new)
        return new

    def update(self, recent: list) -> tuple[dict, dict]:
        with self.lock:
            for owner, label, start, end in self._new_marks():
                key = self._key(owner, label)
                self.calls[key] = self.calls.get(key, 0) + 1
                self.pending.append((key, start, end))
            chans = [c for c in choose_channels(recent) if c.t_ns.size]
            if self.pending and chans:
                settled = min(int(c.t_ns[-1]) - 2 * max(c.learned_update_period_ns()[0], c.nominal_update_period_ns)
                              for c in chans)
                ready = [(key, s, e) for key, s, e in self.pending if e < settled]
                waiting = [(key, s, e) for key, s, e in self.pending if e >= settled]
                if len(waiting) > self.MAX_PENDING:  # a sensor went quiet: count what we have
                    ready, waiting = self.pending, []
                if ready:
                    self._add_energy(ready)
                self.pending = waiting
            return dict(self.calls), dict(self.joules)

    def _add_energy(self, marks: list[tuple[tuple[str, str], int, int]]) -> None:
        labels, start, end = zip(*marks)
        start, end = np.array(start, np.int64), np.array(end, np.int64)
        chans = choose_channels(self.probe.channels_around(int(start.min()), int(end.max())))
        for res in attribute(start, end, chans):
            ch = res["channel"]
            e = np.nan_to_num(np.asarray(res["energy_j"], float))
            for (owner, label), j in zip(labels, e):
                key = (owner, label, ch.sensor, ch.domain)
                self.joules[key] = self.joules.get(key, 0.0) + float(j)


def serve(probe, port: int, addr: str = "127.0.0.1", token=None, tls: Optional[tuple] = None,
          max_series_per_user: int = 1000, consumers=None):
    """Starts the HTTP endpoint (/metrics) in a background thread; returns (server, thread).

    With ``token`` (its text, or the daemon's identity.Tokens), every request must carry
    ``Authorization: Bearer TOKEN`` (Prometheus: ``authorization: {credentials_file: ...}`` in the
    scrape config), compared in constant time; without it, 401 and the connection closes. A named
    token's holder sees its own label series; an admin's token, or the one shared token, every
    owner's. With ``tls`` (key PEM, cert PEM, client CA PEM or None, as the daemon reads them),
    HTTPS, and client certificates when a CA is given."""
    import ssl
    import tempfile
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    from .daemon.access import as_tokens

    tokens = as_tokens(token)
    collector = EnergyCollector(probe, max_series_per_user, consumers)
    busy: dict[str, int] = {}  # token holder -> requests being answered
    busy_lock = threading.Lock()

    def app(environ, start_response):
        holder = tokens.holder(environ.get("HTTP_AUTHORIZATION")) if tokens is not None else None
        if tokens is not None and holder is None:
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="greenprobe"')])
            return [b"missing or wrong bearer token (the daemon's GREENPROBE_TOKEN)\n"]
        who = holder.name if holder is not None else ""
        with busy_lock:
            if busy.get(who, 0) >= PER_IDENTITY:
                start_response("429 Too Many Requests", [("Content-Type", "text/plain"), ("Retry-After", "1")])
                return [f"{PER_IDENTITY} scrapes with this token are being answered; scrape less often\n".encode()]
            busy[who] = busy.get(who, 0) + 1
        try:
            admin = holder is None or holder.admin
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector.seen_by(None if admin else f"token:{holder.name}"))
            body = generate_latest(registry)
        finally:
            with busy_lock:
                busy[who] -= 1
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    class Server(ThreadingMixIn, WSGIServer):
        """One thread per connection, at most MAX_CONNECTIONS at once and PER_PEER of one local uid or
        remote address (more are closed at once), each given HEAD_WITHIN_S for its TLS handshake and
        request head: a client that connects and says nothing holds neither the accept loop nor
        another user's place."""
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        request_queue_size = 128  # a burst of connections waits in the kernel, not in SYN retries
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        peers: dict = {}     # peer -> connections open
        peer_of: dict = {}   # connection -> its peer
        peers_lock = threading.Lock()

        def process_request(self, request, client_address):
            peer = peer_key(request)
            with self.peers_lock:
                if self.peers.get(peer, 0) >= PER_PEER or not self.slots.acquire(blocking=False):
                    self.shutdown_request(request)
                    return
                self.peers[peer] = self.peers.get(peer, 0) + 1
                self.peer_of[request] = peer
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._leave(request)
                raise

        def process_request_thread(self, request, client_address):
            try:
                super().process_request_thread(request, client_address)
            finally:
                self._leave(request)

        def _leave(self, request) -> None:
            with self.peers_lock:
                peer = self.peer_of.pop(request)
                self.peers[peer] -= 1
                if not self.peers[peer]:
                    del self.peers[peer]
            self.slots.release()

        def handle_error(self, request, client_address):  # a failed handshake or a timeout: nothing to log
            pass

    def peer_key(request):
        """A local uid (the kernel's) or a remote address: whose connection this is."""
        try:
            host = request.getpeername()[0]
        except OSError:
            return None
        return f"uid:{loopback_peer_uid(request)}" if is_loopback(host) else host

    class Quiet(WSGIRequestHandler):
        timeout = HEAD_WITHIN_S

        def setup(self):
            self.request.settimeout(HEAD_WITHIN_S)
            if isinstance(self.request, ssl.SSLSocket):  # here, in this connection's thread, not in accept()
                self.request.do_handshake()
            super().setup()

        def log_message(self, *args):  # no request log: it would print to the daemon's stderr per scrape
            pass

    server = make_server(addr, port, app, Server, Quiet)
    if tls is not None:
        key, cert, client_ca = tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as d:  # ssl loads a chain from files only; mkdtemp's folder is 0700
            Path(d, "cert.pem").write_bytes(cert)
            Path(d, "key.pem").write_bytes(key)
            ctx.load_cert_chain(Path(d, "cert.pem"), Path(d, "key.pem"))
        if client_ca is not None:
            ctx.load_verify_locations(cadata=client_ca.decode())
            ctx.verify_mode = ssl.CERT_REQUIRED
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="greenprobe-metrics")
    thread.start()
    return server, thread


def _proc_address(text: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6} (hex, each 32-bit word in host order) as (ip, port)."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, int(port, 16)


def loopback_peer_uid(sock) -> Optional[int]:
    """The uid that owns the other end of a loopback TCP connection, as the kernel lists it in
    /proc/net/tcp (TCP carries no credentials; a local user's connections are still the kernel's to
    name); None when it is not found."""
    try:
        peer, local = sock.getpeername()[:2], sock.getsockname()[:2]
    except OSError:
        return None
    peer = (peer[0][7:] if peer[0].startswith("::ffff:") else peer[0], peer[1])
    local = (local[0][7:] if local[0].startswith("::ffff:") else local[0], local[1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if _proc_address(cols[1]) == peer and _proc_address(cols[2]) == local:
                        return int(cols[7])
        except (OSError, ValueError, StopIteration):
            continue
    return None
