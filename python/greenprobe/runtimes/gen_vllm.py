"""vLLM (NVIDIA GPUs only): its engine stepped by hand, so each engine step is marked.

vLLM's offline ``LLM.generate`` hides its loop; its ``LLMEngine`` exposes it: ``add_request`` then
``step()`` until the request finishes, each step one forward pass of the scheduler's batch. With one
request of ``sequences`` prompts (n=1 each) and chunked prefill off, the first step runs the prompts'
prefill and yields each sequence's first token; every later step is one decode step for every
sequence (the marks follow the tokens the outputs hold, not the steps, in case a scheduler runs
several at once). Per-request timestamps from vLLM's own metrics (``RequestOutput.metrics``: arrival, first
scheduled, first token, last token), where this vLLM version fills them, are kept beside the marks
(``last_timings``: TTFT, queueing and end-to-end time per sequence), returned with each request's
span and written to the run's record for the GPU check's comparison. Not checkable on the CPU machines: vLLM ships
CUDA wheels only (listed as skipped there); scripts/gpu-check.sh runs it where it is installed.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..generation import Request
from .gen_base import FLOAT_DTYPES, GenRuntime, RuntimeUnavailable


def timings_of(metrics) -> dict:
    """vLLM's RequestMetrics (wall-clock seconds: arrival_time, first_scheduled_time, first_token_time,
    finished_time or last_token_time) as durations: ttft_s, queue_s, e2e_s, each where both its ends
    are there ({} when this vLLM keeps none: its V1 engine leaves RequestOutput.metrics None)."""
    if metrics is None:
        return {}
    at = {k: getattr(metrics, k, None) for k in ("arrival_time", "first_scheduled_time", "first_token_time",
                                                   "finished_time", "last_token_time")}
    end = at["finished_time"] or at["last_token_time"]
    out = {}
    for name, a, b in (("ttft_s", at["arrival_time"], at["first_token_time"]),
                       ("queue_s", at["arrival_time"], at["first_scheduled_time"]),
                       ("e2e_s", at["arrival_time"], end)):
        if a is not None and b is not None:
            out[name] = float(b) - float(a)
    return out


class VllmGen(GenRuntime):
    name = "vllm"
    cpu_precisions = ()
    gpu_precisions = ("fp16", "bf16", "fp32")

    def __init__(self):
        super().__init__()
        try:
            import vllm
        except ImportError as e:
            raise RuntimeUnavailable(f"vLLM is not installed ({e}): it ships CUDA wheels only",
                                     "on a machine with an NVIDIA GPU: pip install vllm") from None
        self.vllm = vllm
        self._ids = itertools.count()

    def describe(self) -> dict:
        import torch

        cuda = torch.cuda.is_available()
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if cuda else []
        return {"runtime": self.name, "version": self.vllm.__version__, "devices": devices,
                "precisions": {"cpu": [], "cuda": list(self.gpu_precisions) if cuda else []},
                "reasons": {"cpu": "vLLM runs on NVIDIA GPUs only",
                            **({} if cuda else {"cuda": "torch sees no CUDA device"})}}

    def _build(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str, device: str) -> Any:
        if not device.startswith("cuda"):
            raise RuntimeUnavailable("vLLM runs on NVIDIA GPUs only", "run the generative study on a GPU machine")
        from vllm import EngineArgs, LLMEngine

        args = EngineArgs(model=checkpoint, tokenizer=checkpoint, dtype=FLOAT_DTYPES[precision], enforce_eager=False,
                          enable_chunked_prefill=False, enable_prefix_caching=False, gpu_memory_utilization=0.8,
                          seed=0, disable_log_stats=False)
        return LLMEngine.from_engine_args(args)

    def _generate(self, prompt: np.ndarray, output_tokens: int, req: Request) -> np.ndarray:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        engine = self.model
        params = SamplingParams(max_tokens=output_tokens, min_tokens=output_tokens, ignore_eos=True, temperature=0.0)
        ids = [f"gp-{next(self._ids)}" for _ in range(prompt.shape[0])]
        req.boundary()  # the prefill opens as the requests are handed over
        for rid, p in zip(ids, prompt):
            engine.add_request(rid, TokensPrompt(prompt_token_ids=p.tolist()), params)
        done: dict = {}
        made: dict = {}  # request id -> tokens it has so far
        while engine.has_unfinished_requests():
            for o in engine.step():
                made[o.request_id] = len(o.outputs[0].token_ids) if o.outputs else 0
                if o.finished:
                    done[o.request_id] = o
            # the tokens every sequence has: each new one ends a phase (a scheduler that ran several
            # steps at once ends several, the later ones empty) and, but for the last, opens the next
            have = min(made.get(r, 0) for r in ids)
            while req.produced < min(have, output_tokens):
                req.boundary(last=req.produced + 1 >= output_tokens)
        self.last_timings = [t for t in (timings_of(getattr(done[r], "metrics", None)) for r in ids if r in done) if t]
        return np.array([list(done[r].outputs[0].token_ids) for r in ids], np.int64)
