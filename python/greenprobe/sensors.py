"""Opening sensors: by name (fail loudly) or by ``"auto"`` (skip with the reason recorded)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from . import _core
from .config import PERF_HELPER, parse_sensor_spec, resolve_options
from .errors import ConfigError, NoSensorError, SensorError

@dataclass
class SensorStatus:
    """One sensor kind on this machine: usable or not, and why."""

    kind: str
    available: bool
    description: str = ""
    domains: list[str] = field(default_factory=list)
    estimated: bool = False
    category: str = ""
    reason: str = ""
    fix: str = ""
    #: its part in sensors="auto" (none, device, cpu, estimate), its domains in words, its options
    auto: str = ""
    domains_doc: str = ""
    options: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


REPLAY = {"name": "replay", "description": "re-emits a recorded samples.parquet (replay:path=FILE)",
          "auto_role": "none", "auto_order": 0, "domains": "the recorded file's domains",
          "options": [("path", "", "the samples.parquet file to replay")], "hwmon_chips": "", "gpu_usage": False}


def kinds() -> list[dict]:
    """Every sensor kind's registry row (cpp/src/registry.cpp), plus replay's: name, description,
    auto_role (none, device, cpu, estimate), auto_order, domains, options [(key, env, help)],
    hwmon_chips, gpu_usage."""
    return [dict(r) for r in _core.sensor_kinds()] + [dict(REPLAY)]


def auto_order() -> list[dict]:
    """The rows "auto" tries, in the order it tries them: device kinds (each one that opens is
    kept), then the CPU kinds (the first that opens is kept), then the estimate (only when no CPU
    kind opened)."""
    rank = {"device": 0, "cpu": 1, "estimate": 2}
    rows = [r for r in kinds() if r["auto_role"] in rank]
    return sorted(rows, key=lambda r: (rank[r["auto_role"]], r["auto_order"]))


def _status_of(row: dict, sensor=None, error: SensorError | None = None, reason: str = "") -> SensorStatus:
    about = dict(auto=row["auto_role"], domains_doc=row["domains"],
                 options=[dict(key=k, env=e, help=h) for k, e, h in row["options"]])
    if sensor is not None:
        channels = sensor.channels()
        return SensorStatus(row["name"], True, row["description"], sorted({c["domain"] for c in channels}),
                            any(c["estimated"] for c in channels), reason=reason, **about)
    if error is None:
        return SensorStatus(row["name"], True, row["description"], reason=reason, **about)
    return SensorStatus(row["name"], False, row["description"], category=error.category, reason=error.message,
                        fix=error.fix, **about)


def open_one(kind: str, options: dict[str, str]):
    """Opens one sensor; raises a SensorError subclass with the fix."""
    if kind == "replay":
        from .replay import open_replay

        return open_replay(options)
    if (kind == "rapl-perf" and "perf_helper" not in options and "GREENPROBE_PERF_HELPER" not in os.environ
            and PERF_HELPER.is_file()):  # GREENPROBE_PERF_HELPER= (set, empty): never
        options = {**options, "perf_helper": str(PERF_HELPER)}
    return _core.open_sensor(kind, options)


def open_sensors(sensors: str | Sequence[str], options: dict[str, object] | None = None):
    """Opens the requested sensors.

    ``sensors`` is ``"auto"`` or a list of specs (``"nvml"``, ``"synthetic:base_w=20"``).
    Returns ``(opened, skipped)``: opened is a list of core sensors, skipped a list of SensorStatus
    for sensors that ``auto`` could not use. A sensor asked for by name raises on failure.
    """
    base = resolve_options(options)
    opened, skipped = [], []
    if isinstance(sensors, str):
        if sensors != "auto":
            sensors = [s for s in sensors.split(",") if s.strip()]
        else:
            return _open_auto(base)
    if not sensors:
        raise ConfigError("no sensor requested",
                          "pass sensors='auto' or a list such as ['rapl-msr', 'nvml'] "
                          "(on the command line: --sensors auto, or --sensors rapl-msr,nvml)")
    seen = set()
    for spec in sensors:
        kind, own = parse_sensor_spec(spec)
        if kind in seen and kind != "synthetic":
            raise ConfigError(f"sensor {kind!r} requested twice",
                              "name each sensor kind once (only synthetic may appear more than once)")
        seen.add(kind)
        _check_own_options(kind, own)
        opened.append(open_one(kind, {**base, **own}))
    return opened, skipped


def _check_own_options(kind: str, own: dict[str, str]) -> None:
    """A spec's own options (kind:key=value) must be ones the kind reads: a typo would be ignored."""
    row = next((r for r in kinds() if r["name"] == kind), None)
    if row is None:
        return  # open_one names the known kinds
    keys = [k for k, _, _ in row["options"]]
    unknown = sorted(set(own) - set(keys))
    if unknown:
        raise ConfigError(f"sensor {kind!r} has no option {', '.join(map(repr, unknown))}",
                          f"{kind} reads: {', '.join(keys) or 'no options'} (`greenprobe sensors -v` explains each)")


def _hwmon_last(rows: list[dict]) -> list[dict]:
    """hwmon reads every chip no other kind covers, and the kinds that cover chips (GPU kinds, and
    the CPU kinds for amd_energy/zenpower, which auto tries after the devices) must have opened
    first: it is opened last, whatever its place in the order."""
    return [r for r in rows if r["name"] != "hwmon"] + [r for r in rows if r["name"] == "hwmon"]


def _with_skip_chips(base: dict[str, str], chips: list[str]) -> dict[str, str]:
    """hwmon's options with the chips of the kinds that opened added to the user's skip_chips."""
    if not chips:
        return dict(base)
    return dict(base, skip_chips=",".join(sorted(set(chips) | set(filter(None, base.get("skip_chips", "").split(","))))))


def _open_auto(base: dict[str, str]):
    opened, skipped = [], []
    hwmon_skip: list[str] = []  # chips of kinds that opened: hwmon leaves them out
    cpu_opened = False
    for row in _hwmon_last(auto_order()):
        kind, role = row["name"], row["auto_role"]
        if role in ("cpu", "estimate") and cpu_opened:
            continue
        options = _with_skip_chips(base, hwmon_skip) if kind == "hwmon" else dict(base)
        try:
            sensor = open_one(kind, options)
        except SensorError as e:
            skipped.append(_status_of(row, error=e))
            continue
        opened.append(sensor)
        cpu_opened = cpu_opened or role == "cpu"
        hwmon_skip += [c for c in row["hwmon_chips"].split(",") if c]
    if not opened:
        lines = "\n".join(f"  {s.kind}: {s.reason}\n    fix: {s.fix}" for s in skipped)
        raise NoSensorError(f"no sensor could be opened on this machine:\n{lines}",
                            "apply one of the fixes above; `greenprobe sensors` shows each kind's status")
    return opened, skipped


def list_sensors(options: dict[str, object] | None = None, include: Iterable[str] | None = None) -> list[SensorStatus]:
    """Status of every sensor kind (for ``greenprobe sensors``)."""
    base = resolve_options(options)
    out = {}
    covered: list[str] = []  # hwmon chips of the kinds that opened: hwmon shows what auto would read
    for row in _hwmon_last(kinds()):
        kind = row["name"]
        if include is not None and kind not in include:
            continue
        if kind == "replay":
            out[kind] = _status_of(row, reason="needs a recorded file (replay:path=FILE)")
            continue
        opts = _with_skip_chips(base, covered) if kind == "hwmon" else base
        try:
            sensor = open_one(kind, opts)
        except SensorError as e:
            out[kind] = _status_of(row, error=e)
        else:
            reason = ""
            if kind == "hwmon":
                skipped = dict(sensor.info()).get("skipped", "")
                reason = f"left out: {skipped}" if skipped else ""
            out[kind] = _status_of(row, sensor=sensor, reason=reason)
            if row["auto_role"] != "none":
                covered += [c for c in row["hwmon_chips"].split(",") if c]
            del sensor
    return [out[r["name"]] for r in kinds() if r["name"] in out]
