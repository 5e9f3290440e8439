"""A real Prometheus (Debian's, installed by scripts/setup-services.sh) scrapes greenprobe's endpoint
with the bearer token and answers rate() with the stand-in's known power; a job without the token
gets nothing.

Set GREENPROBE_REQUIRE_SERVICES=1 (scripts/test.sh does) to fail instead of skip without prometheus.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

import greenprobe
from greenprobe.prometheus import serve

TOKEN = "p" * 32
POWER_W = 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus_bin():
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("GREENPROBE_REQUIRE_SERVICES") == "1":
            pytest.fail("prometheus is not installed: run bash scripts/setup-services.sh (as root)")
        pytest.skip("prometheus is not installed (bash scripts/setup-services.sh)")
    return path


def query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    reply = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def test_prometheus_scrapes_with_the_token_and_rate_gives_the_known_power(tmp_path, prometheus_bin):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    with greenprobe.Probe(sensors=[f"synthetic:waveform=constant;base_w={POWER_W:g}"], period_us=1000) as probe:
        server, _ = serve(probe, 0, token=TOKEN)
        target = f"127.0.0.1:{server.server_port}"
        (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: greenprobe
    static_configs: [{{targets: ["{target}"]}}]
    authorization: {{type: Bearer, credentials_file: {token_file}}}
  - job_name: outsider
    static_configs: [{{targets: ["{target}"]}}]
""")
        port = free_port()
        prom = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
        try:
            t = time.monotonic_ns()
            for i in range(30):  # 30 marks of 10 ms: the label counters
                probe.add_mark("infer", t + i * 20_000_000, t + i * 20_000_000 + 10_000_000)
            deadline = time.monotonic() + 60
            held = []
            while time.monotonic() < deadline:
                # until the 5 s window is full: rate() over a series younger than its window
                # extrapolates only half a scrape interval past its first sample, and reads low
                assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    held = query(port, 'count_over_time(greenprobe_energy_joules_total{job="greenprobe"}[8s]) >= 7')
                except OSError:
                    held = []
                if held:
                    break
                time.sleep(0.5)
            assert held, (tmp_path / "prometheus.log").read_text()[-2000:]
            (series,) = query(port, 'rate(greenprobe_energy_joules_total{job="greenprobe"}[5s])')
            assert series["metric"]["domain"] == "synthetic0" and series["metric"]["host"] == socket.gethostname()
            assert abs(float(series["value"][1]) - POWER_W) < 0.02 * POWER_W
            (up_ok,) = query(port, 'up{job="greenprobe"}')
            (up_out,) = query(port, 'up{job="outsider"}')
            assert (up_ok["value"][1], up_out["value"][1]) == ("1", "0")  # no token, no data
            (calls,) = query(port, 'greenprobe_label_calls_total{label="infer"}')
            assert calls["value"][1] == "30"
            (joules,) = query(port, 'greenprobe_label_energy_joules_total{label="infer"}')
            assert abs(float(joules["value"][1]) - POWER_W * 0.010 * 30) < 0.05 * POWER_W * 0.3
        finally:
            prom.terminate()
            prom.wait(timeout=30)
            server.shutdown()
