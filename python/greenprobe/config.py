"""Sensor options: explicit arguments win over GREENPROBE_* environment variables.

Every path is configurable, for containers that mount the host's /sys elsewhere and for tests.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

#: greenprobe-perf-helper, installed with the package (the wheel's greenprobe/bin/): rapl-perf asks it
#: for the RAPL descriptors where this process may not open them (`greenprobe setup-perf`)
PERF_HELPER = Path(__file__).resolve().parent / "bin" / "greenprobe-perf-helper"

#: The sampler's defaults and limits, from their one definition in the core (sampler.hpp, exported as
#: greenprobe._core.SAMPLER_DEFAULTS); a client-only install uses this copy, which test_records.py
#: checks against the core's.
_SAMPLER_DEFAULTS_WITHOUT_CORE = {"period_ns": 1_000_000, "min_period_ns": 50_000, "keepalive_ns": 50_000_000,
                                  "ring_capacity": 65536, "min_ring_capacity": 16}
try:
    from ._core import SAMPLER_DEFAULTS
except ImportError:
    SAMPLER_DEFAULTS = dict(_SAMPLER_DEFAULTS_WITHOUT_CORE)

#: the polling period unless one is given, and the shortest (Probe, the CLI, the study), in µs
PERIOD_US = SAMPLER_DEFAULTS["period_ns"] // 1000
MIN_PERIOD_US = SAMPLER_DEFAULTS["min_period_ns"] // 1000
KEEPALIVE_MS = SAMPLER_DEFAULTS["keepalive_ns"] // 1_000_000
RING_CAPACITY = SAMPLER_DEFAULTS["ring_capacity"]
MIN_RING_CAPACITY = SAMPLER_DEFAULTS["min_ring_capacity"]
#: the longest polling period the command line and a study spec take, in µs: a sensor's thread
#: sleeps a whole period before it sees a stop, and stopping waits for two polls after the end (Probe's
#: settle), so a stop (SIGTERM) takes up to three periods; a quarter second keeps that under one
MAX_PERIOD_US = 250_000
#: the longest idle measurement (--baseline, baseline_s), in s: the idle windows run to their end,
#: before and after, even once a stop is asked for
MAX_BASELINE_S = 3600.0

@functools.lru_cache(maxsize=None)
def environment() -> dict[str, str]:
    """Sensor option name -> its GREENPROBE_* environment variable, from the registry's rows
    (cpp/src/registry.cpp): every option a kind reads that has one."""
    from . import _core

    out: dict[str, str] = {}
    for row in _core.sensor_kinds():
        for key, var, _ in row["options"]:
            if var:
                out.setdefault(key, var)
    return out


@functools.lru_cache(maxsize=None)
def option_keys() -> frozenset[str]:
    """Every option some sensor kind reads (the registry's rows), plus replay's path."""
    from . import _core

    return frozenset([k for row in _core.sensor_kinds() for k, _, _ in row["options"]] + ["path"])


def resolve_options(explicit: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Merges explicit options over the environment; values become strings for the core."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for key, var in environment().items():
        if env.get(var):
            out[key] = env[var]
    known = option_keys()
    for key, value in (explicit or {}).items():
        if value is None:
            continue
        if key not in known:
            raise ConfigError(f"unknown sensor option {key!r}",
                              f"sensor options are: {', '.join(sorted(known))} (`greenprobe sensors -v` says which "
                              "kind reads each)")
        if key == "cpu_vendor" and str(value) not in ("intel", "amd"):
            raise ConfigError(f"cpu_vendor must be 'intel' or 'amd', not {value!r}",
                              "pass cpu_vendor='intel' or cpu_vendor='amd', or leave it out to detect the vendor")
        out[key] = str(value)
    return out


def parse_sensor_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Parses ``kind`` or ``kind:key=value;key=value`` (e.g. ``synthetic:waveform=sine;base_w=20``)."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    if not kind:
        raise ConfigError(f"empty sensor name in {spec!r}",
                          "name the kind before the options, e.g. synthetic:waveform=sine "
                          "(`greenprobe sensors` lists the kinds)")
    options: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(";"))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"sensor option {item!r} in {spec!r} is not key=value",
                              "write options as kind:key=value;key=value, e.g. synthetic:waveform=sine;base_w=20")
        options[key.strip()] = value.strip()
    return kind, options
