"""Why the wall-clock hwmon truth test failed on a busy machine: runs its body N times and prints, per
run, the worst 100 ms interval (all, and those whose edges the sampler polled on time), the sample
gaps around the worst one, and whether the truth lay inside the bounds.

    (for i in 1 2 3; do (while :; do :; done) & done; PYTHONPATH=python .venv/bin/python \\
        benchmarks/diag_hwmon_busy.py 12; kill $(jobs -p))

RESULTS.md, "Why the hwmon truth test failed on a busy machine".
"""
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tests" / "python"))
import numpy as np
from pathlib import Path
import tempfile
from helpers import compare, writer_stalls
from test_hwmon import raw_at_open, real_clock_run


def once(tmp_path):
    run = real_clock_run(tmp_path, 8.0)  # the test's body, as it ran when it failed (8 s of writes)
    probe, logs, gpu, meter = run.probe, run.logs, run.gpu, run.meter
    counter_cfg, power_cfg = run.counter_cfg, run.power_cfg
    stalls = writer_stalls(logs[0][0], counter_cfg["period_ns"]) + writer_stalls(logs[1][0], power_cfg["period_ns"])
    results = compare(probe, "infer", {"xe-card": gpu, "power_meter": meter}, sensor="hwmon", stalls=stalls)
    late = []
    for c in probe.channels():
        g = c.t_ns - c.prev_t_ns
        late += [(int(a), int(b)) for a, b, x in zip(c.prev_t_ns, c.t_ns, g) if x > 1.5e6 and a > 0]
    results_ontime = compare(probe, "infer", {"xe-card": gpu, "power_meter": meter}, sensor="hwmon", stalls=stalls + late)
    ontime = {d: round(float((np.abs(e - t) / t).max()) * 100, 3) for d, (e, t, l, h) in results_ontime.items()}
    out = {}
    chs = {c.domain: c for c in probe.channels()}
    rows = [r for r in probe.intervals().to_pylist() if r["label"] == "infer"]
    for d, (est, true, low, high) in results.items():
        rel = np.abs(est - true) / true
        k = int(np.argmax(rel))
        # the worst interval's edges: the sample gap that brackets each
        r = [r for r in rows if r["domain"] == d and abs(r["energy_j"] - est[k]) < 1e-12][0]
        t = chs[d].t_ns
        br = []
        for e in (r["start_ns"], r["end_ns"]):
            i = int(np.searchsorted(t, e))
            br.append(round((t[min(i, len(t)-1)] - t[max(i-1, 0)]) / 1e6, 2))
        out[d] = (round(rel.max()*100, 3), int(((true < low-1e-6) | (true > high+1e-6)).sum()), br, round((high[k]-low[k])/true[k]*100, 2))
    # dating check for counter samples: which write produced each sample's value
    ch = {c.domain: c for c in probe.channels()}
    log = logs[0][0]
    raws = np.array([r[1] for r in log]); tw = np.array([r[2] for r in log]); tt = np.array([r[0] for r in log])
    counts = np.round(ch["xe-card"].energy_j * 1e6).astype(np.int64)
    base = raw_at_open(counts, set(raws.tolist()))
    idx = {int(r): k for k, r in enumerate(raws)}
    early = []; stale = []
    for k, c in enumerate(counts):
        j = idx.get(base + int(c))
        if j is None: continue
        ts = int(ch["xe-card"].t_ns[k])
        if ts < tt[j]: early.append((ts - tt[j]) / 1e6)
        if j + 1 < len(tt) and ts > tw[j + 1] + 0: stale.append((ts - tw[j + 1]) / 1e6)
    out["ontime"] = ontime
    out["dating"] = (len(early), min(early) if early else 0, len(stale), max(stale) if stale else 0, counts.size)
    return out, probe.stats() if hasattr(probe, "stats") else None

for i in range(int(sys.argv[1])):
    with tempfile.TemporaryDirectory() as d:
        o, s = once(Path(d))
        print(i, {k: v for k, v in o.items()}, flush=True)
        if s: print("   ", [(x.sensor if hasattr(x,'sensor') else x) for x in (s if isinstance(s, list) else [s])][:1])
