"""amd-gpu against exact truth on the fake AMD SMI: two GPUs on a ramp (150 W + 20 W/s, GPU 1 twice
that), 50 ms and 2 ms marked intervals, with the counter working and with GPU 1's counter frozen (the
sensor reads its power instead). Intervals whose edge falls in a gap of the sampler's own polls
(descheduled on a loaded machine) are left out of the error figures, as in tests/python/test_amd_gpu.py.

    .venv/bin/python benchmarks/bench_amd_gpu.py      (from the repository root)
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "tests" / "python")]
from standins import build_fake_amd_smi
import greenprobe
from helpers import compare, run_marks
from truth import Ramp
from test_amd_gpu import sampler_stalls
lib = build_fake_amd_smi(Path(tempfile.mkdtemp()))
for mode in ("ok", "frozen"):
    t0 = time.monotonic_ns()
    for k, v in dict(GPUS=2, T0_NS=t0, BASE_W=150, SLOPE_W_PER_S=20, COUNTER=mode, COUNTER_GPU=1).items():
        os.environ[f"FAKE_AMD_SMI_{k}"] = str(v)
    truth = {"amdgpu0": Ramp(150, 20, t0), "amdgpu1": Ramp(150, 20, t0, 2.0)}
    with greenprobe.Probe(sensors=["amd-gpu"], period_us=500, amd_smi_library=str(lib), amd_counter_check_ms=20) as probe:
        run_marks("long", 10, 0.05, 0.02)
        run_marks("short", 100, 0.002, 0.003, busy=True)
    st = sampler_stalls(probe)
    for label in ("long", "short"):
        for d, (est, true, lo, hi) in compare(probe, label, truth, sensor="amd-gpu", stalls=st).items():
            rel = np.abs(est - true) / true
            inb = np.mean((true >= lo - 1e-6) & (true <= hi + 1e-6))
            print(f"counter={mode:6s} {label:5s} {d}: n={est.size} worst {rel.max():.3%} median {np.median(rel):.3%} summed {(est.sum()-true.sum())/true.sum():+.3%} in-bounds {inb:.0%} stalls={len(st)}")
