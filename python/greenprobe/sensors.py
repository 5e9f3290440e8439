"""Opening sensors: by name (fail loudly) or by ``"auto"`` (skip with the reason recorded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from . import _core
from .config import parse_sensor_spec, resolve_options
from .errors import ConfigError, NoSensorError, SensorError

#: The order "auto" tries: GPUs, then the best available CPU source; the estimate only as a last resort.
AUTO_GPU = ("nvml",)
AUTO_CPU = ("rapl-msr", "rapl-powercap")
ESTIMATE = "cpu-estimate"


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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def kinds() -> list[tuple[str, str, bool]]:
    """(name, description, tried-by-auto) for every native sensor kind, plus replay."""
    return list(_core.sensor_kinds()) + [("replay", "re-emits a recorded samples.parquet (replay:path=FILE)", False)]


def _status_of(kind: str, description: str, sensor=None, error: SensorError | None = None) -> SensorStatus:
    if sensor is not None:
        channels = sensor.channels()
        return SensorStatus(kind, True, description, sorted({c["domain"] for c in channels}),
                            any(c["estimated"] for c in channels))
    assert error is not None
    return SensorStatus(kind, False, description, category=error.category, reason=error.message, fix=error.fix)


def open_one(kind: str, options: dict[str, str]):
    """Opens one sensor; raises a SensorError subclass with the fix."""
    if kind == "replay":
        from .replay import open_replay

        return open_replay(options)
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
        opened.append(open_one(kind, {**base, **own}))
    return opened, skipped


def _open_auto(base: dict[str, str]):
    opened, skipped = [], []
    descriptions = {k: d for k, d, _ in kinds()}

    def attempt(kind: str):
        try:
            return open_one(kind, base)
        except SensorError as e:
            skipped.append(_status_of(kind, descriptions.get(kind, ""), error=e))
            return None

    for kind in AUTO_GPU:
        s = attempt(kind)
        if s is not None:
            opened.append(s)
    cpu = None
    for kind in AUTO_CPU:
        cpu = attempt(kind)
        if cpu is not None:
            opened.append(cpu)
            break
    if cpu is None:
        est = attempt(ESTIMATE)
        if est is not None:
            opened.append(est)
    if not opened:
        lines = "\n".join(f"  {s.kind}: {s.reason}\n    fix: {s.fix}" for s in skipped)
        raise NoSensorError(f"no sensor could be opened on this machine:\n{lines}",
                            "apply one of the fixes above; `greenprobe sensors` shows each kind's status")
    return opened, skipped


def list_sensors(options: dict[str, object] | None = None, include: Iterable[str] | None = None) -> list[SensorStatus]:
    """Status of every sensor kind (for ``greenprobe sensors``)."""
    base = resolve_options(options)
    out = []
    for kind, description, _ in kinds():
        if include is not None and kind not in include:
            continue
        if kind == "replay":
            out.append(SensorStatus(kind, True, description, reason="needs a recorded file (replay:path=FILE)"))
            continue
        try:
            sensor = open_one(kind, base)
        except SensorError as e:
            out.append(_status_of(kind, description, error=e))
        else:
            out.append(_status_of(kind, description, sensor=sensor))
            del sensor
    return out
