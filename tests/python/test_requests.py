"""Energy per request in batched serving (issue 22) against an exact truth: a continuous-batching
server whose steps hold up to 16 requests (a new one's prefill beside the others' decode steps),
marking each step once per request with its tokens, through a daemon; the power of a step a known
function of its tokens, a RAPL stand-in counting it, on a virtual clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

import greenprobe
from greenprobe.daemon import Daemon
from greenprobe.request_energy import mark_batch_step, request_table
from standins import make_powercap_tree
from virtual import Updating

MAX_UJ = 2**32 - 1
IDLE_W = 40.0


class Server:
    """A seeded continuous-batching schedule: ``steps`` as (start_ns, end_ns, {request: tokens},
    {request: phase}); power = IDLE_W + 60 x (1 - exp(-tokens / 32)) W during a step, IDLE_W in the
    0.3 ms gaps between steps."""

    def __init__(self, seed: int, n_requests: int = 200, t0_ns: int = 10**12, cap: int = 16):
        rng = np.random.default_rng(seed)
        arrivals = t0_ns + np.cumsum(rng.exponential(6e6, n_requests)).astype(np.int64)
        prompt = rng.integers(16, 257, n_requests)
        output = rng.integers(8, 65, n_requests)
        left = {}
        self.steps = []
        t, nxt = int(t0_ns), 0
        while nxt < n_requests or left:
            while nxt < n_requests and arrivals[nxt] <= t and len(left) < cap:
                left[f"r{nxt}"] = [int(prompt[nxt]), int(output[nxt]), True]
                nxt += 1
            if not left:
                t = int(arrivals[nxt])
                continue
            tokens, phase = {}, {}
            for rid, st in left.items():
                tokens[rid] = st[0] if st[2] else 1
                phase[rid] = "prefill" if st[2] else "decode"
                st[2] = False
                if phase[rid] == "decode":
                    st[1] -= 1
            for rid in [r for r, st in left.items() if st[1] <= 0]:
                del left[rid]
            dur = int(1.5e6 + 2e4 * sum(tokens.values()))
            self.steps.append((t, t + dur, tokens, phase))
            t += dur + 300_000
        self.t0_ns, self.end_ns = int(t0_ns), t
        self.edges = np.array([x for s in self.steps for x in s[:2]], np.int64)
        self.power = np.array([[60.0 * (1 - math.exp(-sum(s[2].values()) / 32.0)), 0.0] for s in self.steps]).ravel()
        self._cum = np.r_[0.0, np.cumsum(self.power * np.diff(np.r_[self.edges, self.edges[-1]]) / 1e9)]

    def energy_at(self, t_ns) -> np.ndarray:
        """Energy since t0 (J) at t: idle all along, the steps' extra within them."""
        t = np.asarray(t_ns, np.float64)
        i = np.clip(np.searchsorted(self.edges, t, "right") - 1, 0, self.edges.size - 1)
        before = np.where(t >= self.edges[0], self._cum[i] + self.power[i] * (t - self.edges[i]) / 1e9, 0.0)
        return IDLE_W * (t - self.t0_ns) / 1e9 + before

    def truth(self) -> dict:
        """Each request's exact share: every step's energy x its tokens / the step's tokens."""
        out: dict = {}
        for a, b, tokens, _ in self.steps:
            e = float(self.energy_at(b) - self.energy_at(a))
            total = sum(tokens.values())
            for rid, n in tokens.items():
                out[rid] = out.get(rid, 0.0) + e * n / total
        return out


def drive(probe, server: Server, energy_uj, update_ns: int, poll_ns: int = 200_000) -> None:
    """Polls ``probe`` (virtual clock) from 50 ms before the first step to 50 ms after the last, the
    counter file updated every ``update_ns`` (its own phase) with the server's energy."""
    counter = Updating(str(energy_uj), update_ns, server.t0_ns - 10_000_000 + 130_000,
                       lambda u: b"%020d\n" % (math.floor((float(server.energy_at(u)) + 10.0) * 1e6) % (MAX_UJ + 1)))
    for t in range(server.t0_ns - 50_000_000, server.end_ns + 50_000_000, poll_ns):
        counter.show_at(t)
        probe.poll_at(t)


def serve_and_ask(tmp_path, server: Server, update_ns: int):
    """The server's marks through a daemon whose Probe (virtual clock) read the counter; its table."""
    paths = make_powercap_tree(tmp_path / "powercap", [("intel-rapl:0", "package-0", MAX_UJ)])
    probe = greenprobe.Probe(sensors=["rapl-powercap"], powercap_root=str(tmp_path / "powercap"),
                             columnar_marks=True, clock="virtual").start()
    daemon = Daemon(probe, tmp_path / "d.sock").start()
    try:
        drive(probe, server, paths["package-0"], update_ns)
        remote = greenprobe.connect(daemon.addresses[0])
        for a, b, tokens, phase in server.steps:
            for ph in ("prefill", "decode"):
                part = {r: n for r, n in tokens.items() if phase[r] == ph}
                if part:
                    mark_batch_step(remote, "step", a, b, part, phase=ph)
        remote.flush()
        return remote.requests()
    finally:
        daemon.stop(grace_s=0.5)
        probe.stop()


def test_a_server_marking_200_overlapping_requests_through_the_daemon(tmp_path):
    """With RAPL's 1 ms counter, each request's energy within 5 % of its exact share of the steps it
    was in; inside its hard bounds; the requests' sum is the energy of the time some step ran. With a
    counter that updates every 20 ms (each update holding several steps, whose split is modelled) the
    bounds and the sum still hold, the bounds wider."""
    server = Server(seed=3)
    assert len(server.steps) > 400 and max(len(s[2]) for s in server.steps) == 16
    truth = server.truth()
    busy = sum(float(server.energy_at(b) - server.energy_at(a)) for a, b, _, _ in server.steps)
    width = {}
    for update_ns in (1_000_000, 20_000_000):
        table = serve_and_ask(tmp_path / str(update_ns), server, update_ns)
        rows = {r["request"]: r for r in table.to_pylist()}
        assert len(rows) == 200
        worst = 0.0
        for rid, t in truth.items():
            r = rows[rid]
            worst = max(worst, abs(r["energy_j"] - t) / t)
            assert r["energy_j_low"] <= t * (1 + 1e-9) and t <= r["energy_j_high"] * (1 + 1e-9), (update_ns, r, t)
            assert r["energy_j_low"] <= r["energy_j"] <= r["energy_j_high"]
            assert r["prefill_energy_j"] + r["decode_energy_j"] == pytest.approx(r["energy_j"], rel=1e-9)
            assert r["prompt_tokens"] > 0 and r["output_tokens"] > 0 and r["owner"]
        if update_ns == 1_000_000:  # RAPL's period: steps span updates (one holding several: bounds only)
            assert worst < 0.05, (update_ns, worst)
        assert sum(r["energy_j"] for r in rows.values()) == pytest.approx(busy, rel=0.01), \
            "the requests share exactly the energy of the steps"
        width[update_ns] = np.median([(r["energy_j_high"] - r["energy_j_low"]) / r["energy_j"] for r in rows.values()])
    assert width[1_000_000] < width[20_000_000], width


def test_requests_of_a_local_probe_and_marks_without_tokens():
    """Marks without ``tokens`` weigh 1; two requests always together split evenly; a mark without
    ``request`` is no request's; no request marks: an empty table with the columns."""
    with greenprobe.Probe(sensors=["synthetic:waveform=constant;base_w=100"], clock="virtual") as probe:
        t0 = probe.now_ns()
        for k in range(1, 400):
            probe.poll_at(t0 + k * 1_000_000)
        for i in range(50):
            a = t0 + 10_000_000 + i * 6_000_000
            probe.add_mark("step", a, a + 5_000_000, request="x")
            probe.add_mark("step", a, a + 5_000_000, request="y")
            probe.add_mark("other", a, a + 5_000_000)
    rows = {r["request"]: r for r in probe.requests().to_pylist()}
    assert set(rows) == {"x", "y"}
    for r in rows.values():
        assert r["energy_j"] == pytest.approx(50 * 0.005 * 100 / 2, rel=0.01)
        assert r["marks"] == 50 and r["tokens"] == 50
    empty = request_table(probe.marks_table().slice(0, 0), [])
    assert empty.num_rows == 0 and "energy_j_low" in empty.column_names
