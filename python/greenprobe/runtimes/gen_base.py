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

import time
from typing import Any, Optional

import numpy as np

from ..generation import Request
from .base import RuntimeUnavailable

__all__ = ["GenRuntime", "RuntimeUnavailable", "PRECISIONS"]

#: every precision name a spec may use
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "q8_0", "q4_k_m", "int4")


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
