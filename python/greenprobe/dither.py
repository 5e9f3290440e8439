"""Phase dithering: repeat a call with random gaps so that sensor windows land on every phase of it.

A sensor that updates every 100 ms (or averages 25 ms of each 100 ms, Yang et al., SC24) sees a
call that repeats at a fixed rhythm always at the same phases; whatever it misses, it misses every
time. Random gaps between calls spread the update moments uniformly over the calls' phases, which
is what the per-label regression (greenprobe.summary) needs to be unbiased. Yang et al. recommend
at least 32 repetitions and runs of at least 5 seconds; those are the defaults.

    import greenprobe
    with greenprobe.Probe(baseline_s=2) as probe:
        greenprobe.dither(model, x, label="infer", sync=torch.cuda.synchronize)
    probe.summary()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .errors import ConfigError


@dataclass
class DitherRun:
    """What ``dither`` did: the number of calls, the seconds it ran, and every gap it slept."""

    label: str
    reps: int
    seconds: float
    max_gap_s: float
    gaps_s: np.ndarray = field(repr=False)
    last_result: Any = field(default=None, repr=False)


def dither(fn: Callable, *args, label: str = "call", reps: int = 32, min_seconds: float = 5.0,
           max_reps: Optional[int] = None, max_gap_s: Optional[float] = None, seed: Optional[int] = None,
           sync: Optional[Callable[[], Any]] = None, attrs: Optional[dict] = None, progress=None,
           **kwargs) -> DitherRun:
    """Calls ``fn(*args, **kwargs)`` inside ``mark(label)`` until both ``reps`` calls and
    ``min_seconds`` have passed (or ``max_reps`` calls), sleeping a random gap, uniform in
    [0, max_gap_s], before each call.

    ``max_gap_s`` defaults to the first call's duration (at least 50 µs, at most 1 s): gaps as long
    as the call randomise its phase within a few calls. ``seed`` makes the gaps reproducible.
    ``sync`` is passed to ``mark`` (e.g. ``torch.cuda.synchronize``: GPU work is asynchronous).
    ``progress``, if given, is called as ``progress(reps_done, seconds_elapsed)`` after each call.
    """
    if reps < 1:
        raise ConfigError(f"reps must be >= 1, got {reps}", "pass reps=1 or more (the fewest calls to make)")
    if min_seconds < 0:
        raise ConfigError(f"min_seconds must be >= 0, got {min_seconds}",
                          "pass min_seconds=0 (reps alone decides) or more")
    if max_reps is not None and max_reps < reps:
        raise ConfigError(f"max_reps ({max_reps}) must be >= reps ({reps})",
                          f"pass max_reps={reps} or more, or leave it out (no cap)")
    if max_gap_s is not None and max_gap_s < 0:
        raise ConfigError(f"max_gap_s must be >= 0, got {max_gap_s}",
                          "pass max_gap_s=0 or more, or leave it out (the first call's duration)")
    from ._mark import mark  # the C mark, or the pure one in a client-only environment

    rng = np.random.default_rng(seed)
    attrs = attrs or {}
    gaps: list[float] = []
    result = None
    started = time.perf_counter()
    done = 0
    while True:
        if done:
            gap = float(rng.uniform(0.0, max_gap_s))
            gaps.append(gap)
            if gap > 0:
                time.sleep(gap)
        t_call = time.perf_counter()
        with mark(label, sync=sync, **attrs):
            result = fn(*args, **kwargs)
        done += 1
        if max_gap_s is None:
            max_gap_s = min(max(time.perf_counter() - t_call, 50e-6), 1.0)
        elapsed = time.perf_counter() - started
        if progress is not None:
            progress(done, elapsed)
        if (done >= reps and elapsed >= min_seconds) or (max_reps is not None and done >= max_reps):
            break
    return DitherRun(label=label, reps=done, seconds=time.perf_counter() - started, max_gap_s=float(max_gap_s),
                     gaps_s=np.array(gaps), last_result=result)


def gap_schedule(n: int, call_s: float, max_gap_s: float, seed: Optional[int] = None,
                 start_ns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (start_ns, end_ns) of ``n`` calls of ``call_s`` separated by the gaps ``dither`` draws:
    for planning and simulating dithered runs."""
    rng = np.random.default_rng(seed)
    gaps = np.concatenate([[0.0], rng.uniform(0.0, max_gap_s, n - 1)])
    starts = start_ns + np.round((np.cumsum(gaps) + call_s * np.arange(n)) * 1e9).astype(np.int64)
    return starts, starts + int(round(call_s * 1e9))
