"""On a real NVIDIA GPU: two processes keep it busy on schedules of their own (torch matmuls of two
sizes, so two powers), and greenprobe splits the GPU's energy between them by NVML's per-process use
(consumer_fit, the gpu<N> domains); on a MIG-enabled GPU, by each GPU instance's busy time from GPM
(the note column names the instance). Prints a Markdown table for scripts/gpu-check.sh's report.

    python scripts/gpu_consumers.py [SECONDS]
"""

from __future__ import annotations

import subprocess
import sys
import time

WORKER = """
import sys, time, torch
n, on_s, off_s, secs = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
a = torch.randn(n, n, device="cuda")
end = time.time() + secs
while time.time() < end:
    t = time.time()
    while time.time() - t < on_s:
        (a @ a).sum().item()
    time.sleep(off_s)
"""


def main() -> None:
    import greenprobe

    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
    except Exception as e:  # noqa: BLE001 - said in the report
        print(f"no per-process GPU check: {e}\n")
        return
    with greenprobe.Probe(sensors=["nvml"], consumers="process") as probe:
        a = probe.now_ns()
        kids = [subprocess.Popen([sys.executable, "-c", WORKER, str(n), str(on), str(off), str(secs)])
                for n, on, off in ((8192, 0.7, 0.5), (2048, 0.3, 0.9))]
        for k in kids:
            k.wait()
        time.sleep(1.0)
        b = probe.now_ns()
    note = probe.use_recorder.gpu_note
    rows = [r for r in probe.consumers(a, b).to_pylist() if r["domain"].startswith("gpu")]
    pids = {k.pid for k in kids}
    print(f"two workers (pids {sorted(pids)}) for {secs:g} s; per-process GPU use: {note or 'read'}\n")
    print("| domain | consumer | kind | SM-busy s | energy J (95 %) | coefficient | note |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["domain"], -r["energy_j"])):
        if r["kind"] == "process" and r["pid"] not in pids and r["energy_j"] < 1:
            continue
        busy = "-" if r["cpu_s"] != r["cpu_s"] else f"{r['cpu_s']:.2f}"
        print(f"| {r['domain']} | {r['consumer']} | {r['kind']} | {busy} | {r['energy_j']:.1f} "
              f"({r['energy_j_low']:.1f} to {r['energy_j_high']:.1f}) | {r['coefficient']} | {r['note'][:100]} |")
    print()


if __name__ == "__main__":
    main()
