"""The request handlers: validate, keep within the limits, then read or feed the Probe. No handler
lets an exception escape as anything but a gRPC status."""

from __future__ import annotations

import collections
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
from .access import Refused, SaveRoot, bytes_under, size_text
from .dedupe import Dedupe
from .identity import UNVERIFIED, Caller, Identities
from .limits import MAX_BATCH, Busy, FairSlots, Full, Limits, OwnerNames

STREAM_POLL_S = 0.05
QUERY_WAIT_S = 10.0  # a long query under its user's share waits this long for a slot
TABLES = ("intervals", "labels", "requests", "samples", "consumers")


class Servicer(pb_grpc.ProbeServicer):
    def __init__(self, probe: Probe, stopping: threading.Event, limits: Optional[Limits] = None,
                 save_root: Optional[SaveRoot] = None, identities: Optional[Identities] = None):
        self.probe = probe
        self.stopping = stopping
        self.limits = limits or Limits()
        self.save_root = save_root
        self.marks_lock = threading.Lock()
        self.identities = identities or Identities()
        self.daemon_id = os.urandom(8).hex()  # a sender resends what it sent a daemon before this one
        self.attr_names = OwnerNames(self.limits.max_attr_names, "attribute names", "--max-attr-names",
                                     "put varying data in values, not names")
        self.labels = OwnerNames(self.limits.max_labels_per_user, "labels", "--max-labels-per-user",
                                 "put varying data in attributes, not labels")
        self.owner_marks: dict[str, int] = {}  # marks held per owner (written ones included)
        self.owner_pending: dict[str, int] = {}  # of those, not yet written (all of them, without a writer)
        self.owner_bytes: dict[str, int] = {}  # bytes of each owner's marks as held (what the parts take, at most)
        self.disk: Optional[DiskQuota] = None  # the run's parts and --max-out-bytes, with a writer
        # per hold, with a writer: (store length after it, owner, marks, source: (kind, id, position) or None)
        self._holds: collections.deque = collections.deque()
        self._durable: dict[tuple, int] = {}  # (kind, id) -> position written: a ring's bytes, a sender's seq
        self._pending_lock = threading.Lock()
        self.dedupe = Dedupe()
        self.heavy = FairSlots(self.limits.max_heavy, self.limits.max_queries_per_user, QUERY_WAIT_S)
        self.intake = FairSlots(self.limits.max_intake, self.limits.max_intake_per_user)
        self.streams = threading.BoundedSemaphore(self.limits.max_streams)
        self.backlog: Optional[Callable[[], int]] = None  # marks accepted but not yet on disk (with --out)
        self.consumers = None  # daemon/consumers.ConsumerAccount with --consumers
        self.write_soon = threading.Event()  # set past half a limit on marks held: the writer writes early
        self._user_streams: dict = {}  # owner -> open streams
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
                              stats=stats, skipped=skipped, marks=self._marks_seen_by(self.identities.of(context)),
                              period_ns=p.period_ns)

    def _marks_seen_by(self, caller: Caller) -> int:
        """The marks a caller's queries read: its own, or every owner's for an admin."""
        return len(self.probe.marks_store) if caller.admin else self.owner_marks.get(caller.owner, 0)

    # -- marks ---------------------------------------------------------------------------------
    def RecordMarks(self, request, context):
        # a few batches are read at once (each may cost tens of MB while parsed), a few per user, so
        # that one user's flood leaves the others room; the rest are told to come back, which clients
        # do with back-off, their marks kept
        caller = self.identities.of(context)
        with _fair_slot(context, self.intake, caller.owner, grpc.StatusCode.UNAVAILABLE,
                        f"{caller.owner} has {self.limits.max_intake_per_user} batches being read, its share",
                        f"{self.limits.max_intake} batches are being read",
                        "; retry shortly, no mark of this batch was recorded"):
            return self._record_marks(request, context, caller)

    def _record_marks(self, request, context, caller: Caller):
        cols = request.columns
        if cols.daemon_id and cols.daemon_id != self.daemon_id:  # the sender's unacknowledged marks went to
            # a daemon before this one: it sends them again first, then this batch
            return pb.RecordMarksReply(restarted=True, daemon_id=self.daemon_id,
                                       durable_seq=self.durable_seq(cols.sender_id))
        if cols.write_now:
            self.write_soon.set()
        try:
            _only_frames(request)
            table, names = (_frames(cols.frames, cols.pid, caller.owner, pid_vouched(caller, cols.pid))
                            if cols.frames else (None, ()))
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
                                 table.nbytes if table is not None else 0, caller.owner)
                if table is not None and table.num_rows:
                    source = ("grpc", cols.sender_id, cols.first_seq + sent) if cols.sender_id and cols.first_seq \
                        else None
                    self._hold_owned(store, table, names, caller.owner, source)
                if sent:  # only once the batch is held; an empty batch names no sender
                    self.dedupe.record(cols.sender_id, cols.first_seq, sent)
        except Full as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{e}; no mark of this batch was recorded")
        except Busy as e:  # back-pressure, as for --max-backlog: the client keeps the batch and retries
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{e}; retry shortly, no mark of this batch was recorded")
        return pb.RecordMarksReply(accepted=sent, daemon_id=self.daemon_id, durable_seq=self.durable_seq(cols.sender_id))

    def durable_seq(self, sender_id: int) -> int:
        """The sender's next sequence number not yet durable: its marks below it are written (with a
        writer) or held (without one)."""
        if not sender_id:
            return 0
        if self.backlog is None:
            return self.dedupe.next_seq(sender_id)
        self._pending_of(None)  # the holds the writer has passed, into _durable
        with self._pending_lock:
            return self._durable.get(("grpc", sender_id), 0)

    def resume(self, done: dict) -> None:
        """What the runs before this daemon under --out wrote (parquet.latest_progress): each sender's
        marks below its number are skipped when sent again, and count as durable."""
        for sender, next_seq in done.get("grpc", {}).items():
            self.dedupe.record(sender, 1, next_seq - 1)
            with self._pending_lock:
                _furthest(self._durable, ("grpc", sender, next_seq))

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

    def _check_held(self, new: int, new_bytes: Optional[int], owner: Optional[str] = None) -> None:
        """Full when ``new`` more marks would pass --max-marks; Busy when ``new_bytes`` more would
        pass --max-mark-bytes (an empty store takes any batch, as an empty backlog does; None: not
        checked), or when ``owner``'s marks not yet written would pass its share (half of
        --max-marks and of --max-backlog: one user's flood leaves the others room). With
        marks_lock held."""
        self._check_disk(new_bytes or 0, owner)
        held, held_bytes = self._held()
        mine = self._pending_of(owner)
        share = self._share()
        if mine and mine + new > share:
            raise Busy(f"{owner} has {mine} marks not yet written, its share of what the daemon holds unwritten "
                       f"({share}: half of --max-backlog, or of --max-marks without --out)")
        self._write_early_past_half(held + new, held_bytes + (new_bytes or 0))
        if held + new > self.limits.max_marks:
            raise Full(f"the daemon holds {held} marks in memory and keeps at most {self.limits.max_marks} "
                       "(--max-marks): marks leave memory once written (every --flush-s); raise the limit")
        if new_bytes is not None and held_bytes and held_bytes + new_bytes > self.limits.max_mark_bytes:
            raise Busy(f"the daemon holds {size_text(held_bytes)} of marks in memory, and these "
                       f"{size_text(new_bytes)} would pass its limit ({size_text(self.limits.max_mark_bytes)}, "
                       "--max-mark-bytes) until its next write (every --flush-s)")

    def ring_room(self, owner: Optional[str] = None) -> int:
        """How many more marks the daemon takes now (memory and write backlog), for ring drains of
        ``owner``'s ring (within its share)."""
        behind = self.backlog() if self.backlog is not None else 0
        held, held_bytes = self._held()
        self._write_early_past_half(held, held_bytes, behind)
        if held_bytes >= self.limits.max_mark_bytes:
            return 0
        try:
            self._check_disk(0, owner)
        except Full:  # the marks wait in the ring, in the client's memory
            return 0
        return min(self.limits.max_marks - held,
                   self.limits.max_backlog - behind if behind else self.limits.max_backlog,
                   self._share() - self._pending_of(owner))

    def durable_index(self) -> int:
        """How many of the store's marks are durable: written by the writer, or, without one, held."""
        store = self.probe.marks_store
        return len(store) - self.backlog() if self.backlog is not None else len(store)

    def progress_through(self, index: int) -> dict:
        """What the store's first ``index`` marks hold of each source, for the part that writes them:
        {"ring": {ring id: position}, "grpc": {sender id: next seq}} (ids as text), so that a daemon
        started after a crash skips what this one wrote and did not yet hand back."""
        self._pending_of(None)  # the holds already written, into _durable
        with self._pending_lock:
            done = dict(self._durable)
            for end, _, _, source in self._holds:
                if end > index:
                    break
                if source is not None:
                    _furthest(done, source)
        out: dict = {"ring": {}, "grpc": {}}
        for (kind, ident), position in done.items():
            out[kind][str(ident)] = position
        return out

    def _check_disk(self, new_bytes: int, owner: Optional[str]) -> None:
        """Full when the run's parts take --max-out-bytes, or when ``owner``'s marks would pass half of
        it (their bytes as held, an upper bound on what Parquet writes): one user never fills the disk."""
        disk = self.disk
        if disk is None:
            return
        used = disk.used()
        if used >= disk.cap:
            raise Full(f"the run's parts in {disk.root} take {size_text(used)}, the daemon's limit (--max-out-bytes "
                       f"{size_text(disk.cap)}): new marks are refused and nothing written is deleted; move the run "
                       "away and restart the daemon, or raise the limit")
        mine = self.owner_bytes.get(owner or "", 0)
        if mine + new_bytes > disk.cap // 2:
            raise Full(f"{owner} has sent {size_text(mine)} of marks, its share of the disk the run may take (half "
                       f"of --max-out-bytes {size_text(disk.cap)}): new marks of this user are refused")

    def _share(self) -> int:
        """The marks one owner may have accepted and not yet written: half of what the daemon holds
        unwritten (--max-backlog with a writer, --max-marks without), so that one user never takes
        it all."""
        budget = self.limits.max_marks if self.backlog is None else min(self.limits.max_marks, self.limits.max_backlog)
        return max(budget // 2, 1)

    def _pending_of(self, owner: Optional[str]) -> int:
        """``owner``'s marks accepted and not yet written: the holds the writer has passed are let go
        first (without a writer, nothing is written)."""
        with self._pending_lock:
            if self.backlog is not None and self._holds:
                written = self.durable_index()
                while self._holds and self._holds[0][0] <= written:
                    _, who, n, source = self._holds.popleft()
                    if source is not None:
                        _furthest(self._durable, source)
                    left = self.owner_pending[who] - n
                    if left > 0:
                        self.owner_pending[who] = left
                    else:
                        del self.owner_pending[who]
            return self.owner_pending.get(owner or "", 0)

    def record_columns(self, table, attr_names, room_found: bool = True, owner: Optional[str] = None,
                       source: Optional[tuple] = None) -> int:
        """A ring drain's marks (a pyarrow Table of store.mark_schema()); Full when they would pass
        --max-marks or the attribute-name cap, Busy --max-mark-bytes (then none is held).
        ``room_found``: the drain began with ring_room() > 0, and its marks may pass
        --max-mark-bytes by this drain (at most rings.DRAIN_BUDGET_BYTES of ring): they are out of
        the ring and cannot wait any more. ``source``: (kind, id, position) for the progress record
        (progress_through). Returns the store's length with them in it: they are durable once the
        writer has written that many (durable_index)."""
        with self.marks_lock:
            self._check_held(table.num_rows, None if room_found else table.nbytes,  # a ring holds 1.4 M small marks
                             None if room_found else owner)
            return self._hold_owned(self.probe.marks_store, table, attr_names, owner, source)

    def _hold_owned(self, store, table, attr_names, owner: Optional[str], source: Optional[tuple] = None) -> int:
        """``owner``'s marks as a table into the store, within its share of attribute names and labels
        (Full names the user and the limit, and then none is held). With marks_lock held."""
        import pyarrow.compute as pc

        key = owner or ""
        new_attrs = self.attr_names.new_names(key, set(attr_names))
        new_labels = self.labels.new_names(key, set(pc.unique(table.column("label")).to_pylist()))
        store.extend_table(table, pc.max(table.column("end_ns")).as_py() or 0)
        self.attr_names.admit(key, new_attrs)
        self.labels.admit(key, new_labels)
        self.owner_marks[key] = self.owner_marks.get(key, 0) + table.num_rows
        self.owner_bytes[key] = self.owner_bytes.get(key, 0) + table.nbytes
        with self._pending_lock:
            self.owner_pending[key] = self.owner_pending.get(key, 0) + table.num_rows
            end = len(store)
            if self.backlog is not None:  # a writer will pass it (without one, nothing is ever written)
                self._holds.append((end, key, table.num_rows, source))
        return end

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

    @contextlib.contextmanager
    def _user_stream(self, context):
        """One of the caller's --max-streams-per-user streams: one user's streams never take them
        all. Unverified callers (a raw stub without a session) share half such an allowance, so a user
        who also calls unverified cannot take every stream (4 + 2 of the default 8)."""
        caller = self.identities.of(context)
        owner = caller.owner
        cap = self.limits.max_streams_per_user
        if owner == UNVERIFIED:
            cap = max(cap // 2, 1)
        with self._user_lock:
            n = self._user_streams.get(owner, 0)
            if n >= cap:
                who = (f"{owner} has {n} sample streams open, the daemon's limit per user" if owner != UNVERIFIED else
                       f"unverified callers (no session) have {n} sample streams open, their share (half the limit "
                       "per user)")
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{who} (--max-streams-per-user): close one, or raise the limit")
            self._user_streams[owner] = n + 1
        try:
            yield
        finally:
            with self._user_lock:
                self._user_streams[owner] -= 1

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
                    yield pb.SampleBatch(t_ns=part[0].tolist(), prev_t_ns=part[1].tolist(), energy_j_or_power_w=part[2].tolist(),
                                         channel=part[3].tolist(), flags=part[4].tolist())
            self.stopping.wait(STREAM_POLL_S)
            cols, index = store.columns_from(index)

    # -- queries -------------------------------------------------------------------------------
    def _check_rows(self, context, start_ns: Optional[int], end_ns: Optional[int], what: str,
                    caller: Optional[Caller] = None) -> None:
        """Refuses a query that would read more samples than --max-query-samples at once, or (one
        over every mark the ``caller`` sees) more marks than --max-query-marks."""
        marks = caller is not None
        held = self._marks_seen_by(caller) if marks else 0
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

    def _heavy(self, context, caller: Caller):
        """One of the few queries that may run at once (each may read a long history), within the
        caller's share; it waits its turn with other users' for up to QUERY_WAIT_S."""
        return _fair_slot(context, self.heavy, caller.owner, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{caller.owner} has {self.limits.max_queries_per_user} long queries (Summary, Table, Save, "
                          "Energy) running, its share (--max-queries-per-user)",
                          f"the daemon's {self.limits.max_heavy} long-query slots stayed busy for {QUERY_WAIT_S:g} s",
                          ": retry when one has finished")

    def Energy(self, request, context):
        if request.end_ns < request.start_ns:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "end_ns is before start_ns")
        self._check_rows(context, request.start_ns, request.end_ns, "this Energy query")
        with self._heavy(context, self.identities.of(context)):
            rows = self.probe.energy(request.start_ns, request.end_ns)
        return pb.EnergyReply(domains=[pb.DomainEnergy(**r) for r in rows])

    def Summary(self, request, context):
        caller = self.identities.of(context)
        self._check_rows(context, None, None, "a summary of the whole run", caller)
        with self._heavy(context, caller):
            rows = self.probe.summary(owner=_view(context, caller, request.owner)).to_pylist()
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
        caller = self.identities.of(context)
        try:  # an admin's saves go where it names; a user's into a folder of its own, named for it
            fd, shown = self.save_root.open(request.directory, None if caller.admin else caller.folder)
        except Refused as e:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except OSError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot make {request.directory}: {e.strerror}")
        try:
            self._check_rows(context, None, None, "saving the whole run", caller)
            # the folder is reached through its descriptor: nothing renamed or linked meanwhile is followed
            with self._heavy(context, caller):
                paths = self.probe.save(f"/proc/self/fd/{fd}", owner=_view(context, caller))
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

        caller = self.identities.of(context)
        owner = _view(context, caller, request.owner)
        self._check_rows(context, None, None, f"the {request.name} table of the whole run",
                         caller if request.name != "samples" else None)
        if request.name == "consumers" and self.consumers is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "this daemon records no consumers: start it with --consumers process (or cgroup, "
                          "process,cgroup)")
        with self._heavy(context, caller):
            if request.name == "samples":  # the machine's readings: the same for every user
                table = self.probe.samples()
            elif request.name == "consumers":  # each user their own processes and cgroups, the rest added up
                table = self.consumers.table(None if caller.admin else
                                             (caller.uid if caller.uid is not None else -2))
            else:
                table = {"intervals": self.probe.intervals, "labels": self.probe.summary,
                         "requests": self.probe.requests}[request.name](
                    owner=owner)
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
    known.columns.daemon_id, known.columns.write_now = cols.daemon_id, cols.write_now
    if request.ByteSize() != known.ByteSize():
        raise ValueError(f"this daemon (API {API_VERSION}) takes marks only as frames (MarkColumns.frames, "
                         "cpp/include/greenprobe/mark_ring.hpp); the batch holds marks one by one or as columns, "
                         "as clients of API 1 sent them: use a greenprobe client of this version")


def _furthest(done: dict, source: tuple) -> None:
    """``done[(kind, id)]`` moved on to ``source``'s position (kind, id, position), never back."""
    key = source[:2]
    done[key] = max(done.get(key, 0), source[2])


def _view(context, caller: Caller, asked: str = "") -> Optional[str]:
    """The owner whose marks a caller's query reads: ``asked`` (an admin may name anyone, anyone else
    only themselves), else its own, or every owner's (None) for an admin."""
    if asked and not caller.admin and asked != caller.owner:
        context.abort(grpc.StatusCode.PERMISSION_DENIED,
                      f"you are {caller.owner}: only an admin (root, the daemon's user, --admin-group) reads another "
                      f"user's marks ({asked})")
    if asked:
        return asked
    return None if caller.admin else caller.owner


def pid_vouched(caller: Caller, pid: int) -> bool:
    """Whether the kernel vouches for a pid a batch claims: the caller's session was registered by
    that process, or by an ancestor of it (a worker the client forked sends for it)."""
    if caller.pid is None or pid <= 0:
        return False
    for _ in range(64):
        if pid == caller.pid:
            return True
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        pid = int(stat[stat.rindex(b")") + 2:].split()[1])  # after the name, which may hold anything
        if pid <= 1:
            return False
    return False


def _frames(frames: bytes, pid: int, owner: Optional[str] = None, pid_verified: Optional[bool] = None):
    """A batch's frames as a table of store.mark_schema() (the marks of ``owner``) and its attribute
    names; ValueError, naming the first bad mark, when any mark in them is bad (a batch is held whole
    or refused whole)."""
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
    return columns_table(cols, owner, pid_verified), cols["attr_names"]


class DiskQuota:
    """What the run's parts take on disk (--out or the spool), measured after each write, and its cap."""

    def __init__(self, root, cap: int = 0):
        import shutil

        self.root = root
        self.cap = cap or max(shutil.disk_usage(root).free // 2, 1)
        self._used = 0
        self.measure()

    def used(self) -> int:
        return self._used

    def measure(self) -> int:
        self._used = bytes_under(self.root)
        return self._used


@contextlib.contextmanager
def _fair_slot(context, slots: FairSlots, owner: str, code, share: str, busy: str, then: str):
    """One of ``slots`` for the block, within ``owner``'s share, or the call is answered ``code``
    with why (``share``: the owner's share is in use; ``busy``: no slot freed in time) and ``then``."""
    why = slots.acquire(owner)
    if why is not None:
        context.abort(code, (share if why == "share" else busy) + then)
    try:
        yield
    finally:
        slots.release(owner)


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

