"""The records that cross a boundary, each defined once and read by name.

``CHANNEL_INFO_FIELDS``: what a sensor says of a channel, in order, from its one definition in the
core (``ChannelInfo`` in cpp/include/greenprobe/sensor.hpp, exported as
``greenprobe._core.CHANNEL_INFO_FIELDS``). A client installed without the core uses the copy below,
which tests/python/test_records.py checks against the core's, as it checks that the proto's
``Channel``, ``attribution.Channel`` and the Parquet metadata carry every field.
"""

from __future__ import annotations

_CHANNEL_INFO_FIELDS_WITHOUT_CORE = (
    "domain", "quantity", "estimated", "resolution", "nominal_update_period_ns", "averaging_window_ns",
    "averaging_window_min_ns", "averaging_window_max_ns", "parent_domain", "device_uuid", "device_bus_id",
    "shared", "max_power_w", "wrap_j", "note",
)
try:
    from ._core import CHANNEL_INFO_FIELDS
except ImportError:
    CHANNEL_INFO_FIELDS = _CHANNEL_INFO_FIELDS_WITHOUT_CORE

#: The daemon's API (StatusReply.api_version): 2 since marks cross every boundary as the mark
#: ring's frames (frames.py) and nothing else; 3 since every mark, label and query is its caller's
#: (daemon/identity.py: local clients name themselves with a session, TCP ones by their token).
API_VERSION = 3

#: What the sampler adds to a sensor's ChannelInfo: the global id, the sensor's kind and its index.
CHANNEL_IDS = ("channel", "sensor", "sensor_index")


def channel_message_fields(c: dict) -> dict:
    """A channel's dict as the keyword arguments of the proto's ``Channel``: its id, its sensor and
    every ChannelInfo field (a field None or absent takes the proto's default)."""
    out = {"channel": c["channel"], "sensor": c["sensor"]}
    for name in CHANNEL_INFO_FIELDS:
        value = c.get(name)
        if value is not None:
            out[name] = value
    return out
