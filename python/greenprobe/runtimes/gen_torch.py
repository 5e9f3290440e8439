"""PyTorch with transformers: ``generate`` with its KV cache, greedy, EOS ignored, each phase marked
through a per-step hook (``StepMarks``) instead of a second generate loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..generation import Request
from .gen_base import FLOAT_DTYPES, GenRuntime, RuntimeUnavailable
from .torch_rt import inference_torch, torch_devices



def step_marks(req: Request, output_tokens: int):
    """A transformers stopping criterion that marks the phases of one ``generate`` call: generate
    calls it once per new token, after the token is chosen, so each call ends the phase that made
    that token (the prefill for the first) and opens the next decode step, the last excepted. The
    prefill is opened by the caller just before ``generate`` (time to first token: generate's set-up
    included). It never stops generation: max_new_tokens does."""
    import torch
    from transformers import StoppingCriteria

    class StepMarks(StoppingCriteria):
        never = None  # "not done" for every sequence, made once

        def __call__(self, input_ids, scores, **kwargs):
            req.boundary(last=req.produced + 1 >= output_tokens)
            if self.never is None or self.never.shape[0] != input_ids.shape[0]:
                self.never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            return self.never

    return StepMarks()


class TorchGen(GenRuntime):
    name = "torch"
    cpu_precisions = ("fp32", "bf16", "int8")
    gpu_precisions = ("fp32", "fp16", "bf16")

    def __init__(self):
        super().__init__()
        self.torch = inference_torch()

    def describe(self) -> dict:
        t = self.torch
        import transformers

        cuda = t.cuda.is_available()
        return {"runtime": self.name, "version": t.__version__, "transformers": transformers.__version__,
                "devices": torch_devices(t), "precisions": {"cpu": list(self.cpu_precisions),
                                                   "cuda": list(self.gpu_precisions) if cuda else []},
                "reasons": {} if cuda else {"cuda": f"torch {t.__version__} sees no CUDA device"},
                "threads": t.get_num_threads()}

    def _build(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str, device: str) -> Any:
        import transformers

        t = self.torch
        if device.startswith("cuda") and not t.cuda.is_available():
            raise RuntimeUnavailable(f"torch {t.__version__} sees no CUDA device",
                                     "install a CUDA build of torch on a machine with an NVIDIA GPU")
        dtype = getattr(t, FLOAT_DTYPES.get(precision, "float32"))
        m = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True, dtype=dtype)
        m = m.eval().to(device)
        if precision == "int8":  # PyTorch's own dynamic quantisation: int8 weights in every Linear
            m = t.ao.quantization.quantize_dynamic(m, {t.nn.Linear}, dtype=t.qint8)
        self.eos = m.generation_config.eos_token_id
        return m

    def _generate(self, prompt: np.ndarray, output_tokens: int, req: Request) -> np.ndarray:
        t = self.torch
        ids = t.from_numpy(prompt).to(self.device)
        hook = step_marks(req, output_tokens)
        sync = t.cuda.synchronize if self.device.startswith("cuda") else None
        if sync is not None and req.sync is None:
            req.sync = sync
        req.boundary()  # the prefill opens: generate's set-up, the prompt's forward pass, the first token
        out = self.model.generate(ids, attention_mask=t.ones_like(ids), max_new_tokens=output_tokens,
                                  min_new_tokens=output_tokens, do_sample=False, use_cache=True,
                                  stopping_criteria=[hook], pad_token_id=0)
        return out[:, prompt.shape[1]:].cpu().numpy()
