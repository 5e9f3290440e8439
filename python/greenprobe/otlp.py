"""Energy and power as OpenTelemetry metrics, pushed over OTLP/gRPC to a collector, where
``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-grpc`` are installed
(``pip install greenprobe[otlp]``): ``greenprobe daemon --otlp-endpoint http://127.0.0.1:4317``.

The figures are the Prometheus endpoint's (prometheus.domain_readings), named and typed by the
hardware semantic conventions (https://opentelemetry.io/docs/specs/semconv/hardware/common/):

  hw.energy   counter (cumulative, monotonic), J: energy since the daemon started, per domain
  hw.power    gauge, W: mean power over the last second (a power-only sensor's latest reading)
  greenprobe.consumer.energy
              counter (cumulative, monotonic), J: energy of each process or cgroup per domain, with
              ``--consumers``: Prometheus' greenprobe_consumer_energy_joules_total, the same series
              (daemon/consumers.ConsumerAccount.series: the most energetic consumers, the rest folded
              for good into consumer "(other)") with the same labels as attributes (SERIES_LABELS:
              view, kind, consumer, sensor, domain, slurm_job, pod, container, namespace, pod_name;
              '' where none applies). A push goes to the operator's collector: the admin's view,
              every user's consumers, as an admin's scrape sees them

Attributes: ``hw.id`` (the GPU's UUID; ``<sensor>/<domain>`` otherwise, unique on the host),
``hw.type`` (``gpu``; ``cpu`` for RAPL packages, cores and uncore; ``memory`` for DRAM;
``enclosure`` for what holds several of them: RAPL's psys, NVML's Grace Hopper ``moduleN``, GPU + CPU +
memory, whose hw.id is ``nvml/moduleN``, not its GPU's UUID), ``hw.name`` (the domain), and
``greenprobe.sensor`` / ``greenprobe.estimated``. Resource: ``service.name`` = greenprobe,
``host.name``.

Transport: ``http://`` sends in clear and is accepted for a loopback collector only (a node-local
collector, the usual deployment); anything else needs ``https://`` (TLS; a private CA from
``GREENPROBE_TLS_CA``). Headers such as a collector's token come from the exporter's own
``OTEL_EXPORTER_OTLP_HEADERS``.
"""

from __future__ import annotations

import os
import socket
from typing import Optional
from urllib.parse import urlparse

from .addresses import is_loopback
from .errors import ConfigError
from .prometheus import domain_readings

INSTALL_FIX = "pip install 'greenprobe[otlp]' (opentelemetry-sdk and opentelemetry-exporter-otlp-proto-grpc)"


def hw_type(sensor: str, domain: str) -> str:
    """The semantic conventions' hw.type of a greenprobe domain."""
    if sensor == "nvml" and domain.startswith("module"):
        return "enclosure"
    if sensor == "nvml" or domain.startswith("gpu"):
        return "gpu"
    base = domain.split("-")[0]
    if base == "dram":
        return "memory"
    if base == "psys":
        return "enclosure"
    return "cpu"


def check_endpoint(endpoint: str) -> tuple[str, bool]:
    """(host:port, insecure) of an OTLP endpoint, or ConfigError naming the fix."""
    u = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ConfigError(f"--otlp-endpoint {endpoint!r} is not an OTLP/gRPC address",
                          "pass http://HOST:PORT for a collector on this machine (e.g. http://127.0.0.1:4317), "
                          "https://HOST:PORT for one elsewhere")
    port = u.port or 4317
    insecure = u.scheme == "http"
    if insecure and not is_loopback(u.hostname):
        raise ConfigError(f"--otlp-endpoint {endpoint} would send the node's energy in clear over the network",
                          f"use https://{u.hostname}:{port} (TLS; a private CA from GREENPROBE_TLS_CA), or a "
                          "collector on this machine")
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{host}:{port}", insecure


class OtlpExporter:
    """Pushes ``hw.energy`` and ``hw.power`` every ``interval_s`` while started, and
    ``greenprobe.consumer.energy`` where given ``consumers`` (a daemon/consumers.ConsumerAccount)."""

    def __init__(self, probe, endpoint: str, interval_s: float = 10.0, consumers=None):
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import Resource
        except ImportError as e:
            raise ConfigError(f"--otlp-endpoint needs OpenTelemetry, which is not installed ({e.name})",
                              INSTALL_FIX) from None
        if interval_s <= 0:
            raise ConfigError(f"the OTLP export interval must be > 0 s, got {interval_s}",
                              "pass --otlp-interval-s 10 (the default) or another positive number")
        target, insecure = check_endpoint(endpoint)
        self.probe = probe
        self.consumers = consumers
        credentials = None
        if not insecure and os.environ.get("GREENPROBE_TLS_CA"):
            import grpc

            with open(os.environ["GREENPROBE_TLS_CA"], "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        exporter = OTLPMetricExporter(endpoint=target, insecure=insecure, credentials=credentials)
        self.reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval_s * 1000)
        resource = Resource.create({"service.name": "greenprobe", "host.name": socket.gethostname()})
        self.provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        meter = self.provider.get_meter("greenprobe")
        self._readings: Optional[list] = None
        meter.create_observable_counter("hw.energy", callbacks=[self._energy], unit="J",
                                        description="Energy consumed by the component since the daemon started")
        meter.create_observable_gauge("hw.power", callbacks=[self._power], unit="W",
                                      description="Instantaneous power consumed by the component "
                                                  "(mean over the last second)")
        if consumers is not None:
            meter.create_observable_counter(
                "greenprobe.consumer.energy", callbacks=[self._consumer_energy], unit="J",
                description="Energy of each process or cgroup per domain, by regression on CPU time, added "
                            "window by window (--consumer-window-s); the most energetic consumers, the rest "
                            "as consumer (other)")

    @staticmethod
    def _attributes(r) -> dict:
        kind = hw_type(r.sensor, r.domain)
        return {"hw.id": (r.uuid if kind == "gpu" else "") or f"{r.sensor}/{r.domain}", "hw.type": kind,
                "hw.name": r.domain, "greenprobe.sensor": r.sensor, "greenprobe.estimated": r.estimated}

    def _energy(self, options):
        from opentelemetry.metrics import Observation

        # one reading serves both instruments of an export: the counter's callback runs first
        self._readings = domain_readings(self.probe)
        return [Observation(r.energy_j, self._attributes(r)) for r in self._readings if r.energy_j is not None]

    def _power(self, options):
        from opentelemetry.metrics import Observation

        readings, self._readings = self._readings, None
        if readings is None:
            readings = domain_readings(self.probe)
        return [Observation(r.power_w, self._attributes(r)) for r in readings if r.power_w is not None]

    def _consumer_energy(self, options):
        from opentelemetry.metrics import Observation

        from .daemon.consumers import SERIES_LABELS

        # every user's consumers: the push is the operator's (an admin's view, as an admin's scrape)
        return [Observation(j, dict(zip(SERIES_LABELS, map(str, key)))) for key, j in self.consumers.series()]

    def stop(self) -> None:
        """A last export, then the exporter's shutdown."""
        self.provider.shutdown()
