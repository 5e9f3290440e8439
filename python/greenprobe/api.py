"""What a measurement answers, local or remote: the one surface ``Probe`` (this process's sampler)
and ``RemoteProbe`` (a daemon's, over gRPC) share, with the same typed records.

tests/python/test_records.py checks both against it, answer by answer, over the same session.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from .attribution import Channel


@runtime_checkable
class Measurement(Protocol):
    def now_ns(self) -> int:
        """The sampler's clock (CLOCK_MONOTONIC, ns): what marks are stamped with."""

    def channel_info(self) -> list[dict]:
        """Each channel's descriptor: ``channel``, ``sensor`` and every ChannelInfo field
        (records.CHANNEL_INFO_FIELDS), no samples."""

    def channels(self, start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> list[Channel]:
        """Each channel with its samples (attribution.Channel), only those from ``start_ns`` to
        ``end_ns`` when given."""

    def energy(self, start_ns: int, end_ns: int) -> list[dict]:
        """Energy between two instants, per (sensor, domain): sensor, domain, energy_j,
        energy_j_low, energy_j_high, estimated, complete."""

    def add_mark(self, label: str, start_ns: int, end_ns: int, *, thread_id: int = 0, ok: bool = True,
                 **attrs) -> None:
        """An interval stamped by the caller on the sampler's clock."""

    def mark_count(self) -> int:
        """How many marks are held."""

    def stats(self) -> list[dict]:
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
