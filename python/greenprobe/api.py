"""What a measurement answers, local or remote: the one surface ``Probe`` (this process's sampler)
and ``RemoteProbe`` (a daemon's, over gRPC) share, with the same typed records.

tests/python/test_records.py checks both against it, answer by answer, over the same session.
"""

from __future__ import annotations

from typing import Optional, Protocol, TypedDict, runtime_checkable

from .attribution import Channel


class _ChannelDescriptor(TypedDict):
    channel: int
    sensor: str
    domain: str
    quantity: str  # "energy" (cumulative joules) or "power" (watts)
    estimated: bool
    resolution_j: float
    resolution_w: float
    nominal_update_period_ns: int
    averaging_window_ns: int
    averaging_window_min_ns: int
    averaging_window_max_ns: int
    parent_domain: str
    device_uuid: str
    device_bus_id: str
    shared: bool
    max_power_w: float
    wrap_j: float
    note: str


class ChannelDescriptor(_ChannelDescriptor, total=False):
    """A channel as ``channel_info()`` describes it: its id, its sensor and every ChannelInfo field
    (records.CHANNEL_INFO_FIELDS; tests/python/test_records.py checks this list against it)."""

    sensor_index: int  # a local Probe's: which of its sensors


class DomainEnergy(TypedDict):
    """``energy()``'s answer per (sensor, domain): joules with hard bounds."""

    sensor: str
    domain: str
    energy_j: float
    energy_j_low: float
    energy_j_high: float
    estimated: bool
    complete: bool


class _SensorStats(TypedDict):
    sensor: str
    state: str
    polls: int
    late_polls: int
    drops: int
    max_lag_ns: int
    last_error: str


class SensorStats(_SensorStats, total=False):
    """``stats()``'s answer per sensor; a local Probe adds what only its sampler knows."""

    period_ns: int
    skipped_polls: int
    mean_lag_ns: int
    pushed: int
    retries: int
    glitches: int
    learned_update_periods_ns: list
    edge_windows: list
    edge_misses: list


@runtime_checkable
class Measurement(Protocol):
    def now_ns(self) -> int:
        """The sampler's clock (CLOCK_MONOTONIC, ns): what marks are stamped with."""

    def channel_info(self) -> list[ChannelDescriptor]:
        """Each channel's descriptor: ``channel``, ``sensor`` and every ChannelInfo field
        (records.CHANNEL_INFO_FIELDS), no samples."""

    def channels(self, start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> list[Channel]:
        """Each channel with its samples (attribution.Channel), only those from ``start_ns`` to
        ``end_ns`` when given."""

    def energy(self, start_ns: int, end_ns: int) -> list[DomainEnergy]:
        """Energy between two instants, per (sensor, domain): sensor, domain, energy_j,
        energy_j_low, energy_j_high, estimated, complete."""

    def add_mark(self, label: str, start_ns: int, end_ns: int, *, thread_id: int = 0, ok: bool = True,
                 **attrs) -> None:
        """An interval stamped by the caller on the sampler's clock."""

    def mark_count(self) -> int:
        """How many marks are held."""

    def stats(self) -> list[SensorStats]:
        """Per sensor: polls, late polls, drops, lag, state, last error."""

    def intervals(self, owner: Optional[str] = None):
        """One row per (mark, sensor, domain), as a pyarrow Table (docs/SCHEMA.md); ``owner``: only
        the marks of that identity (a daemon's: daemon/identity.py)."""

    def summary_table(self, owner: Optional[str] = None):
        """The label summary, as a pyarrow Table (docs/SCHEMA.md, labels.parquet); ``owner`` as for
        ``intervals``."""

    def requests(self, owner: Optional[str] = None):
        """Energy per request, each one's share of every step it was in by its tokens, with hard
        bounds, as a pyarrow Table (docs/SCHEMA.md, "Energy per request"); ``owner`` as for
        ``intervals``."""

    def samples_table(self):
        """Every sample, as a pyarrow Table (docs/SCHEMA.md, samples.parquet)."""
