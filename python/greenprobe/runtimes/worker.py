"""A runtime worker: serves one adapter over a pipe, inside the runtime's own environment.

    python -m greenprobe.runtimes.worker RUNTIME [classify|generate]

Requests are JSON lines on stdin, answers JSON lines on the original stdout (the framework's own
prints go to stderr). Times are CLOCK_MONOTONIC nanoseconds, the clock of greenprobe's sampler, so
the parent can attribute energy to each inference.

ops: describe | build(model, size, weights, device, image_size, seq_len, batch_size, onnx_path,
provider, slot) | params | run(n, warmup, gaps_s, mark, slot) | output(input_npz, output_npy) |
export_onnx(path, finalize, slot) | save_weights(path) | release(slot) | quit

A worker holds several built models at once, each in a named slot (default: "default"); ops
without a slot use the one built last. ``run(mark={"label": ..., "attrs": {...}})`` wraps every
inference in ``greenprobe.mark(label, i=k, **attrs)``, sent to the daemon named by
$GREENPROBE_DAEMON, and flushes before it answers: the daemon has every mark when run returns.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np


def load(runtime: str, task: str = "classify"):
    from . import ADAPTERS, GEN_ADAPTERS

    module, cls = (ADAPTERS if task == "classify" else GEN_ADAPTERS)[runtime]
    mod = __import__(f"greenprobe.runtimes.{module}", fromlist=[cls])
    return getattr(mod, cls)()


def serve_generate(runtime: str) -> dict:
    """Task "generate"'s ops: describe | build(model, size, precision, checkpoint, work_dir, device,
    sequences, prompt_tokens, seed, slot) | generate(n, output_tokens, warmup, gaps_s, mark, slot) |
    release(slot) | quit."""
    slots = GenSlots(runtime)
    adapter = []  # the adapter describe loads (once)

    def describe(req):
        adapter[:] = adapter or [load(runtime, "generate")]
        return {**adapter[0].describe(), "pid": os.getpid(), "python": sys.executable}

    return {"describe": describe, "build": slots.build, "generate": slots.generate,
            "release": lambda req: slots.release(req.get("slot")) or {}}


def request_loop(ops: dict, proto) -> None:
    """Answers JSON requests on stdin with ``ops[op](request)`` (a dict), "quit" after flushing the
    marks; every failure goes back to the parent with its type, message, fix and trace."""
    def answer(obj):
        proto.write(json.dumps(obj) + "\n")

    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.pop("op")
            if op == "quit":
                flush_marks()
                answer({"ok": True})
                return
            if op not in ops:
                answer({"ok": False, "error": "ValueError", "message": f"unknown op {op!r}"})
                continue
            answer({"ok": True, **ops[op](req)})
        except Exception as e:  # noqa: BLE001 - every failure goes back to the parent with its trace
            answer({"ok": False, "error": type(e).__name__, "message": str(e),
                    "fix": getattr(e, "fix", ""), "traceback": traceback.format_exc()})


class Slots:
    """Built models by slot name (a study holds one per configuration, so runs of different
    configurations can interleave). Slots that differ only in batch size or sequence length
    share one built model."""

    def __init__(self, runtime: str):
        self.runtime = runtime
        self.models: dict = {}   # build key -> adapter
        self.slots: dict = {}    # slot -> (adapter, converted input, numpy batch, build key): the key last
        self.current = None

    def build(self, req: dict) -> dict:
        from ..models import make_input

        slot = req.pop("slot", None) or "default"
        shape = {k: req.pop(k) for k in ("batch_size", "seq_len") if k in req}
        req.setdefault("image_size", 224)  # Keras fixes it in the model
        key = json.dumps(req, sort_keys=True)
        self.release(slot)
        rt = self.models.get(key)
        fresh = rt is None
        if fresh:
            rt = load(self.runtime)
            rt.build(req.pop("model"), **req)
            self.models[key] = rt
        batch = make_input(rt.model_name, shape.get("batch_size", 1), image_size=req["image_size"],
                           seq_len=shape.get("seq_len", 128))
        x = rt._convert_input(batch)
        self.slots[slot] = (rt, x, batch, key)
        self.current = slot
        # one first inference: MXNet allocates parameters lazily, TensorFlow traces its graph
        t0 = time.monotonic_ns()
        rt.infer(x)
        return {"device": rt.device, "provider": getattr(rt, "provider", None), "slot": slot, "shared": not fresh,
                "first_inference_ns": time.monotonic_ns() - t0}

    def get(self, slot=None):
        slot = slot or self.current
        if slot not in self.slots:
            raise ValueError(f"no model built in slot {slot!r}: build first")
        return self.slots[slot]

    def release(self, slot=None) -> None:
        """Frees one slot (its model too when no other slot uses it), or all."""
        gone = list(self.slots) if slot is None else [slot] if slot in self.slots else []
        for name in gone:
            key = self.slots.pop(name)[-1]  # the build key: each entry's last item
            if all(v[-1] != key for v in self.slots.values()):
                self.models.pop(key).release()
        if self.current in gone:
            self.current = None


class GenSlots(Slots):
    """task "generate": built generative models by slot, each with its prompt (sequences x
    prompt_tokens random ids): slot -> (adapter, prompt, build key). Slots that differ only in the
    batch share one built model."""

    def build(self, req: dict) -> dict:
        from ..generation import Request
        from ..models.generative import make_prompt

        slot = req.pop("slot", None) or "default"
        sequences, prompt_tokens = int(req.pop("sequences", 1)), int(req.pop("prompt_tokens", 16))
        seed = int(req.pop("seed", 0))
        key = json.dumps(req, sort_keys=True)
        self.release(slot)
        rt = self.models.get(key)
        fresh = rt is None
        built = {}
        if fresh:
            rt = load(self.runtime, "generate")
            model = req.pop("model")
            built = rt.build(model, **req)
            self.models[key] = rt
        prompt = make_prompt(rt.model_name, rt.size, sequences, prompt_tokens, seed=seed)
        self.slots[slot] = (rt, prompt, key)
        self.current = slot
        t0 = time.monotonic_ns()  # one first request, unmarked: lazy allocations, graph tracing
        rt.generate(prompt, 2, Request(prompt_tokens, sequences, record=False))
        return {"device": rt.device, "precision": rt.precision, "slot": slot, "shared": not fresh,
                "build_s": built.get("build_s", 0.0), "first_request_ns": time.monotonic_ns() - t0}

    def generate(self, req: dict) -> dict:
        from ..generation import Request

        rt, prompt, _ = self.get(req.get("slot"))
        n, out_tokens = int(req["n"]), int(req["output_tokens"])
        gaps = req.get("gaps_s")
        mark = req.get("mark")
        if mark and not os.environ.get("GREENPROBE_DAEMON"):
            raise ValueError("generate(mark=...) needs GREENPROBE_DAEMON: the daemon that receives the marks")
        attrs = dict((mark or {}).get("attrs") or {})
        seq, ptok = prompt.shape
        for _ in range(int(req.get("warmup", 0))):
            rt.generate(prompt, out_tokens, Request(ptok, seq, record=False))
        spans, timings = [], []
        mono = time.monotonic_ns
        for i in range(n):
            if gaps is not None and gaps[i] > 0:
                time.sleep(float(gaps[i]))
            r = Request(ptok, seq, request=i, record=bool(mark), **attrs)
            a = mono()
            rt.generate(prompt, out_tokens, r)
            spans.append((a, mono()))
            timings.append(rt.last_timings)
        sent = flush_marks() if mark else 0  # at the daemon before the answer
        out = {"requests": spans, "marks_sent": sent}
        if any(timings):  # the runtime's own per-sequence timings, request by request (vLLM's metrics)
            out["runtime_timings"] = timings
        return out


def marked(mark: dict):
    """A context factory that marks inference k through the daemon (``$GREENPROBE_DAEMON``)."""
    if not os.environ.get("GREENPROBE_DAEMON"):
        raise ValueError("run(mark=...) needs GREENPROBE_DAEMON: the daemon that receives the marks")
    from .._mark import mark as greenprobe_mark

    label, attrs = mark["label"], dict(mark.get("attrs") or {})
    return lambda k: greenprobe_mark(label, i=k, **attrs)


def flush_marks() -> int:
    from ..client import default_remote

    remote = default_remote()
    return remote.flush() if remote is not None else 0


def serve_classify(runtime: str) -> dict:
    """Task "classify"'s ops (the module's docstring lists them)."""
    slots = Slots(runtime)
    adapter = []

    def describe(req):
        adapter[:] = adapter or [load(runtime)]
        return {**adapter[0].describe(), "pid": os.getpid(), "python": sys.executable}

    def run(req):
        m, x = slots.get(req.get("slot"))[:2]
        gaps = np.asarray(req["gaps_s"]) if req.get("gaps_s") is not None else None
        wrap = marked(req["mark"]) if req.get("mark") else None
        iv = m.timed_runs(x, int(req["n"]), int(req.get("warmup", 0)), gaps, wrap=wrap)
        sent = flush_marks() if wrap is not None else 0  # at the daemon before the answer
        return {"intervals": iv, "marks_sent": sent}

    def output(req):
        y = slots.get(req.get("slot"))[0].output(dict(np.load(req["input_npz"])))
        np.save(req["output_npy"], y)
        return {"shape": list(y.shape)}

    def export_onnx(req):
        m, _, batch, _ = slots.get(req.get("slot"))
        t0 = time.monotonic()
        finalize = bool(req.get("finalize", True))
        m.export_onnx(req["path"], batch, finalize=finalize)
        import onnx

        if finalize:  # else the caller finalizes and checks (runtimes.finalize_export)
            onnx.checker.check_model(req["path"])
        return {"path": req["path"], "seconds": time.monotonic() - t0, "onnx_version": onnx.__version__}

    return {"describe": describe, "build": slots.build, "run": run, "output": output, "export_onnx": export_onnx,
            "params": lambda req: {"params": slots.get(req.get("slot"))[0].count_params()},
            "save_weights": lambda req: {"path": slots.get(req.get("slot"))[0].save_weights(req["path"])},
            "release": lambda req: slots.release(req.get("slot")) or {}}


def serve(runtime: str, task: str = "classify") -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the frameworks print goes to stderr
    sys.stdout = sys.stderr
    request_loop(serve_generate(runtime) if task == "generate" else serve_classify(runtime), proto)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "classify")
