"""The daemon's ``--consumers``: the energy of every process and cgroup on the machine, window by
window (issue 22).

Every ``--consumer-window-s`` the window just ended is estimated (greenprobe.consumer_fit: each
consumer's energy per domain with its interval, idle and unattributed, adding up to the measured),
then:
- written as a part, ``parts/consumers/part-N.parquet`` under the run folder (fsynced: a crash loses
  at most the window in progress); at stop they are gathered into ``consumers.parquet``;
- added to the running totals that Prometheus shows as ``greenprobe_consumer_energy_joules_total`` and
  OTLP pushes as ``greenprobe.consumer.energy`` (otlp.py);
- kept for the Table ``consumers`` (the last ``KEEP_S`` of windows);
- and the sweeps before it are let go, with the processes that exited (memory stays flat however
  many processes come and go).

Who sees what: root, the daemon's user and ``--admin-group`` see every consumer; anyone else sees
the processes and cgroups they own (the uid of /proc/PID, of the cgroup's folder), with everyone
else's added up into one ``others`` row per domain and window, so their view still adds up to the
measured energy. Prometheus does the same per scrape: an admin's scrape has every consumer's series,
anyone else's their own plus one ``others`` series per view and domain (``series(uid)``; a scrape's
user: prometheus.view_uid); an OTLP push goes to the operator's collector, the admin's view, and
carries them all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Optional

import numpy as np

#: windows kept for the Table (older ones are in the parts)
KEEP_S = 3600.0
#: Prometheus series of consumers at most (the most energy first); the rest as consumer "(other)"
MAX_SERIES = 500
#: the labels of a consumer's series (Prometheus and OTLP), in this order; a Kubernetes pod's namespace and
#: name come last (pod is its uid)
SERIES_LABELS = ("view", "kind", "consumer", "sensor", "domain", "slurm_job", "pod", "container", "namespace",
                 "pod_name")


class ConsumerAccount:
    def __init__(self, probe, folder: Optional[Path], window_s: float = 30.0, keep_s: float = KEEP_S,
                 max_series: int = MAX_SERIES):
        self.probe = probe
        self.parts = Path(folder) / "parts" / "consumers" if folder is not None else None
        self.window_ns = int(window_s * 1e9)
        self.keep_ns = int(keep_s * 1e9)
        self.max_series = max_series
        self._lock = threading.Lock()
        self._windows: deque = deque()  # (start_ns, end_ns, table)
        self.totals: dict[tuple, float] = {}
        #: each series' user: the uid of its rows (-1 where unknown, where rows of different users came
        #: under the same labels, and for "(other)"): a non-admin's scrape sees only its own by name
        self.owners: dict[tuple, int] = {}
        self._start: Optional[int] = None
        self._n = 0
        self.notes: list[str] = []  # windows that could not be estimated, and why

    def close_window(self, final: bool = False, end_ns: Optional[int] = None) -> Optional[object]:
        """Estimates the window from the last one's end to the latest sweep (at or before ``end_ns``
        when given), if it is long enough (any length when ``final``); returns its table."""
        import pyarrow as pa

        from ..errors import ConfigError

        rec = self.probe.use_recorder
        if rec is None:
            return None
        use = rec.use(rec.kinds[0])
        if use.t_ns.size < 2:
            return None
        a = int(use.t_ns[0]) if self._start is None else self._start
        b = int(use.t_ns[-1] if end_ns is None else use.t_ns[max(np.searchsorted(use.t_ns, end_ns, "right") - 1, 0)])
        if b <= a or (not final and b - a < self.window_ns):
            return None
        tables = []
        for kind in rec.kinds:
            try:
                tables.append(self.probe.consumers(a, b, by=kind))
            except ConfigError as e:
                self.notes.append(f"{a}-{b} {kind}: {e.message}")
        table = pa.concat_tables(tables) if tables else None
        if table is not None:
            if self.parts is not None:
                from ..parquet import _atomic_write_table

                self.parts.mkdir(parents=True, exist_ok=True)
                _atomic_write_table(table, self.parts / f"part-{self._n:08d}.parquet", durable=True)
                self._n += 1
            with self._lock:
                self._windows.append((a, b, table))
                while self._windows and self._windows[0][1] < b - self.keep_ns:
                    self._windows.popleft()
                for r in table.to_pylist():
                    if r["kind"] in ("process", "cgroup"):
                        key = tuple(r[k] or "" for k in SERIES_LABELS)
                        self.totals[key] = self.totals.get(key, 0.0) + max(r["energy_j"], 0.0)
                        uid = -1 if r["uid"] is None else int(r["uid"])
                        self.owners[key] = uid if self.owners.get(key, uid) == uid else -1
                self._fold()
        self._start = b
        rec.forget_before(b)
        return table

    def write_into(self, parts: Path) -> None:
        """Parts go to ``parts``/consumers from now on (the run's parts folder, known once its writer is)."""
        self.parts = Path(parts) / "consumers"

    def run(self, done: threading.Event) -> None:
        """Closes a window every window_s until ``done`` (the last one is the stopping daemon's to
        close, once the sampler's last sweep is in: close_window(final=True))."""
        while not done.wait(self.window_ns / 1e9):
            try:
                self.close_window()
            except Exception as e:  # one bad window never ends the daemon's accounting
                self.notes.append(f"{time.strftime('%H:%M:%S')}: {type(e).__name__}: {e}")

    def gather(self, folder: Path) -> Optional[Path]:
        """consumers.parquet in ``folder``: every part, in order."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..parquet import _atomic_write_table

        if self.parts is None or not self.parts.is_dir():
            return None
        parts = sorted(self.parts.glob("part-*.parquet"))
        if not parts:
            return None
        out = Path(folder) / "consumers.parquet"
        _atomic_write_table(pa.concat_tables([pq.read_table(p) for p in parts]), out)
        return out

    def table(self, uid: Optional[int] = None):
        """The windows held: every consumer's rows (``uid`` None: an admin), or only those of the
        processes and cgroups ``uid`` owns, everyone else's added up into one ``others`` row per
        view, domain and window."""
        import pyarrow as pa

        from ..consumer_fit import COLUMNS

        with self._lock:
            tables = [t for _, _, t in self._windows]
        if not tables:
            return pa.table({c: pa.array([], pa.string()) for c in COLUMNS})
        table = pa.concat_tables(tables)
        if uid is None:
            return table
        rows, others = [], {}
        all_rows = table.to_pylist()
        mine = {(r["view"], r["start_ns"], r["consumer"]) for r in all_rows if r["uid"] == uid}
        for r in all_rows:
            if r["kind"] in ("process", "cgroup") and r["uid"] != uid:
                key = (r["view"], r["sensor"], r["domain"], r["start_ns"], r["end_ns"])
                o = others.setdefault(key, dict(r, consumer="others", kind="others", pid=None, uid=None, comm="",
                                                cgroup="", slurm_job="", pod="", container="", namespace="",
                                                pod_name="", energy_j=0.0,
                                                energy_j_low=float("nan"), energy_j_high=float("nan"), cpu_s=0.0,
                                                coefficient="", group="",
                                                note="the consumers of other users, added up"))
                o["energy_j"] += r["energy_j"]
                o["cpu_s"] += r["cpu_s"] or 0.0
            else:
                if r["group"] and (r["view"], r["start_ns"], r["group"]) not in mine:
                    r["group"] = "(another user's consumer)"  # its name is not this user's to see
                rows.append(r)
        return pa.Table.from_pylist(rows + list(others.values()), schema=table.schema)

    def _fold(self) -> None:
        """Past MAX_SERIES consumers, those with the least energy are added for good into their view's,
        kind's and domain's "(other)" (under the lock): memory stays bounded however many processes
        come and go, and every series only grows, as a Prometheus counter must."""
        named = [k for k in self.totals if k[2] != "(other)"]
        if len(named) <= self.max_series:
            return
        for key in sorted(named, key=lambda k: self.totals[k])[:len(named) - self.max_series]:
            view, kind, _, sensor, domain = key[:5]
            other = (view, kind, "(other)", sensor, domain) + ("",) * (len(SERIES_LABELS) - 5)
            self.totals[other] = self.totals.get(other, 0.0) + self.totals.pop(key)
            self.owners.pop(key, None)
            self.owners[other] = -1

    def series(self, uid: Optional[int] = None) -> list[tuple[tuple, float]]:
        """(labels, joules) for Prometheus and OTLP, the labels' values in SERIES_LABELS' order: the
        MAX_SERIES consumers with the most energy kept apart, the others added up for good under
        consumer "(other)" per view, kind and domain. ``uid`` None (an admin): every user's consumers;
        else only the series of ``uid``'s processes and cgroups, and everything else added up into one
        series of kind and consumer ``others`` per view, sensor and domain (as ``table(uid)`` does), so
        no other user's consumer is named. Each series only grows, ``others`` too (a series of
        ``uid``'s that is folded into "(other)" moves into it)."""
        with self._lock:
            if uid is None:
                return sorted(self.totals.items())
            mine, others = [], {}
            for key, j in self.totals.items():
                if key[2] != "(other)" and self.owners.get(key, -1) == uid and uid >= 0:
                    mine.append((key, j))
                else:
                    o = (key[0], "others", "others", key[3], key[4]) + ("",) * (len(SERIES_LABELS) - 5)
                    others[o] = others.get(o, 0.0) + j
            return sorted(mine) + sorted(others.items())
