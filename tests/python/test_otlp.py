"""OpenTelemetry metrics over OTLP/gRPC, received by an in-process collector (the OTLP protocol's
own service, opentelemetry-proto): hw.energy and hw.power with the hardware semantic conventions,
against a stand-in of known power; the daemon's --otlp-endpoint end to end; addresses refused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent import futures

import pytest

pytest.importorskip("opentelemetry.sdk.metrics", reason="pip install 'greenprobe[otlp]'")
import grpc  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as ms_grpc  # noqa: E402

import greenprobe  # noqa: E402
from greenprobe.errors import ConfigError  # noqa: E402
from greenprobe.otlp import OtlpExporter, check_endpoint, hw_type  # noqa: E402

POWER_W = 40.0


class Collector(ms_grpc.MetricsServiceServicer):
    """Keeps every export it receives."""

    def __init__(self):
        self.requests: list = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            self.requests.append(request)
        return ms.ExportMetricsServiceResponse()

    def points(self, name: str) -> list[tuple[dict, dict, object]]:
        """(resource attributes, point attributes, point) of every data point of metric ``name``,
        with the metric itself as ``point.metric``."""
        out = []
        with self.lock:
            requests = list(self.requests)
        for req in requests:
            for rm in req.resource_metrics:
                res = {a.key: a.value for a in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name != name:
                            continue
                        data = m.sum if m.HasField("sum") else m.gauge
                        for p in data.data_points:
                            out.append((res, {a.key: a.value for a in p.attributes}, p, m))
        return out


@pytest.fixture
def collector():
    c = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ms_grpc.add_MetricsServiceServicer_to_server(c, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    c.endpoint = f"http://127.0.0.1:{port}"
    yield c
    server.stop(0)


def value(v):
    return getattr(v, v.WhichOneof("value"))


def test_hw_energy_and_power_reach_a_collector_with_the_known_power(collector):
    with greenprobe.Probe(sensors=[f"synthetic:waveform=constant;base_w={POWER_W:g}"], period_us=1000) as probe:
        exporter = OtlpExporter(probe, collector.endpoint, interval_s=0.5)
        time.sleep(3.0)
        exporter.stop()
    energy = collector.points("hw.energy")
    power = collector.points("hw.power")
    assert len(energy) >= 4 and power, f"{len(collector.requests)} exports"
    res, attrs, p, m = energy[0]
    assert value(res["service.name"]) == "greenprobe" and value(res["host.name"])
    assert m.unit == "J" and m.sum.is_monotonic and m.sum.aggregation_temporality == 2  # cumulative
    assert {k: value(v) for k, v in attrs.items()} == {
        "hw.id": f"synthetic/{probe.channel_info()[0]['domain']}", "hw.type": "cpu",
        "hw.name": probe.channel_info()[0]["domain"], "greenprobe.sensor": "synthetic", "greenprobe.estimated": False}
    # the counter's increase between exports, over the time between them, is the stand-in's power
    pts = sorted(((p.time_unix_nano, p.as_double) for _, _, p, _ in energy))
    values = [v for _, v in pts]
    assert values == sorted(values) and values[-1] > 0
    (t0, e0), (t1, e1) = pts[1], pts[-1]
    assert (e1 - e0) / ((t1 - t0) * 1e-9) == pytest.approx(POWER_W, rel=0.03)
    assert power[0][3].unit == "W"
    for _, _, p, _ in power:
        assert p.as_double == pytest.approx(POWER_W, rel=0.01)


def run_daemon_until(collector, tmp_path, args: list, done, seconds: float) -> str:
    """`greenprobe daemon ARGS` pushing to the collector every 0.5 s, until ``done()`` or ``seconds``;
    stopped with SIGTERM, it must exit 0. Returns its standard error."""
    sock, ready = tmp_path / "run" / "d.sock", tmp_path / "ready"
    sock.parent.mkdir(mode=0o700)
    proc = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", *args, "--socket", str(sock),
                             "--ready-file", str(ready), "--otlp-endpoint", collector.endpoint,
                             "--otlp-interval-s", "0.5"], stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done():
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_the_daemon_pushes_to_its_otlp_endpoint(collector, tmp_path):
    err = run_daemon_until(collector, tmp_path, ["--sensors", f"synthetic:waveform=constant;base_w={POWER_W:g}"],
                           lambda: len(collector.points("hw.energy")) >= 3, 30)
    assert f"pushing hw.energy and hw.power to {collector.endpoint}" in err
    energy = collector.points("hw.energy")
    assert len(energy) >= 3 and all(value(a["greenprobe.sensor"]) == "synthetic" for _, a, _, _ in energy)


@pytest.mark.parametrize("endpoint, why", [
    ("http://10.1.2.3:4317", "in clear over the network"),
    ("ftp://127.0.0.1:4317", "not an OTLP/gRPC address"),
    ("http://:4317", "not an OTLP/gRPC address"),
])
def test_endpoints_that_would_leak_or_make_no_sense_are_refused_with_the_fix(endpoint, why):
    with pytest.raises(ConfigError) as e:
        check_endpoint(endpoint)
    assert why in str(e.value) and e.value.fix


def test_addresses_and_types():
    assert check_endpoint("http://127.0.0.1:4317") == ("127.0.0.1:4317", True)
    assert check_endpoint("https://collector.example:4317") == ("collector.example:4317", False)
    assert check_endpoint("localhost") == ("localhost:4317", True)
    assert check_endpoint("http://[::1]:9") == ("[::1]:9", True)
    assert [hw_type(s, d) for s, d in [("nvml", "gpu3"), ("rapl-msr", "package-1"), ("rapl-powercap", "dram-0"),
                                       ("rapl-powercap", "psys"), ("rapl-msr", "core-0"), ("nvml", "module0")]] == [
        "gpu", "cpu", "memory", "enclosure", "cpu", "enclosure"]
    # a Grace Hopper module carries its GPU's UUID, but is not that GPU: its own hw.id
    from greenprobe.prometheus import DomainReading

    uuid = "GPU-11111111-0000-0000-0000-000000000000"
    assert OtlpExporter._attributes(DomainReading("nvml", "gpu0", uuid, False, 1.0, 1.0))["hw.id"] == uuid
    assert OtlpExporter._attributes(DomainReading("nvml", "module0", uuid, False, None, 1.0))["hw.id"] == "nvml/module0"
