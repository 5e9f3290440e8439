"""Whose energy is it: each consumer's share of every domain, by regression, with conservation and
intervals (issue 22). The records it reads: consumers.Use; the channels: attribution.Channel.

Model. The recorder's sweeps cut time into windows; in window i a CPU domain spent

    y_i = P0 * dt_i + sum_g w_g * x_ig + e_i

where dt_i is the window's length, x_ig the CPU seconds that consumer group g used in it, P0 the idle
power and w_g the group's power per CPU-second (W per core in use). Least squares gives P0 and the
w_g; their covariance is robust to heteroscedasticity and autocorrelation (EWC, as the per-call
estimator: estimator.ewc_long_run, Student t with B degrees of freedom).

Groups. A consumer gets its own coefficient when its use varies apart from the others' enough to
tell it apart: its variance inflation (1 / (1 - R^2) of its column on those already own) under
``MAX_VIF``, in order of CPU time, at most ``max_own``. A consumer whose use moves with one already
own (correlation over ``SHARE_CORR``) *shares* that one's coefficient; the rest (little CPU time, or
no clear partner) are *pooled* into one coefficient. Consumers whose use is not measured apart
(``Use.tied``: processes that shared a MIG instance, whose use GPM gives per instance only) share
one coefficient, whatever their columns. Where a coefficient is shared, the split of
its energy between its consumers is not identified by the data: each one's estimate is its CPU
share of the group's energy (the assumption, stated in ``coefficient``), and its interval is
[0, the group's upper bound], which is all the data say.

Rows, per domain, for the window [start_ns, end_ns]:
- one per consumer that used CPU in it: energy_j = w_g x its CPU seconds;
- ``idle``: P0 x the window's length;
- ``unattributed``: measured - idle - the consumers' sum (noise, what the model misses, a consumer
  that ran between sweeps unseen).
Consumers + idle + unattributed = measured, exactly (to float rounding), in every domain. A GPU's
domain is regressed on each process's use of it (SM-busy seconds: kind "gpu"); in the cgroup view its
rows are per cgroup, each the sum of its processes' (``_cgroup_rows``). A domain with no consumer
activity to regress on (a GPU without per-process use recorded) has its whole energy
``unattributed``, with a note saying why.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .attribution import Channel, Timeline, choose_channels
from .consumers import Use, cgroup_labels, gpu_use_for
from .estimator import ewc_long_run, ewc_terms, t_quantile

#: a consumer's own coefficient needs its variance inflation below this
MAX_VIF = 20.0
#: a consumer that cannot have its own coefficient shares one whose use correlates above this
SHARE_CORR = 0.9
#: a domain whose power varies less than this fraction of its mean over the windows, and whose consumers' use
#: less than twice it: a saturated (or steady) machine, where nothing tells the consumers from idle
SATURATED_CV = 0.05
#: a consumer below this share of the window's CPU time is pooled
MIN_SHARE = 0.002
#: own coefficients at most (and at most one per 20 windows)
MAX_OWN = 64

#: kinds whose domains are regressed on CPU time (synthetic: for tests and demos)
CPU_ROLES = ("cpu", "estimate")


@functools.lru_cache(maxsize=None)
def _kinds() -> tuple[frozenset, frozenset, frozenset]:
    """From the registry's rows (sensors.kinds), once: the kinds whose domains CPU time drives, the
    hwmon chips of the CPU kinds, and the GPU kinds (those with a usage reader)."""
    from .sensors import kinds

    rows = kinds()
    return (frozenset(r["name"] for r in rows if r["auto_role"] in CPU_ROLES) | {"synthetic"},
            frozenset(c for r in rows if r["auto_role"] == "cpu" for c in r["hwmon_chips"].split(",") if c),
            frozenset(r["name"] for r in rows if r["gpu_usage"]))


def cpu_domain(ch: Channel) -> bool:
    """Whether a channel measures something CPU time drives: a CPU sensor (RAPL, the estimate), an
    hwmon chip of a CPU kind (amd_energy, zenpower), or the synthetic sensor."""
    cpu_kinds, cpu_chips, _ = _kinds()
    return ch.sensor in cpu_kinds or (ch.sensor == "hwmon" and ch.domain.split("-")[0] in cpu_chips)


def gpu_kind(sensor: str) -> bool:
    """Whether a sensor kind measures GPUs (the registry's kinds with a usage reader: nvml, amd-gpu)."""
    return sensor in _kinds()[2]


@dataclass
class ConsumerFit:
    """One domain's fit over one window: the groups, the coefficients and their covariance."""

    group_of: np.ndarray  # consumer index -> group (-1: no CPU in the window)
    coefficient: list  # per group: "own" | "shared" | "pooled"
    beta: np.ndarray  # [P0 W, w_g W per CPU-second ...]
    cov: np.ndarray
    dof: int
    windows: int
    edge_s: float = 0.0  # a consumer's use over the interval is known to within this (both ends)

    def group_use(self, totals: np.ndarray, members=None) -> np.ndarray:
        """Each group's use (its consumers' ``totals``; only ``members``' where given)."""
        out = np.zeros(len(self.coefficient))
        for i in np.flatnonzero(self.group_of >= 0):
            if members is None or i in members:
                out[self.group_of[i]] += totals[i]
        return out

    def combo(self, c: np.ndarray, level: float = 0.975) -> tuple[float, float]:
        """Estimate and half-width of the linear combination c . beta: its statistical error, plus,
        for each group it takes use of, that group's power per unit of use x the resolution of the use
        at the interval's ends (a GPU driver's 1/6-1 s sample period: where in it the use fell is not
        known)."""
        est = float(c @ self.beta)
        se = math.sqrt(max(float(c @ self.cov @ c), 0.0))
        edge = self.edge_s * float(np.abs(self.beta[1:]) @ (np.abs(c[1:]) > 0))
        return est, t_quantile(self.dof, level) * se + edge


def _window_use(use: Use, a: int, b: int) -> tuple[np.ndarray, ...]:
    """The sweep windows inside [a, b] (their indices), the CPU seconds per (window, consumer) there
    as sparse (window, consumer, seconds), and each consumer's CPU seconds over [a, b] (a window cut
    by a or b counted by its overlap)."""
    t = use.t_ns
    k, w, d = use.deltas()
    lo, hi = t[:-1], t[1:]
    inside = np.flatnonzero((lo >= a) & (hi <= b))
    totals = use.cpu_between(a, b)
    m = (lo[w] >= a) & (hi[w] <= b)
    return inside, k[m], w[m], d[m], totals


def fit_domain(use: Use, windows: np.ndarray, k: np.ndarray, w: np.ndarray, d: np.ndarray, totals: np.ndarray,
               energy: np.ndarray, max_own: int = MAX_OWN,
               smooth: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> tuple[Optional[ConsumerFit], str]:
    """Groups the consumers and fits; (None, why) where it cannot. ``smooth``: what the domain's
    counter does to the windows' energy, done to each consumer's column of use too (counter_smoother)."""
    n = windows.size
    if n < 8:
        return None, f"{n} sweep windows in the interval: at least 8 are needed (a longer interval, or a " \
                     f"shorter consumer_period_s)"
    row = np.searchsorted(windows, w)
    dt = (use.t_ns[windows + 1] - use.t_ns[windows]) / 1e9
    total_cpu = float(totals.sum())
    order = [int(i) for i in np.argsort(-totals) if totals[i] > 0]
    group_of = np.full(len(use.consumers), -1, np.int64)
    if not order:
        return _ols(np.c_[dt], energy, group_of, [], n), ""

    cols: dict[int, np.ndarray] = {}

    def column(i: int) -> np.ndarray:
        if i not in cols:
            col = np.zeros(n)
            sel = k == i
            np.add.at(col, row[sel], d[sel])
            # use read as counts at the sweeps goes through the counter's smearing; NVML's shares come
            # spread over the driver's sample periods already
            spread = getattr(use.consumers[i], "key", None) in use.spread
            cols[i] = smooth(col) if smooth is not None and not spread else col
        return cols[i]

    # the domain's power and every consumer's use together: where neither varies (every core busy all
    # along, a machine saturated), what the consumers drew cannot be told from idle, whatever the split
    # (the use's small wobble, the sweeps' ticks, then explains nothing and the fit reads 0 W per core)
    rate = np.bincount(row, weights=d, minlength=n) / np.maximum(dt, 1e-9)
    power = energy / np.maximum(dt, 1e-9)
    if (rate.mean() > 0 and power.mean() > 0 and power.std() < SATURATED_CV * power.mean()
            and rate.std() < 2 * SATURATED_CV * rate.mean()):
        return None, (f"neither the power ({power.mean():.1f} W) nor the consumers' CPU use ({rate.mean():.2f} cores) "
                      "varied over the interval (a saturated or steady machine): their power cannot be told from "
                      "idle; measure while the load starts and stops")

    own_cols: list[np.ndarray] = []
    kinds: list[str] = []
    pooled: list[int] = []
    cap = min(max_own, max(1, n // 20))
    # units: a consumer, or a tie (consumers whose split is not measured: one shared coefficient,
    # checked as one column), by their use
    ties: dict[str, list[int]] = {}
    units: list[list[int]] = []
    for i in order:
        tie = use.tied.get(getattr(use.consumers[i], "key", None))
        if tie is None:
            units.append([i])
        elif tie not in ties:
            ties[tie] = [i]
            units.append(ties[tie])
        else:
            ties[tie].append(i)
    units.sort(key=lambda m: -float(totals[m].sum()))
    for members in units:
        if totals[members].sum() < MIN_SHARE * total_cpu or len(own_cols) >= cap:
            pooled.extend(members)
            continue
        x = sum(column(i) for i in members)
        base = np.column_stack([dt] + own_cols)
        coef, *_ = np.linalg.lstsq(base, x, rcond=None)
        r = x - base @ coef
        ss = float(((x - x.mean()) ** 2).sum())
        vif_ok = ss > 0 and float(r @ r) > ss / MAX_VIF
        if vif_ok:
            group_of[members] = len(own_cols)
            own_cols.append(x)
            kinds.append("own" if len(members) == 1 else "shared")
            continue
        best, best_c = -1, 0.0
        for g, col in enumerate(own_cols):
            if x.std() > 0 and col.std() > 0:
                cr = float(np.corrcoef(x, col)[0, 1])
                if cr > best_c:
                    best, best_c = g, cr
        if best >= 0 and best_c >= SHARE_CORR:
            group_of[members] = best
            own_cols[best] = own_cols[best] + x
            kinds[best] = "shared"
        else:
            pooled.extend(members)
    if pooled:
        x = np.zeros(n)
        for i in pooled:
            x += column(i)
        base = np.column_stack([dt] + own_cols)
        coef, *_ = np.linalg.lstsq(base, x, rcond=None)
        r = x - base @ coef
        ss = float(((x - x.mean()) ** 2).sum())
        if ss > 0 and float(r @ r) > ss / MAX_VIF:
            group_of[pooled] = len(own_cols)
            own_cols.append(x)
            kinds.append("pooled")
        elif own_cols:  # the pool moves with a group: it joins the one it follows most
            cors = [float(np.corrcoef(x, c)[0, 1]) if x.std() > 0 and c.std() > 0 else -1 for c in own_cols]
            g = int(np.argmax(cors))
            group_of[pooled] = g
            own_cols[g] = own_cols[g] + x
            kinds[g] = "pooled"
        else:  # one pool, collinear with time itself: its power cannot be told from idle
            return None, "the consumers' CPU use never varied apart from the passing of time: their power " \
                         "cannot be told from idle (a longer interval with the work starting and stopping)"
    X = np.column_stack([dt] + own_cols)
    if n - X.shape[1] < max(3, X.shape[1]):
        return None, f"{n} sweep windows for {X.shape[1]} coefficients"
    return _ols(X, energy, group_of, kinds, n), ""


def ewc_bands(resid: np.ndarray) -> int:
    """EWC's number of cosine terms B: LLSW's 0.4 n^(2/3), but no more than keeps the highest
    frequency (B / 2n cycles per window) at a third of where an AR(1) of the residuals' persistence
    (rho) falls to half its long-run spectrum, (1 - rho) / 2 pi: sweeps of 250 ms under power that
    wanders over seconds are far more persistent (rho ~ 0.85) than the rule assumes, and its B would
    read the spectrum past that knee and understate the variance (idle's coverage 0.85 over 40 s)."""
    n = resid.size
    r = resid - resid.mean()
    rho = float(np.clip((r[1:] @ r[:-1]) / max(float(r @ r), 1e-300), 0.0, 0.99))
    return max(2, min(ewc_terms(n), int(2 * n * (1 - rho) / (2 * np.pi) / 3)))


def _ols(X: np.ndarray, y: np.ndarray, group_of: np.ndarray, kinds: list, n: int) -> ConsumerFit:
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    bread = np.linalg.pinv(X.T @ X)
    B = ewc_bands(resid)
    omega = ewc_long_run(X * resid[:, None], B)
    return ConsumerFit(group_of, list(kinds), beta, bread @ omega @ bread, B, n)


def gpu_index(ch: Channel) -> Optional[int]:
    """The device index of a whole-GPU channel (nvml's gpu<N>, amd-gpu's amdgpu<N>), else None."""
    m = re.fullmatch(r"(?:gpu|amdgpu)(\d+)", ch.domain)
    return int(m.group(1)) if m and gpu_kind(ch.sensor) and not ch.shared else None


def use_for(uses: dict, view: str, ch: Channel, gpu_note: str = "") -> tuple[Optional[Use], str]:
    """The consumers' use that drives a channel: CPU time for a CPU domain (the view's), a GPU's
    per-process use for that GPU (in every view: the cgroup view adds up its processes' shares,
    ``_cgroup_rows``); None and why for any other."""
    if cpu_domain(ch):
        return uses[view], ""
    g = gpu_index(ch)
    if g is not None and "gpu" in uses:
        use, why = gpu_use_for(uses["gpu"], ch.domain, g)  # that kind's GPU; unattributed where not known
        return use, (f"{ch.sensor} ({ch.domain}): {why}" if why else "")
    if g is not None and view != "process":
        why = f"the {view} view adds up its processes' use of it, which is not recorded: " \
              f"{gpu_note or 'no GPU usage reader'} (record consumers='process,{view}' with a GPU sensor that " \
              f"gives per-process use)"
    elif g is not None:
        why = f"per-process use of {ch.domain} is not recorded: {gpu_note or 'no GPU usage reader'}"
    else:
        why = "no per-consumer activity drives this domain"
    return None, f"{ch.sensor} ({ch.domain}): {why}"


#: a counter whose updates are this fraction of the sweep windows apart, or more, smears the windows'
#: energy enough to matter (counter_smoother)
COARSE_COUNTER = 0.05


def counter_smoother(tl: Timeline, sweeps: np.ndarray) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """What the channel's counter does to the sweep windows' energy, as a function that does the same
    to a column of use per window; None where it does nothing worth it (a power channel, or a
    counter that updates far more often than the sweeps, as RAPL's every 1 ms).

    A window's energy is the counter read at its two ends, each interpolated in time between the
    updates around it (100 ms apart on an NVIDIA GPU, against 250 ms sweeps): near each end, part of
    the energy is the neighbour's. Regressed on the use as read at the sweeps (GPM, AMD SMI, /proc),
    that smeared energy reads the coefficients low (-1.6 % on the MIG stand-in, every seed). So the
    use goes through the same interpolation: its cumulative count at each update, then at each sweep
    between updates, as the energy was. The count at an update between two sweeps is interpolated
    shape-preservingly (monotone cubic, PCHIP), so that a consumer that started or stopped inside a
    window has its use on the side where it ran; spread evenly over the window instead (linear), the
    use is smeared twice and the coefficients read high (+4 %)."""
    if tl.power or tl.u.size < 3 or sweeps.size < 3:
        return None
    s = sweeps.astype(np.float64)
    if np.any(np.diff(s) <= 0):  # two sweeps at one instant (a virtual clock): nothing to interpolate between
        return None
    inside = np.flatnonzero((tl.u >= s[0]) & (tl.u <= s[-1]))
    if inside.size < 2 or np.median(np.diff(tl.u[inside])) < COARSE_COUNTER * np.median(np.diff(s)):
        return None
    # the updates around each end too: the energy at the first and last sweeps is interpolated
    # between them, so the use is (carried on at the end windows' rates beyond the sweeps)
    u = tl.u[max(inside[0] - 1, 0):inside[-1] + 2]
    from scipy.interpolate import PchipInterpolator

    def smooth(col: np.ndarray) -> np.ndarray:
        cum = np.r_[0.0, np.cumsum(col)]
        at_u = PchipInterpolator(s, cum, extrapolate=False)(u)
        lo, hi = u < s[0], u > s[-1]
        at_u[lo] = (u[lo] - s[0]) * col[0] / (s[1] - s[0])
        at_u[hi] = cum[-1] + (u[hi] - s[-1]) * col[-1] / (s[-1] - s[-2])
        return np.diff(np.interp(s, u, at_u))

    return smooth


def _prepared(use: Optional[Use], ch: Channel, a: int, b: int, max_own: int, why: str = ""):
    """(measured J, fit or None, why, each consumer's use over [a, b]) for one channel."""
    tl = Timeline(ch)
    measured = float(tl.energy(np.array([a]), np.array([b]))[0][0])
    if use is None:
        return measured, None, why, np.zeros(0)
    windows, k, w, d, totals = _window_use(use, a, b)
    t = use.t_ns
    energy = tl.energy(t[windows], t[windows + 1])[0] if windows.size else np.zeros(0)
    smooth = counter_smoother(tl, t[windows[0]:windows[-1] + 2]) if windows.size else None
    fit, why = fit_domain(use, windows, k, w, d, totals, energy, max_own, smooth)
    if fit is not None:
        fit.edge_s = 2 * use.resolution_s
    return measured, fit, why, totals


def _set_energy(fit: ConsumerFit, totals: np.ndarray, members: set) -> tuple[float, float, float, np.ndarray]:
    """The energy of a set of consumers (indices ``members``) with its 95 % interval, and which groups
    it takes part of only (bool per group). A group wholly inside the set (an own coefficient, or every
    consumer of a shared or pooled one) counts with its covariance; one the set shares with consumers
    outside it adds the set's share of use to the estimate, nothing to the low bound and the group's
    upper bound to the high one (their split is not identified)."""
    G = len(fit.coefficient)
    group_cpu, inside = fit.group_use(totals), fit.group_use(totals, members)
    whole = np.array([fit.coefficient[g] == "own" or inside[g] >= group_cpu[g] for g in range(G)], bool)
    est, half = fit.combo(np.r_[0.0, np.where(whole, inside, 0.0)])
    partial = ~whole & (inside > 0)
    pest = fit.combo(np.r_[0.0, np.where(partial, inside, 0.0)])[0]
    gest, ghalf = fit.combo(np.r_[0.0, np.where(partial, group_cpu, 0.0)])
    return (max(est + pest, 0.0), max(est - half, 0.0),
            max(est + half, 0.0) + (max(gest + ghalf, 0.0) if partial.any() else 0.0), partial)


def set_share(uses: dict, channels: Sequence[Channel], start_ns: int, end_ns: int, select,
              max_own: int = MAX_OWN, gpu_note: str = "") -> list[dict]:
    """The energy of the processes ``select(consumer)`` picks (a command's process tree, a Slurm
    job's) per chosen channel: energy_j with its 95 % interval, measured_j, cpu_s (their use: CPU
    seconds, or SM-busy seconds on a GPU), note. A shared or pooled coefficient whose consumers are
    not all in the set adds its share of use to the estimate, nothing to the low bound and its
    group's upper bound to the high one (their split is not identified)."""
    out = []
    for ch in choose_channels(list(channels)):
        use, why = use_for(uses, "process", ch, gpu_note)
        measured, fit, why, totals = _prepared(use, ch, int(start_ns), int(end_ns), max_own, why)
        members = {i for i, c in enumerate(use.consumers) if select(c)} if use is not None else set()
        idx = np.array(sorted(members), np.int64)
        cpu = float(totals[idx].sum()) if idx.size else 0.0
        row = {"sensor": ch.sensor, "domain": ch.domain, "estimated": bool(ch.estimated), "measured_j": measured,
               "cpu_s": cpu, "energy_j": np.nan, "energy_j_low": np.nan, "energy_j_high": np.nan, "note": why}
        if fit is not None:
            est, low, high, partial = _set_energy(fit, totals, members)
            row.update(energy_j=est, energy_j_low=low, energy_j_high=high,
                       note="shares a coefficient with processes outside it: the bounds allow any split"
                       if partial.any() else "")
        out.append(row)
    return out


def _rows_for(uses: dict, view: str, ch: Channel, a: int, b: int, max_own: int, gpu_note: str = "") -> list[dict]:
    use, why = use_for(uses, view, ch, gpu_note)
    measured, fit, why, totals = _prepared(use, ch, a, b, max_own, why)
    base = {"view": view, "domain": ch.domain, "sensor": ch.sensor, "estimated": bool(ch.estimated),
            "start_ns": a, "end_ns": b}
    whole = (b - a) / 1e9

    def rest(note: str) -> list[dict]:
        return [dict(base, consumer="unattributed", kind="unattributed", energy_j=measured,
                     energy_j_low=np.nan, energy_j_high=np.nan, cpu_s=np.nan, coefficient="", group="", note=note)]

    if fit is None:
        return rest(why)
    G = len(fit.coefficient)
    group_cpu = fit.group_use(totals)
    c_all = np.r_[whole, group_cpu]
    if gpu_index(ch) is not None and view != "process":  # fitted per process, added up per cgroup
        rows = _cgroup_rows(use, fit, totals, base, uses.get(view))
    else:
        rows = _consumer_rows(use, fit, totals, group_cpu, base)
    idle_c = np.zeros(G + 1)
    idle_c[0] = whole
    idle, ihalf = fit.combo(idle_c)
    rows.append(dict(base, consumer="idle", kind="idle", energy_j=idle, energy_j_low=max(idle - ihalf, 0.0),
                     energy_j_high=idle + ihalf, cpu_s=np.nan, coefficient="", group="",
                     note=f"power with no consumer's CPU in use, from {fit.windows} sweep windows"))
    attributed = sum(r["energy_j"] for r in rows)
    un = measured - attributed
    _, uhalf = fit.combo(c_all)
    rows.append(dict(base, consumer="unattributed", kind="unattributed", energy_j=un, energy_j_low=un - uhalf,
                     energy_j_high=un + uhalf, cpu_s=np.nan, coefficient="", group="",
                     note="measured - idle - consumers"))
    return rows


def _consumer_rows(use: Use, fit: ConsumerFit, totals: np.ndarray, group_cpu: np.ndarray, base: dict) -> list[dict]:
    """A row per consumer that used the domain's resource in the interval."""
    G = len(fit.coefficient)
    rows = []
    lead = {}
    for i in np.argsort(-totals):
        g = int(fit.group_of[i])
        if g >= 0 and g not in lead:
            lead[g] = use.consumers[i].name
    for i in np.flatnonzero(totals > 0):
        con = use.consumers[i]
        g = int(fit.group_of[i])
        c = np.zeros(G + 1)
        if g >= 0:
            c[g + 1] = totals[i]
        est, half = fit.combo(c)
        est = max(est, 0.0)
        kind = fit.coefficient[g] if g >= 0 else "pooled"
        if kind == "own":
            low, high = max(est - half, 0.0), max(est + half, 0.0)
        else:  # the group's split is not identified: from nothing to the whole group
            cg = np.zeros(G + 1)
            cg[g + 1] = group_cpu[g]
            gest, ghalf = fit.combo(cg)
            low, high = 0.0, max(gest + ghalf, 0.0)
        labels = cgroup_labels(con.cgroup, use.pods)
        labels["slurm_job"] = labels["slurm_job"] or con.job
        rows.append(dict(base, consumer=con.name, kind=con.kind, pid=con.pid if con.kind == "process" else None,
                         comm=con.comm, cgroup=con.cgroup, uid=con.uid, cpu_s=float(totals[i]), energy_j=est, energy_j_low=low,
                         energy_j_high=high, coefficient=kind, group=lead.get(g, ""),
                         note=_note(con, kind, use.tied), **labels))
    return rows


def _note(con, kind: str, tied: dict) -> str:
    """What a consumer row's coefficient rests on, in words."""
    where = f"MIG GPU instance {con.gpu_instance} (its use from GPM)" if con.gpu_instance >= 0 else ""
    if kind == "own":
        return where
    if kind == "shared" and con.key in tied:
        return f"shared {where or 'its GPU'} with other processes: the instance's use is measured, its split among " \
               f"them is not (even shares while listed together; the bounds allow any split)"
    why = ("use moved with another consumer's: their split is not identified" if kind == "shared"
           else "little or unidentifiable use: one coefficient for all such consumers")
    return f"{where}; {why}" if where else why


#: the cgroup of a GPU's process whose /proc/PID/cgroup could not be read
UNKNOWN_CGROUP = "(unknown cgroup)"


def _cgroup_rows(use: Use, fit: ConsumerFit, totals: np.ndarray, base: dict, cgroups: Optional[Use]) -> list[dict]:
    """A GPU's rows in the cgroup view: a row per cgroup whose processes used the GPU (each process's
    cgroup from /proc/PID/cgroup when first seen). The GPU's power is fitted on each process's use
    (a coefficient per process where it is identified), and a cgroup's energy is the sum over its
    processes of use x coefficient, its interval that sum's (_set_energy: with the coefficients'
    covariance; a coefficient shared with processes of another cgroup adds nothing to the low bound
    and its group's upper bound to the high one). The rows add up to the process view's, so idle and
    unattributed are the same and conservation holds. A cgroup's uid is its folder's owner where the
    cgroup reader saw it, else its processes' (if they have one), else -1; cpu_s: its SM-busy seconds."""
    owners = {c.cgroup: c.uid for c in cgroups.consumers} if cgroups is not None else {}
    members: dict[str, list[int]] = {}
    for i in np.flatnonzero(totals > 0):
        members.setdefault(use.consumers[i].cgroup or UNKNOWN_CGROUP, []).append(int(i))
    lead = {}  # group -> the cgroup of its heaviest process (a name of this view)
    for i in np.argsort(-totals):
        g = int(fit.group_of[i])
        if g >= 0 and g not in lead and totals[i] > 0:
            lead[g] = use.consumers[i].cgroup or UNKNOWN_CGROUP
    rows = []
    for path, idx in sorted(members.items()):
        procs = [use.consumers[i] for i in idx]
        est, low, high, partial = _set_energy(fit, totals, set(idx))
        uids = {p.uid for p in procs}
        jobs = {p.job for p in procs} - {""}
        labels = cgroup_labels("" if path == UNKNOWN_CGROUP else path, use.pods)
        labels["slurm_job"] = labels["slurm_job"] or (next(iter(jobs)) if len(jobs) == 1 else "")
        split = np.flatnonzero(partial)
        kind = fit.coefficient[int(split[0])] if split.size else "own"
        rows.append(dict(base, consumer=path, kind="cgroup", pid=None, comm="", cgroup=path,
                         uid=owners.get(path, next(iter(uids)) if len(uids) == 1 else -1),
                         cpu_s=float(totals[idx].sum()), energy_j=est, energy_j_low=low, energy_j_high=high,
                         coefficient=kind, group=lead.get(int(split[0]), "") if split.size else "",
                         note=f"the sum of its {len(idx)} process(es)' GPU energy, each by its use" +
                         ("; a coefficient shared with processes of another cgroup: the bounds allow any split"
                          if split.size else ""),
                         **labels))
    return rows


COLUMNS = ("view", "consumer", "kind", "pid", "uid", "comm", "cgroup", "slurm_job", "pod", "namespace", "pod_name",
           "container", "sensor", "domain", "estimated", "energy_j", "energy_j_low", "energy_j_high", "cpu_s",
           "coefficient", "group", "start_ns", "end_ns", "note")


def consumer_table(uses: dict, view: str, channels: Sequence[Channel], start_ns: int, end_ns: int,
                   max_own: int = MAX_OWN, gpu_note: str = ""):
    """Energy per consumer of ``view``'s kind (uses[view]; a GPU's domain by uses["gpu"], each
    process's use of it, where recorded: per process, or in the cgroup view per cgroup, the sum of its
    processes') over [start_ns, end_ns], every chosen channel: a pyarrow Table of COLUMNS
    (docs/SCHEMA.md, "Energy per consumer")."""
    import pyarrow as pa

    rows = []
    for ch in choose_channels(list(channels)):
        rows.extend(_rows_for(uses, view, ch, int(start_ns), int(end_ns), max_own, gpu_note))
    types = {"pid": pa.int64(), "uid": pa.int64(), "estimated": pa.bool_(), "start_ns": pa.int64(), "end_ns": pa.int64(),
             **{c: pa.float64() for c in ("energy_j", "energy_j_low", "energy_j_high", "cpu_s")}}
    return pa.table({c: pa.array([r.get(c, "" if c not in types else None) for r in rows],
                                 types.get(c, pa.string())) for c in COLUMNS})
