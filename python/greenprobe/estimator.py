"""The one estimator of energy per labelled call: probe.summary(), labels.parquet, the daemon's
Summary, the study and its report all take their per-call figures from here.

Definitions (docs/SCHEMA.md, "Energy per call"):

    gross   the energy a domain spent while at least one call of the label ran, shared equally
            among the calls running at each moment: per call, the energy over the union of the
            label's intervals divided by the number of calls. Calls' energies add up to the energy
            spent while they ran; an overlap is never counted twice.
    nested  each label counts the energy during its own intervals (inclusive): a `step` holding
            `infer` calls includes their energy. `exclusive` is the part spent while no call of
            any other label ran (a step's energy outside its infer calls).
    net     gross - idle power x the label's (shared) time.

Model. The marks cut time into segments of constant *activity state*: how many calls of each label
are running (counts above ``CAP`` are merged). The domain's power is taken to be a function of the
state plus noise; each observation of the sensor (a counter's energy between two updates, or a
power reading times the window it averages) is the integral of that power over its window, so

    y_j = sum_s P_s * x_js + e_j,     x_js = time window j spent in state s (exact, from the marks)

and ordinary least squares gives every state's power P_s. A label's gross energy is then the exact
linear combination sum_s P_s * T_ks (T_ks: time in state s inside the label's union), so nested and
concurrent labels come out right without assuming their powers add. When the states are too many
or too rare to be told apart, the model is coarsened, in order: states as *sets* of running labels
(counts ignored), then power additive in the number of running calls of each label; the row says
which model was used (``model``). Update moments are known only within the poll window that saw
them; x is taken as its mean over that window (regression calibration), as before.

Uncertainty. 95 % intervals target the energy these calls spent (per call). The expected energy
per call of a repeat (what comparisons between runtimes need) differs from it by the power's own
wander during the calls, which no single session can average out: compare repeated sessions (the
study's runs) for that; coverage of both is measured in benchmarks/RESULTS.md. Power that wanders
slowly (clocks, temperature) makes the windows' errors correlated over many update periods, so the
covariance is heteroscedasticity- and
autocorrelation-robust: the equal-weighted cosine (EWC) estimator with B = 0.4 n^(2/3) terms over the
n windows, and the quantile is Student t with B degrees of freedom, exact (SciPy), as Lazarus,
Lewis, Stock & Watson (JBES 2018) recommend. Why EWC rather than Newey-West or a block bootstrap:
Newey-West with normal or n - k quantiles ignores how noisy its own variance estimate is (fixed-b
theory gives EWC's t_B exactly), and EWC is deterministic and one pass over the windows (a day of
data stays seconds). Coverage over seeded simulations: tests/python/test_estimator.py and
benchmarks/RESULTS.md.

A label that cannot be estimated (too few windows, a state never seen apart from another) gets a
row with ``status`` ``not-estimated`` and the ``reason``, never silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

#: calls of one label running at once above this are merged into one state
CAP = 4
#: labels one regression tells apart at most
MAX_LABELS = 256
#: more states than this: coarsen
MAX_STATES = 64
#: observation windows kept for the fit at most (consecutive windows are merged above it)
MAX_WINDOWS = 50_000
#: dating grid: points over each update's poll window
GRID = 8


def t_quantile(dof: float, level: float = 0.975) -> float:
    """Exact Student t quantile (SciPy)."""
    from scipy.stats import t

    return float(t.ppf(level, dof))


# -- activity --------------------------------------------------------------------------------------
class Activity:
    """The activity states the marks define over time, and the time spent in each up to any instant.

    ``labels``: names; ``starts``/``ends``: one int64 array per label (ns). State 0 is idle."""

    def __init__(self, labels: Sequence[str], starts: Sequence[np.ndarray], ends: Sequence[np.ndarray],
                 cap: int = CAP):
        n_labels = len(labels)
        self.calls = np.array([len(s) for s in starts], np.int64)
        t = np.concatenate([np.asarray(s, np.int64) for s in starts] + [np.asarray(e, np.int64) for e in ends]) \
            if n_labels else np.zeros(0, np.int64)
        which = np.concatenate([np.full(len(s), k) for k, s in enumerate(starts)]
                               + [np.full(len(e), k) for k, e in enumerate(ends)]) if n_labels else np.zeros(0, int)
        delta = np.concatenate([np.ones(sum(len(s) for s in starts), np.int32),
                                -np.ones(sum(len(e) for e in ends), np.int32)])
        order = np.argsort(t, kind="stable")
        t, which, delta = t[order], which[order], delta[order]
        onehot = np.zeros((t.size, max(n_labels, 1)), np.int32)
        onehot[np.arange(t.size), which] = delta
        counts = np.cumsum(onehot, axis=0)[:, :n_labels] if t.size else np.zeros((0, n_labels), np.int32)
        # the state after the last event at each distinct instant holds until the next instant
        last = np.flatnonzero(np.diff(t, append=np.iinfo(np.int64).max) != 0) if t.size else np.zeros(0, int)
        self.times = t[last]                       # segment i: [times[i], times[i+1])
        capped = np.minimum(counts[last], cap)     # running calls per label in segment i
        idle = np.zeros((1, n_labels), np.int32)
        states, inverse = np.unique(np.vstack([idle, capped]), axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        zero = int(inverse[0])
        # state 0 is idle
        perm = np.concatenate([[zero], np.delete(np.arange(len(states)), zero)])
        rank = np.empty_like(perm)
        rank[perm] = np.arange(perm.size)
        self.states = states[perm]                 # (S, L) capped counts
        self.segment_state = rank[inverse[1:]]
        lens = np.diff(self.times).astype(np.float64)
        self.segment_len = np.concatenate([lens, [0.0]]) if self.times.size else np.zeros(0)
        self.total_time = np.bincount(self.segment_state, weights=self.segment_len, minlength=len(self.states))
        # per state: its segments' starts, lengths and the time spent in it before each
        self._per_state = []
        for s in range(len(self.states)):
            m = self.segment_state == s
            ln = self.segment_len[m]
            self._per_state.append((self.times[m].astype(np.float64), ln, np.concatenate([[0.0], np.cumsum(ln)])))

    @property
    def n_states(self) -> int:
        return len(self.states)

    def cumulative(self, t: np.ndarray) -> np.ndarray:
        """Time (ns) spent in each non-idle state before each instant: shape (len(t), S-1)."""
        t = np.asarray(t, np.float64)
        out = np.empty((t.size, self.n_states - 1))
        for s in range(1, self.n_states):
            st, ln, before = self._per_state[s]
            j = np.searchsorted(st, t, side="right") - 1
            jc = np.clip(j, 0, None)
            out[:, s - 1] = np.where(j >= 0, before[jc] + np.clip(t - st[jc], 0.0, ln[jc] if ln.size else 0.0), 0.0)
        return out

    def union_time(self, k: int) -> float:
        """Seconds during which at least one call of label k ran."""
        return float(self.total_time[self.states[:, k] > 0].sum()) * 1e-9

    def exclusive_time(self, k: int) -> float:
        """Seconds during which label k ran and no other label did."""
        return float(self.total_time[self._exclusive_mask(k)].sum()) * 1e-9

    def _exclusive_mask(self, k: int) -> np.ndarray:
        others = np.delete(self.states, k, axis=1)
        return (self.states[:, k] > 0) & ~(others > 0).any(axis=1)


# -- observation windows ---------------------------------------------------------------------------
@dataclass
class Windows:
    """What one channel observed: energy_j over each window (a, b], with a and b each known to lie
    within [lo, hi] (ns)."""

    a: np.ndarray
    a_lo: np.ndarray
    a_hi: np.ndarray
    b: np.ndarray
    b_lo: np.ndarray
    b_hi: np.ndarray
    energy_j: np.ndarray
    averaging_ns: int = 0  # power readings: the window each one averages


def counter_windows(ch) -> Optional[Windows]:
    """Consecutive counter updates: the energy between them, in groups of up to 10 consecutive
    updates while >= 100 windows remain. Each update moment is known only within its poll window,
    and not uniformly within it (a sensor's lattice keeps a fixed phase against the sampler's), so
    its error is correlated with the activity around it and biases the fit by about
    var(error)/var(x); longer windows shrink that. At most MAX_WINDOWS keep a day of data cheap."""
    u, e = ch.updates()
    if u.size < 3:
        return None
    lo, hi = ch.update_windows(u)
    group = int(max(1, min(10, (u.size - 1) // 100), math.ceil((u.size - 1) / MAX_WINDOWS)))
    u, e, lo, hi = u[::group], e[::group], lo[::group], hi[::group]
    # a window across a step the sampler excluded (a glitch) lacks that step's energy: left out
    _, glitch_t = ch.glitch_spans()
    ok = np.searchsorted(glitch_t, u[1:], side="left") == np.searchsorted(glitch_t, u[:-1], side="left")
    if not ok.all():
        if ok.sum() < 2:
            return None
        return Windows(u[:-1][ok], lo[:-1][ok], hi[:-1][ok], u[1:][ok], lo[1:][ok], hi[1:][ok], np.diff(e)[ok])
    return Windows(u[:-1], lo[:-1], hi[:-1], u[1:], lo[1:], hi[1:], np.diff(e))


def power_windows(ch) -> Optional[Windows]:
    """Power readings: reading j is the mean power over the ``averaging_window_ns`` that end at
    its update (since the previous update when the window is 0); its energy is reading x window."""
    u, p = ch.updates()
    if u.size < 3:
        return None
    lo, hi = ch.update_windows(u)
    if ch.averaging_window_ns:
        w = np.full(u.size, float(ch.averaging_window_ns))
        averaging = int(ch.averaging_window_ns)
    else:
        w = np.concatenate([[np.nan], np.diff(u).astype(np.float64)])
        averaging = int(np.median(w[1:]))
    keep = np.isfinite(w) & (w > 0)
    u, p, lo, hi, w = u[keep], p[keep], lo[keep], hi[keep], w[keep]
    if u.size > MAX_WINDOWS:
        step = int(math.ceil(u.size / MAX_WINDOWS))
        u, p, lo, hi, w = u[::step], p[::step], lo[::step], hi[::step], w[::step]
    return Windows(u - w, lo - w, hi - w, u.astype(np.float64), lo, hi, p * w * 1e-9, averaging)


def windows_of(ch) -> Optional[Windows]:
    return counter_windows(ch) if ch.quantity == "energy" else power_windows(ch)


# -- the fit ---------------------------------------------------------------------------------------
@dataclass
class Fit:
    """State powers (W) and their covariance; ``model`` names the parametrisation used."""

    power_w: np.ndarray          # per activity state
    cov: np.ndarray              # of power_w
    dof: int                     # of the t quantile: the EWC terms B
    windows: int
    model: str


@dataclass
class LabelEstimate:
    label: str
    calls: int
    status: str                  # "ok" or "not-estimated"
    reason: str = ""
    time_s_per_call: float = 0.0          # shared time: the label's union time / calls
    time_s_mean: float = 0.0              # mean duration of one call
    exclusive_time_s_per_call: float = 0.0
    gross_j: float = float("nan")
    gross_se: float = float("nan")
    exclusive_j: float = float("nan")
    power_w: float = float("nan")         # mean power while the label runs
    idle_j: float = float("nan")          # regression idle power x shared time
    idle_cov: float = float("nan")        # cov(gross, idle_j)
    idle_var: float = float("nan")


def design(act: Activity, win: Windows) -> np.ndarray:
    """Seconds each window spent in each activity state (state 0, idle, is the rest of the window).
    Each edge's time in a state is its mean over the edge's dating window; edges that windows share
    (a counter's window ends where the next begins) are evaluated once."""
    n = win.a.size
    edges = np.column_stack([np.concatenate([win.a_lo, win.b_lo]), np.concatenate([win.a_hi, win.b_hi])])
    uniq, inverse = np.unique(edges.astype(np.float64), axis=0, return_inverse=True)
    lo, hi = uniq[:, 0], uniq[:, 1]
    frac = (np.arange(GRID) + 0.5) / GRID
    grid = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
    at = act.cumulative(grid.ravel()).reshape(lo.size, GRID, -1).mean(axis=1)[np.asarray(inverse).reshape(-1)]
    busy = (at[n:] - at[:n]) * 1e-9
    span = (win.b - win.a) * 1e-9
    idle = np.clip(span - busy.sum(axis=1), 0.0, None)
    return np.column_stack([idle, busy])


def reductions(act: Activity) -> list[tuple[str, np.ndarray]]:
    """Parametrisations to try, finest first: R maps parameters to state powers (P = R beta)."""
    S, L = act.states.shape
    out = []
    if S <= MAX_STATES:
        out.append(("state", np.eye(S)))
    sets = (act.states > 0).astype(np.int8)
    uniq, inv = np.unique(sets, axis=0, return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    if len(uniq) < S and len(uniq) <= MAX_STATES:
        R = np.zeros((S, len(uniq)))
        R[np.arange(S), inv] = 1.0
        out.append(("label-set", R))
    out.append(("additive", np.column_stack([np.ones(S), act.states.astype(np.float64)])))
    return out


def ewc_long_run(Z: np.ndarray, B: int, chunk: int = 4096) -> np.ndarray:
    """Equal-weighted cosine (EWC) estimate of the long-run covariance of the rows of Z (n x p), times
    n: the covariance of their sum. Lazarus, Lewis, Stock & Watson, "HAR inference: recommendations
    for practice", JBES 36(4), 2018: Omega = (2 / B) sum_j L_j L_j', L_j = sum_t Z_t cos(pi j (t + 1/2) / n);
    a t statistic built on it is Student t with B degrees of freedom (fixed-b)."""
    n, p = Z.shape
    j = np.arange(1, B + 1, dtype=np.float64)
    lam = np.zeros((B, p))
    for lo in range(0, n, chunk):
        t = (np.arange(lo, min(lo + chunk, n), dtype=np.float64) + 0.5) / n
        lam += np.cos(np.pi * np.outer(j, t)) @ Z[lo:lo + t.size]
    return 2.0 / B * lam.T @ lam


def ewc_terms(n: int) -> int:
    """LLSW's rule: B = 0.4 n^(2/3) cosine terms (at least 2)."""
    return max(2, int(round(0.4 * n ** (2.0 / 3.0))))


def fit(act: Activity, win: Windows) -> Fit:
    """Least squares of each window's energy on its time in each activity state; covariance robust
    to heteroscedasticity and to autocorrelation (EWC), with B degrees of freedom."""
    Xs = design(act, win)
    y = win.energy_j
    keep = (win.b - win.a) > 0
    Xs, y = Xs[keep], y[keep]
    last_err = "no parametrisation fits"
    for model, R in reductions(act):
        X = Xs @ R
        used = np.abs(X).sum(axis=0) > 0
        if not used.all():
            last_err = f"{model}: {int((~used).sum())} parameter(s) never observed"
            continue
        n, k = X.shape
        B = ewc_terms(n)
        if n - k < max(3, k) or B < 2:
            last_err = f"{model}: {n} windows for {k} parameters"
            continue
        norm = np.linalg.norm(X, axis=0)
        sv = np.linalg.svd(X / norm, compute_uv=False)
        if sv[-1] < 1e-6 * sv[0]:
            last_err = f"{model}: activity states that never vary apart in the sensor's windows"
            continue
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        resid = y - X @ beta
        bread = np.linalg.inv(X.T @ X)
        omega = ewc_long_run(X * resid[:, None], B)
        cov_beta = bread @ omega @ bread
        return Fit(R @ beta, R @ cov_beta @ R.T, B, n, model)
    raise ValueError(last_err)


def label_weights(act: Activity, k: int) -> tuple[np.ndarray, np.ndarray]:
    """State-time vectors (seconds per call) whose dot product with the state powers gives label
    k's gross and exclusive energy per call."""
    n = max(int(act.calls[k]), 1)
    t = act.total_time * 1e-9 / n
    return np.where(act.states[:, k] > 0, t, 0.0), np.where(act._exclusive_mask(k), t, 0.0)


def estimate(labels: Sequence[str], starts: Sequence[np.ndarray], ends: Sequence[np.ndarray], ch,
             act: Optional[Activity] = None) -> tuple[list[LabelEstimate], Optional[Fit], Optional[Windows]]:
    """Per-label estimates on one channel. Returns the estimates, the fit (None when it failed)
    and the windows used."""
    act = act if act is not None else Activity(labels, starts, ends)
    durations = [((np.asarray(e) - np.asarray(s)) * 1e-9) for s, e in zip(starts, ends)]

    def base(k):
        n = int(act.calls[k])
        return LabelEstimate(label=labels[k], calls=n, status="ok",
                             time_s_per_call=act.union_time(k) / max(n, 1),
                             time_s_mean=float(durations[k].mean()) if n else 0.0,
                             exclusive_time_s_per_call=act.exclusive_time(k) / max(n, 1))

    out = [base(k) for k in range(len(labels))]
    if len(labels) > MAX_LABELS:
        for r in out:
            r.status, r.reason = "not-estimated", f"{len(labels)} labels in one session: at most {MAX_LABELS}"
        return out, None, None
    win = windows_of(ch)
    if win is None:
        for r in out:
            r.status, r.reason = "not-estimated", "fewer than 3 sensor updates"
        return out, None, None
    weights = [label_weights(act, k) for k in range(len(labels))]
    try:
        f = fit(act, win)
    except (ValueError, np.linalg.LinAlgError) as e:
        for r in out:
            r.status, r.reason = "not-estimated", f"the regression cannot be fitted: {e}"
        return out, None, win
    idle = np.zeros(act.n_states)
    idle[0] = 1.0
    for r, (g, gx) in zip(out, weights):
        if r.calls == 0 or g.sum() == 0:
            r.status, r.reason = "not-estimated", "no time inside this label's marks"
            continue
        r.gross_j = float(g @ f.power_w)
        r.gross_se = float(math.sqrt(max(g @ f.cov @ g, 0.0)))
        r.exclusive_j = float(gx @ f.power_w)
        r.power_w = r.gross_j / r.time_s_per_call if r.time_s_per_call > 0 else float("nan")
        gi = idle * r.time_s_per_call
        r.idle_j = float(gi @ f.power_w)
        r.idle_var = float(gi @ f.cov @ gi)
        r.idle_cov = float(g @ f.cov @ gi)
    return out, f, win
