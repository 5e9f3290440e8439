"""Per-call energy from repetition against exact truth: 0.5 ms calls under a 1 ms RAPL-like counter."""

from __future__ import annotations

import numpy as np
import pytest

from greenprobe.attribution import Channel
from greenprobe.store import marks_table
from greenprobe.summary import marked_time, summarise

BASE_W, CALL_W = 20.0, 30.0  # idle power, and the extra power while a call runs


def experiment(seed: int, n_calls=2000, call_s=0.0005, update_s=0.001, resolution=15.3e-6, poll_s=0.0001):
    """Calls of call_s at random gaps; a counter that updates every update_s (with the exact energy,
    quantised) polled every poll_s. Returns (records, channel, true energy per call gross)."""
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.0002, 0.002, n_calls)
    starts = np.cumsum(gaps + call_s) - call_s + 0.01
    starts = (starts * 1e9).astype(np.int64)
    ends = starts + int(call_s * 1e9)
    t_end = int(ends[-1] + 0.01e9)
    upd = np.arange(int(update_s * 1e9), t_end, int(update_s * 1e9), dtype=np.int64)
    upd = upd + rng.integers(-20_000, 20_000, upd.size)  # RAPL-like jitter of the update moments
    # exact energy at each update: base * t + extra * marked time
    e = BASE_W * upd * 1e-9 + CALL_W * marked_time(starts, ends, upd.astype(np.float64)) * 1e-9
    e = np.floor(e / resolution) * resolution
    # the sampler sees each update at the first poll after it
    poll = int(poll_s * 1e9)
    t = (upd // poll + 1) * poll
    prev = t - poll
    flags = np.full(t.size, 1, np.uint32)
    flags[0] |= 4
    ch = Channel(0, "rapl-msr", "package-0", "energy", False, resolution, int(update_s * 1e9),
                 t_ns=t, prev_t_ns=prev, energy_j_or_power_w=e, flags=flags)
    records = [("infer", int(a), int(b), 1, None, True) for a, b in zip(starts, ends)]
    return records, ch, (BASE_W + CALL_W) * call_s


def test_marked_time_is_exact():
    s = np.array([0, 10, 30]); e = np.array([5, 20, 40])
    t = np.array([-1, 0, 3, 5, 7, 15, 25, 35, 100], dtype=np.float64)
    assert marked_time(s, e, t).tolist() == [0, 0, 3, 5, 5, 10, 15, 20, 25]
    # overlapping marks count once
    assert marked_time(np.array([0, 2]), np.array([4, 6]), np.array([10.0])).tolist() == [6]


def test_per_call_energy_within_5_percent():
    records, ch, truth = experiment(seed=1)
    (row,) = [r for r in summarise(marks_table(records), [ch]) if r["sensor"] != "all"]
    assert row["calls"] == 2000 and row["method"] == "regression"
    assert abs(row["energy_j_per_call"] - truth) / truth <= 0.05
    assert abs(row["baseline_power_w"] - BASE_W) / BASE_W <= 0.02
    net_truth = CALL_W * 0.0005
    assert abs(row["energy_j_per_call_net"] - net_truth) / net_truth <= 0.1


def test_interval_covers_the_truth_in_90_percent_of_seeds():
    covered = 0
    seeds = range(100)
    for seed in seeds:
        records, ch, truth = experiment(seed=100 + seed, n_calls=2000)
        (row,) = [r for r in summarise(marks_table(records), [ch]) if r["sensor"] != "all"]
        covered += row["energy_j_per_call_low"] <= truth <= row["energy_j_per_call_high"]
    assert covered / len(seeds) >= 0.9, f"95 % interval covered the truth in {covered} of {len(seeds)} runs"


def test_probe_summary_and_labels_parquet(tmp_path):
    import pyarrow.parquet as pq

    import greenprobe

    from virtual import poll_times

    # on a virtual clock (the synthetic sensor reads poll_at's instant): 100 calls of 0.5 ms, 1 ms
    # apart, polled every 200 µs (+ up to 10 %) under a 1 ms counter
    t0 = 10**12
    spec = f"synthetic:waveform=constant;base_w=25;update_us=1000;t0_ns={t0}"
    rng = np.random.default_rng(5)
    with greenprobe.Probe(sensors=[spec], period_us=200, clock="virtual") as probe:
        t = t0 + 50_000_000
        for _ in range(100):
            t += int(rng.integers(0, 100_000))
            probe.add_mark("call", t, t + 500_000)
            t += 1_500_000
        for p in poll_times(t0 + 200_000, t + 50_000_000, 200_000, seed=5):
            probe.poll_at(int(p))
    (row,) = [r for r in probe.summary().to_pylist() if r["sensor"] != "all"]
    assert row["label"] == "call" and row["calls"] == 100
    # constant power: inside and outside the calls the same 25 W
    assert abs(row["baseline_power_w"] - 25) < 1.0
    assert abs(row["power_w"] - 25) < 2.5
    assert abs(row["energy_j_per_call_net"]) < 0.1 * row["energy_j_per_call"]
    paths = probe.save(tmp_path)
    labels = pq.read_table(paths["labels"])
    assert labels.num_rows == 2 and "energy_j_per_call_high" in labels.column_names  # the domain and the total
    assert sorted(labels.column("sensor").to_pylist()) == ["all", "synthetic"]


@pytest.mark.filterwarnings("ignore:greenprobe.mark used with no active Probe")
def test_dither_runs_until_both_reps_and_seconds_with_random_gaps():
    import time

    import greenprobe

    calls = []

    def call(x):
        calls.append(x)
        return x * 2

    with greenprobe.Probe(sensors=["synthetic"], period_us=1000) as probe:
        run = greenprobe.dither(call, 21, label="c", reps=40, min_seconds=0.05, max_gap_s=0.002, seed=7)
    assert run.reps == len(calls) >= 40 and run.last_result == 42 and run.seconds >= 0.05
    assert [m[0] for m in probe.marks()] == ["c"] * run.reps
    assert run.gaps_s.size == run.reps - 1 and run.gaps_s.min() >= 0 and run.gaps_s.max() <= 0.002
    assert run.gaps_s.std() > 0.0003  # random, not a fixed rhythm
    again = greenprobe.dither(call, 1, reps=40, min_seconds=0.0, max_gap_s=0.002, seed=7)
    assert np.array_equal(again.gaps_s[:39], run.gaps_s[:39])  # the seed fixes the gaps
    # min_seconds holds even when reps are done: 5 calls but at least 0.2 s
    t = time.perf_counter()
    slow = greenprobe.dither(call, 0, reps=5, min_seconds=0.2, max_gap_s=0.001)
    assert slow.reps > 5 and time.perf_counter() - t >= 0.2
    capped = greenprobe.dither(call, 0, reps=5, min_seconds=10, max_reps=8)
    assert capped.reps == 8


def test_dither_rejects_bad_arguments():
    import greenprobe

    for kwargs in ({"reps": 0}, {"min_seconds": -1}, {"reps": 10, "max_reps": 5}, {"max_gap_s": -0.1}):
        with pytest.raises(greenprobe.ConfigError):
            greenprobe.dither(lambda: None, **kwargs)


def test_idle_baseline_before_and_after_gives_net_energy(tmp_path):
    import time

    import pyarrow.parquet as pq

    import greenprobe

    spec = "synthetic:waveform=constant;base_w=25;update_us=1000"
    with greenprobe.Probe(sensors=[spec], period_us=200, baseline_s=0.2) as probe:
        for _ in range(20):
            with greenprobe.mark("call"):
                time.sleep(0.003)
    (idle,) = probe.baseline()
    assert abs(idle["before_w"] - 25) < 0.25 and abs(idle["after_w"] - 25) < 0.25
    assert idle["seconds"] >= 0.4 and idle["power_w_se"] > 0
    before, after = probe.baseline_windows
    assert before[0] == "before" and after[0] == "after"
    marks = probe.marks()
    assert before[2] <= marks[0][1] and after[1] >= marks[-1][2], "the idle windows hold no marks"
    rows = probe.intervals().to_pylist()
    # constant power: net of the idle baseline is ~0 (summed: one 3 ms interval under a 1 ms counter
    # is an interpolation, a few % off when the machine wakes the sampler late)
    assert abs(sum(r["energy_j_net"] for r in rows)) < 0.05 * sum(r["energy_j"] for r in rows)
    assert all(r["baseline_power_w"] == idle["power_w"] for r in rows)
    (row,) = [r for r in probe.summary().to_pylist() if r["sensor"] != "all"]
    assert row["baseline_source"] == "idle-measured" and row["method"] == "direct"
    assert row["resolution"].startswith("direct")
    paths = probe.save(tmp_path)
    assert pq.read_table(paths["intervals"]).column("energy_j_net").null_count == 0
    # without a baseline the net columns are null and the summary says where its baseline came from
    with greenprobe.Probe(sensors=[spec], period_us=200) as plain:
        with greenprobe.mark("call"):
            time.sleep(0.003)
    assert plain.baseline() == [] and plain.intervals().column("energy_j_net").null_count == 1


def test_add_mark_validates():
    import greenprobe

    with greenprobe.Probe(sensors=["synthetic"], period_us=1000) as probe:
        t = greenprobe.now_ns()
        probe.add_mark("planned", t - 1000, t, batch=4)
        with pytest.raises(greenprobe.ConfigError):
            probe.add_mark("backwards", t, t - 1)
        with pytest.raises(greenprobe.ConfigError):
            probe.add_mark("", t, t)
    assert probe.marks() == [("planned", t - 1000, t, 0, {"batch": 4}, True)]
