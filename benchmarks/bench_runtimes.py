"""Latency per (runtime, model, batch) on this machine, full-size models with random weights.

    .venv/bin/python benchmarks/bench_runtimes.py [--batches 1,64] [--models ...] [--runtimes ...]

Each native runtime runs in its worker (its own environment); ONNX Runtime runs each framework's
exported model on every provider that really loads here. Median of n timed inferences after
warm-up; n is smaller for the heavy configurations so that the whole table finishes in ~20 min on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from greenprobe.runtimes import Worker, WorkerError

NATIVE = ["torch", "tensorflow", "mxnet"]
MODELS = ["resnet50", "mobilenet_v2", "bert-base-uncased"]


def runs_for(model: str, batch: int) -> tuple[int, int]:
    """(warm-up, timed) inferences."""
    if batch == 1:
        return 3, 20
    return (1, 2) if model == "bert-base-uncased" else (1, 3)


def timed(w: Worker, model: str, batch: int) -> dict:
    warm, n = runs_for(model, batch)
    iv = w.run(n=n, warmup=warm)
    ms = [(e - s) / 1e6 for s, e in iv]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "n": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runtimes", default=",".join(NATIVE))
    ap.add_argument("--seq-len", type=int, default=128)
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="gp-bench-"))
    ort = Worker("onnxruntime")
    providers = [p["name"] for p in ort.describe()["providers"] if p["available"]]
    skipped = [p for p in ort.describe()["providers"] if not p["available"]]
    for runtime in a.runtimes.split(","):
        with Worker(runtime) as w:
            version = w.describe()["version"]
            for model in a.models.split(","):
                onnx_path = None
                for batch in batches:
                    t0 = time.monotonic()
                    w.build(model, size="full", batch_size=batch, seq_len=a.seq_len)
                    r = timed(w, model, batch)
                    rows.append((runtime, version, runtime, "native", model, batch, r))
                    print(f"{runtime} {model} b{batch}: {r['median_ms']:.1f} ms ({time.monotonic() - t0:.0f} s)",
                          file=sys.stderr, flush=True)
                    if onnx_path is None:
                        onnx_path = str(tmp / f"{runtime}-{model}.onnx")
                        try:
                            w.export_onnx(onnx_path)
                        except WorkerError as e:
                            print(f"  export failed: {e}", file=sys.stderr)
                            onnx_path = ""
                    for provider in providers if onnx_path else []:
                        ort.build(model, onnx_path=onnx_path, provider=provider, batch_size=batch, seq_len=a.seq_len)
                        r2 = timed(ort, model, batch)
                        rows.append(("onnxruntime", "", runtime, provider, model, batch, r2))
                        print(f"  onnxruntime[{provider}] from {runtime} b{batch}: {r2['median_ms']:.1f} ms",
                              file=sys.stderr, flush=True)
                    w.call("release")
    ort.close()
    print("| runtime | source | provider | model | batch | median ms / inference | min ms | ms / sample | n |")
    print("|---|---|---|---|---|---|---|---|---|")
    for runtime, version, source, provider, model, batch, r in rows:
        label = f"{runtime} {version}".strip()
        print(f"| {label} | {source} | {provider} | {model} | {batch} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
              f"{r['median_ms'] / batch:.2f} | {r['n']} |")
    for p in skipped:
        print(f"\nonnxruntime provider {p['name']} skipped: {p['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
