"""Per-call energy against exact truth: greenprobe vs Zeus's ZeusMonitor windows vs plain counter
differences, side by side in one run, on the stand-in sensors (whose power follows a known schedule
of calls, tests/python/truth.Load).

    bash scripts/setup-bench.sh                     # .venv-bench: greenprobe + zeus + codecarbon
    .venv-bench/bin/python benchmarks/bench_attribution.py [--seconds 3] [--out benchmarks/out/attribution.md]

For each sensor (fake NVML at 100 ms and 20 ms updates, loaded by greenprobe *and* by Zeus's pynvml
through LD_LIBRARY_PATH; the RAPL powercap stand-in at 1 ms, which Zeus reads through its container
path /zeus_sys/class/powercap, so this part needs root) and each call length (0.1, 0.5, 2, 10,
100 ms), calls run at random gaps (greenprobe.dither's distribution), all three tools watching
the same calls:
- greenprobe per call: ``intervals()`` (counter interpolation); greenprobe mean: ``summary()``
  (regression over update windows, idle measured before and after);
- Zeus: ``begin_window``/``end_window`` around each call (sync_execution=False: no GPU framework);
- plain differences: the last counter value read at or before each end, as a poller would give.
Errors: median |error| per call, and the error of the mean per call, against the exact energy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

CALL_MS = [0.1, 0.5, 2.0, 10.0, 100.0]
ZEUS_RAPL = Path("/zeus_sys/class/powercap")


def fake_nvml_dir() -> Path:
    """Builds the fake NVML once and re-executes this script with LD_LIBRARY_PATH pointing at it
    (pynvml dlopens libnvidia-ml.so.1 by name, so the path must be set before the process starts)."""
    from standins import build_fake_nvml

    d = Path(os.environ.get("GREENPROBE_BENCH_NVML_DIR") or tempfile.mkdtemp(prefix="fake-nvml-"))
    if not (d / "libnvidia-ml.so.1").exists():
        build_fake_nvml(d)
    return d


def schedule(seconds: float, start_ns: int, seed: int):
    """Segments of calls, one per call length, each at random gaps (uniform in [0, call])."""
    from greenprobe.dither import gap_schedule

    segs, t = [], start_ns
    for k, ms in enumerate(CALL_MS):
        n = int(np.clip(seconds / (1.5 * ms * 1e-3), 20, 3000))
        s, e = gap_schedule(n, ms * 1e-3, ms * 1e-3, seed=seed + k, start_ns=t)
        segs.append((ms, s, e))
        t = int(e[-1]) + 300_000_000  # idle between segments
    return segs


def run_calls(probe, zeus, segs, zeus_kind: str):
    """Busy-waits through every scheduled call with a Zeus window around it; greenprobe gets the
    scheduled interval as a mark. Returns Zeus's energy per call per segment."""
    now = time.monotonic_ns
    zeus_j = {}
    for ms, s, e in segs:
        out = []
        for i, (a, b) in enumerate(zip(s.tolist(), e.tolist())):
            while now() < a:
                pass
            if zeus is not None:
                zeus.begin_window("c", sync_execution=False)
            while now() < b:
                pass
            if zeus is not None:
                m = zeus.end_window("c", sync_execution=False)
                out.append(sum((m.gpu_energy if zeus_kind == "gpu" else m.cpu_energy).values()))
            probe.add_mark(f"{ms:g}ms", a, b)
        zeus_j[ms] = np.array(out)
    return zeus_j


def plain_differences(channel, starts, ends):
    """Energy as a plain poller sees it: the last value read at or before each end."""
    t, v = channel.t_ns, channel.energy_j_or_power_w
    i0 = np.clip(np.searchsorted(t, starts, side="right") - 1, 0, None)
    i1 = np.clip(np.searchsorted(t, ends, side="right") - 1, 0, None)
    return v[i1] - v[i0]


def score(est, truth):
    rel = np.abs(est - truth) / truth
    return float(np.median(rel)), float((est.mean() - truth.mean()) / truth.mean())


def evaluate(name, probe, power, segs, zeus_j, domain):
    from greenprobe.attribution import choose_channels

    ch = next(c for c in choose_channels(probe.channels()) if c.domain == domain)
    rows = {(r["label"]): r for r in probe.summary().to_pylist() if r["domain"] == domain}
    inter = [r for r in probe.intervals().to_pylist() if r["domain"] == domain]
    period_ms = ch.learned_update_period_ns()[0] / 1e6
    out = []
    for ms, s, e in segs:
        label = f"{ms:g}ms"
        truth = np.array([power.energy_between(a, b) for a, b in zip(s.tolist(), e.tolist())])
        gp = np.array([r["energy_j"] for r in inter if r["label"] == label])
        summ = rows[label]
        gp_med, _ = score(gp, truth)
        gp_mean = (summ["energy_j_per_call"] - truth.mean()) / truth.mean()
        covered = summ["energy_j_per_call_low"] <= truth.mean() <= summ["energy_j_per_call_high"]
        plain_med, plain_mean = score(plain_differences(ch, s, e), truth)
        z = zeus_j.get(ms)
        z_med, z_mean = score(z, truth) if z is not None and z.size else (float("nan"), float("nan"))
        out.append({"sensor": name, "period_ms": period_ms, "call_ms": ms, "calls": len(s), "gp_med": gp_med,
                    "gp_mean": gp_mean, "covered": covered, "method": summ["method"], "zeus_med": z_med,
                    "zeus_mean": z_mean, "plain_med": plain_med, "plain_mean": plain_mean,
                    "zeus_zero": float(np.mean(z == 0)) if z is not None and z.size else float("nan")})
    return out


def bench_nvml(update_ms: int, lib_dir: Path, seconds: float, use_zeus: bool):
    import greenprobe
    from truth import Load, Total, Wave

    t0 = time.monotonic_ns()
    segs = schedule(seconds, t0 + 2_000_000_000, seed=update_ms)
    starts = np.concatenate([s for _, s, _ in segs])
    ends = np.concatenate([e for _, _, e in segs])
    load = Load(starts, ends, watts=150.0)
    work = Path(tempfile.mkdtemp())
    load.write(work / "load.bin")
    env = {"UPDATE_MS": update_ms, "T0_NS": t0, "WAVEFORM": "constant", "BASE_W": 100, "LOAD_FILE": work / "load.bin",
           "LOAD_W": 150, "GPUS": 1}
    for k, v in env.items():
        os.environ[f"FAKE_NVML_{k}"] = str(v)
    zeus = None
    if use_zeus:
        from zeus.monitor import ZeusMonitor

        zeus = ZeusMonitor(gpu_indices=[0], cpu_indices=[])
    with greenprobe.Probe(sensors=["nvml"], period_us=200, nvml_library=str(lib_dir / "libnvidia-ml.so.1"),
                          nvml_min_period_us=100, baseline_s=1.0) as probe:
        zeus_j = run_calls(probe, zeus, segs, "gpu")
    return evaluate(f"NVML stand-in, {update_ms} ms", probe, Total(Wave("constant", base_w=100, t0_ns=t0), load),
                    segs, zeus_j, "gpu0")


def bench_rapl(seconds: float, use_zeus: bool):
    import greenprobe
    from standins import Writer, make_powercap_tree
    from truth import Load, Total, Wave

    t0 = time.monotonic_ns()
    segs = schedule(seconds, t0 + 3_000_000_000, seed=1)
    starts = np.concatenate([s for _, s, _ in segs])
    ends = np.concatenate([e for _, _, e in segs])
    load = Load(starts, ends, watts=30.0)
    work = Path(tempfile.mkdtemp())
    load.write(work / "load.bin")
    max_uj = 262_143_328_850
    root = work / "powercap"
    files = make_powercap_tree(root, [("intel-rapl:0", "package-0", max_uj)])
    wave = Wave("constant", base_w=20, t0_ns=t0)
    total_s = (int(ends[-1]) - t0) * 1e-9 + 5
    cfg = {"kind": "powercap", "t0_ns": t0, "period_ns": 1_000_000, "duration_s": total_s, "wave": wave.kwargs(),
           "load": load.kwargs(work / "load.bin"),
           "targets": [{"path": str(files["package-0"]), "scale": 1.0, "max_uj": max_uj, "offset_uj": 1000}]}
    writer = Writer(cfg, work)
    writer.wait_started()
    zeus = None
    try:
        if use_zeus:
            from zeus.monitor import ZeusMonitor

            ZEUS_RAPL.mkdir(parents=True, exist_ok=True)
            link = ZEUS_RAPL / "intel-rapl"
            if link.is_symlink():
                link.unlink()
            link.symlink_to(root)
            zeus = ZeusMonitor(gpu_indices=[], cpu_indices=[0])
        with greenprobe.Probe(sensors=["rapl-powercap"], period_us=200, powercap_root=str(root),
                              baseline_s=1.0) as probe:
            zeus_j = run_calls(probe, zeus, segs, "cpu")
    finally:
        writer.stop()
    return evaluate("RAPL powercap stand-in, 1 ms", probe, Total(wave, load), segs, zeus_j, "package-0")


def table(rows) -> str:
    lines = [
        "| sensor | call | calls | greenprobe per call (median \\|err\\|) | Zeus window (median \\|err\\|) | "
        "plain diff (median \\|err\\|) | greenprobe mean (summary) | Zeus mean | plain mean | "
        "Zeus windows reading 0 | greenprobe 95 % CI covers |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sensor']} | {r['call_ms']:g} ms | {r['calls']} | {r['gp_med']:.2%} | {r['zeus_med']:.2%} | "
            f"{r['plain_med']:.2%} | {r['gp_mean']:+.3%} ({r['method']}) | {r['zeus_mean']:+.2%} | "
            f"{r['plain_mean']:+.2%} | {r['zeus_zero']:.0%} | {'yes' if r['covered'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds of calls per call length (default 3)")
    ap.add_argument("--no-zeus", action="store_true", help="greenprobe and plain differences only")
    ap.add_argument("--out", default="benchmarks/out/attribution.md")
    args = ap.parse_args(argv)
    lib_dir = fake_nvml_dir()
    if str(lib_dir) not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        env = dict(os.environ, LD_LIBRARY_PATH=f"{lib_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}",
                   GREENPROBE_BENCH_NVML_DIR=str(lib_dir))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    use_zeus = not args.no_zeus
    # RAPL first: Zeus decides once per process (cached) whether its RAPL directory exists
    rows = bench_rapl(args.seconds, use_zeus and os.geteuid() == 0)
    print(table(rows), flush=True)
    for update_ms in (100, 20):
        rows += bench_nvml(update_ms, lib_dir, args.seconds, use_zeus)
        print(table(rows[-len(CALL_MS):]), flush=True)
    text = table(rows)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
