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
