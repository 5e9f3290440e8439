"""Energy per request in batched serving (issue 22): requests that share steps each get their share of
every step they took part in, by the tokens they had in it.

The marks: any mark with a ``request`` attribute (greenprobe.generation.Request sets it, with
``tokens`` and ``phase``) is one request's part of a step; a server running a batch marks the step
once per request in it, with that request's tokens (``mark_batch_step`` does it in one call). A mark
without ``tokens`` weighs 1.

Definition. At each instant the power is shared among the request marks running then, in proportion
to their tokens: request r's energy is the integral of P(t) x tokens_r(t) / sum_q tokens_q(t). Where
the marks of one step share their times this is the step's energy x the request's share of its
tokens. Marks of different owners (a daemon's users) running at once share too: they share the
machine. Time when no request mark runs (a server's gaps) is nobody's.

Estimate and bounds, per domain. The counter's energy over each of the grid's pieces (every mark
edge and every counter update) is read from the counter (interpolated between its updates); each
piece's energy is shared by the tokens running in it. The bounds are hard: in each update period the
counter's energy is known exactly and lies somewhere in the period (widened by its updates' dating),
so the request's part of it lies between the smallest and the largest share the request had there.
Where its share is the same through a period the bound is exact; it widens only where requests join
or leave inside one. A power channel (readings, not a counter) gets the estimate without bounds.
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence

import numpy as np

from .attribution import Channel, Timeline, choose_channels
from .store import mark_attrs

COLUMNS = ("owner", "request", "sensor", "domain", "estimated", "marks", "tokens", "prompt_tokens",
           "output_tokens", "start_ns", "end_ns", "energy_j", "energy_j_low", "energy_j_high",
           "prefill_energy_j", "decode_energy_j", "energy_j_per_token", "note")


def _tokens(a: dict) -> float:
    v = a.get("tokens", 1)
    return float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0 else 1.0


def request_marks(marks) -> Optional[dict]:
    """The request marks of a mark table as arrays: start, end, tokens, request index, phase and the
    requests' keys (owner, id); None where there are none."""
    attrs = mark_attrs(marks)
    sel = [i for i, a in enumerate(attrs) if "request" in a]
    if not sel:
        return None
    owners = marks.column("owner").to_pylist() if "owner" in marks.column_names else [None] * marks.num_rows
    keys, idx = {}, []
    for i in sel:
        key = (owners[i], str(attrs[i]["request"]))
        idx.append(keys.setdefault(key, len(keys)))
    start = marks.column("start_ns").to_numpy()[sel].astype(np.int64)
    end = marks.column("end_ns").to_numpy()[sel].astype(np.int64)
    phase = np.array([{"prefill": 1, "decode": 2}.get(attrs[i].get("phase"), 0) for i in sel], np.int8)
    return {"start": start, "end": np.maximum(end, start), "tokens": np.array([_tokens(attrs[i]) for i in sel]),
            "r": np.array(idx, np.int64), "phase": phase, "keys": list(keys)}


def _running_tokens(grid: np.ndarray, start, end, tokens) -> np.ndarray:
    """Tokens of the marks running in each piece [grid[i], grid[i+1]] (the marks' edges lie on the grid)."""
    acc = np.zeros(grid.size + 1)
    np.add.at(acc, np.searchsorted(grid, start), tokens)
    np.add.at(acc, np.searchsorted(grid, end), -tokens)
    return np.cumsum(acc)[:grid.size - 1]


def _channel_rows(m: dict, ch: Channel) -> dict:
    tl = Timeline(ch)
    edges = np.union1d(m["start"], m["end"]).astype(np.float64)
    counter = not tl.power and tl.u.size >= 2 and tl.u.size == ch.updates()[0].size
    if counter:  # the updates around the marks, with where each may lie
        # one update more on each side than the marks need: a period's dating may reach past its update
        j0 = max(int(np.searchsorted(tl.u, edges[0], "right")) - 2, 0)
        j1 = min(int(np.searchsorted(tl.u, edges[-1], "left")) + 2, tl.u.size)
        lo, hi = ch.update_windows(tl.u.astype(np.int64))
        lo = np.minimum(lo[j0:j1], tl.u[j0:j1]).astype(np.float64)
        hi = np.maximum(hi[j0:j1], tl.u[j0:j1]).astype(np.float64)
        grid = np.union1d(edges, np.r_[lo, hi, tl.u[j0:j1]])
    else:
        grid = edges
    running = _running_tokens(grid, m["start"], m["end"], m["tokens"])
    piece_e = np.diff(tl.cumulative(grid))
    if counter:
        piece_e = _split_periods(grid, running, tl.u[j0:j1], tl.e[j0:j1], piece_e)
    density = np.where(running > 0, piece_e / np.where(running > 0, running, 1), 0.0)
    cum = np.r_[0.0, np.cumsum(density)]
    i0, i1 = np.searchsorted(grid, m["start"]), np.searchsorted(grid, m["end"])
    mark_e = m["tokens"] * (cum[i1] - cum[i0])
    R = len(m["keys"])
    est = np.bincount(m["r"], mark_e, R)
    by_phase = {p: np.bincount(m["r"][m["phase"] == p], mark_e[m["phase"] == p], R) for p in (1, 2)}
    low = np.full(R, np.nan)
    high = np.full(R, np.nan)
    if counter and j1 - j0 >= 2:
        low, high = _bounds(m, tl.u[j0:j1], np.diff(tl.e[j0:j1]), lo, hi, grid, running)
    return {"est": est, "low": low, "high": high, "prefill": by_phase[1], "decode": by_phase[2]}


#: the pieces' power is fitted per band of running tokens: none, then 1, 2-3, 4-7, ... up to 2^MAX_BAND
MAX_BAND = 12


def _split_periods(grid, running, u, e, interpolated) -> np.ndarray:
    """Each piece's energy: its update period's energy (exact) split over the period's pieces in
    proportion to length x the power of its band of running tokens (none, 1, 2-3, 4-7, ...),
    the bands' powers fitted by non-negative least squares over every period. Plain interpolation
    spreads a step's energy evenly over its period, into the gaps between steps too (a server's
    0.3 ms between 2-7 ms steps: -3 % on every request); one power for every busy piece is worse
    (short, light steps come with more gaps: the fit takes their lightness for the gaps'). Pieces
    outside the updates, or periods whose bands fitted no power, keep ``interpolated``."""
    from scipy.optimize import nnls

    length = np.diff(grid)
    band = np.where(running > 0, 1 + np.floor(np.log2(np.maximum(running, 1))), 0).astype(np.int64)
    band = np.minimum(band, MAX_BAND)
    p = np.searchsorted(u, grid[:-1], "right") - 1
    inside = (p >= 0) & (p < u.size - 1)
    n = u.size - 1
    X = np.zeros((n, MAX_BAND + 1))
    np.add.at(X, (p[inside], band[inside]), length[inside] / 1e9)
    used = X.sum(axis=0) > 0
    if n < 4 * used.sum():
        return interpolated
    power = np.zeros(MAX_BAND + 1)
    power[used], _ = nnls(X[:, used], np.diff(e))
    weight = power[band] * length
    total = np.bincount(p[inside], weight[inside], n)
    ok = inside.copy()
    ok[inside] = total[p[inside]] > 0
    out = interpolated.copy()
    out[ok] = np.diff(e)[p[ok]] * weight[ok] / total[p[ok]]
    return out


def _bounds(m: dict, u, de, lo, hi, grid, running) -> tuple[np.ndarray, np.ndarray]:
    """Hard bounds of each request's energy: per update period j (energy de[j], between updates j
    and j+1, each known to lie in [lo, hi]), that energy times the smallest and the largest share the
    request had anywhere from lo[j] to hi[j+1], where the period's energy may have been spent."""
    R = len(m["keys"])
    low, high = np.full(R, np.nan), np.full(R, np.nan)
    first = np.searchsorted(grid, lo[:-1])  # period j's pieces: [first[j], last[j])
    last = np.searchsorted(grid, hi[1:])
    order = np.argsort(m["r"], kind="stable")
    for marks in np.split(order, np.flatnonzero(np.diff(m["r"][order])) + 1):
        r = int(m["r"][marks[0]])
        a, b = m["start"][marks].min(), m["end"][marks].max()
        # every period that may hold part of [a, b]: it may end after a and start before b
        ja = max(int(np.searchsorted(hi[1:], a, "right")), 0)
        jb = min(int(np.searchsorted(lo[:-1], b, "left")), de.size)
        if jb <= ja:
            continue
        g0, g1 = int(first[ja:jb].min()), int(last[ja:jb].max())
        mine = _running_tokens(grid[g0:g1 + 1], m["start"][marks], m["end"][marks], m["tokens"][marks])
        run = running[g0:g1]
        share = np.where(run > 0, mine / np.where(run > 0, run, 1), 0.0)
        pmin, pmax = np.zeros(jb - ja), np.zeros(jb - ja)
        for n, j in enumerate(range(ja, jb)):
            piece = share[first[j] - g0:max(last[j], first[j] + 1) - g0]
            pmin[n], pmax[n] = piece.min(), piece.max()
        low[r] = float(de[ja:jb] @ pmin)
        # marks beyond the updates around them: the energy there is unbounded above
        high[r] = float(de[ja:jb] @ pmax) if lo[0] <= a and b <= hi[-1] else np.nan
    return low, high


def request_table(marks, channels: Sequence[Channel], owner: Optional[str] = None):
    """One row per (request, sensor, domain) of the request marks in ``marks`` (a table of
    store.mark_schema): COLUMNS. ``owner``: only that owner's requests (every owner's marks share all
    the same)."""
    import pyarrow as pa

    m = request_marks(marks)
    rows = []
    if m is not None:
        R = len(m["keys"])
        tokens = np.bincount(m["r"], m["tokens"], R)
        count = np.bincount(m["r"], minlength=R)
        prompt = np.bincount(m["r"][m["phase"] == 1], m["tokens"][m["phase"] == 1], R)
        output = np.bincount(m["r"][m["phase"] == 2], m["tokens"][m["phase"] == 2], R)
        first = np.full(R, np.iinfo(np.int64).max)
        np.minimum.at(first, m["r"], m["start"])
        last = np.zeros(R, np.int64)
        np.maximum.at(last, m["r"], m["end"])
        for ch in choose_channels(list(channels)):
            got = _channel_rows(m, ch)
            for r, (own, rid) in enumerate(m["keys"]):
                if owner is not None and own != owner:
                    continue
                rows.append({"owner": own, "request": rid, "sensor": ch.sensor, "domain": ch.domain,
                             "estimated": bool(ch.estimated), "marks": int(count[r]), "tokens": float(tokens[r]),
                             "prompt_tokens": float(prompt[r]), "output_tokens": float(output[r]),
                             "start_ns": int(first[r]), "end_ns": int(last[r]), "energy_j": float(got["est"][r]),
                             "energy_j_low": float(got["low"][r]), "energy_j_high": float(got["high"][r]),
                             "prefill_energy_j": float(got["prefill"][r]), "decode_energy_j": float(got["decode"][r]),
                             "energy_j_per_token": float(got["est"][r] / tokens[r]) if tokens[r] > 0 else np.nan,
                             "note": "" if got["low"][r] == got["low"][r] else
                             "power readings: the split inside a reading's window is not bounded"})
    types = {"estimated": pa.bool_(), "marks": pa.int64(), "start_ns": pa.int64(), "end_ns": pa.int64(),
             **{c: pa.float64() for c in COLUMNS if "energy_j" in c or "tokens" in c}}
    return pa.table({c: pa.array([r[c] for r in rows], types.get(c, pa.string())) for c in COLUMNS})


def mark_batch_step(probe, label: str, start_ns: int, end_ns: int, tokens: dict, **attrs) -> None:
    """Marks one step of a batch on ``probe`` (a Probe or a daemon's RemoteProbe): one mark per
    request in it, {request id: its tokens in the step}, all with the step's times."""
    for rid, n in tokens.items():
        probe.add_mark(label, start_ns, end_ns, request=rid, tokens=n, **attrs)
