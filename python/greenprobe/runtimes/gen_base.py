"""The one small interface every generative runtime adapter implements (the generative study's
counterpart of base.Runtime).

Life cycle: describe() -> build(model, size, precision, checkpoint, work_dir) -> generate(prompt,
output_tokens, req) ... -> release(). ``build`` converts the local random-weight checkpoint with the
runtime's own tools (its converter, model builder or quantiser) into ``work_dir`` (cached there: a
second build of the same model and precision reuses it) and loads it. ``generate`` runs one request:
the prefill over ``prompt`` (sequences x prompt_tokens int64 ids), then decode steps until every
sequence has ``output_tokens`` tokens (EOS ignored), marking each phase through ``req``
(greenprobe.generation.Request). It returns the tokens produced (sequences x output_tokens).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..generation import Request
from .base import RuntimeUnavailable

__all__ = ["GenRuntime", "RuntimeUnavailable", "PRECISIONS", "conversion_complete", "publish_conversion",
           "temp_name"]

#: every precision name a spec may use
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "q8_0", "q4_k_m", "int4")
#: the floating-point precisions as torch / vLLM dtype names
FLOAT_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def device_kind(device: str) -> str:
    """"cuda" for cuda or cuda:N, else "cpu"."""
    return "cuda" if device.startswith("cuda") else "cpu"


class GenRuntime:
    name = "?"
    #: the precisions this adapter can build on the CPU and on a GPU (subsets of PRECISIONS)
    cpu_precisions: tuple = ()
    gpu_precisions: tuple = ()

    def __init__(self):
        self.model_name: Optional[str] = None
        self.size = "full"
        self.precision = "fp32"
        self.device = "cpu"
        self.model: Any = None
        #: the runtime's own per-sequence timings of the last request, where it keeps them (vLLM's
        #: metrics): dicts of ttft_s, queue_s, e2e_s, on its clock, beside the marks; [] elsewhere
        self.last_timings: list[dict] = []

    # -- to implement --------------------------------------------------------------------------
    def describe(self) -> dict:
        """{"version": ..., "devices": [...], "precisions": {"cpu": [...], "cuda": [...]}} and any
        reason a device or precision is missing ("reasons": {...})."""
        raise NotImplementedError

    def _build(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str, device: str) -> Any:
        raise NotImplementedError

    def _generate(self, prompt: np.ndarray, output_tokens: int, req: Request) -> np.ndarray:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def precisions_for(self, device: str) -> tuple:
        return self.gpu_precisions if device.startswith("cuda") else self.cpu_precisions

    def build(self, model: str, *, size: str, precision: str, checkpoint: str, work_dir: str,
              device: str = "cpu") -> dict:
        ok = self.precisions_for(device)
        if precision not in ok:
            raise RuntimeUnavailable(f"{self.name} has no {precision} on {device}",
                                     f"choose one of {', '.join(ok) or '(none)'} for {self.name} on {device}")
        self.release()
        self.model_name, self.size, self.precision, self.device = model, size, precision, device
        t0 = time.monotonic()
        self.model = self._build(model, size, precision, str(checkpoint), str(work_dir), device)
        return {"device": self.device, "precision": precision, "build_s": time.monotonic() - t0}

    def generate(self, prompt: np.ndarray, output_tokens: int, req: Request) -> np.ndarray:
        prompt = np.ascontiguousarray(prompt, dtype=np.int64)
        if prompt.ndim != 2 or prompt.shape[0] != req.sequences or prompt.shape[1] != req.prompt_tokens:
            raise ValueError(f"prompt of shape {prompt.shape} does not match the request "
                             f"({req.sequences} x {req.prompt_tokens})")
        if output_tokens < 1:
            raise ValueError("output_tokens must be >= 1")
        try:
            out = self._generate(prompt, int(output_tokens), req)
        except BaseException:
            req.abandon()
            raise
        req.finish()
        if req.output_tokens != output_tokens:
            raise RuntimeError(f"{self.name} produced {req.output_tokens} of {output_tokens} tokens per sequence")
        return out

    def release(self) -> None:
        self.model = None


# -- the conversion cache every adapter keeps in work_dir --------------------------------------------
STAMP = "greenprobe.json"


def conversion_complete(folder: Path, stamp: dict, product: str) -> bool:
    """Whether ``folder`` holds a finished conversion made as ``stamp`` says (its greenprobe.json
    names the tool, its version and arguments, and the source) with its ``product`` file."""
    try:
        have = json.loads((Path(folder) / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return (Path(folder) / product).exists() and all(have.get(k) == v for k, v in stamp.items())


def publish_conversion(tmp: Path, folder: Path, stamp: dict, seconds: float, product: str) -> bool:
    """Makes the conversion written into ``tmp`` the one at ``folder``, whole or not at all (a
    rename); another process's equal conversion that got there first is kept. Returns whether
    that happened (the result is then cached)."""
    (Path(tmp) / STAMP).write_text(json.dumps({**stamp, "convert_s": round(seconds, 3)}))
    if Path(folder).exists() and not conversion_complete(folder, stamp, product):
        shutil.rmtree(folder, ignore_errors=True)  # a stale conversion (another tool, version or source)
    try:
        os.replace(tmp, folder)
        return False
    except OSError:  # another process (a Slurm task on another node) got there first: keep its own
        if conversion_complete(folder, stamp, product):
            shutil.rmtree(tmp, ignore_errors=True)
            return True
        raise


def temp_name(folder: Path) -> Path:
    """A scratch folder beside ``folder`` that no other process, on this node or another sharing
    the folder, writes to."""
    import socket

    return Path(folder).with_name(f"{Path(folder).name}.tmp-{socket.gethostname()}-{os.getpid()}")
