"""The daemon's energy per consumer pushed over OTLP (issue 22): greenprobe.consumer.energy, the
series Prometheus shows (daemon/consumers.ConsumerAccount.series), with the same labels as
attributes, received by the in-process collector of test_otlp."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk.metrics", reason="pip install 'greenprobe[otlp]'")

from greenprobe.daemon.consumers import SERIES_LABELS, ConsumerAccount  # noqa: E402
from greenprobe.otlp import OtlpExporter  # noqa: E402
from node import Proc  # noqa: E402
from test_consumers import POD_UID, run_pod_node  # noqa: E402
import test_otlp  # noqa: E402
from test_otlp import POWER_W, run_daemon_until, value  # noqa: E402

collector = test_otlp.collector  # the in-process collector (a fixture)


def test_each_consumers_energy_reaches_the_collector_with_its_labels(tmp_path, monkeypatch, collector):
    """Windows of 10 s over a virtual-clock node (a pod's process, a service's, three small ones), at
    most 4 named series: every series of the account reaches the collector as one point of
    greenprobe.consumer.energy (J, cumulative, monotonic) whose attributes are its labels and whose
    value is its joules; the pod's carry its uid, namespace and name; the rest is '(other)'."""
    small = [Proc(803 + i, f"small{i}", 2.0 + i, cgroup=f"/system.slice/small{i}.service") for i in range(3)]
    probe, node, pod_cg = run_pod_node(tmp_path, monkeypatch, small)
    account = ConsumerAccount(probe, None, window_s=10.0, max_series=4)
    while account.close_window() is not None:
        pass
    series = {tuple(key): j for key, j in account.series()}
    assert any(k[2] == "(other)" for k in series) and len(series) > 4
    exporter = OtlpExporter(probe, collector.endpoint, interval_s=60.0, consumers=account)
    exporter.stop()  # the last export, at shutdown
    points = collector.points("greenprobe.consumer.energy")
    assert points, f"{len(collector.requests)} exports"
    _, _, _, m = points[0]
    assert m.unit == "J" and m.sum.is_monotonic and m.sum.aggregation_temporality == 2  # cumulative
    got = {}
    for _, attrs, p, _ in points:
        assert set(attrs) == set(SERIES_LABELS), attrs
        got[tuple(value(attrs[k]) for k in SERIES_LABELS)] = p.as_double
    assert got.keys() == series.keys()
    for key, j in series.items():
        assert got[key] == pytest.approx(j, rel=1e-12), key
    pod = [dict(zip(SERIES_LABELS, k)) for k in got if k[SERIES_LABELS.index("pod")]]
    assert pod and all((s["pod"], s["namespace"], s["pod_name"]) == (POD_UID, "ml-team", "trainer-7f9c")
                       for s in pod), pod
    assert {s["view"] for s in pod} == {"process", "cgroup"}, "the pod's process and cgroup are the most energetic"


def test_an_exporter_without_consumers_pushes_no_consumer_series(collector):
    import greenprobe

    with greenprobe.Probe(sensors=[f"synthetic:waveform=constant;base_w={POWER_W:g}"], period_us=1000) as probe:
        OtlpExporter(probe, collector.endpoint, interval_s=60.0).stop()
    assert collector.points("hw.energy") and not collector.points("greenprobe.consumer.energy")


#: a power that moves whatever the machine does (a square wave): the daemon tests here are about
#: where the consumers' energy goes, and the CPU estimate's power stands still on a machine whose
#: cores other work holds all along, where no consumer's share can be told (the fit says so, rightly)
MOVING_POWER = "synthetic:waveform=square;base_w=40;amp_w=20;freq_hz=0.7"


def test_the_daemon_pushes_its_consumers_energy(collector, tmp_path):
    """`greenprobe daemon --consumers process --otlp-endpoint`: the consumers' series reach the
    collector once a window has closed."""
    err = run_daemon_until(collector, tmp_path, ["--sensors", MOVING_POWER, "--consumers", "process",
                                                 "--consumer-period", "0.1", "--consumer-window-s", "1"],
                           lambda: bool(collector.points("greenprobe.consumer.energy")), 40)
    assert f"pushing hw.energy, hw.power and greenprobe.consumer.energy to {collector.endpoint}" in err
    points = collector.points("greenprobe.consumer.energy")
    assert points, err
    kinds = {value(a["kind"]) for _, a, _, _ in points}
    assert kinds == {"process"} and all(p.as_double >= 0 for _, _, p, _ in points)
