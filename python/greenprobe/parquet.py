"""Parquet output: samples.parquet and intervals.parquet, with the session metadata in both.

The schema (units, clock, meaning of every column) is documented in docs/SCHEMA.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .attribution import attribute
from .frames import value_text
from .store import Part, mark_attrs, of_owner, part_name, part_span

METADATA_KEY = b"greenprobe"
PROGRESS_KEY = b"greenprobe_progress"  # a marks part's: what it and the parts before hold of each source

#: interval columns that attributes may not shadow (an attribute with such a name gets "attr_")
RESERVED = {
    "label", "start_ns", "end_ns", "duration_s", "thread_id", "ok", "sensor", "domain", "energy_j",
    "energy_j_low", "energy_j_high", "estimated", "below_update_period", "update_period_ns", "complete",
    "counter_glitch", "bounds_need_ceiling", "method", "mark_index", "baseline_power_w", "energy_j_net",
    "owner", "pid_verified",
}


def samples_table(probe) -> pa.Table:
    t, prev, v, ch, fl = probe.samples_store.columns()
    order = np.lexsort((t, ch))
    t, prev, v, ch, fl = t[order], prev[order], v[order], ch[order], fl[order]
    chans = probe.channel_info()
    sensor = np.array([c["sensor"] for c in chans], dtype=object)
    domain = np.array([c["domain"] for c in chans], dtype=object)
    is_power = np.array([c["quantity"] == "power" for c in chans], dtype=bool)
    estimated = np.array([c["estimated"] for c in chans], dtype=bool)
    idx = ch.astype(np.int64)
    power_mask = is_power[idx] if len(chans) else np.zeros(0, bool)
    return pa.table({
        "t_ns": pa.array(t, pa.int64()),
        "prev_t_ns": pa.array(prev, pa.int64()),
        "channel": pa.array(ch, pa.uint32()),
        "sensor": pa.array(sensor[idx] if len(chans) else [], pa.string()).dictionary_encode(),
        "domain": pa.array(domain[idx] if len(chans) else [], pa.string()).dictionary_encode(),
        "energy_j": pa.array(np.where(power_mask, np.nan, v), pa.float64(), mask=power_mask),
        "power_w": pa.array(np.where(power_mask, v, np.nan), pa.float64(), mask=~power_mask),
        "estimated": pa.array(estimated[idx] if len(chans) else [], pa.bool_()),
        "flags": pa.array(fl, pa.uint32()),
    }).replace_schema_metadata({METADATA_KEY: json.dumps(session_metadata(probe)).encode()})


def intervals_table(probe, owner: Optional[str] = None) -> pa.Table:
    """One row per (mark, sensor, domain); ``owner``: only that identity's marks."""
    marks = probe.marks_table(owner=owner)
    n = marks.num_rows
    start = marks.column("start_ns").to_numpy().astype(np.int64, copy=False)
    end = marks.column("end_ns").to_numpy().astype(np.int64, copy=False)
    mark_attrs_ = mark_attrs(marks)
    channels = probe.channels()
    per_channel = attribute(start, end, channels) if n else []
    idle = {(b["sensor"], b["domain"]): b["power_w"] for b in probe.baseline(channels)}
    cols: dict[str, list] = {k: [] for k in (
        "label", "start_ns", "end_ns", "duration_s", "thread_id", "ok", "sensor", "domain", "energy_j",
        "energy_j_low", "energy_j_high", "estimated", "below_update_period", "update_period_ns", "complete",
        "counter_glitch", "bounds_need_ceiling", "method", "mark_index", "baseline_power_w", "energy_j_net",
        "owner", "pid_verified")}
    attr_names: list[str] = []
    for a in mark_attrs_:
        for k in a:
            name = k if k not in RESERVED else f"attr_{k}"
            if name not in attr_names:
                attr_names.append(name)
    attrs: dict[str, list] = {a: [] for a in attr_names}
    labels = marks.column("label").to_pylist()
    thread_ids, oks = marks.column("thread_id").to_pylist(), marks.column("ok").to_pylist()
    owners, vouched = marks.column("owner").to_pylist(), marks.column("pid_verified").to_pylist()
    for res in per_channel:
        ch = res["channel"]
        cols["label"] += labels
        cols["start_ns"].append(start)
        cols["end_ns"].append(end)
        cols["duration_s"].append((end - start) * 1e-9)
        cols["thread_id"] += thread_ids
        cols["ok"] += oks
        cols["owner"] += owners
        cols["pid_verified"] += vouched
        cols["sensor"] += [ch.sensor] * n
        cols["domain"] += [ch.domain] * n
        cols["energy_j"].append(res["energy_j"])
        cols["energy_j_low"].append(res["energy_j_low"])
        cols["energy_j_high"].append(res["energy_j_high"])
        cols["estimated"] += [ch.estimated] * n
        cols["below_update_period"].append(res["below_update_period"])
        cols["update_period_ns"].append(np.full(n, res["update_period_ns"], np.int64))
        cols["complete"].append(res["complete"])
        cols["counter_glitch"].append(res["counter_glitch"])
        cols["bounds_need_ceiling"].append(res["bounds_need_ceiling"])
        cols["method"] += [res["method"]] * n
        cols["mark_index"].append(np.arange(n, dtype=np.int64))
        p_idle = idle.get((ch.sensor, ch.domain), np.nan)
        cols["baseline_power_w"].append(np.full(n, p_idle))
        cols["energy_j_net"].append(res["energy_j"] - p_idle * (end - start) * 1e-9)
        for a in attr_names:
            key = a[5:] if a.startswith("attr_") and a[5:] in RESERVED else a
            attrs[a] += [m.get(key) for m in mark_attrs_]

    def cat(name, dtype):
        parts = cols[name]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    data = {
        "label": pa.array(cols["label"], pa.string()),
        "start_ns": pa.array(cat("start_ns", np.int64), pa.int64()),
        "end_ns": pa.array(cat("end_ns", np.int64), pa.int64()),
        "duration_s": pa.array(cat("duration_s", np.float64), pa.float64()),
        "sensor": pa.array(cols["sensor"], pa.string()),
        "domain": pa.array(cols["domain"], pa.string()),
        "energy_j": pa.array(cat("energy_j", np.float64), pa.float64()),
        # null across a counter step the sampler excluded (counter_glitch): that energy is unknown;
        # high null where power readings leave part of the interval unseen and no ceiling bounds it
        "energy_j_low": pa.array(cat("energy_j_low", np.float64), pa.float64(), from_pandas=True),
        "energy_j_high": pa.array(cat("energy_j_high", np.float64), pa.float64(), from_pandas=True),
        "estimated": pa.array(cols["estimated"], pa.bool_()),
        "below_update_period": pa.array(cat("below_update_period", bool), pa.bool_()),
        "update_period_ns": pa.array(cat("update_period_ns", np.int64), pa.int64()),
        "complete": pa.array(cat("complete", bool), pa.bool_()),
        "counter_glitch": pa.array(cat("counter_glitch", bool), pa.bool_()),
        "bounds_need_ceiling": pa.array(cat("bounds_need_ceiling", bool), pa.bool_()),
        "method": pa.array(cols["method"], pa.string()),
        "thread_id": pa.array(cols["thread_id"], pa.uint64()),
        "ok": pa.array(cols["ok"], pa.bool_()),
        "mark_index": pa.array(cat("mark_index", np.int64), pa.int64()),
        # null where no idle baseline was measured (Probe(baseline_s=...))
        "baseline_power_w": pa.array(cat("baseline_power_w", np.float64), pa.float64(), from_pandas=True),
        "energy_j_net": pa.array(cat("energy_j_net", np.float64), pa.float64(), from_pandas=True),
        # whose mark (a daemon's client: daemon/identity.py; null for a local Probe's own), and
        # whether the kernel vouched for its pid attribute
        "owner": pa.array(cols["owner"], pa.string()),
        "pid_verified": pa.array(cols["pid_verified"], pa.bool_()),
    }
    for a, values in attrs.items():
        data[a] = attr_column(values)
    return pa.table(data).replace_schema_metadata({METADATA_KEY: json.dumps(session_metadata(probe)).encode()})


def attr_column(values: list) -> pa.Array:
    """One attribute's values as a column Parquet can hold: bool, int64, float64 or string as they
    come; any other mix (an integer beyond 64 bits, a list, a dict, empty or not, ints and strings)
    as text, JSON for containers, so one odd value never stops a save."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) == 1 or kinds == {int, float}:
        try:
            col = pa.array(values)
            if col.type in (pa.bool_(), pa.int64(), pa.float64(), pa.string()) or col.null_count == len(col):
                return col
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    return pa.array([None if v is None else value_text(v) for v in values], pa.string())


LABEL_COLUMNS = ["label", "sensor", "domain", "status", "reason", "calls", "time_s_mean", "time_s_per_call",
                 "energy_j_per_call", "energy_j_per_call_low", "energy_j_per_call_high", "energy_j_per_call_net",
                 "energy_j_per_call_net_low", "energy_j_per_call_net_high", "energy_j_per_call_exclusive",
                 "time_s_per_call_exclusive", "power_w", "baseline_power_w", "baseline_power_w_se",
                 "baseline_source", "regression_idle_power_w", "update_period_ns", "update_period_source",
                 "windows", "dof", "model", "interval_target", "estimated", "method", "resolution",
                 "domains"]


def labels_table(probe, owner: Optional[str] = None) -> pa.Table:
    """The label summary; each owner's labels estimated apart (``owner``: only that one's)."""
    from .store import owners_of
    from .summary import summarise

    channels = probe.channels()
    baseline = probe.baseline(channels)
    marks = probe.marks_table(owner=owner)
    owners = owners_of(marks)
    if not owners:  # a local Probe's marks: no owner
        rows = summarise(marks, channels, baseline)
    else:  # another owner's work is background to each: what each user sees of their own, side by side
        rows = [{"owner": o, **r} for o in owners for r in summarise(of_owner(marks, o), channels, baseline)]
    if rows:
        first = ["owner", *LABEL_COLUMNS] if owners else LABEL_COLUMNS
        names = first + [k for r in rows for k in r if k not in first]
        table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
    else:
        table = pa.table({c: pa.array([], pa.string()) for c in LABEL_COLUMNS})
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(session_metadata(probe)).encode()})


def session_metadata(probe) -> dict:
    anchor = dict(probe.clock_anchor())
    if "wall_ns" in anchor:
        anchor["wall_iso"] = _dt.datetime.fromtimestamp(anchor["wall_ns"] / 1e9, _dt.timezone.utc).isoformat()
    channels = []
    chans = probe.channels() if probe.channel_info() else []
    for c, ch in zip(probe.channel_info(), chans):
        period, source = ch.learned_update_period_ns()
        channels.append({**c, "update_period_ns": period, "update_period_source": source,
                         "edge_timing_ns": ch.edge_timing_ns(), "samples": int(ch.t_ns.size)})
    stats = probe.stats()
    return {
        "format": "greenprobe/1",
        "greenprobe_version": __version__,
        "clock": "CLOCK_MONOTONIC nanoseconds (t_ns, start_ns, end_ns); wall time only in anchor",
        "anchor": anchor,
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
                 "python": platform.python_version()},
        "period_ns": probe.period_ns,
        "sensors": probe.sensor_info(),
        "skipped": [s.as_dict() for s in probe.skipped],
        "channels": channels,
        "stats": stats,
        "drops": int(sum(s["drops"] for s in stats)),
        "max_lag_ns": int(max((s["max_lag_ns"] for s in stats), default=0)),
        "late_polls": int(sum(s["late_polls"] for s in stats)),
        "estimated": any(c["estimated"] for c in probe.channel_info()),
        "marks": len(probe.marks_store),
        "baseline_s": probe.baseline_s,
        "baseline_windows": [{"which": w, "start_ns": a, "end_ns": b} for w, a, b in probe.baseline_windows],
        "baseline": probe.baseline(chans) if probe.channel_info() else [],
    }


def save(probe, directory, owner: Optional[str] = None) -> dict:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"samples": d / "samples.parquet", "intervals": d / "intervals.parquet", "labels": d / "labels.parquet",
             "metadata": d / "metadata.json"}
    _atomic_write_table(samples_table(probe), paths["samples"])
    _atomic_write_table(intervals_table(probe, owner), paths["intervals"])
    _atomic_write_table(labels_table(probe, owner), paths["labels"])
    _atomic_write_text(json.dumps(session_metadata(probe), indent=2, default=str), paths["metadata"])
    requests = probe.requests(owner)
    if requests.num_rows:
        paths["requests"] = d / "requests.parquet"
        _atomic_write_table(requests, paths["requests"])
    consumers = consumers_table(probe)
    if consumers is not None:
        paths["consumers"] = d / "consumers.parquet"
        _atomic_write_table(consumers, paths["consumers"])
    return {k: str(v) for k, v in paths.items()}


def consumers_table(probe) -> Optional[pa.Table]:
    """Energy per consumer over the whole recording, every kind the Probe records (the ``view``
    column tells them apart); None when it records none or too little to say anything."""
    from .errors import ConfigError

    rec = probe.use_recorder
    if rec is None or rec.forgotten_before_ns is not None:  # a daemon's: its parts hold them, window by window
        return None
    tables = []
    for kind in rec.kinds:
        try:
            tables.append(probe.consumers(by=kind))
        except ConfigError:
            continue
    return pa.concat_tables(tables) if tables else None


def _atomic_write_table(table: pa.Table, path: Path, durable: bool = False) -> None:
    _atomic_write(path, lambda f: pq.write_table(table, f), durable)


def _atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def _atomic_write(path: Path, write, durable: bool = False) -> None:
    """Writes through a fresh temporary file in the same folder, then renames it over ``path``: a
    reader sees the whole file or none. The temporary name is made with O_CREAT|O_EXCL|O_NOFOLLOW
    (mkstemp), so a link planted in the folder is never written through, and the file gets the
    mode the umask gives (mkstemp's 0600 would hide it from the group that may read it).
    ``durable``: the file, then its folder's entry, are fsynced: once this returns, a power loss
    keeps it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


#: what to do about a Parquet file greenprobe cannot read, unless the reader knows better
NOT_OURS_FIX = "pass a file greenprobe wrote (samples.parquet, intervals.parquet, a study's tables); this one is " \
               "damaged, cut short or not Parquet"


def _unreadable(path, e: Exception, fix: str):
    from .errors import ConfigError

    if isinstance(e, FileNotFoundError):  # pyarrow's own texts repeat the path
        reason = "no such file"
    elif isinstance(e, OSError) and e.errno:
        reason = os.strerror(e.errno)
    else:
        reason = str(e).split("': ", 1)[-1] if "Parquet input source" in str(e) else str(e)
    return ConfigError(f"cannot read {path} as Parquet: {reason}", fix)


def read_table(path, required: tuple = (), fix: str = NOT_OURS_FIX) -> pa.Table:
    """A Parquet file greenprobe wrote, whole: a ConfigError naming the file and ``fix`` for one that
    is missing, damaged or not Parquet, or that lacks a ``required`` column (a foreign table), where
    pyarrow's own errors would surface as a traceback far from the file's name."""
    from .errors import ConfigError

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:  # ArrowInvalid: not Parquet; OSError: missing, unreadable
        raise _unreadable(path, e, fix) from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ConfigError(f"{path} is not a table greenprobe wrote: it has no column {', '.join(missing)}", fix)
    return table


def read_metadata(path) -> dict:
    """The session metadata stored in a greenprobe Parquet file (a ConfigError for a file that is
    not one: damaged, not Parquet, or Parquet without greenprobe's metadata)."""
    from .errors import ConfigError

    try:
        md = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise _unreadable(path, e, NOT_OURS_FIX) from None
    if METADATA_KEY not in md:
        raise ConfigError(f"{path} holds no greenprobe metadata: another program wrote it", NOT_OURS_FIX)
    try:
        return json.loads(md[METADATA_KEY])
    except ValueError:
        raise ConfigError(f"{path}: its greenprobe metadata is not JSON (damaged?)", NOT_OURS_FIX) from None


def _concat_parts(paths: list, f) -> None:
    """The parts' rows in order into one Parquet file, a few parts at a time (bounded memory)."""
    writer = None
    last = pq.read_schema(paths[-1]).metadata  # the newest part's progress record goes with the merge
    try:
        for i in range(0, len(paths), 32):
            table = pa.concat_tables([pq.read_table(p) for p in paths[i:i + 32]])
            if writer is None:
                writer = pq.ParquetWriter(f, table.schema.with_metadata(last) if last else table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def latest_progress(out) -> dict:
    """What the runs under ``out`` (a daemon's --out) made durable of each source: the progress
    record of each run's newest marks part, the furthest position per source over all runs:
    {"ring": {ring id: position}, "grpc": {sender id: next seq}} (ids as ints)."""
    done: dict = {"ring": {}, "grpc": {}}
    for run in sorted(Path(out).glob("run-*")):
        parts = [(part_span(p.name), p) for p in (run / "parts" / "marks").glob("part-*.parquet")]
        parts = [(span, p) for span, p in parts if span]
        if not parts:
            continue
        try:
            meta = pq.read_schema(max(parts)[1]).metadata or {}
            record = json.loads(meta.get(PROGRESS_KEY, b"{}"))
        except (OSError, ValueError, pa.ArrowInvalid):
            continue  # a part cut short: that run's record is lost, its marks may come again
        for kind in done:
            for ident, position in (record.get(kind) or {}).items():
                key = int(ident)
                done[kind][key] = max(done[kind].get(key, 0), int(position))
    return done


def read_parts(folder) -> pa.Table:
    """A folder of parts (``DIR/parts/samples`` or ``.../marks``) as one table, in order, each row
    once: a part that a merged file ``part-FIRST-LAST.parquet`` also holds (a crash during merging
    leaves both) is skipped. ``pyarrow.parquet.read_table(folder)`` reads the same when no merge
    was cut short."""
    spans = []
    for p in Path(folder).iterdir():
        span = part_span(p.name)
        if span:
            spans.append((*span, p))
    spans.sort(key=lambda s: (s[0], -s[1]))  # a merged file before the parts it holds
    keep, covered = [], 0
    for first, last, p in spans:
        if last <= covered:
            continue
        keep.append(p)
        covered = last
    if not keep:
        raise FileNotFoundError(f"no part-*.parquet in {folder}")
    return pa.concat_tables([pq.read_table(p) for p in keep])


class PartWriter:
    """Writes what a long session gathers as it goes, one Parquet file per flush, so that a process
    killed without warning (SIGKILL, power loss) leaves everything up to its last flush readable:

        DIR/parts/samples/part-00000001.parquet ...  the sample columns of samples.parquet
        DIR/parts/marks/part-00000001.parquet ...    label, start_ns, end_ns, thread_id, ok, attrs (JSON)
        DIR/parts/metadata.json                      sensors and channels, written at the start

    ``pyarrow.parquet.read_table(DIR/parts/samples)`` reads a folder of parts as one table. Each part
    is written under a temporary name and renamed, so a part is either whole or absent. Each part is
    registered with the probe's stores, so ``forget`` can then drop its rows from memory: queries
    read them back from the part.
    """

    def __init__(self, probe, directory, metadata: Optional[dict] = None, progress=None):
        """``probe``: a Probe, or anything with its two stores (``_samples``, ``_records``) when
        ``metadata`` is given. ``progress(n)``: what the store's first n marks hold of each source
        (the daemon's servicer.progress_through), kept in each marks part's metadata, so that the
        next daemon skips what a crashed one wrote (latest_progress). Each part is fsynced before
        it is named: a part that is there is on disk."""
        self.probe = probe
        self.progress = progress
        self.root = Path(directory) / "parts"
        (self.root / "samples").mkdir(parents=True, exist_ok=True)
        (self.root / "marks").mkdir(parents=True, exist_ok=True)
        self.samples_done = 0
        self.marks_done = 0
        self.parts = 0
        metadata = session_metadata(probe) if metadata is None else metadata
        _atomic_write_text(json.dumps(metadata, indent=2, default=str), self.root / "metadata.json")

    def pending_marks(self) -> int:
        """Marks accepted but not written yet."""
        return len(self.probe.marks_store) - self.marks_done

    def flush(self) -> int:
        """Writes the samples and marks that arrived since the last flush; returns the rows written."""

        samples = self.probe.samples_store
        t, prev, v, ch, fl = samples.columns(from_index=self.samples_done)  # arrival order: new rows only
        records = self.probe.marks_store
        marks = records.table(self.marks_done)
        if not t.size and not marks.num_rows:
            return 0
        self.parts += 1
        name = part_name(self.parts)
        if t.size:
            path = self.root / "samples" / name
            # a name that says its unit: cumulative joules of energy counters, watts of power readings
            power = np.isin(ch, [c["channel"] for c in self.probe.channel_info() if c["quantity"] == "power"])
            _atomic_write_table(pa.table({
                "t_ns": pa.array(t, pa.int64()), "prev_t_ns": pa.array(prev, pa.int64()),
                "channel": pa.array(ch, pa.uint32()),
                "energy_j": pa.array(v, pa.float64(), mask=power), "power_w": pa.array(v, pa.float64(), mask=~power),
                "flags": pa.array(fl, pa.uint32())}), path, durable=True)
            samples.spilled(Part(str(path), self.samples_done, self.samples_done + t.size, int(t.min()),
                                 int(t.max())))
            self.samples_done += t.size
        if marks.num_rows:
            path = self.root / "marks" / name
            if self.progress is not None:
                done = json.dumps(self.progress(self.marks_done + marks.num_rows)).encode()
                marks = marks.replace_schema_metadata({PROGRESS_KEY: done})
            _atomic_write_table(marks, path, durable=True)
            if records.SPILLS:
                records.spilled(Part(str(path), self.marks_done, self.marks_done + marks.num_rows))
            self.marks_done += marks.num_rows
        return t.size + marks.num_rows

    def compact(self, count: int) -> int:
        """Merges each run of ``count`` parts that memory no longer holds into one file
        ``part-FIRST-LAST.parquet`` (a day of 2 s flushes is 43,200 parts; merged hourly, 24), then
        removes the originals; returns how many files went. The merged file is renamed into place
        before an original goes: a crash between leaves rows twice in the folder, which
        ``read_parts`` reads once. A query that listed an original reads again from the merged file."""

        gone = 0
        stores = [("samples", self.probe.samples_store)]
        if self.probe.marks_store.SPILLS:
            stores.append(("marks", self.probe.marks_store))
        for folder, store in stores:
            while count > 1:
                parts = store.merge_candidates(count)
                if not parts:
                    break
                first, last = part_span(Path(parts[0].path).name)[0], part_span(Path(parts[-1].path).name)[1]
                path = self.root / folder / part_name(first, last)
                _atomic_write(path, lambda f: _concat_parts([p.path for p in parts], f), durable=True)
                store.merged(parts, Part(str(path), parts[0].start, parts[-1].stop))
                for p in parts:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p.path)
                gone += len(parts) - 1
        return gone

    def forget(self, keep_ns: int) -> None:
        """Drops from memory what the parts hold: marks at once, samples older than ``keep_ns``
        (queries about the recent past, the common ones, stay in memory)."""

        self.probe.samples_store.forget(time.monotonic_ns() - keep_ns)
        if self.probe.marks_store.SPILLS:
            self.probe.marks_store.forget()
