"""What instrumenting costs: one mark against the peers' per-task calls, and the slowdown of an
instrumented PyTorch inference loop.

    .venv-bench/bin/python benchmarks/bench_overhead.py marks [--n 20000]
        greenprobe.mark enter+exit vs Zeus begin_window/end_window (fake NVML through
        LD_LIBRARY_PATH, sync_execution=False) vs CodeCarbon start_task/stop_task (offline, its CPU
        estimate here), as ratios to the mark, best of 5 repeats.
    .venv/bin/python benchmarks/bench_overhead.py loop [--rounds 10] [--iters 300]
        a small PyTorch model (MobileNetV2 at 1x3x96x96, one thread) with and without a running
        Probe + one mark per call; rounds alternate off/on so drift hits both; median ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))


def per_call_ns(fn, n: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t) / n)
    return best


def cmd_marks(args) -> None:
    from bench_attribution import fake_nvml_dir

    lib_dir = fake_nvml_dir()
    if str(lib_dir) not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        env = dict(os.environ, LD_LIBRARY_PATH=f"{lib_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}",
                   GREENPROBE_BENCH_NVML_DIR=str(lib_dir))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    import logging

    logging.disable(logging.WARNING)
    import greenprobe

    n = args.n
    rows = []
    with greenprobe.Probe(sensors=["nvml"], nvml_library=str(lib_dir / "libnvidia-ml.so.1"), period_us=1000):
        mark = greenprobe.mark

        def gp():
            with mark("infer"):
                pass

        rows.append(("`with greenprobe.mark('infer'): pass` (Probe on the same fake NVML)", per_call_ns(gp, n)))
    from zeus.monitor import ZeusMonitor

    zm = ZeusMonitor(gpu_indices=[0], cpu_indices=[])

    def zeus():
        zm.begin_window("infer", sync_execution=False)
        zm.end_window("infer", sync_execution=False)

    rows.append(("Zeus `begin_window` + `end_window` (1 GPU, sync_execution=False)", per_call_ns(zeus, max(n // 10, 100))))
    from codecarbon import OfflineEmissionsTracker

    tracker = OfflineEmissionsTracker(country_iso_code="USA", save_to_file=False, log_level="error",
                                      measure_power_secs=15)
    tracker.start()

    def cc():
        tracker.start_task("infer")
        tracker.stop_task()

    rows.append(("CodeCarbon `start_task` + `stop_task` (offline, CPU estimate)", per_call_ns(cc, max(n // 100, 20), 3)))
    tracker.stop()
    base = rows[0][1]
    print("| what | ns per enter+exit | ratio to greenprobe.mark |")
    print("|---|---|---|")
    for what, ns in rows:
        print(f"| {what} | {ns:,.0f} | {ns / base:,.1f}x |")


def cmd_loop(args) -> None:
    import torch
    from transformers import MobileNetV2Config, MobileNetV2Model

    import greenprobe

    torch.set_num_threads(1)
    model = MobileNetV2Model(MobileNetV2Config(image_size=96)).eval()
    x = torch.randn(1, 3, 96, 96)

    def loop(marked: bool) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for _ in range(args.iters):
                if marked:
                    with greenprobe.mark("infer"):
                        model(pixel_values=x)
                else:
                    model(pixel_values=x)
        return time.perf_counter() - t

    loop(False)  # warm-up
    sensors = args.sensors if args.sensors == "auto" else args.sensors.split(",")
    off, on = [], []
    for _ in range(args.rounds):
        off.append(loop(False))
        with greenprobe.Probe(sensors=sensors, period_us=args.period_us):
            on.append(loop(True))
    ratios = [b / a for a, b in zip(off, on)]
    per_call_ms = statistics.median(off) / args.iters * 1e3
    print(f"| sensors | period | call | off (median s) | on (median s) | slowdown (median of {args.rounds} paired rounds) |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.sensors} | {args.period_us:g} µs | {per_call_ms:.2f} ms | {statistics.median(off):.3f} | "
          f"{statistics.median(on):.3f} | {statistics.median(ratios) - 1:+.2%} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("marks", help="mark cost vs Zeus and CodeCarbon")
    m.add_argument("--n", type=int, default=20000)
    lp = sub.add_parser("loop", help="slowdown of an instrumented PyTorch loop")
    lp.add_argument("--rounds", type=int, default=10)
    lp.add_argument("--iters", type=int, default=300)
    lp.add_argument("--sensors", default="auto")
    lp.add_argument("--period-us", type=float, default=1000)
    args = ap.parse_args(argv)
    {"marks": cmd_marks, "loop": cmd_loop}[args.what](args)


if __name__ == "__main__":
    main()
