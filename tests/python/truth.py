"""Exact energy of the stand-in sensors' power laws (written independently of the C++ code)."""

from __future__ import annotations

import math


class Wave:
    """Power in watts as a function of seconds since t0: constant, sine or square."""

    def __init__(self, shape="sine", base_w=50.0, amp_w=20.0, freq_hz=1.0, duty=0.5, t0_ns=0, scale=1.0):
        self.shape, self.base, self.amp, self.freq, self.duty = shape, base_w, amp_w, freq_hz, duty
        self.t0_ns, self.scale = t0_ns, scale

    def cumulative_j(self, tau: float) -> float:
        """Energy from t0 to t0 + tau seconds."""
        if self.shape == "constant":
            e = self.base * tau
        elif self.shape == "sine":
            w = 2 * math.pi * self.freq
            e = self.base * tau + self.amp / w * (1 - math.cos(w * tau))
        elif self.shape == "square":
            x = self.freq * tau
            cycles = math.floor(x)
            frac = x - cycles
            e = self.base * tau + self.amp * (cycles * self.duty + min(frac, self.duty)) / self.freq
        else:
            raise ValueError(self.shape)
        return e * self.scale

    def energy_at_ns(self, t_ns: int) -> float:
        return self.cumulative_j((t_ns - self.t0_ns) * 1e-9)

    def energy_between(self, a_ns: int, b_ns: int) -> float:
        return self.energy_at_ns(b_ns) - self.energy_at_ns(a_ns)

    def kwargs(self) -> dict:
        """Constructor arguments (to rebuild the same wave in another process)."""
        return {"shape": self.shape, "base_w": self.base, "amp_w": self.amp, "freq_hz": self.freq,
                "duty": self.duty, "t0_ns": self.t0_ns, "scale": self.scale}

    def as_options(self) -> dict:
        """Options of the synthetic sensor for the same wave."""
        return {"waveform": self.shape, "base_w": self.base, "amp_w": self.amp, "freq_hz": self.freq,
                "duty": self.duty, "t0_ns": self.t0_ns}


class Load:
    """Extra power while scheduled work runs: ``watts`` inside each [start_ns, end_ns) pair (sorted,
    disjoint), zero outside. The stand-ins read the same schedule (fake NVML: FAKE_NVML_LOAD_FILE;
    the RAPL writer: its "load" config)."""

    def __init__(self, starts_ns, ends_ns, watts: float, scale: float = 1.0):
        import numpy as np

        self.starts = np.asarray(starts_ns, dtype=np.int64)
        self.ends = np.asarray(ends_ns, dtype=np.int64)
        self.watts, self.scale = watts, scale
        self._before = np.concatenate([[0], np.cumsum(self.ends - self.starts)])

    def on_ns(self, t_ns: int) -> int:
        """Nanoseconds of load up to t_ns (exact integer arithmetic)."""
        import numpy as np

        i = int(np.searchsorted(self.starts, t_ns, side="right")) - 1
        if i < 0:
            return 0
        return int(self._before[i]) + int(min(self.ends[i], t_ns) - self.starts[i])

    def energy_between(self, a_ns: int, b_ns: int) -> float:
        return self.watts * self.scale * (self.on_ns(b_ns) - self.on_ns(a_ns)) * 1e-9

    def write(self, path) -> None:
        import numpy as np

        np.column_stack([self.starts, self.ends]).astype("<i8").tofile(path)

    def kwargs(self, path) -> dict:
        return {"file": str(path), "watts": self.watts}


class Total:
    """The sum of several power laws (a Wave and a Load): exact energy between two instants."""

    def __init__(self, *parts):
        self.parts = parts

    def energy_between(self, a_ns: int, b_ns: int) -> float:
        return sum(p.energy_between(a_ns, b_ns) for p in self.parts)


class CpuTrace:
    """Extra power that follows the CPU time of real processes: ``watts`` per CPU-second per second,
    linear between the trace's ticks, as the fake NVML's FAKE_NVML_FOLLOW mode defines it (its
    FAKE_NVML_FOLLOW_LOG: int64 pairs (t_ns, CPU ns of the followed processes))."""

    def __init__(self, path, watts: float, scale: float = 1.0):
        import numpy as np

        pairs = np.fromfile(path, dtype="<i8").reshape(-1, 2)
        self.t, self.cpu = pairs[:, 0], pairs[:, 1] - pairs[0, 1]
        self.watts, self.scale = watts, scale

    def cpu_s(self, t_ns: int) -> float:
        import numpy as np

        if not self.t[0] <= t_ns <= self.t[-1]:
            raise ValueError(f"{t_ns} is outside the trace [{self.t[0]}, {self.t[-1]}]")
        return float(np.interp(t_ns, self.t, self.cpu)) * 1e-9

    def energy_between(self, a_ns: int, b_ns: int) -> float:
        return self.watts * self.scale * (self.cpu_s(b_ns) - self.cpu_s(a_ns))


class Ramp:
    """Power rising linearly from ``base_w`` at t0 by ``slope_w_per_s``, times ``scale``: the fake
    AMD SMI's law (tests/fixtures/fake_amd_smi.c; GPU i has scale i + 1)."""

    def __init__(self, base_w: float, slope_w_per_s: float, t0_ns: int, scale: float = 1.0):
        self.base, self.slope, self.t0_ns, self.scale = base_w, slope_w_per_s, t0_ns, scale

    def energy_at_ns(self, t_ns: int) -> float:
        tau = (t_ns - self.t0_ns) * 1e-9
        return self.scale * (self.base * tau + 0.5 * self.slope * tau * tau)

    def energy_between(self, a_ns: int, b_ns: int) -> float:
        return self.energy_at_ns(b_ns) - self.energy_at_ns(a_ns)
