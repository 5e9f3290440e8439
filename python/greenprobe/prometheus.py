"""Energy and power per domain in Prometheus' format: the scale-out path (a daemon per node,
scraped by an existing Prometheus).

Metrics (labels: sensor, domain, estimated):
  greenprobe_energy_joules_total   energy counted since the daemon started (counter)
  greenprobe_power_watts           mean power over the last second (gauge; the latest reading on
                                   power-only sensors)
  greenprobe_sampler_polls_total, greenprobe_sampler_drops_total, greenprobe_sampler_late_polls_total
                                   per sensor
A scrape every 15 s is far too coarse to be the side channel high-rate RAPL is (CVE-2020-8694);
still, the daemon serves it like every other listener: bearer token, loopback unless
--allow-remote, and then TLS.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .attribution import choose_channels

WINDOW_NS = 1_000_000_000
MAX_CONNECTIONS = 64
HANDLER_TIMEOUT_S = 10.0


class EnergyCollector:
    def __init__(self, probe):
        self.probe = probe

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["sensor", "domain", "estimated"]
        energy = CounterMetricFamily("greenprobe_energy_joules", "Energy since the daemon started, per domain.",
                                     labels=labels)
        power = GaugeMetricFamily("greenprobe_power_watts", "Mean power over the last second, per domain.",
                                  labels=labels)
        # the last seconds only: the total since start is the counter now minus its first reading, so
        # a scrape never reads the whole session (the daemon keeps older samples on disk)
        recent = self.probe.channels(time.monotonic_ns() - 2 * WINDOW_NS)
        for ch in choose_channels(recent):  # the energy counter where there is one
            use = ch.usable()
            tt, vv = ch.t_ns[use], ch.value[use]
            if not tt.size:
                continue
            key = [ch.sensor, ch.domain, "true" if ch.estimated else "false"]
            if ch.quantity == "energy":
                first = self.probe._samples.first_reading(ch.channel)
                energy.add_metric(key, float(vv[-1] - (first[1] if first else vv[0])))
                k = int(np.searchsorted(tt, tt[-1] - WINDOW_NS))
                if tt[-1] > tt[k]:
                    power.add_metric(key, float((vv[-1] - vv[k]) / ((tt[-1] - tt[k]) * 1e-9)))
            else:  # a power-only sensor: its latest reading
                power.add_metric(key, float(vv[-1]))
        yield energy
        yield power
        stats = self.probe.stats()
        for name, help_ in (("polls", "Sensor polls."), ("drops", "Samples lost to a full ring."),
                            ("late_polls", "Polls that started more than one period late.")):
            fam = CounterMetricFamily(f"greenprobe_sampler_{name}", help_, labels=["sensor"])
            for s in stats:
                fam.add_metric([s.get("sensor", "")], float(s.get(name, 0)))
            yield fam


def serve(probe, port: int, addr: str = "127.0.0.1", token: Optional[str] = None, tls: Optional[tuple] = None):
    """Starts the HTTP endpoint (/metrics) in a background thread; returns (server, thread).

    With ``token``, every request must carry ``Authorization: Bearer TOKEN`` (Prometheus:
    ``authorization: {credentials_file: ...}`` in the scrape config), compared in constant time;
    without it, 401. With ``tls`` (key PEM, cert PEM, client CA PEM or None, as the daemon reads
    them), HTTPS, and client certificates when a CA is given."""
    import ssl
    import tempfile
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    from .daemon.access import token_matches

    registry = CollectorRegistry(auto_describe=False)
    registry.register(EnergyCollector(probe))
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        if token is not None and not token_matches(token, environ.get("HTTP_AUTHORIZATION")):
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
