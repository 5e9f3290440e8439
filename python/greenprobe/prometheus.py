"""Energy and power per domain in Prometheus' format: the scale-out path (a daemon per node,
scraped by an existing Prometheus).

Metrics (every series has ``host``; GPU series have ``uuid``):
  greenprobe_energy_joules_total   energy counted since the daemon started (counter; sensor, domain,
                                   uuid, estimated)
  greenprobe_power_watts           mean power over the last second (gauge; the latest reading on
                                   power-only sensors)
  greenprobe_label_calls_total     marks received per label (counter)
  greenprobe_label_energy_joules_total
                                   energy of each label's marks per domain, counter-interpolated
                                   (counter; label, sensor, domain)
  greenprobe_sampler_polls_total, greenprobe_sampler_drops_total, greenprobe_sampler_late_polls_total
                                   per sensor
A scrape every 15 s is far too coarse to be the side channel high-rate RAPL is (CVE-2020-8694);
still, the daemon serves it like every other listener: bearer token, loopback unless
--allow-remote, and then TLS.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .attribution import attribute, choose_channels

WINDOW_NS = 1_000_000_000
MAX_CONNECTIONS = 64
HANDLER_TIMEOUT_S = 10.0


class EnergyCollector:
    """The metrics, computed at each scrape from the probe's recent samples and the marks that came
    since the previous scrape."""

    def __init__(self, probe):
        self.probe = probe
        self.host = socket.gethostname()
        self.labels = LabelTotals(probe)

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
        fam = CounterMetricFamily("greenprobe_label_calls", "Marks of each label the daemon received.",
                                  labels=["host", "label"])
        for label, n in sorted(calls.items()):
            fam.add_metric([self.host, label], float(n))
        yield fam
        fam = CounterMetricFamily("greenprobe_label_energy_joules",
                                  "Energy of the marks of each label, per domain: each mark's interval interpolated "
                                  "on the counter (an estimate below the sensor's update period), counted once the "
                                  "sensor has updated after the mark ended.", labels=["host", "label", "sensor",
                                                                                       "domain"])
        for (label, sensor, domain), j in sorted(joules.items()):
            fam.add_metric([self.host, label, sensor, domain], j)
        yield fam
        stats = self.probe.stats()
        for name, help_ in (("polls", "Sensor polls."), ("drops", "Samples lost to a full ring."),
                            ("late_polls", "Polls that started more than one period late.")):
            fam = CounterMetricFamily(f"greenprobe_sampler_{name}", help_, labels=["host", "sensor"])
            for s in stats:
                fam.add_metric([self.host, s.get("sensor", "")], float(s.get(name, 0)))
            yield fam



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
        tt, vv = ch.t_ns[use], ch.value[use]
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
    """Per label: marks received and energy attributed, kept as running totals (Prometheus counters).
    A mark is counted at once and its energy added once every chosen channel has a sample after it
    plus two update periods, so its interval is bracketed by updates. At most MAX_LABELS labels get
    series of their own; the rest are added up under "(other)"."""

    MAX_LABELS = 1000
    MAX_PENDING = 200_000

    def __init__(self, probe):
        self.probe = probe
        self.cursor = 0
        self.pending: list[tuple[str, int, int]] = []
        self.calls: dict[str, int] = {}
        self.joules: dict[tuple[str, str, str], float] = {}
        self.lock = threading.Lock()  # scrapes may come at once

    def _label(self, label: str) -> str:
        return label if label in self.calls or len(self.calls) < self.MAX_LABELS else "(other)"

    def _new_marks(self) -> list[tuple[str, int, int]]:
        """(label, start_ns, end_ns) of the marks that arrived since the last call, read by name."""
        t = self.probe.marks_store.table(self.cursor).select(["label", "start_ns", "end_ns"]).to_pydict()
        new = list(zip(t["label"], t["start_ns"], t["end_ns"]))
        self.cursor += len(new)
        return new

    def update(self, recent: list) -> tuple[dict, dict]:
        with self.lock:
            for label, start, end in self._new_marks():
                key = self._label(label)
                self.calls[key] = self.calls.get(key, 0) + 1
                self.pending.append((key, start, end))
            chans = [c for c in choose_channels(recent) if c.t_ns.size]
            if self.pending and chans:
                settled = min(int(c.t_ns[-1]) - 2 * max(c.learned_update_period_ns()[0], c.nominal_update_period_ns)
                              for c in chans)
                ready = [m for m in self.pending if m[2] < settled]
                waiting = [m for m in self.pending if m[2] >= settled]
                if len(waiting) > self.MAX_PENDING:  # a sensor went quiet: count what we have
                    ready, waiting = self.pending, []
                if ready:
                    self._add_energy(ready)
                self.pending = waiting
            return dict(self.calls), dict(self.joules)

    def _add_energy(self, marks: list[tuple[str, int, int]]) -> None:
        start = np.array([m[1] for m in marks], np.int64)
        end = np.array([m[2] for m in marks], np.int64)
        chans = choose_channels(self.probe.channels_around(int(start.min()), int(end.max())))
        labels = [m[0] for m in marks]
        for res in attribute(start, end, chans):
            ch = res["channel"]
            e = np.nan_to_num(np.asarray(res["energy_j"], float))
            for label, j in zip(labels, e):
                key = (label, ch.sensor, ch.domain)
                self.joules[key] = self.joules.get(key, 0.0) + float(j)


def serve(probe, port: int, addr: str = "127.0.0.1", token: Optional[str] = None, tls: Optional[tuple] = None):
    """Starts the HTTP endpoint (/metrics) in a background thread; returns (server, thread).

    With ``token``, every request must carry ``Authorization: Bearer TOKEN`` (Prometheus:
    ``authorization: {credentials_file: ...}`` in the scrape config), compared in constant time;
    without it, 401. With ``tls`` (key PEM, cert PEM, client CA PEM or None, as the daemon reads
    them), HTTPS, and client certificates when a CA is given."""
    import ssl
    import tempfile
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    from .daemon.access import as_tokens

    tokens = as_tokens(token)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EnergyCollector(probe))
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        if tokens is not None and tokens.holder(environ.get("HTTP_AUTHORIZATION")) is None:
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="greenprobe"')])
            return [b"missing or wrong bearer token (the daemon's GREENPROBE_TOKEN)\n"]
        return metrics(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        """One thread per connection, at most MAX_CONNECTIONS at once (more are closed at once), each
        given HANDLER_TIMEOUT_S to finish its TLS handshake and request: a client that connects and
        says nothing holds neither the accept loop nor a thread for long."""
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        request_queue_size = 128  # a burst of connections waits in the kernel, not in SYN retries
        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        def process_request(self, request, client_address):
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request, client_address):
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

        def handle_error(self, request, client_address):  # a failed handshake or a timeout: nothing to log
            pass

    class Quiet(WSGIRequestHandler):
        timeout = HANDLER_TIMEOUT_S

        def setup(self):
            self.request.settimeout(HANDLER_TIMEOUT_S)
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
