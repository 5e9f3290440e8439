"""The records that cross a boundary, each defined once and read by name.

``CHANNEL_INFO_FIELDS``: what a sensor says of a channel, in order, from its one definition in the
core (``ChannelInfo`` in cpp/include/greenprobe/sensor.hpp, exported as
``greenprobe._core.CHANNEL_INFO_FIELDS``). A client installed without the core uses the copy below,
which tests/python/test_records.py checks against the core's, as it checks that the proto's
``Channel``, ``attribution.Channel`` and the Parquet metadata carry every field.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional


class Mark(NamedTuple):
    """One mark as the C mark (``greenprobe.mark``) hands it to its sink, and as ``Probe.marks()``
    answers: the one place its fields' order is written. Read it by name; every store, writer and
    estimator reads marks as the columns of ``store.mark_schema()`` (``store.marks_table``)."""

    label: str
    start_ns: int
    end_ns: int
    thread_id: int
    attrs: Optional[dict[str, Any]]
    ok: bool


def mark_columns(records) -> dict[str, tuple]:
    """Mark records (Mark, or the plain tuples of the C mark in Mark's order) as columns by name."""
    cols = tuple(zip(*records)) if records else ((),) * len(Mark._fields)
    return dict(zip(Mark._fields, cols))

_CHANNEL_INFO_FIELDS_WITHOUT_CORE = (
    "domain", "quantity", "estimated", "resolution_j", "resolution_w", "nominal_update_period_ns",
    "averaging_window_ns", "averaging_window_min_ns", "averaging_window_max_ns", "parent_domain", "device_uuid", "device_bus_id",
    "shared", "max_power_w", "wrap_j", "note",
)
try:
    from ._core import CHANNEL_INFO_FIELDS
except ImportError:
    CHANNEL_INFO_FIELDS = _CHANNEL_INFO_FIELDS_WITHOUT_CORE

#: The daemon's API (StatusReply.api_version): 2 since marks cross every boundary as the mark
#: ring's frames (frames.py) and nothing else; 3 since every mark, label and query is its caller's
#: (daemon/identity.py: local clients name themselves with a session, TCP ones by their token); 4
#: since a channel's resolution says its unit: Channel field 6 is resolution_j (counters), a power
#: channel's is resolution_w (field 18); a client reads an older daemon's power resolution from 6.
API_VERSION = 4

#: What the sampler adds to a sensor's ChannelInfo: the global id, the sensor's kind and its index.
CHANNEL_IDS = ("channel", "sensor", "sensor_index")


def with_units(c: dict) -> dict:
    """A channel's descriptor as this version names it: one written before the resolution said its
    unit (Parquet metadata, a replay's recording, a daemon before API 4) had one ``resolution`` in
    joules for counters and watts for power; it becomes resolution_j or resolution_w."""
    if c.get("resolution") is None or c.get("resolution_j") is not None and c.get("resolution_w") is not None:
        return c
    out = {k: v for k, v in c.items() if k != "resolution"}
    power = c.get("quantity") == "power"
    out["resolution_w" if power else "resolution_j"] = c["resolution"]
    out.setdefault("resolution_j" if power else "resolution_w", 0.0)
    return out


def channel_message_fields(c: dict) -> dict:
    """A channel's dict as the keyword arguments of the proto's ``Channel``: its id, its sensor and
    every ChannelInfo field (a field None or absent takes the proto's default)."""
    out = {"channel": c["channel"], "sensor": c["sensor"]}
    for name in CHANNEL_INFO_FIELDS:
        value = c.get(name)
        if value is not None:
            out[name] = value
    return out
