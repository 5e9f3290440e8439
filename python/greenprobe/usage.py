"""CPU and GPU use next to the energy samples, on the sampler's clock.

``proc_usage(pid)``: a process's CPU seconds and resident memory (/proc/PID/stat), read at a run's
edges. ``GpuMonitor``: the utilisation and memory of the GPUs the GPU sensors measure (each GPU
kind's own reader, with the same choice of GPUs as its sensor: for nvml its ``gpus`` option, else
CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES, else every GPU; for amd-gpu its ``gpus`` option, else
ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES, else every GPU; absent without a driver), read every
``period_s`` and summarised over any window:

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


def kind_options(kind: str, sensors: str | Sequence[str] = "auto", options: Optional[dict] = None) -> Optional[dict]:
    """The options sensor ``kind`` gets from a Probe's ``sensors`` and ``options``, merged as
    sensors.open_sensors merges them (a ``kind:key=value`` spec's own options over the explicit
    ones, over the GREENPROBE_* variables); None when ``sensors`` names other kinds only."""
    merged = resolve_options(options)
    if isinstance(sensors, str) and sensors == "auto":
        return merged
    named = False
    for spec in sensors.split(",") if isinstance(sensors, str) else sensors:
        k, own = parse_sensor_spec(spec)
        if k == kind:
            merged.update(own)
            named = True
    return merged if named else None


def open_gpus(sensors: str | Sequence[str] = "auto", options: Optional[dict] = None,
              overrides: Optional[dict] = None) -> tuple[list, str]:
    """The usage readers of the GPU kinds (the registry's kinds with ``gpu_usage``), each for the GPUs
    its sensor would measure; and why each one missing is missing. The kinds ``sensors`` names where
    it names any; otherwise (auto, or CPU sensors only: the GPUs' use is recorded all the same) every
    GPU kind that opens."""
    from . import _core
    from .errors import GreenprobeError

    rows = [r for r in _core.sensor_kinds() if r["gpu_usage"]]
    named = {r["name"]: kind_options(r["name"], sensors, options) for r in rows}
    if not any(v is not None for v in named.values()):
        named = {r["name"]: resolve_options(options) for r in rows}
    readers, reasons = [], []
    for row in rows:
        opts = named[row["name"]]
        if opts is None:
            continue
        opts.update({k: str(v) for k, v in (overrides or {}).get(row["name"], {}).items() if v is not None})
        try:
            readers.append(_core.open_gpu_usage(row["name"], opts))
        except GreenprobeError as e:
            reasons.append(f"{row['name']}: {e}")
    return readers, "\n".join(reasons)


class GpuMonitor:
    """A thread that reads the measured GPUs' utilisation and memory every ``period_s`` (NVML's own
    utilisation sample period is 1/6 s to 1 s: reading faster adds nothing).

    Which GPUs: those the GPU sensors measure (every registry kind with a usage reader that
    ``sensors`` names; every one that opens where it names none), each with its own options from
    ``sensors`` and ``options`` (the Probe's arguments), else the environment
    (CUDA_VISIBLE_DEVICES, ...): another job's GPUs never count.
    ``gpus`` and ``nvml_library`` override the nvml kind's options."""

    def __init__(self, period_s: float = 0.1, nvml_library: Optional[str] = None, gpus: Optional[str] = None,
                 sensors: str | Sequence[str] = "auto", options: Optional[dict] = None):
        self.period_s = float(period_s)
        self.readers, reasons = open_gpus(sensors, options,
                                          {"nvml": {"nvml_library": nvml_library, "gpus": gpus}})
        #: why there is no GPU reading (every GPU kind's reason), empty when some kind reads
        self.reason = "" if self.readers else reasons
        #: how the GPUs were chosen ("CUDA_VISIBLE_DEVICES='...'", "option gpus='1'", "every GPU NVML sees"),
        #: prefixed by the kind where several kinds read
        self.selection = "; ".join(r.selection if len(self.readers) == 1 else f"{r.kind}: {r.selection}"
                                   for r in self.readers)
        self.names = [n for r in self.readers for n in r.names()]
        self.kinds = [r.kind for r in self.readers]  # the kinds read (kept when stop() lets the readers go)
        self._lock = threading.Lock()
        self._t: list[int] = []
        self._rows: list[tuple] = []  # (gpu_util_pct mean, memory_util_pct mean, memory_used_bytes sum)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def available(self) -> bool:
        return bool(self.kinds)

    def start(self) -> "GpuMonitor":
        if self.readers:
            self.read()
            self._thread = threading.Thread(target=self._loop, name="greenprobe-gpu-usage", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.read()
        # the readers (each holds its library open: NVML's nvmlInit) go now, what was read staying
        self.readers = []

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.read()

    def read(self) -> None:
        rs = [r for reader in self.readers for r in reader.read()]
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
