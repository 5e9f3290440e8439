"""Runtime adapters: PyTorch, TensorFlow, MXNet and ONNX Runtime, each run in a worker process in
the environment where it works, talking back over a pipe on the sampler's clock.

    from greenprobe.runtimes import Worker
    with Worker("torch") as w:
        w.build("resnet50", batch_size=1)
        intervals = w.run(n=10, warmup=2)      # [(start_ns, end_ns), ...] on CLOCK_MONOTONIC
        w.build("bert-base-uncased", batch_size=64, slot="bert")   # models kept side by side
        w.run(n=3, slot="bert", mark={"label": "inference"})    # marked through $GREENPROBE_DAEMON

Environments (created by scripts/setup-runtimes.sh): torch, tensorflow and onnxruntime share the
main one (.venv); MXNet 1.9.1 needs numpy < 1.24 and has its own (.venv-mxnet). Override with
GREENPROBE_PYTHON_<RUNTIME> (e.g. GREENPROBE_PYTHON_MXNET=/opt/mx/bin/python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

#: runtime -> (module, class)
ADAPTERS = {
    "torch": ("torch_rt", "TorchRuntime"),
    "tensorflow": ("tensorflow_rt", "TensorflowRuntime"),
    "mxnet": ("mxnet_rt", "MxnetRuntime"),
    "onnxruntime": ("onnx_rt", "OnnxRuntime"),
}

#: generative runtime -> (module, class): the adapters of ``task = "generate"`` (gen_base.GenRuntime)
GEN_ADAPTERS = {
    "torch": ("gen_torch", "TorchGen"),
    "onnxruntime-genai": ("gen_ortgenai", "OrtGenaiGen"),
    "llama.cpp": ("gen_llamacpp", "LlamaCppGen"),
    "ctranslate2": ("gen_ct2", "Ct2Gen"),
    "vllm": ("gen_vllm", "VllmGen"),
}

#: runtime -> the module whose import proves it is installed
IMPORTS = {"torch": "torch", "tensorflow": "tensorflow", "mxnet": "mxnet", "onnxruntime": "onnxruntime",
           "onnxruntime-genai": "onnxruntime_genai", "llama.cpp": "llama_cpp", "ctranslate2": "ctranslate2",
           "vllm": "vllm"}

#: runtime -> (environment folder, set-up hint)
ENVIRONMENTS = {
    "torch": (".venv", "bash scripts/setup-runtimes.sh   (pip install -r requirements/runtimes.txt)"),
    "tensorflow": (".venv", "bash scripts/setup-runtimes.sh   (pip install -r requirements/runtimes.txt)"),
    "onnxruntime": (".venv", "bash scripts/setup-runtimes.sh   (pip install -r requirements/runtimes.txt)"),
    "mxnet": (".venv-mxnet", "bash scripts/setup-runtimes.sh   (creates .venv-mxnet from requirements/mxnet.txt)"),
    "llama.cpp": (".venv", "bash scripts/setup-genai.sh   (builds llama-cpp-python once, then installs the cached wheel)"),
    "ctranslate2": (".venv", "bash scripts/setup-genai.sh   (pip install -r requirements/genai.txt)"),
    "onnxruntime-genai": (".venv-genai", "bash scripts/setup-genai.sh   (creates .venv-genai from requirements/ortgenai.txt)"),
    "vllm": (".venv", "vLLM runs on NVIDIA GPUs only: scripts/gpu-check.sh installs it on a GPU machine"),
}


class WorkerError(RuntimeError):
    """An operation failed inside a runtime worker; carries the worker's traceback."""

    def __init__(self, runtime: str, answer: dict):
        self.runtime, self.kind = runtime, answer.get("error", "Error")
        self.message, self.fix = answer.get("message", ""), answer.get("fix", "")
        self.traceback = answer.get("traceback", "")
        self.unavailable = self.kind == "RuntimeUnavailable"
        super().__init__(f"[{runtime}] {self.kind}: {self.message}" + (f"\n  fix: {self.fix}" if self.fix else ""))


def python_env_var(runtime: str) -> str:
    """The variable that names a runtime's Python: GREENPROBE_PYTHON_MXNET, GREENPROBE_PYTHON_LLAMA_CPP ..."""
    return "GREENPROBE_PYTHON_" + "".join(c if c.isalnum() else "_" for c in runtime.upper())


def python_for(runtime: str, root: Optional[Path] = None) -> str:
    """The Python interpreter of the environment where this runtime lives."""
    if runtime not in ADAPTERS and runtime not in GEN_ADAPTERS:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(sorted(set(ADAPTERS) | set(GEN_ADAPTERS)))}")
    env = os.environ.get(python_env_var(runtime))
    if env:
        return env
    folder = ENVIRONMENTS[runtime][0]
    for base in [root, Path.cwd(), Path(sys.prefix).parent]:
        if base is not None and (Path(base) / folder / "bin" / "python").exists():
            return str(Path(base) / folder / "bin" / "python")
    return sys.executable


def probe_environment(runtime: str) -> dict:
    """Is the runtime importable in its environment? (no model is built)"""
    py = python_for(runtime)
    code = f"import importlib, json; m = importlib.import_module({IMPORTS[runtime]!r}); print(json.dumps(getattr(m, '__version__', '?')))"
    try:
        out = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"runtime": runtime, "python": py, "installed": False, "reason": str(e), "fix": ENVIRONMENTS[runtime][1]}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["import failed"])[-1]
        return {"runtime": runtime, "python": py, "installed": False, "reason": last, "fix": ENVIRONMENTS[runtime][1]}
    return {"runtime": runtime, "python": py, "installed": True, "version": json.loads(out.stdout.strip().splitlines()[-1])}


class Worker:
    """A runtime adapter in its own process and environment."""

    def __init__(self, runtime: str, python: Optional[str] = None, stderr=None, env: Optional[dict] = None,
                 task: str = "classify"):
        self.runtime, self.task = runtime, task
        self.python = python or python_for(runtime)
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        self.proc = subprocess.Popen([self.python, "-m", "greenprobe.runtimes.worker", runtime, task],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=stderr if stderr is not None else subprocess.DEVNULL,
                                     text=True, env=env)

    def call(self, op: str, **args) -> dict:
        if self.proc.poll() is not None:
            raise WorkerError(self.runtime, {"error": "WorkerExited", "message": f"exit code {self.proc.returncode}"})
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise WorkerError(self.runtime, {"error": "WorkerExited",
                                             "message": f"the worker died during {op!r} (exit code {self.proc.returncode})"})
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise WorkerError(self.runtime, answer)
        return answer

    def describe(self) -> dict:
        return self.call("describe")

    def build(self, model: str, **options) -> dict:
        return self.call("build", model=model, **options)

    def params(self) -> int:
        return self.call("params")["params"]

    def run(self, n: int, warmup: int = 0, gaps_s=None, slot: Optional[str] = None, mark: Optional[dict] = None) -> list:
        """n timed inferences (after ``warmup``) with optional gaps before each; ``mark``
        ({"label", "attrs"}) marks each one through the daemon the worker was given
        (env GREENPROBE_DAEMON). Returns [(start_ns, end_ns)] on CLOCK_MONOTONIC."""
        return [tuple(iv) for iv in self.call("run", n=n, warmup=warmup, slot=slot, mark=mark,
                                               gaps_s=None if gaps_s is None else list(map(float, gaps_s)))["intervals"]]

    def release(self, slot: Optional[str] = None) -> None:
        """Frees the model in ``slot`` (all of them without one)."""
        self.call("release", slot=slot)

    def output(self, input_npz: str, output_npy: str) -> dict:
        return self.call("output", input_npz=input_npz, output_npy=output_npy)

    def generate(self, n: int, output_tokens: int, gaps_s=None, slot: Optional[str] = None, warmup: int = 0,
                 mark: Optional[dict] = None) -> dict:
        """task "generate": n requests (after ``warmup`` unmarked ones), gaps before each, every phase
        marked (prefill, decode) with ``mark``'s attrs through the worker's daemon and flushed before
        the answer. Returns {"requests": [(start_ns, end_ns)], "marks_sent": N}."""
        return self.call("generate", n=n, output_tokens=output_tokens, slot=slot, warmup=warmup, mark=mark,
                         gaps_s=None if gaps_s is None else list(map(float, gaps_s)))

    def export_onnx(self, path: str, finalize: bool = True, slot: Optional[str] = None) -> dict:
        """Exports the model in ``slot`` (the one built last without it); with finalize=False the
        caller runs finalize_export (in its own environment) instead of the worker."""
        return self.call("export_onnx", path=path, finalize=finalize, slot=slot)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit")
            except (WorkerError, BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def finalize_export(path: str, source: str) -> None:
    """What a worker does after exporting, done here: MXNet's opset stamp, then onnx's checker."""
    import onnx

    if source == "mxnet":
        from .mxnet_rt import stamp_opset

        stamp_opset(path)
    onnx.checker.check_model(path)


def describe_all(runtimes=None, task: str = "classify") -> list[dict]:
    """Every runtime of the task (or those named): environment, version, devices, execution
    providers or precisions, and what is missing."""
    out = []
    for runtime in ((ADAPTERS if task == "classify" else GEN_ADAPTERS) if runtimes is None else runtimes):
        env = probe_environment(runtime)
        env["task"] = task
        if not env["installed"]:
            if runtime == "vllm":
                env["reason"] = (f"vLLM is not installed here ({env['reason']}): it ships CUDA wheels only and runs "
                                 "on NVIDIA GPUs")
            out.append(env)
            continue
        try:
            with Worker(runtime, task=task) as w:
                out.append({**env, **w.describe(), "task": task})
        except WorkerError as e:
            out.append({**env, "installed": False, "reason": e.message, "fix": e.fix})
    return out
