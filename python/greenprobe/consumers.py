"""What every consumer of the machine used, on the sampler's clock (issue 22).

A *consumer* is a process or a cgroup (a container, a systemd unit, a Slurm job's step, a
Kubernetes pod). A ``UseRecorder`` sweeps them every ``period_s`` and keeps, per consumer, its
cumulative CPU time each time it changed; ``consumer_fit`` turns that into energy per consumer.

- **process**: every process under ``proc_root`` (/proc), read from ``/proc/PID/stat``: user + system
  time of all its threads, in clock ticks (1/SC_CLK_TCK s, 10 ms on most kernels: a sweep's reading is
  exact to one tick and the error never accumulates, as the counts are cumulative). A process is
  known by (pid, start time), so a reused pid is a new consumer. The CPU a process spent after the
  last sweep before it exited is recovered from its parent's reaped-children time (cutime + cstime)
  when the parent reaps it; where the parent does not (it died too), up to one period of it is lost,
  which the cgroup's count keeps.
- **cgroup**: every cgroup under ``cgroup_root`` (/sys/fs/cgroup) that holds processes, found again
  every second; its CPU from ``cpu.stat``'s usage_usec (cgroup v2) or ``cpuacct.usage`` (v1, ns),
  less that of the cgroups below it that are consumers themselves (each CPU-second is one consumer's).
  The root cgroup's own processes are the consumer ``/``: the machine's CPU time (``/proc/stat``)
  less every other cgroup's. The root must be a cgroup tree (``cgroup_tree``); given v1's tmpfs of
  hierarchies, its cpuacct hierarchy is read. A Kubernetes pod's cgroup names its uid; its namespace
  and name come from the kubelet's log folders (``PodNames``, ``pods_root``: /var/log/pods).

Storage is sparse: a consumer costs a row only in the sweeps where its CPU time moved, so a thousand
sleeping processes cost nothing but the reading. A row (consumer, sweep, cumulative seconds) says
the change happened in the window that ends at that sweep, since the sweep before saw the old value.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .errors import ConfigError

KINDS = ("process", "cgroup")
#: the sweep period unless one is given, and the shortest (a sweep of 1,000 processes takes ~10 ms)
PERIOD_S = 0.25
MIN_PERIOD_S = 0.01
#: how often the cgroup tree is walked for cgroups that appeared or emptied
CGROUP_DISCOVERY_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: the kubelet's pod log folders, <namespace>_<name>_<uid>/: a pod's namespace and name from its uid
PODS_ROOT = "/var/log/pods"

_SLURM_JOB = re.compile(r"/job_(\d+)(?:/|$)")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CONTAINER = re.compile(r"(?:docker|cri-containerd|crio|libpod)-([0-9a-f]{12,64})\.scope|/([0-9a-f]{64})(?:/|$)")


def parse_kinds(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"process,cgroup"`` (or a list) -> the kinds, checked; empty for None or ``""``."""
    if spec is None:
        return ()
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [s for s in items if s not in KINDS]
    if bad:
        raise ConfigError(f"unknown consumer kind {bad[0]!r} (known: {', '.join(KINDS)})",
                          "pass consumers='process', 'cgroup' or 'process,cgroup' "
                          "(on the command line: --consumers process,cgroup)")
    return tuple(dict.fromkeys(items))


def cgroup_labels(path: str, pods: Optional["PodNames"] = None) -> dict:
    """The Slurm job, Kubernetes pod (its uid) and container a cgroup path names ('' where it names
    none), and the pod's namespace and name where ``pods`` knows its uid."""
    job = _SLURM_JOB.search(path)
    pod = _POD.search(path)
    ctr = _CONTAINER.search(path)
    uid = pod.group(1).replace("_", "-") if pod else ""
    namespace, name = pods.lookup(uid) if pods is not None and uid else ("", "")
    return {"slurm_job": job.group(1) if job else "", "pod": uid,
            "container": (ctr.group(1) or ctr.group(2))[:12] if ctr else "",
            "namespace": namespace, "pod_name": name}


class PodNames:
    """A Kubernetes pod's namespace and name from its uid, read from the kubelet's log folders:
    ``root``/<namespace>_<name>_<uid>/ (/var/log/pods; neither a namespace nor a pod name may hold
    ``_``). Kept once read, also after the pod's folder is gone (a window ends after its pod did); the
    folder is read again when a uid it did not hold is asked for (each such uid at most once per
    ``reread_s``). No folder, or one this process may not read: every pod's names are ''."""

    MAX = 65536  # names kept at most (past it, only the latest read's)

    def __init__(self, root: str = PODS_ROOT, reread_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.root = str(root)
        self.reread_s = reread_s
        self._clock = clock
        self._names: dict[str, tuple[str, str]] = {}
        self._missed: dict[str, float] = {}  # uid -> when a read last did not find it
        self._lock = threading.Lock()
        self.reads = 0
        self._reread()

    def _reread(self) -> None:
        found = {}
        try:
            with os.scandir(self.root) as it:
                for e in it:
                    parts = e.name.split("_")
                    if len(parts) == 3 and all(parts) and e.is_dir():
                        found[parts[2].lower()] = (parts[0], parts[1])
        except OSError:  # no kubelet here, or not ours to read
            pass
        self.reads += 1
        if len(self._names) + len(found) > self.MAX:
            self._names = {}
        self._names.update(found)

    def lookup(self, uid: str) -> tuple[str, str]:
        """(namespace, name) of the pod ``uid``, ('', '') where no folder names it."""
        uid = uid.lower().replace("_", "-")
        with self._lock:
            got = self._names.get(uid)
            if got is not None:
                return got
            now = self._clock()
            if now - self._missed.get(uid, -1e18) < self.reread_s:
                return "", ""
            self._reread()
            got = self._names.get(uid)
            if got is not None:
                self._missed.pop(uid, None)
                return got
            if len(self._missed) >= self.MAX:
                self._missed.clear()
            self._missed[uid] = now
            return "", ""


@dataclass(frozen=True)
class Consumer:
    """One consumer: ``key`` is unique in a recording (``pid:start`` or the cgroup path)."""

    key: str
    kind: str  # "process" | "cgroup"
    pid: int = -1
    ppid: int = -1
    comm: str = ""
    cgroup: str = ""
    uid: int = -1  # the process's (its /proc folder's owner) or the cgroup folder's owner; -1 unknown
    job: str = ""  # the Slurm job a process runs in: its cgroup's job_<id>, else its SLURM_JOB_ID
    gpu: int = -1  # kind "gpu": the GPU (its kind's device index) whose use this is
    gpu_instance: int = -1  # kind "gpu" on a MIG-enabled GPU: the GPU instance the process runs in

    @property
    def name(self) -> str:
        if self.kind == "process":  # a MIG instance's own busy time (no process listed) has no pid
            return f"{self.pid} {self.comm}" if self.pid >= 0 else self.comm
        return self.cgroup


def _owner(path: str) -> int:
    try:
        return os.stat(path).st_uid
    except OSError:
        return -1


def _read(path: str, size: int = 4096) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def cgroup_of(proc_root: str, pid: int) -> str:
    """A process's cgroup: the v2 path, else v1's cpuacct one ('' if unreadable)."""
    try:
        text = _read(f"{proc_root}/{pid}/cgroup").decode(errors="replace")
    except OSError:
        return ""
    v1 = ""
    for line in text.splitlines():
        hid, ctrls, path = (line.split(":", 2) + ["", ""])[:3]
        if hid == "0" and ctrls == "":
            return path
        if "cpuacct" in ctrls.split(","):
            v1 = path
    return v1


def job_of(proc_root: str, pid: int) -> str:
    """SLURM_JOB_ID from the process's environment, where Slurm tracks jobs without cgroups
    (proctrack/linuxproc); '' where it has none or this process may not read it (another
    user's, without root)."""
    try:
        env = _read(f"{proc_root}/{pid}/environ", 1 << 16)
    except OSError:
        return ""
    at = env.find(b"SLURM_JOB_ID=")
    if at < 0 or (at > 0 and env[at - 1] != 0):
        return ""
    end = env.find(b"\0", at)
    value = env[at + 13:end if end >= 0 else len(env)]
    return value.decode(errors="replace") if value.isdigit() else ""


def process_facts(proc_root: str, pid: int, stat: Optional[bytes] = None) -> tuple[str, int, str, str]:
    """What names a process, read once when it is first seen: (comm, uid, cgroup, Slurm job), from
    its stat (read here unless given), its /proc folder's owner, cgroup and environment."""
    if stat is None:
        try:
            stat = _read(f"{proc_root}/{pid}/stat", 1024)
        except OSError:
            stat = b"(?)"
    comm = stat[stat.find(b"(") + 1:stat.rfind(b")")].decode(errors="replace")
    cgroup = cgroup_of(proc_root, pid)
    return comm, _owner(f"{proc_root}/{pid}"), cgroup, cgroup_labels(cgroup)["slurm_job"] or job_of(proc_root, pid)


class ProcessReader:
    """Every process's CPU seconds from ``proc_root``/PID/stat."""

    kind = "process"
    resolution_s = 1.0 / CLK_TCK

    def __init__(self, proc_root: str = "/proc"):
        self.proc_root = str(proc_root)
        self._known: dict[tuple[int, int], _Proc] = {}
        self._exited: dict[tuple[int, int], _Proc] = {}
        self._reads = 0
        self._boot_ticks: Optional[float] = None  # at the previous read
        self.fresh: set = set()
        if not os.path.isdir(self.proc_root):
            raise ConfigError(f"no process tree at {self.proc_root!r}",
                              "mount /proc (in a container: share the host's pid namespace) or pass "
                              "proc_root= / GREENPROBE_PROC_ROOT")

    def read(self) -> dict[Consumer, float]:
        """Every live process's CPU seconds; a process that exited since the last read appears once
        more, with what it used unseen before it exited where its parent reaped it (below).
        ``fresh``: the processes first seen now that started after the previous read (all their CPU
        time is this read's window's)."""
        out: dict[Consumer, float] = {}
        try:
            names = os.listdir(self.proc_root)
        except OSError as e:
            raise ConfigError(f"cannot list {self.proc_root}: {e.strerror}",
                              "give this process read access to /proc (hidepid= hides other users' processes: "
                              "run the daemon as root or in the proc mount's gid= group)") from e
        self._reads += 1
        boot_ticks = time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK
        self.fresh = set()
        now: dict[tuple[int, int], _Proc] = {}
        growth: dict[tuple[int, int], int] = {}
        for name in names:
            if not name.isdigit():
                continue
            try:
                raw = _read(f"{self.proc_root}/{name}/stat", 1024)
            except OSError:  # exited between the listing and the read
                continue
            close = raw.rfind(b")")
            f = raw[close + 2:].split()
            try:
                pid, ppid = int(name), int(f[1])
                own, reaped, start = int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[19])
            except (IndexError, ValueError):
                continue
            ident = (pid, start)
            p = self._known.get(ident)
            if p is None:
                comm, uid, cgroup, job = process_facts(self.proc_root, pid, raw)
                p = _Proc(Consumer(f"{pid}:{start}", "process", pid, ppid, comm, cgroup, uid, job), own, reaped)
                if self._boot_ticks is not None and start > self._boot_ticks:
                    self.fresh.add(p.consumer)
            else:
                growth[ident] = reaped - p.reaped
                p.own, p.reaped = own, reaped
            p.ppid, p.zombie = ppid, f[:1] == [b"Z"]
            now[ident] = p
        self._boot_ticks = boot_ticks
        # A child's CPU after the last read before it exited is not in /proc any more, but its parent's
        # cutime + cstime grows by the child's whole total when it reaps it (its own time and all it had
        # reaped). What that growth holds beyond what was last seen of the exited children (and zombies)
        # and of their exited descendants is what nobody saw: the children's, shared equally. The
        # growth and the exit may be seen one read apart (the parent read before or after the child
        # within a sweep), so an exited child waits two reads for its parent's growth, and growth with
        # no exited child to match waits one read before the parent takes it: then it came from
        # children that lived less than one sweep, never seen, and a process's figure includes them.
        for ident, p in self._known.items():
            if ident not in now and p.gone_at < 0:
                p.gone_at = self._reads
                self._exited[ident] = p
        self._exited = {i: p for i, p in self._exited.items() if self._reads - p.gone_at <= 2 and not p.settled}
        waiting: dict[int, list] = {}  # parent pid -> its children whose end is not matched yet
        for p in [*self._exited.values(), *(q for q in now.values() if q.zombie and not q.settled)]:
            waiting.setdefault(p.ppid, []).append(p)
        for ident, p in now.items():
            p.owed += max(growth.get(ident, 0), 0)
            if p.owed <= 0:
                continue
            kids = waiting.pop(ident[0], [])
            if kids:
                seen, todo = 0, list(kids)
                while todo:
                    x = todo.pop()
                    seen += x.own + x.reaped
                    x.settled = True
                    todo.extend(waiting.pop(x.consumer.pid, []))
                for k in kids:
                    k.adopted += max(p.owed - seen, 0) / len(kids)
                    out[k.consumer] = (k.own + k.adopted) / CLK_TCK
                p.owed, p.owed_since = 0, -1
            elif p.owed_since < 0:
                p.owed_since = self._reads
            elif self._reads - p.owed_since >= 1:
                p.adopted += p.owed
                p.owed, p.owed_since = 0, -1
        for p in now.values():
            out[p.consumer] = (p.own + p.adopted) / CLK_TCK
        self._known = now
        return out


@dataclass
class _Proc:
    """What a ProcessReader keeps of a process between reads (ticks)."""

    consumer: Consumer
    own: int  # utime + stime at the last read
    reaped: int  # cutime + cstime at the last read
    adopted: float = 0.0  # taken over: an exited child's unseen end, or never-seen children's whole
    ppid: int = -1  # the parent at the last read (an orphan is reparented)
    zombie: bool = False
    owed: float = 0.0  # reaped time grown and not yet matched to an exited child
    owed_since: int = -1
    gone_at: int = -1  # the read at which it was first missing
    settled: bool = False  # its end was matched to its parent's growth


#: where cgroup v1 mounts the hierarchy that counts CPU time, under its tmpfs (/sys/fs/cgroup)
V1_CPUACCT = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


def cgroup_tree(root: str) -> str:
    """The cgroup tree to read at ``root``: itself where it is one (v2: ``cgroup.controllers`` or
    ``cgroup.procs`` in it; a v1 hierarchy: ``cgroup.procs``, and ``cpuacct.usage`` as it must count
    CPU time), or v1's cpuacct hierarchy where ``root`` is the tmpfs v1 mounts them under
    (/sys/fs/cgroup/cpuacct, or cpu,cpuacct). ConfigError, with the fix, for anything else."""
    root = str(root).rstrip("/") or "/"
    where = "pass cgroup_root= / GREENPROBE_CGROUP_ROOT (the daemon's --cgroup-root)"
    if not os.path.isdir(root):
        raise ConfigError(f"no cgroup tree at {root!r}",
                          "mount the cgroup filesystem (in a container: bind-mount the host's /sys/fs/cgroup "
                          f"read-only) or {where}")
    def has(d: str, f: str) -> bool:
        return os.path.exists(os.path.join(d, f))

    if has(root, "cgroup.controllers"):
        return root  # v2
    if has(root, "cgroup.procs"):
        if has(root, "tasks") and not has(root, "cpuacct.usage"):  # a v1 hierarchy without cpuacct
            raise ConfigError(f"{root!r} is a cgroup v1 hierarchy that does not count CPU time (no cpuacct.usage)",
                              f"{where} to the cpuacct hierarchy, e.g. /sys/fs/cgroup/cpuacct "
                              "(`findmnt -t cgroup` lists them)")
        return root
    for name in V1_CPUACCT:
        d = os.path.join(root, name)
        if has(d, "cgroup.procs") and has(d, "cpuacct.usage"):
            return d.rstrip("/")
    raise ConfigError(f"{root!r} is not a cgroup tree (no cgroup.controllers or cgroup.procs in it, "
                      "nor a v1 cpuacct hierarchy under it)",
                      f"{where} to where the cgroup filesystem is mounted: /sys/fs/cgroup for v2, the cpuacct "
                      "hierarchy (/sys/fs/cgroup/cpuacct) for v1 (`findmnt -t cgroup2,cgroup` lists them)")


class CgroupReader:
    """Every cgroup holding processes under ``cgroup_root``, its own CPU seconds (below-consumers
    subtracted); ``/`` is the machine's CPU time (``proc_root``/stat) less the others'."""

    kind = "cgroup"
    resolution_s = 1e-6  # cpu.stat's usage_usec (v1's cpuacct.usage: ns)
    fresh: set = frozenset()  # a cgroup's count starts at its creation: never any before it is seen

    def __init__(self, cgroup_root: str = "/sys/fs/cgroup", proc_root: str = "/proc",
                 discovery_s: float = CGROUP_DISCOVERY_S):
        self.root = cgroup_tree(cgroup_root)
        self.proc_root = str(proc_root)
        self.discovery_s = discovery_s
        self._paths: list[str] = []
        self._last: dict[str, float] = {}  # each consumer's usage at the last read
        self._ended: dict[str, float] = {}  # per holder: the usage of the cgroups below it that ended
        self._found_at = -1e18
        self._known: dict[str, Consumer] = {}

    def _usage_s(self, rel: str) -> Optional[float]:
        d = self.root + rel if rel != "/" else self.root
        try:
            for line in _read(d + "/cpu.stat").decode().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            pass
        try:
            return int(_read(d + "/cpuacct.usage")) / 1e9
        except (OSError, ValueError):
            return None

    def _discover(self) -> None:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == self.root or "cgroup.procs" not in filenames:
                continue
            try:
                if _read(dirpath + "/cgroup.procs", 64).strip():
                    found.append(dirpath[len(self.root):])
            except OSError:
                continue
        self._paths = sorted(found)

    def _machine_s(self) -> Optional[float]:
        try:
            first = _read(f"{self.proc_root}/stat", 512).split(b"\n", 1)[0].split()
            # user nice system idle iowait irq softirq steal: busy = user, nice, system, irq, softirq
            # (steal: the hypervisor ran another guest, not this machine's processes)
            v = [int(x) for x in first[1:9]] + [0] * 8
            return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK
        except (OSError, ValueError, IndexError):
            return None

    def read(self, now_s: Optional[float] = None) -> dict[Consumer, float]:
        now_s = time.monotonic() if now_s is None else now_s
        if now_s - self._found_at >= self.discovery_s:
            self._discover()
            self._found_at = now_s
        usage = {p: self._usage_s(p) for p in self._paths}
        usage = {p: u for p, u in usage.items() if u is not None}

        def holder(p: str) -> str:  # the nearest consumer above p, or the root
            parent = p.rsplit("/", 1)[0]
            while parent:
                if parent in usage:
                    return parent
                parent = parent.rsplit("/", 1)[0]
            return "/"

        # a cgroup that ended (emptied, removed) took its time with it, but the counts above it keep
        # that time: it stays subtracted from its holder's, which would otherwise jump by it
        # (its count includes the ended ones below it: those go with it, and only the topmost one
        # that ended counts)
        gone = set(self._last) - set(usage)
        for p in gone:
            self._ended.pop(p, None)
            self._known.pop(p, None)
        for p in gone:
            if not any(p.startswith(q + "/") for q in gone):
                h = holder(p)
                self._ended[h] = self._ended.get(h, 0.0) + self._last[p]
        self._last = dict(usage)
        own = {p: u - self._ended.get(p, 0.0) for p, u in usage.items()}
        for p in usage:  # each consumer's nearest consumer ancestor loses the descendant's time
            h = holder(p)
            if h != "/":
                own[h] -= usage[p]
        machine = self._machine_s()
        if machine is not None:
            own["/"] = max(0.0, machine - sum(usage[p] for p in usage if holder(p) == "/") - self._ended.get("/", 0.0))
        out = {}
        for p, u in own.items():
            c = self._known.get(p)
            if c is None:
                c = self._known[p] = Consumer(p, "cgroup", cgroup=p,
                                              uid=_owner(self.root + p) if p != "/" else 0)
            out[c] = max(u, 0.0)
        return out


#: the domain of each GPU kind's whole-GPU channel is <prefix><index> (nvml's gpu<N>, amd-gpu's amdgpu<N>):
#: a process's use of a GPU is the consumer pid@<domain>, so that two kinds' GPUs of one index stay apart
GPU_DOMAIN_PREFIX = {"nvml": "gpu", "amd-gpu": "amdgpu"}


def gpu_domain(kind: str, index: int) -> str:
    """The domain of GPU ``index`` of a GPU sensor kind: gpu0 (nvml), amdgpu0 (amd-gpu)."""
    return f"{GPU_DOMAIN_PREFIX.get(kind, kind + '-gpu')}{int(index)}"


class GpuProcessReader:
    """Each process's use of each GPU (kind "gpu"), through the GPU usage readers of the sensors that
    measure the GPUs, as dated pieces the recorder splits over the sweep windows they span:

    * NVML: its SM-busy seconds, its smUtil share x each of the driver's sample periods
      (nvmlDeviceGetProcessesUtilizationInfo, else nvmlDeviceGetProcessUtilization), placed where the
      period lies on the sampler's clock. The
      first sample seen only sets where counting starts. A period in which no process ran leaves no
      sample: the driver's period is taken as the shortest step seen between two samples (until two
      consecutive periods are seen, the first samples after a gap may count too long a period).
    * AMD SMI: its GFX engine time, a cumulative count per (GPU, pid) (amdsmi_get_gpu_process_list):
      what it grew by since the previous read is a piece from that read to this one (the sweeps'
      instants). A pid that a GPU did not list at the previous read started on it since: its whole
      count is that piece (so a short process's use is not lost to idle); at a GPU's first read, and
      where its count fell (the pid reused, a file closed), the count is only a base.

    * NVML on a MIG-enabled GPU, which gives no per-process use: each GPU instance's busy time from
      GPM (GRAPHICS_UTIL between two samples over 100 ms apart, x the time between them), a
      cumulative count per instance dated by its samples. What it grew by is a piece split evenly
      among the processes the instance listed at either end: the instance's use is measured, its split among
      processes that share it is not, so those processes are *tied* (``tied``) and share one
      coefficient, whose interval allows any split (consumer_fit). Busy time while an instance lists
      no process is the instance's own consumer (_instances).

    A consumer per (GPU, pid), pid@<domain> (gpu_domain: ``4101@gpu0``, ``4101@amdgpu0``), named as the
    process is (its comm, uid and Slurm job from ``proc_root``). A GPU that answers an error
    (``process_errors``: a MIG-enabled GPU without GPM, a lost GPU, ...) gives no use then, which is
    not "no process used it": ``unknown`` names its domain and why, and its energy is left
    unattributed (gpu_use_for) rather than counted idle."""

    kind = "gpu"
    fresh: set = frozenset()

    #: the kinds whose readers give cumulative counts (gfx_busy_ns) rather than shares per period
    CUMULATIVE_KINDS = frozenset({"amd-gpu"})

    @property
    def resolution_s(self) -> float:
        """NVML: the longest of the GPUs' sample periods as learned (0.2 s, a generous guess, before
        any); AMD SMI's counts only: 1 ms (ns counts, read at the sweeps)."""
        if any(kind not in self.CUMULATIVE_KINDS for kind in self.kinds):
            return max(self._step.values(), default=200_000) / 1e6
        return 1e-3

    def __init__(self, readers: Sequence, proc_root: str = "/proc"):
        self.readers = [r for r in readers if not r.process_support]
        if not self.readers:
            why = "; ".join(f"{r.kind}: {r.process_support}" for r in readers) or "no GPU usage reader"
            raise ConfigError(f"no GPU gives per-process use ({why})", "a driver with per-process utilisation "
                              "(NVML's per-process calls, or GPM for MIG instances; AMD SMI with "
                              "amdsmi_get_gpu_process_list)")
        self.kinds = [r.kind for r in self.readers]  # kept when close() lets the readers go
        self.proc_root = str(proc_root)
        self._since = [0] * len(self.readers)
        self._prev: dict[tuple, int] = {}  # (reader, GPU index) -> its latest sample's t_us
        self._period: dict[tuple, tuple] = {}  # (reader, GPU index) -> its latest sample period (µs, µs)
        self._step: dict[tuple, int] = {}  # (reader, GPU index) -> the driver's sample period, as learned (µs)
        self._count: dict[tuple, tuple] = {}  # (reader, GPU index, pid) -> (cumulative ns, t_ns) at the last read
        self._last_read: dict[int, tuple] = {}  # reader -> (t_ns, GPU indices that failed) of its latest read
        self._names: dict[int, tuple] = {}  # pid -> process_facts
        self._reads = [0] * len(self.readers)
        self._failed: dict[str, list] = {}  # GPU domain -> [reader, reads that failed, first error, latest]
        # (reader, GPU index, GPU instance) -> (busy ns, t_ns, count_since_ns, pids listed) at its latest sample
        self._instance: dict[tuple, tuple] = {}
        #: consumers that shared a MIG instance (their split is not measured): key -> its tie's least key
        self.tied: dict[str, str] = {}
        self._lock = threading.Lock()  # tied and spread: read() adds, the recorder's forget_before prunes
        #: consumers whose use comes as shares of the driver's sample periods (NVML), spread evenly over
        #: each period, not counts read at the sweeps
        self.spread: set[str] = set()

    @property
    def unknown(self) -> dict[str, str]:
        """The GPUs (by domain) whose per-process use is not known over the recording, and why: they
        answered an error at some read."""
        out = {}
        for domain, (ri, n, first, last) in list(self._failed.items()):  # read() may add meanwhile
            what = first if first == last else f"{first}; latest: {last}"
            out[domain] = f"{what} ({n} of {self._reads[ri]} reads failed)"
        return out

    def _consumer(self, reader, index: int, pid: int, instance: int = -1) -> Consumer:
        if pid not in self._names:
            self._names[pid] = process_facts(self.proc_root, pid)
        comm, uid, cgroup, job = self._names[pid]
        return Consumer(f"{pid}@{gpu_domain(reader.kind, index)}", "process", pid, -1, comm, cgroup, uid, job,
                        gpu=int(index), gpu_instance=int(instance))

    def read(self, now_ns: Optional[int] = None) -> list[tuple]:
        """The use since the last read as pieces (consumer, start_ns, end_ns, busy seconds) on the
        sampler's clock: NVML's sample periods (stamped with the wall clock, µs), AMD SMI's growth
        between reads, dated ``now_ns`` (the sweep's instant; default: when read, CLOCK_MONOTONIC)."""
        wall_minus_mono = time.time_ns() - time.monotonic_ns()
        pieces = []
        for ri, reader in enumerate(self.readers):
            samples = reader.processes(self._since[ri], int(now_ns or 0))
            self._reads[ri] += 1
            errors = reader.process_errors() if hasattr(reader, "process_errors") else []
            failed = set()
            for e in errors:
                domain = gpu_domain(reader.kind, e["index"])
                failed.add(e["index"])
                f = self._failed.setdefault(domain, [ri, 0, e["error"], e["error"]])
                f[1] += 1
                f[3] = e["error"]
            mig = [x for x in samples if x.get("gpu_instance") is not None]
            if mig:
                pieces += self._instances(ri, reader, mig)
                samples = [x for x in samples if x.get("gpu_instance") is None]
            whole = {x["index"] for x in samples}  # GPUs not (or no longer) in MIG mode: no instance bases
            for k in [k for k in self._instance if k[0] == ri and k[1] in whole]:
                del self._instance[k]
            cumulative = [x for x in samples if x.get("gfx_busy_ns") is not None]
            if cumulative or reader.kind in self.CUMULATIVE_KINDS:
                t = int(now_ns) if now_ns is not None else int(cumulative[0]["t_ns"]) if cumulative else \
                    time.monotonic_ns()
                pieces += self._cumulative(ri, reader, cumulative, t, failed)
                self._last_read[ri] = (t, failed)
            shares = [x for x in samples if x.get("gfx_busy_ns") is None]
            pieces += self._shares(ri, reader, shares, wall_minus_mono)
        return pieces

    def _cumulative(self, ri: int, reader, samples: list, t: int, failed: set) -> list[tuple]:
        """Pieces from cumulative counts read at ``t`` (the sweep's instant)."""
        pieces, seen = [], set()
        prev_t, prev_failed = self._last_read.get(ri, (None, set()))
        for x in samples:
            key = (ri, x["index"], x["pid"])
            seen.add(key)
            count = int(x["gfx_busy_ns"])
            base = self._count.get(key)
            if base is not None and count >= base[0] and t <= base[1]:
                continue  # read again at the same instant: its growth goes to the next piece
            self._count[key] = (count, t)
            if base is None and prev_t is not None and prev_t < t and x["index"] not in prev_failed:
                base = (0, prev_t)  # not listed at the GPU's previous read: it started since
            if base is None or count <= base[0]:
                continue  # a GPU's first read, or a count that fell: a base only
            pieces.append((self._consumer(reader, x["index"], x["pid"]), base[1], t, (count - base[0]) / 1e9))
        # the pids a GPU that answered no longer lists ended: their bases go
        for key in [k for k in self._count if k[0] == ri and k[1] not in failed and k not in seen]:
            del self._count[key]
        return pieces

    def _instances(self, ri: int, reader, samples: list) -> list[tuple]:
        """Pieces from MIG instances' cumulative busy counts (one sample per listed process, each with
        its instance's count, dated at the instance's latest GPM sample; ``count_since_ns``: when that
        count started, later where it started anew). A piece is split evenly among the processes
        listed at either end of it (one that started or ended inside it took part), and they are
        tied; busy time with no process listed at either end is the instance's own consumer
        (``gi<N>@<domain>``, no pid), so that the fit does not read it as idle."""
        by: dict[tuple, list] = {}
        for x in samples:
            by.setdefault((ri, x["index"], x["gpu_instance"]), []).append(x)
        pieces = []
        for key, xs in by.items():
            count, t, since = int(xs[0]["gfx_busy_ns"]), int(xs[0]["t_ns"]), int(xs[0].get("count_since_ns") or 0)
            pids = {int(x["pid"]) for x in xs} - {0}
            base = self._instance.get(key)
            if base is not None and base[2] == since and t <= base[1]:
                self._instance[key] = (base[0], base[1], since, base[3] | pids)
                continue  # no GPM sample since: the count stands
            self._instance[key] = (count, t, since, pids)
            if base is None or base[2] != since or count <= base[0]:
                continue  # an instance's first sample, a count started anew (a base only), or no busy time
            who = sorted(base[3] | pids)
            if who:
                cons = [self._consumer(reader, key[1], pid, key[2]) for pid in who]
            else:
                domain = gpu_domain(reader.kind, key[1])
                cons = [Consumer(f"gi{key[2]}@{domain}", "process", -1, -1,
                                 f"(MIG GPU instance {key[2]}: no process listed)", gpu=int(key[1]),
                                 gpu_instance=int(key[2]))]
            share = (count - base[0]) / 1e9 / len(cons)
            for c in cons:
                pieces.append((c, base[1], t, share))
            self._tie([c.key for c in cons])
        # the instances a GPU that answered no longer has are gone: their bases go
        answered = {x["index"] for x in samples}
        for k in [k for k in self._instance if k[0] == ri and k[1] in answered and k not in by]:
            del self._instance[k]
        return pieces

    def _tie(self, keys: list) -> None:
        """Ties consumers that shared an instance: all of a tie's members map to one of its keys (the
        least), and two ties that share a member become one."""
        if len(keys) < 2:
            return
        with self._lock:
            roots = {self.tied.get(k, k) for k in keys}
            root = min(roots)
            for k, r in list(self.tied.items()):
                if r in roots:
                    self.tied[k] = root
            for k in keys:
                self.tied[k] = root

    def close(self) -> None:
        """Lets the usage readers go (each holds its library open, NVML's nvmlInit), now rather than when
        the garbage collector finds them: what was read stays."""
        self.readers = []
        self._since = []

    def known(self) -> tuple[dict, set]:
        """Copies of ``tied`` and ``spread``, taken together (the recorder's thread may add to them)."""
        with self._lock:
            return dict(self.tied), set(self.spread)

    def prune(self, keys: set) -> None:
        """Lets go of what is known of consumers outside ``keys`` (the recorder forgot them)."""
        with self._lock:
            self.tied = {k: r for k, r in self.tied.items() if k in keys}
            self.spread &= keys

    def _shares(self, ri: int, reader, samples: list, wall_minus_mono: int) -> list[tuple]:
        pieces = []
        for x in sorted(samples, key=lambda x: (x["index"], x["t_us"])):
            self._since[ri] = max(self._since[ri], x["t_us"])
            key = (ri, x["index"])
            prev = self._prev.get(key)
            if prev is None or x["t_us"] < prev:
                self._prev[key] = x["t_us"]
                continue
            if x["t_us"] > prev:  # a new sample period; another process of the same one keeps it
                # periods in which no process ran leave no sample: the driver's period is the
                # shortest step seen between two samples, and a sample covers no more than it
                step = min(x["t_us"] - prev, self._step.get(key, x["t_us"] - prev))
                self._step[key] = step
                self._period[key] = (x["t_us"] - step, x["t_us"])
                self._prev[key] = x["t_us"]
            a_us, b_us = self._period.get(key, (prev, prev))
            if b_us <= a_us or not x["sm_util_pct"]:
                continue
            c = self._consumer(reader, x["index"], x["pid"])
            with self._lock:
                self.spread.add(c.key)
            pieces.append((c, a_us * 1000 - wall_minus_mono, b_us * 1000 - wall_minus_mono,
                           x["sm_util_pct"] / 100.0 * (b_us - a_us) / 1e6))
        return pieces


def gpu_use_for(use: "Use", domain: str, index: int) -> tuple[Optional["Use"], str]:
    """The recorded per-process use (kind "gpu") of the GPU whose channel has domain ``domain`` (its
    kind's index ``index``): that GPU's consumers only (pid@<domain>), or None and why where its
    per-process use is not known (it answered an error: GpuProcessReader.unknown)."""
    why = use.gpu_unknown.get(domain)
    if why:
        return None, f"per-process use of {domain} is not known: {why}"
    suffix = "@" + domain
    return use.subset(lambda c: c.gpu == index and c.key.endswith(suffix)), ""


@dataclass
class Use:
    """A recording's sweeps and each consumer's changes, for one kind.

    ``t_ns``: the sweeps' instants; ``consumers``: index -> Consumer; ``k``, ``sweep``, ``cpu_s``: the
    sparse changes (consumer index, sweep index, cumulative CPU seconds there), a consumer's first row
    being its value when first seen."""

    kind: str
    t_ns: np.ndarray
    consumers: list
    k: np.ndarray
    sweep: np.ndarray
    cpu_s: np.ndarray
    #: use placed in windows directly (consumer, window, seconds): kind "gpu", whose samples come
    #: dated, some after the sweep that ends their window
    placed: tuple = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    #: how finely the source counts a consumer's use (s): a /proc tick, a µs of cpu.stat, a GPU driver's
    #: sample period. A consumer's use over an interval is known to within this at each end
    resolution_s: float = 0.0
    #: pods' namespaces and names by uid (the recorder's PodNames); None: not known
    pods: Optional[PodNames] = None
    #: kind "gpu": the GPUs (by domain) whose per-process use is not known, and why
    #: (GpuProcessReader.unknown; gpu_use_for)
    gpu_unknown: dict = field(default_factory=dict)
    #: kind "gpu": consumers whose split is not measured (processes that shared a MIG instance), by
    #: key: each one's tie; they share one coefficient (consumer_fit)
    tied: dict = field(default_factory=dict)
    #: kind "gpu": consumers whose use comes spread evenly over the source's own sample periods (NVML's
    #: per-process shares), by key; the others' are counts read at the sweeps (consumer_fit's smoother)
    spread: frozenset = frozenset()

    def subset(self, keep: Callable[[Consumer], bool]) -> "Use":
        """The same sweeps with only the consumers ``keep`` picks (renumbered)."""
        chosen = [i for i, c in enumerate(self.consumers) if keep(c)]
        renum = np.full(len(self.consumers) + 1, -1, np.int64)
        renum[chosen] = np.arange(len(chosen))
        m = renum[self.k] >= 0 if self.k.size else np.zeros(0, bool)
        pk, pw, pd = self.placed
        pm = renum[pk] >= 0 if pk.size else np.zeros(0, bool)
        return Use(self.kind, self.t_ns, [self.consumers[i] for i in chosen], renum[self.k[m]], self.sweep[m],
                   self.cpu_s[m], (renum[pk[pm]], pw[pm], pd[pm]), self.resolution_s, self.pods, dict(self.gpu_unknown),
                   dict(self.tied), self.spread)

    def cpu_between(self, a: int, b: int) -> np.ndarray:
        """Each consumer's CPU seconds over [a, b] (a sweep window cut by a or b counted by its
        overlap, its use taken as even over it)."""
        t = self.t_ns
        k, w, d = self.deltas()
        lo, hi = t[:-1], t[1:]
        frac = np.clip((np.minimum(hi, b) - np.maximum(lo, a)) / np.maximum(hi - lo, 1), 0.0, 1.0)
        totals = np.zeros(len(self.consumers))
        np.add.at(totals, k, d * frac[w])
        return totals

    def foreign(self, a: int, b: int, own: set) -> tuple[float, list]:
        """CPU cores that consumers outside ``own`` (indices) used on average over [a, b], and those
        that used a tenth of a core or more (at most 8, the most first), as (name, cores)."""
        totals = self.cpu_between(a, b)
        others = [(totals[i], i) for i in range(totals.size) if i not in own and totals[i] > 0]
        secs = max((b - a) / 1e9, 1e-9)
        top = [(self.consumers[i].name, float(x / secs)) for x, i in sorted(others, reverse=True)[:8]
               if x / secs >= 0.1]
        return float(sum(x for x, _ in others) / secs), top

    def deltas(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(consumer, window, cpu seconds) for every change: window w is [t_ns[w], t_ns[w+1]]."""
        order = np.lexsort((self.sweep, self.k))
        k, s, v = self.k[order], self.sweep[order], self.cpu_s[order]
        same = np.r_[False, k[1:] == k[:-1]][:k.size]
        d = np.r_[0.0, np.diff(v)][:k.size]
        m = same & (d > 0)
        pk, pw, pd = self.placed
        return np.r_[k[m], pk].astype(np.int64), np.r_[s[m] - 1, pw].astype(np.int64), np.r_[d[m], pd]


class UseRecorder:
    """Sweeps the readers on the sampler's clock: ``read_at(t_ns)`` (a virtual clock, or the
    thread that ``start()`` runs every ``period_s``)."""

    def __init__(self, kinds: Sequence[str], period_s: float = PERIOD_S, proc_root: str = "/proc",
                 cgroup_root: str = "/sys/fs/cgroup", clock: Callable[[], int] = time.monotonic_ns,
                 gpu_readers: Sequence = (), pods_root: Optional[str] = None):
        self.kinds = parse_kinds(kinds)
        if not self.kinds:
            raise ConfigError("no consumer kind to record", "pass consumers='process' or 'process,cgroup'")
        if not MIN_PERIOD_S <= period_s <= 60:
            raise ConfigError(f"consumer_period_s must be from {MIN_PERIOD_S} to 60 s, got {period_s}",
                              f"pass consumer_period_s={PERIOD_S} (the default) or another value in range")
        self.period_s = float(period_s)
        self._clock = clock
        #: pods' namespace and name (labels namespace, pod_name): pods_root, else $GREENPROBE_PODS_ROOT,
        #: else /var/log/pods; a missing folder leaves them ''
        self.pods = PodNames(pods_root or os.environ.get("GREENPROBE_PODS_ROOT") or PODS_ROOT)
        self.readers = {}
        for kind in self.kinds:
            self.readers[kind] = ProcessReader(proc_root) if kind == "process" else \
                CgroupReader(cgroup_root, proc_root)
        #: why the GPUs' energy is not split among processes ("" when it is: kind "gpu" is recorded)
        self.gpu_note = "no GPU sensor"
        if "process" in self.kinds and gpu_readers:
            try:
                self.readers["gpu"] = GpuProcessReader(gpu_readers, proc_root)
                self.gpu_note = ""
            except ConfigError as e:
                self.gpu_note = e.message
        self._lock = threading.Lock()
        self._t: list[int] = []
        self._index: dict[str, dict[Consumer, int]] = {k: {} for k in self.readers}
        self._last: dict[str, dict[int, float]] = {k: {} for k in self.readers}
        self._alive: dict[str, set] = {k: set() for k in self.readers}  # in the latest sweep
        self._rows: dict[str, list[np.ndarray]] = {k: [] for k in self.readers}
        self._pieces: list[tuple] = []  # kind "gpu": dated use waiting for the sweep after it
        self._placed: list[tuple] = []  # kind "gpu": (consumer, window, seconds)
        self.sweep_s: deque = deque(maxlen=1024)  # how long the latest sweeps took (their cost)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.next_ns: Optional[int] = None
        self.forgotten_before_ns: Optional[int] = None  # what came before was let go (forget_before)

    def read_at(self, t_ns: Optional[int] = None) -> None:
        """One sweep, dated ``t_ns`` (now on the sampler clock when None: the sweep's middle)."""
        a = time.perf_counter()
        t0 = self._clock() if t_ns is None else int(t_ns)
        got = {kind: (r.read(t0 / 1e9) if kind == "cgroup" else r.read(t0) if kind == "gpu" else r.read())
               for kind, r in self.readers.items()}
        if t_ns is None:
            t0 = (t0 + self._clock()) // 2
        with self._lock:
            s = len(self._t)
            self._t.append(t0)
            for kind, values in got.items():
                index, last = self._index[kind], self._last[kind]
                if isinstance(values, list):  # dated pieces (kind "gpu"): placed once their windows are swept
                    for c, a_ns, b_ns, amount in values:
                        i = index.get(c)
                        if i is None:
                            i = index[c] = len(index)
                        self._pieces.append((i, a_ns, b_ns, amount))
                    self._place()
                    continue
                ks, vs, alive = [], [], set()
                for c, v in values.items():
                    i = index.get(c)
                    if i is None:
                        i = index[c] = len(index)
                    alive.add(i)
                    if last.get(i) != v:
                        last[i] = v
                        ks.append(i)
                        vs.append(v)
                self._alive[kind] = alive
                fresh = [index[c] for c in self.readers[kind].fresh] if s > 0 else []
                if fresh:  # started since the previous sweep: all its CPU time is this window's
                    self._rows[kind].append(np.array([fresh, [s - 1] * len(fresh), [0.0] * len(fresh)], np.float64))
                if ks:
                    self._rows[kind].append(np.array([ks, [s] * len(ks), vs], np.float64))
        self.sweep_s.append(time.perf_counter() - a)
        self.next_ns = t0 + int(self.period_s * 1e9)

    def _place(self) -> None:
        """Splits each waiting piece over the sweep windows it spans, by overlap, once the last of them
        is swept (under the lock); what lies before the first sweep is not the recording's."""
        t = np.array(self._t, np.int64)
        keep = []
        for i, a_ns, b_ns, amount in self._pieces:
            if b_ns > t[-1]:
                keep.append((i, a_ns, b_ns, amount))
                continue
            w0 = max(int(np.searchsorted(t, a_ns, "right")) - 1, 0)
            w1 = int(np.searchsorted(t, b_ns, "left"))
            for w in range(w0, min(w1, t.size - 1)):
                part = (min(b_ns, t[w + 1]) - max(a_ns, t[w])) / max(b_ns - a_ns, 1)
                if part > 0:
                    self._placed.append((i, w, amount * part))
        self._pieces = keep

    def wait_past(self, t_ns: int, timeout_s: float = 2.0) -> bool:
        """Waits (real clock) until a sweep at or after ``t_ns`` is in; whether one is."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._t and self._t[-1] >= t_ns:
                    return True
            if time.monotonic() >= deadline or self._thread is None:
                return False
            time.sleep(0.02)

    def due(self, t_ns: int) -> bool:
        return self.next_ns is None or t_ns >= self.next_ns

    def start(self) -> "UseRecorder":
        self.read_at()
        self._thread = threading.Thread(target=self._loop, name="greenprobe-consumers", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(max(0.0, (self.next_ns - self._clock()) / 1e9)):
            self.read_at()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.read_at()
        self.close()

    def close(self) -> None:
        """Lets the GPU usage readers go (their libraries' handles), what was recorded staying."""
        if "gpu" in self.readers:
            self.readers["gpu"].close()

    def forget_before(self, t_ns: int) -> None:
        """Lets the sweeps before ``t_ns`` go, and the consumers that have exited since (a daemon's
        memory stays bounded under process churn). Each live consumer keeps its value at the first
        sweep kept as its base, so every change after it keeps its window."""
        with self._lock:
            s = int(np.searchsorted(np.array(self._t, np.int64), t_ns, "right")) - 1
            if s <= 0:
                return
            for kind, chunks in self._rows.items():
                rows = np.concatenate(chunks, axis=1) if chunks else np.zeros((3, 0))
                # a change at sweep s happened in the window that ends there, which goes: it is the base
                old = rows[1] <= s
                ks = rows[0].astype(np.int64)
                later = np.zeros(len(self._index[kind]), bool)
                later[ks[~old]] = True
                keep = ~old
                if old.any():  # each consumer's last old row, if it is alive or changed later
                    oi = np.flatnonzero(old)
                    order = oi[np.lexsort((rows[1][oi], ks[oi]))]
                    last = order[np.r_[ks[order][1:] != ks[order][:-1], True]]
                    alive = self._alive[kind]
                    keep[last[[later[k] or k in alive for k in ks[last]]]] = True
                rows = rows[:, keep]
                rows[1] = np.maximum(rows[1] - s, 0)
                if kind == "gpu":  # dated use: the windows kept, and what waits for its sweep
                    self._placed = [(i, w - s, x) for i, w, x in self._placed if w >= s]
                    used = [i for i, _, _ in self._placed] + [p[0] for p in self._pieces]
                else:
                    used = []
                # renumber the consumers that still have rows (or use); the others are forgotten
                kept = np.unique(np.r_[rows[0].astype(np.int64), np.array(used, np.int64)])
                renum = np.full(len(self._index[kind]), -1, np.int64)
                renum[kept] = np.arange(kept.size)
                rows[0] = renum[rows[0].astype(np.int64)]
                self._index[kind] = {c: int(renum[i]) for c, i in self._index[kind].items() if renum[i] >= 0}
                self._last[kind] = {int(renum[i]): v for i, v in self._last[kind].items() if renum[i] >= 0}
                self._alive[kind] = {int(renum[i]) for i in self._alive[kind] if renum[i] >= 0}
                self._rows[kind] = [rows] if rows.shape[1] else []
                if kind == "gpu":  # the dated use renumbered; what is known of consumers let go goes too
                    self.readers[kind].prune({c.key for c in self._index[kind]})
                    self._placed = [(int(renum[i]), w, x) for i, w, x in self._placed]
                    self._pieces = [(int(renum[p[0]]), *p[1:]) for p in self._pieces]
            self._t = self._t[s:]
            self.forgotten_before_ns = int(self._t[0])

    def use(self, kind: str) -> Use:
        if kind not in self.readers:
            raise ConfigError(f"consumers of kind {kind!r} were not recorded (recorded: {', '.join(self.kinds)})",
                              f"make the Probe with consumers='{','.join(self.kinds + (kind,))}', or ask for "
                              f"by='{self.kinds[0]}'")
        with self._lock:
            t = np.array(self._t, np.int64)
            rows = np.concatenate(self._rows[kind], axis=1) if self._rows[kind] else np.zeros((3, 0))
            index = dict(self._index[kind])
            placed = np.array(self._placed if kind == "gpu" else [], np.float64).reshape(-1, 3)
        consumers = [None] * len(index)
        for c, i in index.items():
            consumers[i] = c
        reader = self.readers[kind]
        keys = {c.key for c in consumers}
        tied, spread = reader.known() if kind == "gpu" else ({}, set())
        tied = {k: r for k, r in tied.items() if k in keys}
        spread = frozenset(keys & spread)
        return Use(kind, t, consumers, rows[0].astype(np.int64), rows[1].astype(np.int64), rows[2].copy(),
                   (placed[:, 0].astype(np.int64), placed[:, 1].astype(np.int64), placed[:, 2].copy()),
                   reader.resolution_s, self.pods, dict(reader.unknown) if kind == "gpu" else {}, tied, spread)


def tree_of(consumers: Sequence[Consumer], root_pid: int) -> set[int]:
    """Indices of the processes descended from ``root_pid`` (itself included), by the ppid each had
    when first seen."""
    children: dict[int, list[int]] = {}
    for c in consumers:
        children.setdefault(c.ppid, []).append(c.pid)
    pids, todo = set(), [root_pid]
    while todo:
        p = todo.pop()
        if p in pids:
            continue
        pids.add(p)
        todo.extend(children.get(p, ()))
    return {i for i, c in enumerate(consumers) if c.pid in pids}

