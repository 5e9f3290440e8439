"""Sensor options: explicit arguments win over GREENPROBE_* environment variables.

Every path is configurable, for containers that mount the host's /sys elsewhere and for tests.
"""

from __future__ import annotations

import os
from typing import Mapping

from .errors import ConfigError

#: the sampler's polling period unless one is given, and the shortest (Probe, the CLI, the study)
PERIOD_US = 1000
MIN_PERIOD_US = 50

#: option name -> environment variable
ENVIRONMENT = {
    "nvml_library": "GREENPROBE_NVML_LIBRARY",        # path or soname of libnvidia-ml.so.1
    "powercap_root": "GREENPROBE_POWERCAP_ROOT",      # default /sys/class/powercap
    "msr_path": "GREENPROBE_MSR_PATH",                # template, default /dev/cpu/{cpu}/msr
    "cpu_vendor": "GREENPROBE_CPU_VENDOR",            # intel | amd, overrides detection
    "sysfs_cpu_root": "GREENPROBE_SYSFS_CPU_ROOT",    # default /sys/devices/system/cpu
    "proc_root": "GREENPROBE_PROC_ROOT",              # default /proc
    "cpu_tdp_w": "GREENPROBE_CPU_TDP_W",              # rated CPU power for cpu-estimate
    "msr_offset_scale": "GREENPROBE_MSR_OFFSET_SCALE",  # 1 for the msr device, 8 for register dumps
    "nvml_min_period_us": "GREENPROBE_NVML_MIN_PERIOD_US",
}


def resolve_options(explicit: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Merges explicit options over the environment; values become strings for the core."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for key, var in ENVIRONMENT.items():
        if env.get(var):
            out[key] = env[var]
    for key, value in (explicit or {}).items():
        if value is None:
            continue
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
