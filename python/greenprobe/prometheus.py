"""Energy and power per domain in Prometheus' format: the scale-out path (a daemon per node,
scraped by an existing Prometheus).

Metrics (labels: sensor, domain, estimated):
  greenprobe_energy_joules_total   energy counted since the daemon started (counter)
  greenprobe_power_watts           mean power over the last second (gauge; the latest reading on
                                   power-only sensors)
  greenprobe_sampler_polls_total, greenprobe_sampler_drops_total, greenprobe_sampler_late_polls_total
                                   per sensor
A scrape every 15 s is far too coarse to be the side channel high-rate RAPL is (CVE-2020-8694);
the endpoint still binds loopback unless told otherwise.
"""

from __future__ import annotations

import numpy as np

from .attribution import choose_channels

WINDOW_NS = 1_000_000_000


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
        for ch in choose_channels(self.probe.channels()):  # the energy counter where there is one
            use = ch.usable()
            tt, vv = ch.t_ns[use], ch.value[use]
            key = [ch.sensor, ch.domain, "true" if ch.estimated else "false"]
            if ch.quantity == "energy":
                energy.add_metric(key, float(vv[-1] - vv[0]))
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


def serve(probe, port: int, addr: str = "127.0.0.1"):
    """Starts the HTTP endpoint (/metrics) in a background thread; returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(EnergyCollector(probe))
    return start_http_server(port, addr=addr, registry=registry)
