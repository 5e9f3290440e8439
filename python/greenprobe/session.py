"""Probe: the sampler, the marks and the results of one measuring session."""

from __future__ import annotations

import os
import threading
import time
from typing import Optional, Sequence

import numpy as np

from . import _core
from .attribution import FLAG_CHANGED, FLAG_FIRST, Channel, attribute, channels_of, choose_channels
from .consumers import PERIOD_S as CONSUMER_PERIOD_S
from .consumers import UseRecorder, parse_kinds
from .config import KEEPALIVE_MS, MIN_PERIOD_US, MIN_RING_CAPACITY, PERIOD_US, RING_CAPACITY, resolve_options
from .errors import ConfigError
from .marks import _pop_sink, _push_sink
from .records import Mark
from .sensors import open_sensors
from .store import BufferMarks, MarkStore, SampleStore, of_owner

#: the longest wait before an idle window opens (_idle_lead_s)
IDLE_LEAD_MAX_S = 2.0

ENERGY_PAD_NS = 2_000_000_000  # samples read on each side of an energy() query


class Probe:
    """Samples energy sensors in native threads while your code runs; marks become intervals.

    ``sensors``: ``"auto"`` (every sensor this machine has; the CPU estimate only where no CPU
    sensor exists) or a list of specs such as ``["rapl-msr", "nvml"]`` or
    ``["synthetic:waveform=sine;base_w=40"]``. A sensor named explicitly raises if it cannot open.

    ``period_us``: polling period of each sensor (>= 50 µs). NVML is never polled faster than
    ``nvml_min_period_us`` (1000 µs by default: its calls take a driver lock); the CPU estimate
    not faster than 10 ms.

    ``schedule``: ``"fixed"`` polls every period; ``"adaptive"`` learns when each channel updates
    (each GPU in its own phase) and polls (at ``period_us``) only in a window around each predicted update,
    dating updates as precisely as dense polling for a fraction of the wake-ups (see
    benchmarks/RESULTS.md). Falls back to fixed polling when the prediction misses.

    ``baseline_s``: seconds of idle measured right after start and again at stop (nothing marked,
    the process sleeping); ``baseline()`` gives the idle power per channel and intervals and the
    per-label summary then carry energy net of it as well as gross. The two halves are reported
    apart, so a drift (a GPU still cooling down) shows.

    ``clock``: ``"real"`` (the sampler's threads poll on CLOCK_MONOTONIC) or ``"virtual"``: no
    thread runs; each ``poll_at(t_ns)`` polls every sensor once, dated ``t_ns``, through the same
    steps, and marks come with their times (``add_mark``). For stand-ins and recordings that must not
    race the wall clock (a busy machine delays a thread, not a virtual poll).

    ``columnar_marks``: keep marks as columns (``store.MarkStore``: ~40 bytes and the attributes'
    text per mark) rather than in the C buffer that ``mark()`` appends to fastest; the daemon's
    choice, whose marks arrive in batches and leave memory once written.

    Sensor options (paths such as ``nvml_library`` and ``powercap_root``, ``cpu_tdp_w``, ...: each
    kind's row in the registry, listed by ``greenprobe sensors -v``) override the matching
    ``GREENPROBE_*`` environment variables; an option no kind reads is a ConfigError.
    """

    def __init__(
        self,
        sensors: str | Sequence[str] = "auto",
        period_us: float = PERIOD_US,
        *,
        keepalive_ms: float = KEEPALIVE_MS,
        ring_capacity: int = RING_CAPACITY,
        record_all: bool = False,
        schedule: str = "fixed",
        drain_interval_s: float = 0.05,
        settle_timeout_s: float = 2.0,
        baseline_s: float = 0.0,
        columnar_marks: bool = False,
        clock: str = "real",
        consumers: Optional[str | Sequence[str]] = None,
        consumer_period_s: float = CONSUMER_PERIOD_S,
        cgroup_root: Optional[str] = None,
        pods_root: Optional[str] = None,
        **options,
    ):
        if clock not in ("real", "virtual"):
            raise ConfigError(f"clock must be 'real' or 'virtual', not {clock!r}",
                              "pass clock='real' (the default) or clock='virtual' (poll_at drives the polls)")
        if clock == "virtual" and baseline_s:
            raise ConfigError("baseline_s needs the real clock (it sleeps through an idle window)",
                              "leave baseline_s out with clock='virtual', or use clock='real'")
        self.clock = clock
        self._virtual_t: Optional[int] = None  # the last poll_at's time
        if period_us < MIN_PERIOD_US:
            raise ConfigError(f"period_us must be >= {MIN_PERIOD_US}, got {period_us}",
                              f"pass period_us={MIN_PERIOD_US} or more (on the command line: "
                              f"--period-us {MIN_PERIOD_US} or more)")
        if ring_capacity < MIN_RING_CAPACITY:
            raise ConfigError(f"ring_capacity must be >= {MIN_RING_CAPACITY}, got {ring_capacity}",
                              f"pass ring_capacity={MIN_RING_CAPACITY} or more, or leave it out (the default, "
                              f"{RING_CAPACITY})")
        self.sensor_request = sensors
        self.period_ns = int(period_us * 1000)
        self.keepalive_ns = int(keepalive_ms * 1e6)
        self.ring_capacity = int(ring_capacity)
        self.record_all = bool(record_all)
        if schedule not in ("fixed", "adaptive"):
            raise ConfigError(f"schedule must be 'fixed' or 'adaptive', not {schedule!r}",
                              "pass schedule='fixed' (the default) or schedule='adaptive'")
        self.schedule = schedule
        if baseline_s < 0:
            raise ConfigError(f"baseline_s must be >= 0, got {baseline_s}",
                              "pass baseline_s=0 (no idle measurement) or more (on the command line: "
                              "--baseline SECONDS)")
        self.baseline_s = float(baseline_s)
        self.baseline_windows: list[tuple[str, int, int]] = []  # ("before"|"after", start_ns, end_ns)
        self.drain_interval_s = float(drain_interval_s)
        self.settle_timeout_s = float(settle_timeout_s)
        resolved = resolve_options(options)  # validates now, so a bad argument fails at construction
        self.options = options
        self.consumer_kinds = parse_kinds(consumers)
        self._consumer_args = {"period_s": consumer_period_s,
                               "proc_root": resolved.get("proc_root") or "/proc",
                               "cgroup_root": cgroup_root or os.environ.get("GREENPROBE_CGROUP_ROOT") or "/sys/fs/cgroup",
                               "pods_root": pods_root}  # None: $GREENPROBE_PODS_ROOT, else /var/log/pods
        self._use: Optional[UseRecorder] = None
        if self.consumer_kinds:  # a bad kind, period or root fails here, not at start
            UseRecorder(self.consumer_kinds, **self._consumer_args)
        self.skipped = []
        self._sensors = []
        self._sampler = None
        self._samples = SampleStore()
        # the daemon keeps marks in columns (a batch arrives as one); a local Probe in the C buffer
        # its mark() appends to fastest
        self._records = MarkStore() if columnar_marks else BufferMarks()
        self._drain_thread: Optional[threading.Thread] = None
        self._stop_event = threading.Event()
        self._channels: list[dict] = []
        self._anchor: dict = {}
        self._stats: list[dict] = []
        self._started = False
        self._stopped = False
        self._sensor_info: list[dict] = []

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> "Probe":
        if self._started:
            raise RuntimeError("this Probe was already started; make a new one")
        self._sensors, self.skipped = open_sensors(self.sensor_request, self.options)
        self._sampler = _core.Sampler(self._sensors, self.period_ns, self.ring_capacity, self.keepalive_ns,
                                      self.record_all, self.schedule == "adaptive")
        self._channels = self._sampler.channels()
        self._sensor_info = [{"kind": s.kind, "info": dict(s.info()), "min_period_ns": s.min_period_ns}
                             for s in self._sensors]
        self._anchor = {"monotonic_ns": _core.now_ns(), "wall_ns": _core.wall_ns(), "pid": os.getpid()}
        self._started = True
        if self.consumer_kinds:
            from .consumer_fit import gpu_kind
            from .usage import open_gpus

            clock = (lambda: self._virtual_t or 0) if self.clock == "virtual" else _core.now_ns
            gpu_readers = open_gpus(self.sensor_request, self.options)[0] if any(
                gpu_kind(c["sensor"]) for c in self._channels) else []
            self._use = UseRecorder(self.consumer_kinds, clock=clock, gpu_readers=gpu_readers, **self._consumer_args)
        if self.clock == "virtual":
            return self
        self._sampler.start()
        if self._use is not None:
            self._use.start()
        self._drain_thread = threading.Thread(target=self._drain_loop, name="greenprobe-drain", daemon=True)
        self._drain_thread.start()
        self.settle(after_ns=self._anchor["monotonic_ns"])
        self._measure_idle("before")
        if self.baseline_windows:
            # the work must not share the idle window's last update period: interpolating the
            # counter at the window's end would move a share of the work's energy into the idle
            self.settle(after_ns=self.baseline_windows[-1][2])
        _push_sink(self._records.sink)
        return self

    def _measure_idle(self, which: str) -> None:
        """An idle window of baseline_s, opened once the counters' update period around its start holds
        no work: interpolating a counter there would move a share of what ran just before (the
        program's start, another process that was just seen to disturb the last window) into it.
        Measured: a window opened at once after a busy process stopped read 81.8-91.7 W of an 80 W
        idle on a GPU whose counter moves every 100 ms (test_study_disturbed)."""
        if self.baseline_s <= 0:
            return
        time.sleep(self._idle_lead_s())
        a = _core.now_ns()
        time.sleep(self.baseline_s)
        self.baseline_windows.append((which, a, _core.now_ns()))

    def _idle_lead_s(self) -> float:
        """1.5 of the slowest counter's update period (learned, else nominal; at most IDLE_LEAD_MAX_S):
        the update before the window's start then comes after whatever ran before the call."""
        try:
            chosen = choose_channels(self.channels(_core.now_ns() - int(30e9)))
        except (ValueError, ConfigError):  # no samples yet
            chosen = []
        periods = [c.learned_update_period_ns()[0] for c in chosen if c.quantity != "power"] or [0]
        return min(IDLE_LEAD_MAX_S, 1.5 * max(periods) / 1e9)

    def measure_idle_again(self) -> tuple:
        """Measures the latest idle window again (another baseline_s, real clock), in place of the one
        before: the study's, when other processes used the machine during it. Returns the new window
        (which, start_ns, end_ns)."""
        if not self.baseline_windows:
            raise ConfigError("no idle window to measure again", "make the Probe with baseline_s > 0")
        which = self.baseline_windows.pop()[0]
        self._measure_idle(which)
        self.settle(after_ns=self.baseline_windows[-1][2])
        return self.baseline_windows[-1]

    def poll_at(self, t_ns: int, final: bool = False) -> int:
        """With ``clock="virtual"``: polls every sensor once, dated ``t_ns`` (after the last poll's),
        and returns when the schedule would poll next. ``final`` is the stopping poll (``stop()``
        makes one just after the last if none was made)."""
        if self.clock != "virtual":
            raise ConfigError("poll_at drives a Probe made with clock='virtual'; this one runs on the real clock",
                              "make the Probe with clock='virtual', or let its threads poll")
        if not self._started or self._stopped:
            raise ConfigError("poll_at needs a started, not yet stopped Probe", "call start() first (or use `with`)")
        t_ns = int(t_ns)
        if self._virtual_t is not None and t_ns <= self._virtual_t:
            raise ConfigError(f"poll_at({t_ns}) is not after the last poll ({self._virtual_t})",
                              "pass increasing times: a virtual clock runs forward too")
        nxt = self._sampler.poll_at(t_ns, final)
        self._virtual_t = t_ns
        if self._use is not None and (final or self._use.due(t_ns)):
            self._use.read_at(t_ns)
        self._drain_once()
        if final:
            self._finish()
        return nxt

    def stop(self) -> None:
        if not self._started or self._stopped:
            return
        if self.clock == "virtual":
            self.poll_at((self._virtual_t or _core.now_ns()) + 1, final=True)
            return
        _pop_sink(self._records.sink)
        # the work ends now, not at the last mark: what ran after it (a worker process exiting, a
        # runtime's threads winding down) must not fall into the idle window
        last_end = max(_core.now_ns(), self._records.max_end_ns())
        if self.baseline_s > 0:
            # the counters' update after the work first: an idle window that shared an update period
            # with the work's end would take a share of its energy
            self.settle(after_ns=last_end)
            self._measure_idle("after")
            last_end = max([last_end] + [w[2] for w in self.baseline_windows])
        self.settle(after_ns=last_end)
        if self._use is not None:
            self._use.stop()
        self._stop_event.set()
        if self._drain_thread is not None:
            self._drain_thread.join()
        self._sampler.stop()
        self._drain_once()
        self._finish()

    def _finish(self) -> None:
        self._stats = self._sampler.stats()
        # the sensors' facts again, now that their threads have ended: some count what happened while
        # they ran (NVML: field timestamps used and rejected)
        self._sensor_info = [dict(i, info=dict(s.info())) for i, s in zip(self._sensor_info, self._sensors)]
        self._stopped = True
        # the sensors and usage readers go now, not when the garbage collector finds this Probe: each
        # holds its library (NVML's nvmlInit, AMD SMI's) and the devices' handles
        if self._use is not None:
            self._use.close()
        self._sampler, self._sensors = None, []

    def __enter__(self) -> "Probe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # pragma: no cover - best effort
        try:
            if self._started and not self._stopped:
                self.stop()
        except Exception:
            pass

    # -- draining ------------------------------------------------------------------------------
    def _drain_once(self) -> int:
        cols = self._sampler.drain()
        self._samples.append(cols)
        return len(cols[0])

    def _drain_loop(self) -> None:
        while not self._stop_event.wait(self.drain_interval_s):
            self._drain_once()

    def settle(self, after_ns: int) -> None:
        """Waits until every counter channel has shown an update that surely came after
        ``after_ns`` (bounded): one seen by a poll whose window opened after it. An update seen
        just after ``after_ns`` by a late poll may have happened before it, and an interval
        ending at ``after_ns`` would then need extrapolation."""
        deadline = time.monotonic() + self.settle_timeout_s
        counters = {c["channel"] for c in self._channels if c["quantity"] == "energy"}
        while counters and time.monotonic() < deadline:
            self._drain_once()
            _, prev, _, ch, fl = self._columns(start_ns=after_ns)  # an update after it is read after it
            m = ((fl & FLAG_CHANGED) != 0) & ((fl & FLAG_FIRST) == 0) & (prev > after_ns)
            seen = set(np.unique(ch[m]).tolist())
            gone = {i for i, st in enumerate(self._sampler.stats()) if st["state"] == "gone"}
            waiting = {c for c in counters if c not in seen and self._channels[c]["sensor_index"] not in gone}
            if not waiting:
                return
            time.sleep(min(0.002, self.settle_timeout_s))

    # -- the session's data, for the daemon, the writers and the study -------------------------
    @property
    def samples_store(self) -> SampleStore:
        """The samples as the sampler delivered them (store.SampleStore): ``columns`` between two
        instants or since an arrival index (``columns_from``), ``rows_between``, ``first_reading``;
        a writer registers the parts it wrote (``spilled``) and lets old rows go (``forget``)."""
        return self._samples

    @property
    def marks_store(self):
        """The marks: store.MarkStore for ``columnar_marks``, else store.BufferMarks (the C buffer
        ``mark()`` appends to fastest); one interface: ``len``, ``table(from_index)``, ``max_end_ns``,
        ``memory_marks``, ``extend_table``."""
        return self._records

    def channel_info(self) -> list[dict]:
        """The sampler's channel descriptors (no samples): channel, sensor, domain, quantity,
        units, resolution, update period, parents, device ids. ``channels()`` adds the samples."""
        return list(self._channels)

    def sensor_info(self) -> list[dict]:
        """Per opened sensor: kind, its facts (driver, paths, units) and its fastest useful period."""
        return list(self._sensor_info)

    def clock_anchor(self) -> dict:
        """The session's clock: monotonic_ns and wall_ns read together at start, and the pid."""
        return dict(self._anchor)

    def marks_since(self, cursor: int):
        """Marks recorded since the arrival index ``cursor`` (a table of store.mark_schema()), and
        the index to ask from next."""
        new = self._records.table(cursor)
        return new, cursor + new.num_rows

    # -- data ----------------------------------------------------------------------------------
    def _columns(self, start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> tuple:
        """Samples (t_ns, prev_t_ns, value, channel, flags) in arrival order, only those from
        ``start_ns`` to ``end_ns`` when given (older ones the daemon wrote out are read back)."""
        return self._samples.columns(start_ns, end_ns)

    def channels(self, start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> list[Channel]:
        """Every channel with its samples (sorted by time); only those from ``start_ns`` to
        ``end_ns`` when given (a late window of a long session need not sort all of it)."""
        return channels_of(self._channels, self._columns(start_ns, end_ns))

    def channels_around(self, start_ns: int, end_ns: int) -> list[Channel]:
        """The channels with the samples an interval from ``start_ns`` to ``end_ns`` needs: the
        updates that bracket it, with room to spare (ten update periods, at least 2 s on each side),
        and no more: a long session's older data stays on disk."""
        pad = max(ENERGY_PAD_NS, 10 * max((c["nominal_update_period_ns"] for c in self._channels), default=0))
        return self.channels(start_ns - pad, end_ns + pad)

    def add_mark(self, label: str, start_ns: int, end_ns: int, *, thread_id: int = 0, ok: bool = True,
                 **attrs) -> None:
        """Records an interval whose ends you timestamped yourself on the sampler clock
        (``greenprobe.now_ns`` / ``time.monotonic_ns``): e.g. work whose schedule was planned in
        advance, or marks another process sent. Same record as ``mark`` makes."""
        if not isinstance(label, str) or not label:
            raise ConfigError("a mark needs a non-empty label", "pass a label string, e.g. add_mark('infer', ...)")
        start_ns, end_ns = int(start_ns), int(end_ns)
        if end_ns < start_ns:
            raise ConfigError(f"mark {label!r} ends before it starts ({end_ns} < {start_ns})",
                              "pass start_ns <= end_ns, both read from greenprobe.now_ns() (CLOCK_MONOTONIC)")
        self._records.append(Mark(label, start_ns, end_ns, int(thread_id), attrs or None, bool(ok)))

    def now_ns(self) -> int:
        """The sampler's clock (CLOCK_MONOTONIC, ns): what marks are stamped with."""
        return _core.now_ns()

    def mark_count(self) -> int:
        """How many marks are held (written ones included)."""
        return len(self._records)

    def marks_table(self, start: int = 0, owner: Optional[str] = None):
        """The marks from arrival index ``start`` on, as a pyarrow Table of store.mark_schema():
        label, start_ns, end_ns, thread_id, ok, attrs (JSON text), owner, pid_verified; read its
        columns by name. ``owner``: only the marks a daemon's client of that identity sent."""
        return of_owner(self._records.table(start), owner)

    def marks(self) -> list[Mark]:
        """Recorded marks as records.Mark (label, start_ns, end_ns, thread_id, attrs, ok: read them by
        name), a convenience for short sessions and tests; greenprobe itself reads ``marks_table()``."""
        return self._records.snapshot()

    def stats(self) -> list[dict]:
        """Per sensor: polls, late polls, lag, drops, state (live while running)."""
        if self._stopped:
            return self._stats
        return [] if self._sampler is None else self._sampler.stats()

    def energy(self, start_ns: int, end_ns: int) -> list[dict]:
        """Energy between two instants on the sampler clock, per (sensor, domain)."""
        rows = attribute(np.array([start_ns]), np.array([end_ns]), self.channels_around(start_ns, end_ns))
        return [{"sensor": r["channel"].sensor, "domain": r["channel"].domain, "energy_j": float(r["energy_j"][0]),
                 "energy_j_low": float(r["energy_j_low"][0]), "energy_j_high": float(r["energy_j_high"][0]),
                 "estimated": r["channel"].estimated, "complete": bool(r["complete"][0])} for r in rows]

    def consumers(self, start_ns: Optional[int] = None, end_ns: Optional[int] = None, by: Optional[str] = None):
        """Energy per consumer (process or cgroup: ``by``, default the first kind the Probe records)
        from ``start_ns`` to ``end_ns`` (default: the whole recording), per (sensor, domain), with idle
        and unattributed rows that make each domain's sum its measured energy: a pyarrow Table
        (greenprobe.consumer_fit; docs/SCHEMA.md, "Energy per consumer"). Needs
        ``Probe(consumers="process")`` (or ``"cgroup"``, ``"process,cgroup"``)."""
        from .consumer_fit import consumer_table

        view = by or (self.consumer_kinds[0] if self.consumer_kinds else "process")
        uses, a, b = self._consumer_uses(view, start_ns, end_ns)
        return consumer_table(uses, view, self.channels_around(a, b), a, b, gpu_note=self._use.gpu_note)

    @property
    def use_recorder(self) -> Optional[UseRecorder]:
        """The consumers' sweeps (consumers.UseRecorder), None without ``consumers``."""
        return self._use

    def process_tree(self, pid: int, start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> list[dict]:
        """The energy of process ``pid`` and every process descended from it, per (sensor, domain),
        beside the measured total (consumer_fit.set_share): what ``greenprobe measure`` reports for its
        command. Needs ``Probe(consumers="process")``."""
        from .consumer_fit import set_share
        from .consumers import tree_of

        uses, a, b = self._consumer_uses("process", start_ns, end_ns)
        procs = uses["process"].consumers
        if not any(c.pid == int(pid) for c in procs):
            raise ConfigError(f"process {pid} was not seen by the consumer sweeps (it ended before the first sweep, "
                              "or never ran on this machine); its CPU time went to its parent",
                              "pass the pid of a process that ran while the Probe swept (Probe(consumers='process'), "
                              "every consumer_period_s); `greenprobe measure -- CMD` measures a command's tree")
        pids = {procs[i].pid for i in tree_of(procs, int(pid))}
        return [dict(r, pid=int(pid), processes=len(pids)) for r in
                set_share(uses, self.channels_around(a, b), a, b, lambda c: c.pid in pids,
                          gpu_note=self._use.gpu_note)]

    def slurm_jobs(self, start_ns: Optional[int] = None, end_ns: Optional[int] = None):
        """The energy of each Slurm job's processes (by their cgroup's job_<id>, else their
        SLURM_JOB_ID), per (sensor, domain), beside the measured total: a pyarrow Table of job,
        processes, sensor, domain, estimated, cpu_s, energy_j, energy_j_low, energy_j_high,
        measured_j, note (consumer_fit.set_share, a job's processes as one set)."""
        import pyarrow as pa

        from .consumer_fit import set_share

        uses, a, b = self._consumer_uses("process", start_ns, end_ns)
        jobs: dict[str, set] = {}
        for c in uses["process"].consumers:
            if c.job:
                jobs.setdefault(c.job, set()).add(c.pid)
        rows = []
        channels = self.channels_around(a, b)
        for job, pids in sorted(jobs.items()):
            rows += [dict(r, job=job, processes=len(pids), start_ns=a, end_ns=b)
                     for r in set_share(uses, channels, a, b, lambda c, job=job: c.job == job,
                                        gpu_note=self._use.gpu_note)]
        names = ["job", "processes", "sensor", "domain", "estimated", "cpu_s", "energy_j", "energy_j_low",
                 "energy_j_high", "measured_j", "start_ns", "end_ns", "note"]
        return pa.Table.from_pylist([{k: r[k] for k in names} for r in rows]) if rows else \
            pa.table({k: pa.array([], pa.string()) for k in names})

    def _consumer_uses(self, view: str, start_ns: Optional[int], end_ns: Optional[int]):
        """Every recorded kind's use (consumers.Use: the view's, and "gpu" where GPUs give per-process
        use) and the interval, checked."""
        if self._use is None:
            raise ConfigError("this Probe records no consumers",
                              "make it with consumers='process' (or 'cgroup', 'process,cgroup')")
        uses = {k: self._use.use(k) for k in self._use.readers if k in (view, "gpu")}
        if view not in uses:
            self._use.use(view)  # raises with the fix
        use = uses[view]
        if use.t_ns.size < 2:
            raise ConfigError("fewer than two consumer sweeps so far", "measure for longer than consumer_period_s")
        a = int(use.t_ns[0] if start_ns is None else start_ns)
        b = int(use.t_ns[-1] if end_ns is None else end_ns)
        if b <= a:
            raise ConfigError(f"consumers({a}, {b}): the interval ends before it starts", "pass start_ns < end_ns")
        return uses, a, b

    def baseline(self, channels: Optional[list] = None) -> list[dict]:
        """Idle power per (sensor, domain) from the ``baseline_s`` windows before and after the
        work: before_w, after_w, power_w (their mean), power_w_se (bounds and drift), seconds.
        Empty when no baseline was measured. ``channels``: ``self.channels()`` if the caller has it."""
        from .baseline import idle_power

        if not self.baseline_windows:
            return []
        return idle_power(self.baseline_windows, self.channels() if channels is None else channels)

    def samples(self):
        """Every recorded sample as a pyarrow Table (schema in docs/SCHEMA.md)."""
        from .parquet import samples_table

        return samples_table(self)

    def samples_table(self):
        """Every recorded sample as a pyarrow Table (as RemoteProbe.samples_table)."""
        return self.samples()

    def summary_table(self, owner: Optional[str] = None):
        """The label summary as a pyarrow Table (as RemoteProbe.summary_table)."""
        return self.summary(owner)

    def intervals(self, owner: Optional[str] = None):
        """One row per (mark, sensor, domain) with energy and bounds, as a pyarrow Table (``owner``:
        only that identity's marks, as a daemon shows each user theirs)."""
        from .parquet import intervals_table

        return intervals_table(self, owner)

    def requests(self, owner: Optional[str] = None):
        """Energy per request (marks with a ``request`` attribute: greenprobe.generation's, or a batch
        server's ``request_energy.mark_batch_step``), each request's share of every step it was in by
        its tokens, with hard bounds, per (sensor, domain): a pyarrow Table
        (greenprobe.request_energy; docs/SCHEMA.md, "Energy per request"). ``owner``: only that
        identity's requests (every owner's share the steps all the same)."""
        import pyarrow.compute as pc

        from .request_energy import request_table

        marks = self.marks_table()
        if marks.num_rows == 0:
            return request_table(marks, [], owner)
        a, b = pc.min(marks.column("start_ns")).as_py(), pc.max(marks.column("end_ns")).as_py()
        return request_table(marks, self.channels_around(a, b), owner)

    def summary(self, owner: Optional[str] = None):
        """Per (label, sensor, domain): calls, mean time, mean energy per call with its 95 % interval,
        net of the idle baseline, baseline power, method ("direct" when calls outlast the sensor's
        update period, else "regression" over many calls). A pyarrow Table; see greenprobe.summary.
        A daemon's marks have owners: each owner's labels are estimated apart (another user's work
        is background to them), with an ``owner`` column; ``owner`` keeps only that one's."""
        from .parquet import labels_table

        return labels_table(self, owner)

    def metadata(self) -> dict:
        from .parquet import session_metadata

        return session_metadata(self)

    def save(self, directory: str | os.PathLike, owner: Optional[str] = None) -> dict:
        """Writes DIR/samples.parquet and DIR/intervals.parquet (metadata in both); returns the paths.
        ``owner``: only that identity's marks."""
        from .parquet import save

        return save(self, directory, owner)
