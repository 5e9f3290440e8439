"""CPU and GPU use next to the energy samples, on the sampler's clock.

``proc_usage(pid)``: a process's CPU seconds and resident memory (/proc/PID/stat), read at a run's
edges. ``GpuMonitor``: the utilisation and memory of the GPUs the nvml sensor measures (the same
dlopen path and the same choice of GPUs: its ``gpus`` option, else CUDA_VISIBLE_DEVICES /
NVIDIA_VISIBLE_DEVICES, else every GPU; absent without a driver), read every ``period_s`` and
summarised over any window:

    mon = GpuMonitor(sensors=["nvml:gpus=1", "rapl-msr"]).start()   # the Probe's sensors and options
    ...
    mon.window(start_ns, end_ns)   # {"gpu_util_pct": ..., "gpu_memory_used_bytes": ..., ...}

NVML's utilisation is the busy share of its own sample period (1/6 s to 1 s by product): a
coarse figure for windows shorter than a second.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .config import parse_sensor_spec, resolve_options

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_usage(pid: int, proc_root: str = "/proc") -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of a process, from one read of /proc/PID/stat;
    (nan, 0) when the process is gone."""
    try:
        f = (Path(proc_root) / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK_TCK, int(f[21]) * PAGE
    except (OSError, IndexError, ValueError):
        return float("nan"), 0


def nvml_option(name: str, sensors: str | Sequence[str] = "auto", options: Optional[dict] = None) -> Optional[str]:
    """The value the nvml sensor gets for option ``name`` from a Probe's ``sensors`` and
    ``options`` (as sensors.open_sensors merges them: an ``nvml:key=value`` spec's own options over
    the explicit ones, over the GREENPROBE_* variables); None when none sets it."""
    merged = resolve_options(options)
    if not (isinstance(sensors, str) and sensors == "auto"):
        for spec in sensors.split(",") if isinstance(sensors, str) else sensors:
            kind, own = parse_sensor_spec(spec)
            if kind == "nvml":
                merged.update(own)
    return merged.get(name)


def open_gpus(library: Optional[str] = None, gpus: Optional[str] = None):
    """NVML's usage reader for the GPUs the nvml sensor would measure (``gpus``: its option; None:
    the environment's choice), or (None, why) where there is no NVML or no such GPU."""
    from . import _core
    from .errors import GreenprobeError

    lib = library if library is not None else resolve_options().get("nvml_library", "")
    try:
        return _core.GpuUsage(lib, gpus), ""
    except GreenprobeError as e:
        return None, str(e)


class GpuMonitor:
    """A thread that reads the measured GPUs' utilisation and memory every ``period_s`` (NVML's own
    utilisation sample period is 1/6 s to 1 s: reading faster adds nothing).

    Which GPUs: those the nvml sensor measures. ``gpus`` and ``nvml_library`` as the sensor takes
    them; where not given, read from ``sensors`` and ``options`` (the Probe's arguments), else the
    environment (CUDA_VISIBLE_DEVICES, ...): another job's GPUs never count."""

    def __init__(self, period_s: float = 0.1, nvml_library: Optional[str] = None, gpus: Optional[str] = None,
                 sensors: str | Sequence[str] = "auto", options: Optional[dict] = None):
        self.period_s = float(period_s)
        if nvml_library is None:
            nvml_library = nvml_option("nvml_library", sensors, options) or ""
        if gpus is None:
            gpus = nvml_option("gpus", sensors, options)
        self.gpu, self.reason = open_gpus(nvml_library, gpus)
        #: how the GPUs were chosen ("CUDA_VISIBLE_DEVICES='...'", "option gpus='1'", "every GPU NVML sees")
        self.selection = self.gpu.selection if self.gpu is not None else ""
        self.names = self.gpu.names() if self.gpu is not None else []
        self._lock = threading.Lock()
        self._t: list[int] = []
        self._rows: list[tuple] = []  # (gpu_util_pct mean, memory_util_pct mean, memory_used_bytes sum)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def available(self) -> bool:
        return self.gpu is not None

    def start(self) -> "GpuMonitor":
        if self.gpu is not None:
            self.read()
            self._thread = threading.Thread(target=self._loop, name="greenprobe-gpu-usage", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.read()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.read()

    def read(self) -> None:
        rs = self.gpu.read()
        util = [r["gpu_util_pct"] for r in rs if r["gpu_util_pct"] is not None]
        mem_util = [r["memory_util_pct"] for r in rs if r["memory_util_pct"] is not None]
        used = [r["memory_used_bytes"] for r in rs if r["memory_used_bytes"] is not None]
        row = (float(np.mean(util)) if util else np.nan, float(np.mean(mem_util)) if mem_util else np.nan,
               float(np.sum(used)) if used else np.nan)
        with self._lock:
            self._t.append(int(rs[0]["t_ns"]) if rs else time.monotonic_ns())
            self._rows.append(row)

    def window(self, start_ns: int, end_ns: int) -> dict:
        """Over the readings inside [start_ns, end_ns] (the nearest one when none is): mean
        utilisation (%, over the measured GPUs), mean memory utilisation (%), largest memory in use
        (bytes, summed over them). NaN without NVML or where the device does not report it."""
        out = {"gpu_util_pct": np.nan, "gpu_memory_util_pct": np.nan, "gpu_memory_used_bytes": np.nan}
        with self._lock:
            t = np.array(self._t, np.int64)
            rows = np.array(self._rows, np.float64).reshape(-1, 3)
        if t.size == 0:
            return out
        inside = (t >= start_ns) & (t <= end_ns)
        if not inside.any():
            inside[min(int(np.searchsorted(t, start_ns)), t.size - 1)] = True
        g = rows[inside]
        for k, col, how in (("gpu_util_pct", 0, np.nanmean), ("gpu_memory_util_pct", 1, np.nanmean),
                            ("gpu_memory_used_bytes", 2, np.nanmax)):
            if np.isfinite(g[:, col]).any():
                out[k] = float(how(g[:, col]))
        return out
