"""What one client may ask of the daemon, so that no client takes it down for the others.

Each limit is answered with a clear gRPC status (INVALID_ARGUMENT for a malformed batch, which is
refused whole; RESOURCE_EXHAUSTED for a full daemon) naming the limit and how to raise it.
Attribute values are kept as sent; where Parquet cannot hold them (an integer beyond 64 bits, a
list, a dict, empty or not) the tables store their text (``parquet.attr_column``, for a local
Probe's marks too), so one client's odd value never breaks Save or Table for everyone.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np

MAX_LABEL_BYTES = 256
MAX_BATCH = 100_000           # marks per RecordMarks call
MAX_ATTRS = 64                # attributes per mark
MAX_ATTR_NAME_BYTES = 64
MAX_ATTR_VALUE_BYTES = 1024
MAX_ATTRS_JSON_PER_MARK = 8 << 10  # characters of attrs_json per mark, on average
MAX_CONTAINERS_PER_MARK = 16      # objects and arrays per mark in attrs_json
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

    def admit(self, records: list[tuple]) -> None:
        self.admit_names({k for r in records for k in (r[4] or ())})

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


def attrs_problem(attrs: dict) -> Optional[str]:
    if len(attrs) > MAX_ATTRS:
        return f"more than {MAX_ATTRS} attributes"
    for k, v in attrs.items():
        if not k or len(k.encode()) > MAX_ATTR_NAME_BYTES:
            return f"attribute name {k[:40]!r} is empty or longer than {MAX_ATTR_NAME_BYTES} bytes"
        size = len(v.encode()) if isinstance(v, str) else \
            len(json.dumps(v, default=str)) if isinstance(v, (dict, list)) else 0
        if size > MAX_ATTR_VALUE_BYTES:
            return f"attribute {k!r} is longer than {MAX_ATTR_VALUE_BYTES} bytes"
    return None


def records_of(batch) -> list[tuple]:
    """Validated mark records of a MarkBatch (marks one by one, then columns); raises ValueError
    naming the first bad mark: a batch is accepted whole or refused whole."""
    cols = batch.columns
    n_cols = len(cols.start_ns)
    total = len(batch.marks) + n_cols
    if total > MAX_BATCH:
        raise ValueError(f"{total} marks in one batch; send at most {MAX_BATCH} per call")
    records = []
    for i, m in enumerate(batch.marks):
        attrs = dict(m.attrs)
        problem = mark_problem(m.label, m.start_ns, m.end_ns) or attrs_problem(attrs)
        if problem:
            raise ValueError(f"mark {i} ({m.label[:40]!r}): {problem}")
        attrs["pid"] = m.pid
        records.append((m.label, m.start_ns, m.end_ns, m.thread_id, attrs, m.ok))
    if not n_cols:
        return records
    attrs_list = [None] * n_cols
    if cols.attrs_json:
        text = cols.attrs_json
        # bounded before parsing: a parse costs ~25 times the text in memory, and nesting has no end
        if len(text) > n_cols * MAX_ATTRS_JSON_PER_MARK + 2:
            raise ValueError(f"attrs_json holds {len(text)} characters for {n_cols} marks; at most "
                             f"{MAX_ATTRS_JSON_PER_MARK} per mark")
        if text.count("{") + text.count("[") > n_cols * MAX_CONTAINERS_PER_MARK + 1:
            raise ValueError(f"attrs_json nests more than {MAX_CONTAINERS_PER_MARK} objects or arrays per mark")
        try:
            attrs_list = json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("attrs_json is not JSON") from None
        if not isinstance(attrs_list, list):
            raise ValueError("attrs_json must be a JSON array with one entry per mark")
    lengths = {"label_index": len(cols.label_index), "end_ns": len(cols.end_ns), "thread_id": len(cols.thread_id),
               "ok": len(cols.ok), "attrs_json": len(attrs_list)}
    uneven = {k: v for k, v in lengths.items() if v != n_cols}
    if uneven:
        raise ValueError(f"columns of unequal length: start_ns has {n_cols}, " +
                         ", ".join(f"{k} {v}" for k, v in uneven.items()))
    labels = list(cols.labels)
    for j, name in enumerate(labels):
        problem = mark_problem(name, 1, 1)
        if problem:
            raise ValueError(f"label {j} ({name[:40]!r}): {problem}")
    start = np.array(cols.start_ns, dtype=np.int64)
    end = np.array(cols.end_ns, dtype=np.int64)
    index = np.array(cols.label_index, dtype=np.int64)
    bad = np.flatnonzero((end < start) | (start <= 0) | (index >= len(labels)))
    if bad.size:
        i = int(bad[0])
        why = "label_index points past labels" if index[i] >= len(labels) else mark_problem("x", int(start[i]),
                                                                                            int(end[i]))
        raise ValueError(f"mark {len(batch.marks) + i}: {why}")
    pid = cols.pid
    base = len(batch.marks)
    for i, (li, s, e, tid, ok, more) in enumerate(zip(cols.label_index, cols.start_ns, cols.end_ns, cols.thread_id,
                                                      cols.ok, attrs_list)):
        attrs = {}
        if more:
            if not isinstance(more, dict):
                raise ValueError(f"mark {base + i}: attributes must be a JSON object")
            problem = attrs_problem(more)
            if problem:
                raise ValueError(f"mark {base + i}: {problem}")
            attrs.update(more)
        attrs["pid"] = pid  # the sender's, whatever the attributes say
        records.append((labels[li], s, e, tid, attrs, ok))
    return records


def mark_problem(label: str, start_ns: int, end_ns: int) -> Optional[str]:
    if not label:
        return "empty label"
    if len(label.encode()) > MAX_LABEL_BYTES:
        return f"label longer than {MAX_LABEL_BYTES} bytes"
    if end_ns < start_ns:
        return f"ends before it starts (end_ns {end_ns} < start_ns {start_ns})"
    if start_ns <= 0:
        return "start_ns must be a CLOCK_MONOTONIC time (> 0)"
    return None
