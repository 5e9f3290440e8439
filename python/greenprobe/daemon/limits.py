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
from typing import Optional

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
    max_attr_names: int = _flag(256, "distinct mark attribute names per user at most (each is a column of that user's "
                                     "tables)")
    max_labels_per_user: int = _flag(256, "distinct mark labels per user at most (the estimator separates at most "
                                          "256 at once)")
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
    max_out_bytes: int = _flag(0, "disk the run's parts may take (--out, or the spool; K, M, G suffixes; default: half "
                                  "the free space of that file system at start); each user's marks at most half of "
                                  "it. Beyond, new marks are refused, saying so; nothing written is deleted",
                               kind="bytes")
    max_label_series_per_user: int = _flag(1000, "Prometheus label series per user at most; the rest of a user's "
                                                 "labels are added up under its own \"(other)\"")
    max_queries_per_user: int = _flag(1, "long queries (Summary, Table, Save, Energy) per user at once; a user's "
                                         "query waits for a free slot, in turn with other users'")
    max_heavy: int = 2                # Summary, Table, Save, Energy running at once
    max_intake: int = 8               # RecordMarks batches parsed at once
    max_intake_per_user: int = 1      # of those, per user: one user's flood leaves the others room
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


class OwnerNames:
    """The distinct names (attribute names, labels) each owner has used, capped per owner: each
    attribute name becomes a column of the owner's tables and each label a quantity the estimator
    separates, so names without end would make every reply grow; one owner's names never count
    against another's (daemon/identity.py)."""

    def __init__(self, cap: int, what: str, flag: str, fix: str):
        self.cap, self.what, self.flag, self.fix = cap, what, flag, fix
        self.names: dict[str, set] = {}
        self.lock = threading.Lock()

    def new_names(self, owner: str, names: set) -> set:
        """The names ``owner`` has not used yet; Full, naming the user and the limit, when they would
        pass the cap. Nothing is admitted: ``admit`` does, once the marks are held."""
        with self.lock:
            new = names - self.names.get(owner, set())
            held = len(self.names.get(owner, ()))
        if new and held + len(new) > self.cap:
            raise Full(f"this batch adds {len(new)} {self.what} to the {held} that {owner} has used; the daemon keeps "
                       f"at most {self.cap} per user ({self.flag}): {self.fix}")
        return new

    def admit(self, owner: str, new: set) -> None:
        if new:
            with self.lock:
                self.names.setdefault(owner, set()).update(new)


class FairSlots:
    """A daemon-wide resource of ``total`` slots (long queries, batches being read) shared between
    users: each owner holds at most ``per_owner`` at once, counting the calls it has waiting, so one
    user's loop never takes what another user's call needs; a call under its owner's share waits up
    to ``wait_s`` for a free slot, first come first served (at most one waiting call per owner with
    the default share of one, so the turns alternate between users)."""

    def __init__(self, total: int, per_owner: int, wait_s: float = 0.0):
        self.total, self.per_owner, self.wait_s = total, per_owner, wait_s
        self.free = total
        self.held: dict[str, int] = {}  # owner -> calls running or waiting
        self.queue: list[object] = []   # waiting calls, oldest first
        self.cond = threading.Condition()

    def acquire(self, owner: str) -> Optional[str]:
        """None once the caller holds a slot; else why not (its owner's share is in use, or no slot
        freed up within wait_s)."""
        with self.cond:
            mine = self.held.get(owner, 0)
            if mine >= self.per_owner:
                return "share"
            self.held[owner] = mine + 1
            ticket = object()
            self.queue.append(ticket)
            got = self.cond.wait_for(lambda: self.free > 0 and self.queue[0] is ticket, timeout=self.wait_s)
            self.queue.remove(ticket)
            if not got:
                self._leave(owner)
                self.cond.notify_all()
                return "busy"
            self.free -= 1
            self.cond.notify_all()  # the next in the queue may go too, if a slot is free
            return None

    def release(self, owner: str) -> None:
        with self.cond:
            self.free += 1
            self._leave(owner)
            self.cond.notify_all()

    def _leave(self, owner: str) -> None:
        n = self.held[owner] - 1
        if n:
            self.held[owner] = n
        else:
            del self.held[owner]
