"""The one estimator against exact truths: nested and concurrent labels under a 100 ms counter,
interval coverage over seeded sessions with white and with slowly wandering power, labels that
cannot be estimated, totals over top-level domains, exact t quantiles (tests/python/simulate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from greenprobe.estimator import Activity
from greenprobe.store import marks_table
from greenprobe.summary import summarise, t975
from simulate import counter_channel, dithered, make_session, wandering


def nested_marks(seed: int, n: int = 1500):
    """Steps of 20 ms at random gaps, each holding 0 to 3 infer calls of 5 ms (as a training step
    holds a varying number of inferences)."""
    rng = np.random.default_rng(seed)
    ss, se = dithered(rng, n, 0.02)
    k = rng.integers(0, 4, n)
    is_ = np.concatenate([ss[k > j] + int(j * 5_000_000) for j in range(3)])
    is_ = np.sort(is_ + (rng.uniform(0, 0.004, is_.size) * 1e9).astype(np.int64))
    return {"step": (ss, se), "infer": (is_, is_ + 5_000_000)}


def concurrent_marks(seed: int, n: int = 2000):
    """One label from two threads: 10 ms calls at random gaps, overlapping about half the time."""
    rng = np.random.default_rng(seed)
    a, b = dithered(rng, n, 0.01), dithered(rng, n, 0.01, t0_s=0.503)
    return {"infer": (np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))}


NESTED_W = {"step": 60.0, "infer": 200.0}   # infer adds 200 W on top of its step's 60 W
CONCURRENT_W = {"infer": 200.0}              # each running call adds 200 W


def rows_of(session):
    return {r["label"]: r for r in summarise(marks_table(session.records), [session.channel]) if r["sensor"] != "all"}


def test_activity_states_and_times_are_exact():
    # a: [0, 10), [5, 15) (concurrent); b: [2, 4) inside a
    act = Activity(["a", "b"], [np.array([0, 5]), np.array([2])], [np.array([10, 15]), np.array([4])])
    states = {tuple(s): t for s, t in zip(act.states.tolist(), act.total_time.tolist())}
    assert states == {(0, 0): 0.0, (1, 0): 2.0 + 1.0 + 5.0, (1, 1): 2.0, (2, 0): 5.0}
    assert act.union_time(0) == pytest.approx(15e-9) and act.exclusive_time(0) == pytest.approx(13e-9)
    c = act.cumulative(np.array([-1.0, 3.0, 7.0, 20.0]))
    col = {tuple(s): i - 1 for i, s in enumerate(act.states.tolist()) if i}
    assert c[:, col[(1, 1)]].tolist() == [0, 1, 2, 2] and c[:, col[(2, 0)]].tolist() == [0, 0, 2, 5]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nested_labels_under_a_100ms_counter(seed):
    s = make_session(nested_marks(seed), dict(idle_w=80.0, watts=NESTED_W, noise_w=10.0, noise_tau_s=0.0), seed)
    rows = rows_of(s)
    for label in ("step", "infer"):
        r, truth = rows[label], s.truth(label)
        assert r["status"] == "ok" and r["model"] == "state"
        err = r["energy_j_per_call"] / truth["spent"] - 1
        assert abs(err) <= 0.05, f"{label}: {err:.2%}"
        assert r["energy_j_per_call_high"] - r["energy_j_per_call_low"] < 0.05 * truth["spent"], label
    # inclusive: a step holds its infer calls; exclusive: the step outside them (idle + 60 W)
    act = Activity(["step", "infer"], [s.marks["step"][0], s.marks["infer"][0]], [s.marks["step"][1], s.marks["infer"][1]])
    excl_truth = (80.0 + 60.0) * act.exclusive_time(0) / act.calls[0]
    assert rows["step"]["energy_j_per_call_exclusive"] == pytest.approx(excl_truth, rel=0.05)
    assert rows["step"]["energy_j_per_call"] > rows["step"]["energy_j_per_call_exclusive"]
    assert rows["infer"]["energy_j_per_call_exclusive"] == 0.0  # an infer call always runs inside a step


def test_one_label_in_two_threads_counts_an_overlap_once():
    s = make_session(concurrent_marks(4), dict(idle_w=80.0, watts=CONCURRENT_W, noise_w=10.0, noise_tau_s=0.0), 4)
    r, truth = rows_of(s)["infer"], s.truth("infer")
    assert r["time_s_per_call"] < r["time_s_mean"], "overlapping calls share their time"
    assert abs(r["energy_j_per_call"] / truth["spent"] - 1) <= 0.05
    assert r["energy_j_per_call_low"] <= truth["spent"] <= r["energy_j_per_call_high"]
    # the calls' energies add up to the energy spent while they ran (not more)
    assert r["energy_j_per_call"] * r["calls"] == pytest.approx(truth["spent"] * r["calls"], rel=0.01)
    net_truth = truth["spent"] - 80.0 * truth["time_s_per_call"]
    assert r["energy_j_per_call_net"] == pytest.approx(net_truth, rel=0.05)


@pytest.mark.parametrize("noise", ["white", "wandering"])
@pytest.mark.parametrize("case", ["concurrent", "nested"])
def test_intervals_cover_the_energy_spent_in_90_percent_of_sessions(case, noise):
    covered, n = {}, 50
    for seed in range(n):
        rng = np.random.default_rng(1000 + seed)
        watts = CONCURRENT_W if case == "concurrent" else NESTED_W
        if noise == "white":
            power = dict(idle_w=80.0, watts=watts, noise_w=20.0, noise_tau_s=0.0)
        else:  # sines of 0.5-4 s adding up to 25 W on 80 W idle, plus noise correlated over a second
            power = dict(idle_w=80.0, watts=watts, sines=wandering(rng), noise_w=15.0, noise_tau_s=1.0)
        marks = concurrent_marks(seed, 1000) if case == "concurrent" else nested_marks(seed, 700)
        s = make_session(marks, power, seed)
        for label, r in rows_of(s).items():
            truth = s.truth(label)["spent"]
            covered[label] = covered.get(label, 0) + (r["energy_j_per_call_low"] <= truth <= r["energy_j_per_call_high"])
    for label, c in covered.items():
        assert c >= 0.9 * n, f"{case}, {noise}: the 95 % interval covered what {label} spent in {c} of {n} sessions"


def test_t_quantiles_are_exact():
    assert t975(2) == pytest.approx(4.302652729749464)
    assert t975(30) == pytest.approx(2.042272456301238)


def test_a_label_that_cannot_be_estimated_is_reported_with_the_reason():
    rng = np.random.default_rng(0)
    ch = counter_channel(lambda u: 80.0 * u * 1e-9, int(0.25e9), 100_000_000, 1_000_000, rng)  # two updates
    rows = summarise(marks_table([("infer", int(0.05e9), int(0.06e9), 0, None, True)]), [ch])
    (row,) = [r for r in rows if r["sensor"] != "all"]
    assert row["status"] == "not-estimated" and "fewer than 3 sensor updates" in row["reason"]
    assert row["calls"] == 1 and np.isnan(row["energy_j_per_call"])
    (total,) = [r for r in rows if r["sensor"] == "all"]
    assert total["status"] == "not-estimated" and "nvml/gpu0" in total["reason"]


def _domain_channel(index, domain, watts, t_end, rng):
    ch = counter_channel(lambda u: watts * u * 1e-9, t_end, 1_000_000, 100_000, rng, resolution=1e-6,
                         sensor="rapl-powercap", domain=domain)
    ch.channel = index
    return ch


def test_total_adds_top_level_domains_only_on_two_sockets():
    """package-N holds core-N; psys holds packages and DRAM: the total is psys alone where it
    exists, else packages + DRAM, never the cores on top (issue: the old list matched `core` only)."""
    rng = np.random.default_rng(3)
    s, e = dithered(rng, 400, 0.002)
    t_end = int(e[-1] + 0.05e9)
    watts = {"package-0": 50.0, "core-0": 30.0, "package-1": 40.0, "core-1": 20.0, "dram": 10.0, "dram-1": 8.0}
    chans = [_domain_channel(i, d, w, t_end, rng) for i, (d, w) in enumerate(watts.items())]
    records = [("infer", int(a), int(b), 0, None, True) for a, b in zip(s, e)]
    (total,) = [r for r in summarise(marks_table(records), chans) if r["sensor"] == "all"]
    assert set(total["domains"].split(",")) == {"rapl-powercap/package-0", "rapl-powercap/package-1",
                                                "rapl-powercap/dram", "rapl-powercap/dram-1"}
    assert total["energy_j_per_call"] == pytest.approx((50 + 40 + 10 + 8) * 0.002, rel=0.01)
    chans.append(_domain_channel(len(chans), "psys", 150.0, t_end, rng))
    (total,) = [r for r in summarise(marks_table(records), chans) if r["sensor"] == "all"]
    assert total["domains"] == "rapl-powercap/psys"
    assert total["energy_j_per_call"] == pytest.approx(150 * 0.002, rel=0.01)
    # a channel that states its parent is believed over the names
    for ch in chans:
        ch.parent_domain = ""
    (total,) = [r for r in summarise(marks_table(records), chans) if r["sensor"] == "all"]
    assert len(total["domains"].split(",")) == len(chans)


def test_total_counts_a_gpu_inside_its_module_once_and_in_its_place_when_the_module_has_no_samples():
    """Grace Hopper: gpu0 lies inside module0 (GPU + CPU + memory). The total adds module0 and the
    plain gpu1, not gpu0 on top; if module0 has no usable samples, gpu0 counts in its place."""
    rng = np.random.default_rng(5)
    s, e = dithered(rng, 400, 0.002)
    t_end = int(e[-1] + 0.05e9)
    watts = {"gpu0": 300.0, "module0": 450.0, "gpu1": 200.0}
    chans = []
    for i, (d, w) in enumerate(watts.items()):
        ch = counter_channel(lambda u, w=w: w * u * 1e-9, t_end, 1_000_000, 100_000, rng, resolution=1e-6,
                             sensor="nvml", domain=d)
        ch.channel, ch.parent_domain = i, "module0" if d == "gpu0" else ""
        chans.append(ch)
    records = [("infer", int(a), int(b), 0, None, True) for a, b in zip(s, e)]
    (total,) = [r for r in summarise(marks_table(records), chans) if r["sensor"] == "all"]
    assert set(total["domains"].split(",")) == {"nvml/module0", "nvml/gpu1"}
    assert total["energy_j_per_call"] == pytest.approx((450 + 200) * 0.002, rel=0.01)
    module = chans[1]
    module.t_ns, module.prev_t_ns, module.energy_j_or_power_w, module.flags = (
        module.t_ns[:0], module.prev_t_ns[:0], module.energy_j_or_power_w[:0], module.flags[:0])
    (total,) = [r for r in summarise(marks_table(records), chans) if r["sensor"] == "all"]
    assert set(total["domains"].split(",")) == {"nvml/gpu0", "nvml/gpu1"}
    assert total["energy_j_per_call"] == pytest.approx((300 + 200) * 0.002, rel=0.01)


def test_a_session_without_marks_has_no_rows():
    rng = np.random.default_rng(0)
    ch = counter_channel(lambda u: 80.0 * u * 1e-9, int(1e9), 100_000_000, 1_000_000, rng)
    assert summarise(marks_table([]), [ch]) == []
