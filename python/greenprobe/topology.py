"""Which domain contains which: totals add only top-level domains, on one socket or eight.

Each sensor states its channels' parent domain (``parent_domain``: RAPL ``core``/``uncore`` inside
their package, packages and DRAM inside ``psys`` where it exists; NVML's ``gpuN`` inside ``moduleN``
where the GPU reports its Grace Hopper module's power, else top level; hwmon's NVIDIA Grace power
meters ``grace-cpu-S``/``grace-sysio-S`` inside ``grace-socket-S``, else ``grace-module-S``, and
``grace-socket-S`` inside ``grace-module-S``). Recordings made before sensors said so fall back to
the names, which is what the sensors apply. Containment is never stated across sensors: NVML's
``moduleN`` and hwmon's ``grace-module-S`` are the same module read twice, both top level.

The RAPL rule by name is the C++ core's (``_core.rapl_parent``, the rule the RAPL sensors apply:
cpp/include/greenprobe/rapl_domains.hpp); ``_rapl_parent_py`` restates it only for a client without
the compiled extension, and tests/python/test_topology.py checks that the two agree.
"""

from __future__ import annotations

import re

try:
    from ._core import rapl_parent as _core_rapl_parent
except ImportError:  # client-only: an environment without the compiled extension (or an older one)
    _core_rapl_parent = None

_SUB = re.compile(r"(core|uncore)(?:-([0-9]+))?")  # fullmatch: "$" would let a final newline through
_IN_PSYS = re.compile(r"(package|dram)(?:-[0-9]+)?")
_GPU = re.compile(r"^gpu(\d+)$")
_GRACE = re.compile(r"^grace-(module|socket|cpu|sysio)-(\d+)$")
_GRACE_UP = {"cpu": ("socket", "module"), "sysio": ("socket", "module"), "socket": ("module",), "module": ()}
RAPL = ("rapl-msr", "rapl-powercap", "rapl-perf")


def parent_by_name(sensor: str, domain: str, siblings: set[str]) -> str:
    """The containing domain by the sensors' naming: ``core``/``core-N`` inside ``package-0``/``package-N``,
    packages and DRAM inside ``psys`` when the same sensor has one (RAPL); NVML's ``gpuN`` inside
    ``moduleN`` when the sensor has it; hwmon's Grace meters in the nearest of ``grace-socket-S``,
    ``grace-module-S`` the sensor has; otherwise top level ("")."""
    if sensor == "hwmon":
        m = _GRACE.match(domain)
        if not m:
            return ""
        part, socket = m.groups()
        return next((f"grace-{p}-{socket}" for p in _GRACE_UP[part] if f"grace-{p}-{socket}" in siblings), "")
    if sensor == "nvml":
        m = _GPU.match(domain)
        return f"module{m.group(1)}" if m and f"module{m.group(1)}" in siblings else ""
    if sensor not in RAPL:
        return ""
    return rapl_parent(domain, siblings)


def rapl_parent(domain: str, siblings) -> str:
    """The RAPL domain whose energy includes ``domain``'s among ``siblings`` (one RAPL sensor's domains),
    by the C++ core's rule; its Python copy where the extension is missing."""
    if _core_rapl_parent is not None:
        return _core_rapl_parent(domain, siblings)
    return _rapl_parent_py(domain, siblings)


def _rapl_parent_py(domain: str, siblings) -> str:
    """The copy of the core's rule for a client without the extension (kept equal by a test)."""
    m = _SUB.fullmatch(domain)
    if m:
        pkg = f"package-{m.group(2) or 0}"
        return pkg if pkg in siblings else ""
    if _IN_PSYS.fullmatch(domain) and "psys" in siblings:
        return "psys"
    return ""


def parents(channels) -> dict[tuple[str, str], str]:
    """(sensor, domain) -> parent domain ("" at top level), from the channels' own statement where
    they make one, else by name. ``channels``: objects or dicts with sensor, domain and optionally
    parent_domain."""
    def get(c, k, default=None):
        return c.get(k, default) if isinstance(c, dict) else getattr(c, k, default)

    by_sensor: dict[str, set[str]] = {}
    for c in channels:
        by_sensor.setdefault(get(c, "sensor"), set()).add(get(c, "domain"))
    out = {}
    for c in channels:
        sensor, domain = get(c, "sensor"), get(c, "domain")
        stated = get(c, "parent_domain")
        out[(sensor, domain)] = stated if stated is not None else parent_by_name(sensor, domain, by_sensor[sensor])
    return out


def top_level(channels) -> set[tuple[str, str]]:
    """The (sensor, domain) pairs that no other domain among ``channels`` contains: what a total may add.

    A parent absent from ``channels`` (not measured here, no usable samples, or left out of a study's
    domains) holds nothing: the chain goes on from that parent's own parent by name (``core-0`` counts
    under ``psys`` when ``package-0`` is absent), and a domain with no ancestor present is at the top
    (``gpu0`` when ``module0`` is absent), so that it is neither counted twice nor dropped."""
    par = parents(channels)
    present: dict[str, set[str]] = {}
    for sensor, domain in par:
        present.setdefault(sensor, set()).add(domain)
    out = set()
    for (sensor, domain), p in par.items():
        seen = set()
        while p and p not in present[sensor] and p not in seen:
            seen.add(p)
            p = parent_by_name(sensor, p, present[sensor])
        if not p:
            out.add((sensor, domain))
    return out


def split_name(name: str) -> tuple[str, str]:
    """'sensor/domain' -> (sensor, domain)."""
    sensor, _, domain = name.partition("/")
    return sensor, domain
