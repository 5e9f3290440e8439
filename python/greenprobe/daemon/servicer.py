"""The request handlers: validate, keep within the limits, then read or feed the Probe. No handler
lets an exception escape as anything but a gRPC status."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Callable, Optional

import grpc
import numpy as np

from .._version import __version__
from ..records import API_VERSION, channel_message_fields
from ..session import Probe
from ..store import own_buffers
from ..v1 import probe_pb2 as pb
from ..v1 import probe_pb2_grpc as pb_grpc
from .access import Refused, SaveRoot, size_text
from .dedupe import Dedupe
from .limits import MAX_BATCH, AttrNames, Busy, Full, Limits

STREAM_POLL_S = 0.05
SESSION_KEY = "greenprobe-session"  # gRPC metadata: the session id a client's ring registration gave it
TABLES = ("intervals", "labels", "samples")


class Servicer(pb_grpc.ProbeServicer):
    def __init__(self, probe: Probe, stopping: threading.Event, limits: Optional[Limits] = None,
                 save_root: Optional[SaveRoot] = None):
        self.probe = probe
        self.stopping = stopping
        self.limits = limits or Limits()
        self.save_root = save_root
        self.marks_lock = threading.Lock()
        self.attr_names = AttrNames(self.limits.max_attr_names)
        self.dedupe = Dedupe()
        self.heavy = threading.BoundedSemaphore(self.limits.max_heavy)
        self.intake = threading.BoundedSemaphore(self.limits.max_intake)
        self.streams = threading.BoundedSemaphore(self.limits.max_streams)
        self.backlog: Optional[Callable[[], int]] = None  # marks accepted but not yet on disk (with --out)
        self.write_soon = threading.Event()  # set past half a limit on marks held: the writer writes early
        self.sessions: dict = {}  # session id -> (pid, uid): clients known by their ring (daemon/rings.py)
        self._user_streams: dict = {}  # uid (None: calls without a session) -> open streams
        self._user_lock = threading.Lock()

    # -- status --------------------------------------------------------------------------------
    def Status(self, request, context):
        p = self.probe
        chans = [pb.Channel(**channel_message_fields(c)) for c in p.channel_info()]
        stats = [pb.SensorStats(sensor=s.get("sensor", ""), state=s.get("state", ""), polls=s.get("polls", 0),
                                late_polls=s.get("late_polls", 0), drops=s.get("drops", 0),
                                max_lag_ns=s.get("max_lag_ns", 0), last_error=s.get("last_error", ""))
                 for s in p.stats()]
        skipped = [pb.SkippedSensor(kind=s.kind, reason=s.reason, fix=s.fix or "") for s in p.skipped]
        return pb.StatusReply(version=__version__, api_version=API_VERSION, anchor_monotonic_ns=p.clock_anchor()["monotonic_ns"],
                              anchor_wall_ns=p.clock_anchor()["wall_ns"], now_ns=time.monotonic_ns(), channels=chans,
                              stats=stats, skipped=skipped, marks=len(p.marks_store), period_ns=p.period_ns)

    # -- marks ---------------------------------------------------------------------------------
    def RecordMarks(self, request, context):
        # a few batches are read at once (each may cost tens of MB while parsed); the rest are told to
        # come back, which clients do with back-off, their marks kept
        with _slot(context, self.intake, grpc.StatusCode.UNAVAILABLE,
                   f"{self.limits.max_intake} batches are being read; retry shortly, no mark of this batch was "
                   "recorded"):
            return self._record_marks(request, context)

    def _record_marks(self, request, context):
        cols = request.columns
        try:
            _only_frames(request)
            table, names = _frames(cols.frames, cols.pid) if cols.frames else (None, ())
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{e}; no mark of this batch was recorded")
        sent = table.num_rows if table is not None else 0
        behind = self.backlog() if self.backlog is not None else 0
        self._write_early_past_half(behind=behind + sent)
        if behind and behind + sent > self.limits.max_backlog:  # an empty backlog takes any batch
            # back-pressure: the client keeps the batch and retries, so a crash loses at most this much
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"the daemon's writes are {behind} marks behind (--max-backlog {self.limits.max_backlog}); "
                          "retry shortly, no mark of this batch was recorded")
        store = self.probe.marks_store
        try:
            with self.marks_lock:
                # a batch resent after a lost reply: keep only the marks not held yet
                skip = self.dedupe.fresh(cols.sender_id, cols.first_seq, sent).start
                if skip:  # a copy: a slice would keep the whole batch's buffers, counted as its rows only
                    table = own_buffers(table.slice(skip))
                self._check_held(table.num_rows if table is not None else 0,
                                 table.nbytes if table is not None else 0)
                self.attr_names.admit_names(set(names))
                if table is not None and table.num_rows:
                    self._hold_table(store, table)
                if sent:  # only once the batch is held; an empty batch names no sender
                    self.dedupe.record(cols.sender_id, cols.first_seq, sent)
        except Full as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; no mark of this batch was recorded")
        except Busy as e:  # back-pressure, as for --max-backlog: the client keeps the batch and retries
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{e}; retry shortly, no mark of this batch was recorded")
        return pb.RecordMarksReply(accepted=sent)

    def _held(self) -> tuple[int, int]:
        """Marks in memory and their bytes (the daemon's columnar store lets written marks go)."""
        store = self.probe.marks_store
        return store.memory_marks(), store.memory_bytes()

    def _write_early_past_half(self, held: int = 0, held_bytes: int = 0, behind: int = 0) -> None:
        """Past half of --max-marks, --max-mark-bytes or --max-backlog the writer writes at once, not
        at its next --flush-s tick: what it writes leaves memory before clients are pushed back."""
        lim = self.limits
        if 2 * held > lim.max_marks or 2 * held_bytes > lim.max_mark_bytes or 2 * behind > lim.max_backlog:
            self.write_soon.set()

    def _check_held(self, new: int, new_bytes: Optional[int]) -> None:
        """Full when ``new`` more marks would pass --max-marks; Busy when ``new_bytes`` more would
        pass --max-mark-bytes (an empty store takes any batch, as an empty backlog does; None: not
        checked). With marks_lock held."""
        held, held_bytes = self._held()
        self._write_early_past_half(held + new, held_bytes + (new_bytes or 0))
        if held + new > self.limits.max_marks:
            raise Full(f"the daemon holds {held} marks in memory and keeps at most {self.limits.max_marks} "
                       "(--max-marks): marks leave memory once written (every --flush-s); raise the limit")
        if new_bytes is not None and held_bytes and held_bytes + new_bytes > self.limits.max_mark_bytes:
            raise Busy(f"the daemon holds {size_text(held_bytes)} of marks in memory, and these "
                       f"{size_text(new_bytes)} would pass its limit ({size_text(self.limits.max_mark_bytes)}, "
                       "--max-mark-bytes) until its next write (every --flush-s)")

    def ring_room(self) -> int:
        """How many more marks the daemon takes now (memory and write backlog), for ring drains."""
        behind = self.backlog() if self.backlog is not None else 0
        held, held_bytes = self._held()
        self._write_early_past_half(held, held_bytes, behind)
        if held_bytes >= self.limits.max_mark_bytes:
            return 0
        return min(self.limits.max_marks - held,
                   self.limits.max_backlog - behind if behind else self.limits.max_backlog)

    def record_columns(self, table, attr_names, room_found: bool = True) -> None:
        """A ring drain's marks (a pyarrow Table of store.mark_schema()); Full when they would pass
        --max-marks or the attribute-name cap, Busy --max-mark-bytes (then none is held).
        ``room_found``: the drain began with ring_room() > 0, and its marks may pass
        --max-mark-bytes by this drain (at most rings.DRAIN_BUDGET_BYTES of ring): they are out of
        the ring and cannot wait any more."""
        with self.marks_lock:
            self._check_held(table.num_rows, None if room_found else table.nbytes)  # a ring holds 1.4 M small marks
            self.attr_names.admit_names(set(attr_names))
            self._hold_table(self.probe.marks_store, table)

    @staticmethod
    def _hold_table(store, table) -> None:
        """Marks as a table into the store (with marks_lock held)."""
        import pyarrow.compute as pc

        store.extend_table(table, pc.max(table.column("end_ns")).as_py() or 0)

    # -- samples -------------------------------------------------------------------------------
    def StreamSamples(self, request, context):
        want = set(request.channels)
        known = {c["channel"] for c in self.probe.channel_info()}
        if want - known:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown channels {sorted(want - known)}; "
                                                            f"this daemon has {sorted(known)}")
        batch = int(request.max_batch) or 4096
        if batch > 1_000_000:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_batch must be <= 1,000,000")
        self._check_rows(context, int(request.since_ns) + 1, None, "a stream from since_ns")
        # a stream holds a worker thread for as long as it lasts: beyond the cap, other clients'
        # short calls would wait behind it
        with _slot(context, self.streams, grpc.StatusCode.RESOURCE_EXHAUSTED,
                   f"{self.limits.max_streams} sample streams are open, the daemon's limit (--max-streams): close "
                   "one, or raise the limit"), self._user_stream(context):
            yield from self._stream(context, int(request.since_ns), want, batch)

    def caller_uid(self, context) -> Optional[int]:
        """The uid of a client known by its session (its ring's SO_PEERCRED); None for the rest."""
        for key, value in context.invocation_metadata() or ():
            if key == SESSION_KEY:
                who = self.sessions.get(value)
                return who[1] if who else None
        return None

    @contextlib.contextmanager
    def _user_stream(self, context):
        """One of the caller's --max-streams-per-user streams: one user's streams never take them
        all. Calls without a session (TCP, pure-Python clients) share half such an allowance."""
        uid = self.caller_uid(context)
        # clients without a session share half a user's allowance: a user who also calls without its
        # session cannot take every stream (4 + 2 of the default 8)
        cap = self.limits.max_streams_per_user if uid is not None else max(self.limits.max_streams_per_user // 2, 1)
        with self._user_lock:
            n = self._user_streams.get(uid, 0)
            if n >= cap:
                who = (f"user {uid} has {n} sample streams open, the daemon's limit per user" if uid is not None else
                       f"clients without a session (TCP, pure-Python) have {n} sample streams open, their share "
                       "(half the limit per user)")
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{who} (--max-streams-per-user): close one, or raise the limit")
            self._user_streams[uid] = n + 1
        try:
            yield
        finally:
            with self._user_lock:
                self._user_streams[uid] -= 1

    def _stream(self, context, since: int, want: set, batch: int):
        """The history after ``since`` first, then what arrives, followed by arrival index: a sample
        drained late (its poll was stamped before the previous drain ended) is still sent, once."""
        store = self.probe.samples_store
        cols, index = store.columns(start_ns=since + 1, with_end=True)
        while context.is_active() and not self.stopping.is_set():
            t, prev, v, ch, fl = cols
            m = t > since
            if want:
                m &= np.isin(ch, list(want))
            if m.any():
                order = np.argsort(t[m], kind="stable")
                out = [c[m][order] for c in (t, prev, v, ch, fl)]
                for i in range(0, out[0].size, batch):
                    part = [c[i:i + batch] for c in out]
                    yield pb.SampleBatch(t_ns=part[0].tolist(), prev_t_ns=part[1].tolist(), value=part[2].tolist(),
                                         channel=part[3].tolist(), flags=part[4].tolist())
            self.stopping.wait(STREAM_POLL_S)
            cols, index = store.columns_from(index)

    # -- queries -------------------------------------------------------------------------------
    def _check_rows(self, context, start_ns: Optional[int], end_ns: Optional[int], what: str,
                    marks: bool = False) -> None:
        """Refuses a query that would read more samples than --max-query-samples at once, or (one
        over every mark) more marks than --max-query-marks."""
        held = len(self.probe.marks_store)
        if marks and held > self.limits.max_query_marks:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{what} would read all {held:,} marks, more than the daemon reads at once "
                          f"({self.limits.max_query_marks:,}, --max-query-marks): read the run's parts (--out) "
                          "with pyarrow, or follow the labels on the Prometheus endpoint")
        n = self.probe.samples_store.rows_between(start_ns, end_ns)
        if n > self.limits.max_query_samples:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{what} would read {n:,} samples, more than the daemon reads at once "
                          f"({self.limits.max_query_samples:,}, --max-query-samples): ask about a shorter time, or "
                          "read the run's parts (--out) with pyarrow")

    def _heavy(self, context):
        """One of the few queries that may run at once (each may read a long history)."""
        return _slot(context, self.heavy, grpc.StatusCode.RESOURCE_EXHAUSTED,
                     f"{self.limits.max_heavy} long queries (Summary, Table, Save, Energy) are running, the "
                     "daemon's limit: retry when one has finished")

    def Energy(self, request, context):
        if request.end_ns < request.start_ns:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "end_ns is before start_ns")
        self._check_rows(context, request.start_ns, request.end_ns, "this Energy query")
        with self._heavy(context):
            rows = self.probe.energy(request.start_ns, request.end_ns)
        return pb.EnergyReply(domains=[pb.DomainEnergy(**r) for r in rows])

    def Summary(self, request, context):
        self._check_rows(context, None, None, "a summary of the whole run", marks=True)
        with self._heavy(context):
            rows = self.probe.summary().to_pylist()
        fields = {f.name for f in pb.LabelSummary.DESCRIPTOR.fields}

        def present(v) -> bool:  # null and NaN (a figure the row has not) stay out: absent, not 0
            return v is not None and not (isinstance(v, float) and math.isnan(v))

        return pb.SummaryReply(labels=[pb.LabelSummary(**{k: v for k, v in r.items() if k in fields and present(v)})
                                       for r in rows])

    def Save(self, request, context):
        if self.save_root is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "this daemon was started without --save-dir, so it writes nowhere for clients; start it "
                          "with --save-dir DIR, or save on the client with save_local()")
        try:
            self.save_root.check_room()
        except Refused as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        try:
            fd, shown = self.save_root.open(request.directory)
        except Refused as e:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except OSError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot make {request.directory}: {e.strerror}")
        try:
            self._check_rows(context, None, None, "saving the whole run", marks=True)
            # the folder is reached through its descriptor: nothing renamed or linked meanwhile is followed
            with self._heavy(context):
                paths = self.probe.save(f"/proc/self/fd/{fd}")
        except OSError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot write {shown}: {e.strerror}")
        finally:
            os.close(fd)
        return pb.SaveReply(paths={k: str(shown / os.path.basename(v)) for k, v in paths.items()})

    def Table(self, request, context):
        if request.name not in TABLES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown table {request.name!r}: one of {', '.join(TABLES)}")
        import pyarrow as pa

        self._check_rows(context, None, None, f"the {request.name} table of the whole run",
                         marks=request.name != "samples")
        with self._heavy(context):
            table = {"intervals": self.probe.intervals, "labels": self.probe.summary,
                     "samples": self.probe.samples}[request.name]()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return pb.TableReply(arrow_ipc=sink.getvalue().to_pybytes())


def _only_frames(request) -> None:
    """ValueError for a batch that carries marks another way than frames: one by one or as columns,
    the encodings of API 1 (greenprobe before its marks were defined once), fields this daemon no
    longer reads (they would be dropped unseen: their bytes tell them apart)."""
    cols = request.columns
    known = pb.MarkBatch()
    known.columns.frames, known.columns.pid = cols.frames, cols.pid
    known.columns.sender_id, known.columns.first_seq = cols.sender_id, cols.first_seq
    if request.ByteSize() != known.ByteSize():
        raise ValueError(f"this daemon (API {API_VERSION}) takes marks only as frames (MarkColumns.frames, "
                         "cpp/include/greenprobe/mark_ring.hpp); the batch holds marks one by one or as columns, "
                         "as clients of API 1 sent them: use a greenprobe client of this version")


def _frames(frames: bytes, pid: int):
    """A batch's frames as a table of store.mark_schema() and its attribute names; ValueError,
    naming the first bad mark, when any mark in them is bad (a batch is held whole or refused whole)."""
    from .. import _core
    from .rings import columns_table

    try:
        cols = _core.decode_frames(frames, int(pid))
    except _core.RingCorrupt as e:
        raise ValueError(f"frames: {e}") from None
    if cols["refused"]:
        raise ValueError(f"{cols['refused']} marks in frames are bad, the first: {cols['refused_why']}")
    n = len(cols["start_ns"])
    if n > MAX_BATCH:
        raise ValueError(f"{n} marks in one batch; send at most {MAX_BATCH} per call")
    return columns_table(cols), cols["attr_names"]


@contextlib.contextmanager
def _slot(context, slots: threading.BoundedSemaphore, code, message: str):
    """One of ``slots`` for the block, or the call is answered ``code``/``message`` at once: a
    call that waited would hold one of the server's worker threads while it waits."""
    if not slots.acquire(blocking=False):
        context.abort(code, message)
    try:
        yield
    finally:
        slots.release()

