"""Coverage of the intervals over runs: Student's t against greenprobe's (Cox's for a log-normal mean).

    PYTHONPATH=python .venv/bin/python benchmarks/bench_intervals.py

The cases and seeds of tests/python/test_study_stats.py, 4,000 seeded simulations each; prints a
Markdown table (RESULTS.md, "Intervals over runs that stay above zero").
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
import numpy as np
from greenprobe.study.stats import mean_ci
from test_study_stats import CASES
print("| runs | case | Student's t: coverage | t: intervals below zero | Cox (greenprobe): coverage | Cox: below zero |")
print("|---|---|---|---|---|---|")
for n in (3, 5, 10):
    for name, draw, mean in CASES:
        rng = np.random.default_rng(n * 1000 + len(name))
        N = 4000; ct = cc = bt = bc = 0
        for _ in range(N):
            v = draw(rng, n)
            _, a, b = mean_ci(v); _, c, d = mean_ci(v, positive=True)
            ct += a <= mean <= b; cc += c <= mean <= d; bt += a < 0; bc += c < 0
        print(f"| {n} | {name} | {ct/N:.3f} | {bt/N:.3f} | {cc/N:.3f} | {bc/N:.3f} |")
