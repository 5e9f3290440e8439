"""Where a session keeps its samples and marks: recent rows in memory, older rows, once written as
Parquet parts (``parquet.PartWriter``), read back from those parts when a query reaches them.

Both stores number their rows in arrival order. The writer writes rows ``[done, len)`` as a part
and registers it (``spilled``); ``forget`` then drops from memory whole parts' worth of rows, so
what is in memory and what is in the parts never overlap: a query reads the parts it needs, then
memory. A local Probe never spills and keeps everything in memory, as before; the daemon spills,
so its memory holds a bounded recent window however long it runs.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .records import Mark, mark_columns

# pyarrow is imported where it is used: greenprobe must import in runtime environments whose
# pyarrow does not load (MXNet's numpy < 1.24), where no store ever spills
SAMPLE_DTYPES = (np.int64, np.int64, np.float64, np.uint32, np.uint32)  # t_ns, prev_t_ns, energy_j_or_power_w, channel, flags
SAMPLE_NAMES = ("t_ns", "prev_t_ns", "energy_j_or_power_w", "channel", "flags")


def mark_schema():
    import pyarrow as pa

    return pa.schema([("label", pa.string()), ("start_ns", pa.int64()), ("end_ns", pa.int64()),
                      ("thread_id", pa.uint64()), ("ok", pa.bool_()), ("attrs", pa.string()),
                      # set by the daemon, never by the client: whose mark it is (daemon/identity.py; null
                      # for a local Probe's own), and whether the kernel vouched for the pid in attrs
                      ("owner", pa.string()), ("pid_verified", pa.bool_())])
SEAL_MARKS = 4096  # single appended marks are gathered into columns this many at a time
COMBINE_MAX_BYTES = 1 << 30  # small tables are gathered into one chunk below this
READ_TRIES = 3  # a query whose parts were merged under it reads again, from the merged file
_END = Mark._fields.index("end_ns")  # where a C mark's tuple holds its end
PART_NAME = re.compile(r"part-(\d+)(?:-(\d+))?\.parquet")  # one flush's part, or FIRST-LAST merged


def part_name(first: int, last: Optional[int] = None) -> str:
    """The file name of part ``first``, or of parts first..last merged into one file (8 digits:
    6 years of parts every 2 s, in order)."""
    return f"part-{first:08d}.parquet" if last is None or last == first else f"part-{first:08d}-{last:08d}.parquet"


def part_span(name: str) -> Optional[tuple[int, int]]:
    """The part numbers (first, last) a file name holds, or None if it is not a part's name."""
    m = PART_NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2) or m.group(1))) if m else None


@dataclass(frozen=True)
class Part:
    """Rows [start, stop) of a store, in the Parquet file ``path``; t_min/t_max bound their times."""
    path: str
    start: int
    stop: int
    t_min: int = 0
    t_max: int = 0


class PartIndex:
    """The parts of a store as columns (folder, first number, start, stop, t_min, t_max, last
    number): 56 bytes per part, where a Part object with its path costs ~400 (a part every 2 s is
    43,200 a day, until ``replace`` merges them). Reads like a list of Part."""

    def __init__(self):
        self._cols = np.zeros((0, 7), np.int64)
        self._n = 0
        self._dirs: list[str] = []
        self._odd: dict[int, str] = {}  # paths that do not follow the part-NNNNNNNN naming

    def __len__(self) -> int:
        return self._n

    @property
    def stop(self) -> int:
        """The row after the last part's: where the next part must start."""
        return int(self._cols[self._n - 1, 3]) if self._n else 0

    def append(self, part: Part) -> None:
        """Registers the next part; its rows must start where the parts so far end."""
        if part.start != self.stop:
            raise ValueError(f"part {part.path} starts at row {part.start}, the parts so far end at {self.stop}")
        if self._n == len(self._cols):
            self._cols = np.concatenate([self._cols, np.zeros((max(self._n, 64), 7), np.int64)])
        self._cols[self._n] = self._row(part)
        if self._cols[self._n, 0] < 0:
            self._odd[self._n] = part.path
        self._n += 1

    def _row(self, part: Part) -> tuple:
        folder, name = os.path.split(part.path)
        span = part_span(name)
        if span is None:
            return (-1, -1, part.start, part.stop, part.t_min, part.t_max, -1)
        if folder not in self._dirs:
            self._dirs.append(folder)
        return (self._dirs.index(folder), span[0], part.start, part.stop, part.t_min, part.t_max, span[1])

    def index_of(self, start: int) -> int:
        """The part whose rows begin at row ``start``."""
        hit = np.flatnonzero(self._cols[:self._n, 2] == start)
        if not hit.size:
            raise ValueError(f"no part starts at row {start}")
        return int(hit[0])

    def written_before(self, row: int) -> int:
        """How many parts end at or before ``row``."""
        return int(np.count_nonzero(self._cols[:self._n, 3] <= row))

    def singles(self, k: int) -> np.ndarray:
        """Of the first ``k`` parts, which are one flush's (not merged with others)."""
        c = self._cols[:min(k, self._n)]
        return (c[:, 0] >= 0) & (c[:, 1] == c[:, 6])

    def replace(self, a: int, b: int, merged: Part) -> None:
        """Parts a..b (inclusive) are now the one file ``merged`` holds (their rows, in order)."""
        first, last = self._part(a), self._part(b)
        if (merged.start, merged.stop) != (first.start, last.stop) or any(i in self._odd for i in range(a, b + 1)):
            raise ValueError(f"{merged.path} does not hold exactly parts {a}..{b}")
        row = self._row(Part(merged.path, merged.start, merged.stop, int(self._cols[a:b + 1, 4].min()),
                             int(self._cols[a:b + 1, 5].max())))
        gone = b - a
        self._cols[a] = row
        self._cols[a + 1:self._n - gone] = self._cols[b + 1:self._n]
        self._cols[self._n - gone:self._n] = 0
        self._odd = {(i - gone if i > b else i): p for i, p in self._odd.items()}
        self._n -= gone

    def _part(self, i: int) -> Part:
        d, num, start, stop, t_min, t_max, last = (int(x) for x in self._cols[i])
        if d < 0:
            path = self._odd[i]
        else:
            path = os.path.join(self._dirs[d], part_name(num, last))
        return Part(path, start, stop, t_min, t_max)

    def select(self, k: int, from_index: int = 0, start_ns: Optional[int] = None,
               end_ns: Optional[int] = None) -> list[Part]:
        """Of the first ``k`` parts, those with rows from ``from_index`` on and times that may fall
        in [start_ns, end_ns]."""
        c = self._cols[:k]
        m = c[:, 3] > from_index
        if start_ns is not None:
            m &= c[:, 5] >= start_ns
        if end_ns is not None:
            m &= c[:, 4] <= end_ns
        return [self._part(int(i)) for i in np.flatnonzero(m)]

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self._part(i) for i in range(*key.indices(self._n))]
        return self._part(range(self._n)[key])


def merge_candidates(index: PartIndex, written: int, count: int) -> Optional[tuple[int, int]]:
    """The first ``count`` single parts among the first ``written`` (those memory no longer holds),
    as (a, b), when there are that many in a row; else None."""
    single = index.singles(written)
    if single.size < count:
        return None
    first = int(np.argmax(single))  # merges go in order: the single parts follow the merged ones
    if not single[first] or first + count > single.size or not single[first:first + count].all():
        return None
    return first, first + count - 1


def empty_samples() -> tuple:
    return tuple(np.zeros(0, d) for d in SAMPLE_DTYPES)


class SampleStore:
    """The sampler's columns (t_ns, prev_t_ns, value, channel, flags) in arrival order."""

    def __init__(self):
        self._lock = threading.Lock()
        self._mem: list[tuple] = []  # chunks as drained
        self._first = 0              # index of the first row in memory; rows before it are in parts
        self._n = 0
        self._parts = PartIndex()
        self._in_memory_part = 0     # first part whose rows are still in memory
        self._first_seen: dict[int, tuple[int, float]] = {}  # channel -> its first reading (t_ns, value)

    def __len__(self) -> int:
        return self._n

    def memory_rows(self) -> int:
        with self._lock:
            return self._n - self._first

    def append(self, cols: tuple) -> None:
        n = len(cols[0])
        if not n:
            return
        with self._lock:
            self._mem.append(cols)
            self._n += n
            new = set(np.unique(cols[3]).tolist()) - self._first_seen.keys()
            for c in new:  # what a counter had at the start: the total since start survives forgetting
                i = int(np.flatnonzero(cols[3] == c)[0])
                self._first_seen[c] = (int(cols[0][i]), float(cols[2][i]))

    def first_reading(self, channel: int) -> Optional[tuple[int, float]]:
        with self._lock:
            return self._first_seen.get(channel)

    def _memory(self) -> tuple:
        """With the lock held: the rows in memory as one set of columns (merged once, kept merged)."""
        if not self._mem:
            return empty_samples()
        if len(self._mem) > 1:
            self._mem = [tuple(np.concatenate([c[i] for c in self._mem]) for i in range(5))]
        return self._mem[0]

    def columns(self, start_ns: Optional[int] = None, end_ns: Optional[int] = None, from_index: int = 0,
                with_end: bool = False):
        """Rows from arrival index ``from_index`` on with ``start_ns <= t_ns <= end_ns``, in arrival
        order; parts are read only where they hold such rows. ``with_end``: also the arrival index
        after the last row considered, from which a reader goes on (``columns_from``)."""
        for attempt in range(READ_TRIES):
            with self._lock:
                mem, first, end = self._memory(), self._first, self._n
                parts = self._parts.select(self._in_memory_part, from_index, start_ns, end_ns)
            try:
                cols = self._columns(mem, first, parts, start_ns, end_ns, from_index)
                break
            except FileNotFoundError:  # parts merged meanwhile: the index names the merged file now
                if attempt == READ_TRIES - 1:
                    raise
        return (cols, end) if with_end else cols

    @staticmethod
    def _columns(mem, first, parts, start_ns, end_ns, from_index) -> tuple:
        pieces = []
        for p in parts:  # already those that may hold rows asked for
            cols = read_samples(p.path)
            pieces.append(tuple(c[max(from_index - p.start, 0):] for c in cols))
        pieces.append(tuple(c[max(from_index - first, 0):] for c in mem))
        cols = pieces[0] if len(pieces) == 1 else tuple(np.concatenate([p[i] for p in pieces]) for i in range(5))
        if start_ns is None and end_ns is None:
            return cols
        keep = np.ones(cols[0].size, bool)
        if start_ns is not None:
            keep &= cols[0] >= start_ns
        if end_ns is not None:
            keep &= cols[0] <= end_ns
        return tuple(c[keep] for c in cols)

    def rows_between(self, start_ns: Optional[int], end_ns: Optional[int]) -> int:
        """At most how many rows a query from ``start_ns`` to ``end_ns`` reads (whole parts, and all
        of memory): what a caller checks before asking for them."""
        with self._lock:
            parts = self._parts.select(self._in_memory_part, 0, start_ns, end_ns)
            n = self._n - self._first
        return n + sum(p.stop - p.start for p in parts)

    def columns_from(self, index: int) -> tuple[tuple, int]:
        """Rows from arrival index ``index`` on, and the index after the last of them: a reader that
        goes on from there misses no row and reads none twice, however late a row arrives."""
        for attempt in range(READ_TRIES):
            with self._lock:  # memory, where it starts and the parts before it: one consistent view
                mem, first, end = self._memory(), self._first, self._n
                parts = self._parts.select(self._in_memory_part, index) if index < first else []
            if index >= first:
                return tuple(c[index - first:] for c in mem), end
            try:  # a reader that fell behind memory: the parts, then memory
                return self._columns(mem, first, parts, None, None, index), end
            except FileNotFoundError:  # parts merged meanwhile: read the merged file
                if attempt == READ_TRIES - 1:
                    raise

    def spilled(self, part: Part) -> None:
        """The writer wrote rows [part.start, part.stop) into part.path."""
        with self._lock:
            self._parts.append(part)

    def merge_candidates(self, count: int) -> Optional[list[Part]]:
        """``count`` consecutive single parts whose rows memory no longer holds, or None."""
        with self._lock:
            ab = merge_candidates(self._parts, self._in_memory_part, count)
            return self._parts[ab[0]:ab[1] + 1] if ab else None

    def merged(self, parts: list[Part], into: Part) -> None:
        """``into`` now holds the rows of ``parts`` (as merge_candidates gave them)."""
        with self._lock:
            a = self._parts.index_of(parts[0].start)
            self._parts.replace(a, a + len(parts) - 1, into)
            self._in_memory_part -= len(parts) - 1

    def forget(self, before_ns: int) -> int:
        """Drops from memory the rows of written parts whose every sample is older than
        ``before_ns``; returns how many rows went."""
        with self._lock:
            k = self._in_memory_part
            while k < len(self._parts) and self._parts[k].t_max < before_ns:
                k += 1
            if k == self._in_memory_part:
                return 0
            cut = self._parts[k - 1].stop
            mem = self._memory()
            # a copy, not a view: a view would keep the whole old array alive
            self._mem = [tuple(c[cut - self._first:].copy() for c in mem)]
            gone, self._first, self._in_memory_part = cut - self._first, cut, k
            return gone


def read_samples(path: str) -> tuple:
    """A part's samples as the sampler's columns (sample_columns)."""
    import pyarrow.parquet as pq

    return sample_columns(pq.read_table(path))


def sample_columns(table) -> tuple:
    """A samples table (samples.parquet, a part, the daemon's Table("samples")) as the sampler's
    columns (SAMPLE_NAMES): its energy_j (counters) and power_w (power readings) are one value
    column again (energy_j_or_power_w)."""
    import pyarrow.compute as pc

    cols = {n: table.column(n) for n in ("t_ns", "prev_t_ns", "channel", "flags")}
    cols["energy_j_or_power_w"] = pc.coalesce(table.column("energy_j"), table.column("power_w"))
    return tuple(cols[name].to_numpy().astype(d, copy=False) for name, d in zip(SAMPLE_NAMES, SAMPLE_DTYPES))


class MarkStore:
    """Marks as columns (label, start_ns, end_ns, thread_id, ok, attrs as JSON text): about 40
    bytes and its attributes' text per mark, instead of a tuple and a dict. Marks are kept in
    memory until written; ``snapshot`` gives the records (label, start_ns, end_ns, thread_id,
    attrs, ok) that a Probe's marks() returns, reading the parts for the written ones."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tail: list[tuple] = []    # single marks not yet in columns
        self._pending: list = []        # small tables (ring drains) not yet gathered into a chunk
        self._pending_rows = 0
        self._chunks: list = []         # pyarrow Tables
        self._first = 0                 # index of the first mark in memory
        self._n = 0
        self._parts = PartIndex()
        self._max_end = 0
        self._bytes = 0                 # of the tables in _pending and _chunks

    SPILLS = True  # the writer may write its marks out and let them go (spilled, forget)

    @property
    def sink(self):
        """What the C mark appends its records to (the store itself)."""
        return self

    def __len__(self) -> int:
        return self._n

    def memory_marks(self) -> int:
        with self._lock:
            return self._n - self._first

    def memory_bytes(self) -> int:
        """Bytes of the marks in memory as columns (labels, attributes' JSON, the fixed fields);
        single appended marks count once gathered, SEAL_MARKS at a time."""
        with self._lock:
            return self._bytes

    def max_end_ns(self) -> int:
        return self._max_end

    def append(self, record: tuple) -> None:
        """One record (the C mark sink and add_mark use this)."""
        with self._lock:
            self._tail.append(record)
            self._n += 1
            self._max_end = max(self._max_end, int(record[_END]))
            if len(self._tail) >= SEAL_MARKS:
                self._seal()

    def extend(self, records: list[tuple]) -> None:
        """A batch of records, as one table (so that its bytes count at once)."""
        if records:
            self.extend_table(marks_table(records), max(int(r[_END]) for r in records))

    def extend_table(self, table, max_end_ns: int) -> None:
        """Marks already in columns (a pyarrow Table of mark_schema(): a ring drain), after every
        mark appended before; gathered with others into one chunk SEAL_MARKS at a time."""
        if not table.num_rows:
            return
        with self._lock:
            self._gather_tail()
            self._hold(table)
            self._pending_rows += table.num_rows
            self._n += table.num_rows
            self._max_end = max(self._max_end, int(max_end_ns))
            if self._pending_rows >= SEAL_MARKS:
                self._seal()

    def _hold(self, table) -> None:
        self._pending.append(table)
        self._bytes += table.nbytes

    def _gather_tail(self) -> None:
        """The single appended marks, as a table among the pending ones."""
        if self._tail:
            self._hold(marks_table(self._tail))
            self._pending_rows += len(self._tail)
            self._tail = []

    def _seal(self) -> None:
        import pyarrow as pa

        self._gather_tail()
        if len(self._pending) == 1:
            self._chunks.append(self._pending[0])
        elif self._pending:
            table = pa.concat_tables(self._pending)
            # one chunk, unless its attribute text would pass the 2 GiB a string column's chunk holds
            self._chunks.append(table.combine_chunks() if table.nbytes < COMBINE_MAX_BYTES else table)
        self._pending, self._pending_rows = [], 0

    def table(self, start: int = 0):
        """Marks from index ``start`` on, in arrival order, as a pyarrow Table of mark_schema()."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for attempt in range(READ_TRIES):
            with self._lock:
                self._seal()
                chunks, first, parts = list(self._chunks), self._first, self._parts[:]
            try:
                pieces = [pq.read_table(p.path, schema=mark_schema()).slice(max(start - p.start, 0))
                          for p in parts if start < p.stop <= first]  # parts whose marks left memory
                break
            except FileNotFoundError:  # parts merged meanwhile: the index names the merged file now
                if attempt == READ_TRIES - 1:
                    raise
        mem = pa.concat_tables(chunks) if chunks else mark_schema().empty_table()
        pieces.append(mem.slice(max(start - first, 0)))
        if len(pieces) == 1:
            return pieces[0]
        table = pa.concat_tables(pieces)
        return table.combine_chunks() if table.nbytes < COMBINE_MAX_BYTES else table

    def snapshot(self, start: int = 0) -> list[Mark]:
        return records_of(self.table(start))

    def spilled(self, part: Part) -> None:
        """The writer wrote marks [part.start, part.stop) into part.path."""
        with self._lock:
            self._parts.append(part)

    def merge_candidates(self, count: int) -> Optional[list[Part]]:
        """``count`` consecutive single parts whose marks memory no longer holds, or None."""
        with self._lock:
            ab = merge_candidates(self._parts, self._parts.written_before(self._first), count)
            return self._parts[ab[0]:ab[1] + 1] if ab else None

    def merged(self, parts: list[Part], into: Part) -> None:
        with self._lock:
            a = self._parts.index_of(parts[0].start)
            self._parts.replace(a, a + len(parts) - 1, into)

    def forget(self) -> int:
        """Drops from memory every mark a part holds; returns how many went."""
        import pyarrow as pa

        with self._lock:
            cut = self._parts.stop
            if cut <= self._first:
                return 0
            self._seal()
            mem = pa.concat_tables(self._chunks) if self._chunks else mark_schema().empty_table()
            rest = mem.slice(cut - self._first)
            self._chunks = [own_buffers(rest)] if rest.num_rows else []
            self._bytes = sum(t.nbytes for t in self._chunks)
            gone, self._first = cut - self._first, cut
            return gone


class BufferMarks:
    """A local Probe's marks: the C MarkBuffer that ``mark()`` appends to fastest (one record per
    mark), seen through MarkStore's interface, so that the Probe, the daemon over it (``greenprobe
    measure``, a study's sitting) and the writers read both kinds of store alike: ``table`` by name,
    ``max_end_ns``, ``memory_marks``, ``extend_table``. Marks that come as tables (a daemon's
    clients') are kept as tables, with their owners, in their place in arrival order. Its marks stay
    in memory (``SPILLS`` False)."""

    SPILLS = False

    def __init__(self):
        from . import _core

        self.sink = _core.MarkBuffer()
        self._tables: list[tuple[int, object]] = []  # (marks in the sink before it, table)
        self._table_rows = 0
        self._max_end = 0
        self._seen = 0  # the sink's marks max_end_ns has read
        self._sink_max_end = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.sink) + self._table_rows

    def memory_marks(self) -> int:
        return len(self)

    def memory_bytes(self) -> int:
        """Not counted: a local Probe's marks are its own process's (no limit applies to them)."""
        return 0

    def max_end_ns(self) -> int:
        """The latest end of any mark: the sink's are read once each (only those added since)."""
        with self._lock:
            new = self.sink.snapshot(self._seen)
            self._seen += len(new)
            self._sink_max_end = max(self._sink_max_end, max((r[_END] for r in new), default=0))
            return max(self._sink_max_end, self._max_end)

    def append(self, record: tuple) -> None:
        self.sink.append(record)

    def extend(self, records: list[tuple]) -> None:
        for r in records:
            self.sink.append(r)

    def extend_table(self, table, max_end_ns: int) -> None:
        """Marks in columns (a daemon over a local Probe takes its clients' so), after every mark before."""
        if not table.num_rows:
            return
        with self._lock:
            self._tables.append((len(self.sink), table))
            self._table_rows += table.num_rows
            self._max_end = max(self._max_end, int(max_end_ns))

    def table(self, start: int = 0):
        with self._lock:  # one instant: a table later than this snapshot comes after all of it
            tables = list(self._tables)
            records = self.sink.snapshot(0 if tables else start)
        if not tables:
            return marks_table(records)
        import pyarrow as pa

        local = marks_table(records)
        pieces, at = [], 0
        for before, t in tables:  # the sink's marks up to each table, then the table
            pieces += [local.slice(at, before - at), t]
            at = before
        pieces.append(local.slice(at))
        return pa.concat_tables(pieces).slice(start)

    def snapshot(self, start: int = 0) -> list[Mark]:
        return records_of(self.table(start)) if self._tables else list(map(Mark._make, self.sink.snapshot(start)))


def records_of(table) -> list[Mark]:
    """A table of mark_schema() as Mark records."""
    t = table.to_pydict()
    loads = json.loads
    return [Mark(label, s, e, tid, loads(a) if a else None, ok) for label, s, e, tid, ok, a in
            zip(t["label"], t["start_ns"], t["end_ns"], t["thread_id"], t["ok"], t["attrs"])]


def mark_attrs(table) -> list[dict]:
    """Each mark's attributes, parsed from the table's JSON column ({} for none)."""
    loads = json.loads
    return [loads(a) if a else {} for a in table.column("attrs").to_pylist()]


def marks_where(table, labels, order_by: tuple = (), **equal) -> tuple:
    """The marks of ``table`` whose label is in ``labels`` and whose attributes hold every ``equal``
    pair, sorted by the attributes named in ``order_by``: (their table, their attributes)."""
    import pyarrow as pa

    attrs = mark_attrs(table)
    names = table.column("label").to_pylist()
    keep = [k for k, (label, a) in enumerate(zip(names, attrs))
            if label in labels and all(a.get(key) == v for key, v in equal.items())]
    if order_by:
        keep.sort(key=lambda k: tuple(attrs[k][key] for key in order_by))
    return table.take(pa.array(keep, pa.int64())), [attrs[k] for k in keep]


def own_buffers(table):
    """A table with buffers of its own (pyarrow slices share their parent's, and keep all of them
    alive while their nbytes counts only their rows)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return pa.ipc.open_stream(sink.getvalue()).read_all()


def marks_table(records: list[tuple], owner: Optional[str] = None):
    """Mark records (records.Mark, or the C mark's tuples in its order) as a table of mark_schema(),
    all of ``owner`` (null: a local Probe's own marks)."""
    import pyarrow as pa

    dumps = json.dumps
    n = len(records)
    c = mark_columns(records)
    return pa.table({
        "label": pa.array(c["label"], pa.string()),
        "start_ns": pa.array(c["start_ns"], pa.int64()),
        "end_ns": pa.array(c["end_ns"], pa.int64()),
        "thread_id": pa.array([tid & 0xFFFFFFFFFFFFFFFF for tid in c["thread_id"]], pa.uint64()),
        "ok": pa.array([bool(ok) for ok in c["ok"]], pa.bool_()),
        "attrs": pa.array([dumps(a, default=str, separators=(",", ":")) if a else None for a in c["attrs"]],
                          pa.string()),
        "owner": pa.repeat(pa.scalar(owner, pa.string()), n),
        "pid_verified": pa.nulls(n, pa.bool_()),
    }, schema=mark_schema())


def of_owner(table, owner: Optional[str]):
    """The marks of ``table`` that belong to ``owner`` (None: all of them)."""
    if owner is None:
        return table
    import pyarrow.compute as pc

    return table.filter(pc.fill_null(pc.equal(table.column("owner"), owner), False))


def owners_of(table) -> list[str]:
    """The distinct owners of a table's marks, in first-seen order (nulls left out)."""
    import pyarrow.compute as pc

    return [o for o in pc.unique(table.column("owner")).to_pylist() if o is not None]
