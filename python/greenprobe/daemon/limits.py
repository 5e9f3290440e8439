"""What one client may ask of the daemon, so that no client takes it down for the others.

Each limit is answered with a clear gRPC status (INVALID_ARGUMENT for a malformed batch, which is
refused whole; RESOURCE_EXHAUSTED for a full daemon) naming the limit and how to raise it.
Attribute values are kept as sent; where Parquet cannot hold them (an integer beyond 64 bits, a
list, a dict, empty or not) the tables store their text (``parquet.attr_column``, for a local
Probe's marks too), so one client's odd value never breaks Save or Table for everyone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields

# A mark's limits are defined once, in mark_ring.hpp (exported as greenprobe._core.MARK_LIMITS): the
# daemon decodes every mark from its frame in C++, the ring's and a gRPC batch's alike.
MAX_BATCH = 100_000           # marks per RecordMarks call (gRPC's alone)
MAX_MESSAGE_BYTES = 16 << 20  # one request: a full batch with attributes fits; a hostile blob is cut at the door


def _flag(default, help: str, kind: str = "count", least: int = 0, least_why: str = ""):
    """A limit that `greenprobe daemon` takes as --NAME (underscores as dashes): its default here, its
    help (the CLI adds the default), ``kind`` "count" (N) or "bytes" (SIZE: K, M, G suffixes)."""
    return field(default=default, metadata={"flag": True, "help": help, "kind": kind, "least": least,
                                            "least_why": least_why})


@dataclass
class Limits:
    """The daemon-wide caps: each with a flag is an option of `greenprobe daemon` (cli/daemon.py makes
    them from these fields: this is the one place of their defaults and help)."""
    max_marks: int = _flag(5_000_000, "marks held in memory at most, i.e. not yet written")
    max_mark_bytes: int = _flag(
        1 << 30, "bytes of those marks at most: labels and attributes as held in memory (K, M, G suffixes); beyond "
        "it clients keep their marks and send them again after the next write, and rings wait to be drained",
        kind="bytes", least=64 << 20, least_why="a gRPC batch alone is up to 16 MiB")
    max_attr_names: int = _flag(256, "distinct mark attribute names at most (each is a column of every table)")
    max_streams: int = _flag(8, "concurrent sample streams at most (the other threads serve short calls)")
    max_streams_per_user: int = _flag(4, "of those, per user (local clients are known by their mark ring's "
                                         "session, the others share one such allowance)")
    max_query_samples: int = _flag(20_000_000, "samples one query (Summary, Table, Save, Energy, a stream's history) "
                                               "may read at once; a longer history stays in the run's parts")
    max_query_marks: int = _flag(1_000_000, "marks a Summary, Save or Table may read at once (~1 KB each while "
                                            "computed)")
    max_backlog: int = _flag(500_000, "marks accepted but not yet written to --out at most; beyond, clients wait "
                                      "and retry, so a crash loses little")
    max_rings: int = _flag(1024, "local clients' shared-memory mark rings at most (one per client process: a "
                                 "descriptor and a mapping each)")
    max_rings_per_user: int = _flag(64, "of those, per user (SO_PEERCRED); a client beyond sends its marks through "
                                        "gRPC")
    max_heavy: int = 2                # Summary, Table, Save, Energy running at once
    max_intake: int = 8               # RecordMarks batches parsed at once
    workers: int = 16                 # threads per listener

    @classmethod
    def flags(cls) -> list:
        """The fields `greenprobe daemon` takes as options."""
        return [f for f in fields(cls) if f.metadata.get("flag")]

    @classmethod
    def from_args(cls, args) -> "Limits":
        """The limits an argparse namespace of `greenprobe daemon` sets."""
        return cls(**{f.name: getattr(args, f.name) for f in cls.flags()})


class Full(Exception):
    """The daemon is at a limit (RESOURCE_EXHAUSTED); the text names it and the fix."""


class Busy(Exception):
    """The daemon is at a limit that its writes lift soon (UNAVAILABLE): the client keeps the marks
    and sends them again; the text names the limit."""


class AttrNames:
    """The distinct attribute names seen so far, capped: each one becomes a column of every table,
    so names without end would make every reply grow with every mark."""

    def __init__(self, cap: int):
        self.cap = cap
        self.names: set[str] = set()
        self.lock = threading.Lock()

    def admit_names(self, names: set) -> None:
        new = names - self.names
        if not new:
            return
        with self.lock:
            new -= self.names
            if len(self.names) + len(new) > self.cap:
                raise Full(f"this batch adds {len(new)} attribute names to the {len(self.names)} held; the daemon "
                           f"keeps at most {self.cap} (--max-attr-names): put varying data in values, not names")
            self.names |= new
