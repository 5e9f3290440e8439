"""Stand-ins on a virtual clock: the test moves time, not the wall clock.

A stand-in file is updated on its own lattice (phase + k x period, as a sensor's firmware does);
before each virtual poll the driver writes, into every file, the value of its latest update at or
before the poll. The Probe (``clock="virtual"``) then polls at exactly that instant, through the
sampler's own steps. Nothing races: a busy machine slows the test, never changes what it sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np


@dataclass
class Updating:
    """A file whose content changes at phase_ns + k * period_ns; ``render(t_update_ns)`` gives the
    bytes written at offset ``at`` for the update at that instant."""

    path: str
    period_ns: int
    phase_ns: int
    render: Callable[[int], bytes]
    at: int = 0
    shown: int | None = field(default=None, init=False)  # the update instant on show

    def show_at(self, t_ns: int) -> None:
        k = (t_ns - self.phase_ns) // self.period_ns
        update = self.phase_ns + k * self.period_ns
        if update != self.shown:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.pwrite(fd, self.render(update), self.at)
            finally:
                os.close(fd)
            self.shown = update


def poll_times(start_ns: int, end_ns: int, period_ns: int, seed: int, jitter: float = 0.1,
               stalls: Iterable[tuple[int, int]] = ()) -> np.ndarray:
    """Poll instants from start to end: one period apart plus up to ``jitter`` of a period (seeded),
    and, for each (at_ns, length_ns) in ``stalls``, no poll from at_ns for length_ns (a descheduled
    thread)."""
    rng = np.random.default_rng(seed)
    stalls = sorted(stalls)
    out, t = [], start_ns
    while t < end_ns:
        out.append(t)
        t += period_ns + int(rng.uniform(0, jitter) * period_ns)
        for at, length in stalls:
            if out[-1] < at <= t:
                t = at + length
    return np.array(out, dtype=np.int64)


def drive(probe, files: list[Updating], polls: Iterable[int]) -> None:
    """Polls ``probe`` (clock="virtual") at each instant, the files showing their latest update."""
    for t in polls:
        for f in files:
            f.show_at(int(t))
        probe.poll_at(int(t))
