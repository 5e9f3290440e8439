"""A runtime worker: serves one adapter over a pipe, inside the runtime's own environment.

    python -m greenprobe.runtimes.worker RUNTIME

Requests are JSON lines on stdin, answers JSON lines on the original stdout (the framework's own
prints go to stderr). Times are CLOCK_MONOTONIC nanoseconds, the clock of greenprobe's sampler, so
the parent can attribute energy to each inference.

ops: describe | build(model, size, weights, device, image_size, seq_len, batch_size, onnx_path,
provider) | params | run(n, warmup, gaps_s) | output(input_npz, output_npy) | export_onnx(path, finalize) | save_weights(path) |
release | quit
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np


def load(runtime: str):
    from . import ADAPTERS

    module, cls = ADAPTERS[runtime]
    mod = __import__(f"greenprobe.runtimes.{module}", fromlist=[cls])
    return getattr(mod, cls)()


def serve(runtime: str) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the frameworks print goes to stderr
    sys.stdout = sys.stderr
    rt = None
    x = None
    batch = None

    def answer(obj):
        proto.write(json.dumps(obj) + "\n")

    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.pop("op")
            if rt is None:
                rt = load(runtime)
            if op == "describe":
                answer({"ok": True, **rt.describe(), "pid": os.getpid(), "python": sys.executable})
            elif op == "build":
                from ..models import make_input

                shape = {k: req.pop(k) for k in ("batch_size", "seq_len") if k in req}
                shape["image_size"] = req.setdefault("image_size", 224)  # Keras fixes it in the model
                rt.build(req.pop("model"), **req)
                batch = make_input(rt.model_name, shape.get("batch_size", 1), image_size=shape.get("image_size", 224),
                                   seq_len=shape.get("seq_len", 128))
                x = rt._convert_input(batch)
                # one first inference: MXNet allocates parameters lazily, TensorFlow traces its graph
                t0 = time.monotonic_ns()
                rt.infer(x)
                answer({"ok": True, "device": rt.device, "provider": getattr(rt, "provider", None),
                        "first_inference_ns": time.monotonic_ns() - t0})
            elif op == "params":
                answer({"ok": True, "params": rt.count_params()})
            elif op == "run":
                gaps = np.asarray(req["gaps_s"]) if req.get("gaps_s") is not None else None
                iv = rt.timed_runs(x, int(req["n"]), int(req.get("warmup", 0)), gaps)
                answer({"ok": True, "intervals": iv})
            elif op == "output":
                b = dict(np.load(req["input_npz"]))
                y = rt.output(b)
                np.save(req["output_npy"], y)
                answer({"ok": True, "shape": list(y.shape)})
            elif op == "export_onnx":
                t0 = time.monotonic()
                finalize = bool(req.get("finalize", True))
                rt.export_onnx(req["path"], batch, finalize=finalize)
                import onnx

                if finalize:  # else the caller finalizes and checks (runtimes.finalize_export)
                    onnx.checker.check_model(req["path"])
                answer({"ok": True, "path": req["path"], "seconds": time.monotonic() - t0,
                        "onnx_version": onnx.__version__})
            elif op == "save_weights":
                answer({"ok": True, "path": rt.save_weights(req["path"])})
            elif op == "release":
                rt.release()
                x = batch = None
                answer({"ok": True})
            elif op == "quit":
                answer({"ok": True})
                return
            else:
                answer({"ok": False, "error": "ValueError", "message": f"unknown op {op!r}"})
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent with its trace
            answer({"ok": False, "error": type(e).__name__, "message": str(e),
                    "fix": getattr(e, "fix", ""), "traceback": traceback.format_exc()})


if __name__ == "__main__":
    serve(sys.argv[1])
