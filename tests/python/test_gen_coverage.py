"""The generative figures' 95 % intervals, calibrated: coverage over seeded simulations (simulate.py:
an exact power law, NVML's 100 ms counter polled every millisecond), through the study's own code
(generate.score_phases, run_counts, gen_run_figures, stats.mean_ci).

Each simulated configuration is 3 runs of 10 requests: a prefill of ~70 ms and 15 decode steps of
~15 ms (±20 %), dithered gaps, idle kept before and after. Power: 80 W idle, +140 W during a
prefill, +145 W during a decode step, slow wander (sines) and OU noise. The target is what a repeat
would average: 140 W x a prefill's mean duration / its prompt tokens, 145 W x a decode step's mean
duration per token (the interval comes from the runs' spread, so it is for this expected value). Also the
accuracy the issue asks of a figure (5 %) at this noise, and the limit: requests far shorter than
the counter's period give every window the same mix of phases, and the split is not identified
(the interval widens; it does not lie).
"""

from __future__ import annotations

import numpy as np

from greenprobe.attribution import Channel
from greenprobe.study.stats import mean_ci
from greenprobe.study.generate import gen_run_figures, run_counts, score_phases
from simulate import make_session, wandering

IDLE_W, PREFILL_W, DECODE_W = 80.0, 140.0, 145.0
NAME = "nvml/gpu0"


def requests(rng, n=10, prefill_s=0.07, step_s=0.015, steps=15, prompt=64, gap_s=0.05, jitter=0.2, t0_s=1.0):
    """Marks of n requests (batch 1) and their spans: phase, start, end, context, tokens."""
    t, rows, spans = t0_s, [], []
    for i in range(n):
        t += rng.uniform(0, gap_s)
        a = t
        d = prefill_s * rng.uniform(1 - jitter, 1 + jitter)
        rows.append(("prefill", t, t + d, prompt, prompt))
        t += d
        for k in range(steps):
            d = step_s * rng.uniform(1 - jitter, 1 + jitter)
            rows.append(("decode", t, t + d, prompt + k + 1, 1))
            t += d
        spans.append((a, t))
    phase = np.array([r[0] for r in rows])
    ns = lambda v: (np.asarray(v) * 1e9).astype(np.int64)  # noqa: E731
    return (phase, ns([r[1] for r in rows]), ns([r[2] for r in rows]), np.array([r[3] for r in rows]),
            np.array([r[4] for r in rows]), ns(spans))


def within(ch: Channel, a: int, b: int) -> Channel:
    k = (ch.t_ns >= a) & (ch.t_ns <= b)
    return Channel(**{**ch.__dict__, "t_ns": ch.t_ns[k], "prev_t_ns": ch.prev_t_ns[k], "energy_j_or_power_w": ch.energy_j_or_power_w[k],
                      "flags": ch.flags[k]})


def simulated_run(seed: int, **kw) -> tuple[dict, dict]:
    """One run: its figures (the study's code) and its expected figures."""
    rng = np.random.default_rng(seed)
    phase, s, e, ctx, tok, spans = requests(rng, **kw)
    pre = phase == "prefill"
    marks = {"prefill": (s[pre], e[pre]), "decode": (s[~pre], e[~pre])}
    power = dict(idle_w=IDLE_W, watts={"prefill": PREFILL_W, "decode": DECODE_W}, sines=wandering(rng, 10.0),
                 noise_w=10.0, noise_tau_s=0.05)
    sess = make_session(marks, power, seed, tail_s=1.0)
    pad = 200_000_000
    a, b = int(s.min()) - pad, int(e.max()) + pad
    run = {**run_counts(s, e, phase, tok, spans, 1, a, b),
           **score_phases(s, e, phase, ctx, a, b, [sess.channel], [within(sess.channel, a, b)])}
    run.pop("interpolated")
    fig = gen_run_figures(run, [NAME], {NAME: (IDLE_W, 0.0)})
    # what a repeat averages: the phases' mean durations (the jitter is symmetric) x their power
    prefill_s, step_s, prompt = kw.get("prefill_s", 0.07), kw.get("step_s", 0.015), 64
    expected = {"energy_j_per_prompt_token_net": PREFILL_W * prefill_s / prompt,
                "energy_j_per_output_token_net": DECODE_W * step_s}
    return {k: fig[f"{k}[{NAME}]"] for k in expected}, expected


def configuration(seed: int, runs: int = 3, **kw):
    """A configuration's figures (mean over runs with its 95 % interval) and the expected value."""
    got = [simulated_run(seed * 100 + r, **kw) for r in range(runs)]
    out = {}
    for k in got[0][0]:
        m, lo, hi = mean_ci([g[k] for g, _ in got])
        out[k] = (m, lo, hi, float(np.mean([x[k] for _, x in got])))
    return out


def test_intervals_cover_the_expected_figure_95_percent_of_the_time():
    seeds = 200
    hits = {"energy_j_per_prompt_token_net": 0, "energy_j_per_output_token_net": 0}
    errs = {k: [] for k in hits}
    for seed in range(seeds):
        for k, (m, lo, hi, truth) in configuration(seed).items():
            hits[k] += lo <= truth <= hi
            errs[k].append(m / truth - 1)
    report = {k: (hits[k] / seeds, float(np.median(np.abs(errs[k]))), float(np.mean(errs[k]))) for k in hits}
    print("coverage, median |error|, mean error:", report)
    for k, (cov, med, bias) in report.items():
        # 200 seeds: a true 95 % coverage lands in [0.91, 0.985] with probability ~0.99
        assert 0.91 <= cov <= 0.985, (k, report)
        assert med < 0.05 and abs(bias) < 0.02, (k, report)


def test_requests_far_shorter_than_the_update_period_widen_the_interval_instead_of_lying():
    """1 ms prefills and 0.2 ms steps: ~60 requests in each 100 ms window, the same mix in all."""
    short = dict(n=150, prefill_s=0.001, step_s=0.0002, gap_s=0.001)
    long_ = configuration(7)["energy_j_per_prompt_token_net"]
    tight = (long_[2] - long_[1]) / long_[0]
    covered = 0
    for seed in range(20):
        m, lo, hi, truth = configuration(seed, **short)["energy_j_per_prompt_token_net"]
        covered += lo <= truth <= hi
        width = (hi - lo) / truth
        assert width > 3 * tight, f"seed {seed}: {width:.3g} relative width against {tight:.3g} for long requests"
    assert covered >= 17, covered
