"""ONNX Runtime GenAI (``onnxruntime-genai``): the local checkpoint converted by its own model
builder (``onnxruntime_genai.models.builder``), greedy generation in its token loop
(``og.Generator``), EOS ignored, each phase marked around the loop's own calls.

It lives in its own environment, ``.venv-genai`` (``scripts/setup-genai.sh``): the wheel pulls the
CPU ``onnxruntime``, which provides the same module as ``.venv``'s ``onnxruntime-gpu``.

Conversion: one folder per (model, size, precision) in ``work_dir``,
``onnxruntime-genai-<model>-<size>-<precision>/`` (``-cuda`` appended for a CUDA build: the builder
makes a different graph per execution provider), written under a temporary name by
``python -m onnxruntime_genai.models.builder -i CHECKPOINT -o TMP -p PRECISION -e cpu|cuda`` and
renamed when whole; ``greenprobe.json`` in it records the builder's version and arguments, and a
later build with the same stamp reuses the folder. The builder's output is kept there too
(``builder.log``). A checkpoint the builder cannot convert (GPT-2: it has no GPT-2 builder) raises
RuntimeUnavailable with the builder's own last line, so the study skips that model with the
converter's reason; that refusal is remembered beside the folder (``.refused.json``) for the same
builder version.

Precisions: the builder's valid combinations are FP32/INT8/INT4 on the CPU and FP32/FP16/BF16/INT8/
INT4 on CUDA. int4 and int8 are weight-only quantisation (``MatMulNBits``, blocks of 32,
round-to-nearest, symmetric; accuracy level 4: int8 activations on the CPU). Checked here (CPU):
fp32, int8, int4. The CPU builder also writes fp16 and bf16 graphs, but ONNX Runtime 1.32's CPU
kernels cannot run them (fp16: a shape mismatch in an inserted Cast at the first decode step; bf16:
no CPU kernel for Where), so they are not offered on the CPU. CUDA needs the
``onnxruntime-genai-cuda`` wheel (unchecked here: no GPU).

Generation and marks: ``GeneratorParams.set_search_options(batch_size=sequences,
max_length=prompt+output, min_length=prompt+output, do_sample=False)``. ``min_length`` makes the
search mask the EOS id until the last token, so every sequence gets exactly ``output_tokens``
tokens; ``max_length`` also sizes the KV cache, which the builder's CPU and CUDA graphs share
between past and present (``past_present_share_buffer``) at ``max_length`` positions: left at the
model's context (131,072 for Llama 3.2) it would allocate gigabytes per sequence.

- the prefill: ``og.Generator(model, params)`` (the request's set-up, KV cache included: time to
  first token counts it), ``append_tokens(prompt)`` (the forward pass over the prompt), then the
  first ``generate_next_token()`` (which picks the first token from those logits);
- each decode step: one ``generate_next_token()``, which runs the forward pass over the tokens the
  previous step picked (one per sequence) and picks the next ones.

The tokens are read back after the loop (``get_sequence``), outside the marks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..generation import Request
from .gen_base import (GenRuntime, RuntimeUnavailable, conversion_complete, device_kind,
                       publish_conversion, temp_name)

SETUP_FIX = "bash scripts/setup-genai.sh   (creates .venv-genai from requirements/ortgenai.txt)"
CUDA_FIX = ("on a machine with an NVIDIA GPU, give ONNX Runtime GenAI an environment with onnxruntime-genai-cuda "
            "(0.18.0) instead of onnxruntime-genai")
#: why a precision the builder writes for the CPU is not offered there (checked with 0.18.0 / ORT 1.32)
CPU_REFUSED = {
    "fp16": "ONNX Runtime's CPU kernels fail on the builder's fp16 graph (shape mismatch in an inserted Cast at "
            "the first decode step); the builder lists FP16 for CUDA, DML and TRT-RTX only",
    "bf16": "ONNX Runtime has no CPU kernel for Where in bfloat16; the builder lists BF16 for CUDA and TRT-RTX only",
}
#: the builder's options for every build: no Hugging Face token lookup (the checkpoint is local)
BUILDER_OPTIONS = ("hf_token=false",)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


class OrtGenaiGen(GenRuntime):
    name = "onnxruntime-genai"
    cpu_precisions = ("fp32", "int8", "int4")
    gpu_precisions = ("fp32", "fp16", "bf16", "int8", "int4")

    def __init__(self):
        super().__init__()
        try:
            import onnxruntime_genai
        except ImportError as e:
            raise RuntimeUnavailable(f"onnxruntime_genai is not importable: {e}", SETUP_FIX) from None
        self.og = onnxruntime_genai
        self.conversion: dict = {}
        self.folder: Path | None = None
        self.context = 0
        self.eos = None
        self._params: dict = {}

    # -- what is here --------------------------------------------------------------------------
    def _cuda(self) -> bool:
        try:
            return bool(self.og.is_cuda_available())
        except Exception:  # noqa: BLE001 - a CPU-only build
            return False

    def describe(self) -> dict:
        og = self.og
        try:
            ort = metadata.version("onnxruntime")
        except metadata.PackageNotFoundError:
            ort = "?"
        cuda = self._cuda()
        reasons = {f"cpu/{p}": why for p, why in CPU_REFUSED.items()}
        reasons["gpt2"] = "the model builder has no GPT-2 (GPT2LMHeadModel): its build is skipped with the builder's reason"
        if not cuda:
            reasons["cuda"] = (f"this onnxruntime-genai {og.__version__} build has no CUDA (the CPU wheel); "
                               f"on a GPU it would build {', '.join(self.gpu_precisions)} (not checked here)")
        return {"runtime": self.name, "version": og.__version__, "onnxruntime": ort,
                "devices": ["cpu"] + (["cuda"] if cuda else []),
                "precisions": {"cpu": list(self.cpu_precisions), "cuda": list(self.gpu_precisions) if cuda else []},
                "reasons": reasons, "builder": "onnxruntime_genai.models.builder", "batches": True}

    # -- conversion ----------------------------------------------------------------------------
    def folder_for(self, model: str, size: str, precision: str, work_dir: str, device: str = "cpu") -> Path:
        suffix = "-cuda" if device_kind(device) == "cuda" else ""
        return Path(work_dir) / f"onnxruntime-genai-{model}-{size}-{precision}{suffix}"

    def convert(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str,
                device: str = "cpu") -> Path:
        """The builder's model of (model, size, precision) in ``work_dir``, built on first use.
        Sets ``self.conversion`` = {path, cached, convert_s}."""
        ep = device_kind(device)
        out = self.folder_for(model, size, precision, work_dir, device)
        stamp = {"builder": f"onnxruntime-genai {self.og.__version__}", "precision": precision,
                 "execution_provider": ep, "checkpoint": str(Path(checkpoint).resolve()),
                 "options": list(BUILDER_OPTIONS)}
        if conversion_complete(out, stamp, "genai_config.json"):
            self.conversion = {"path": str(out), "cached": True, "convert_s": 0.0}
            return out
        refused = out.with_name(out.name + ".refused.json")
        try:
            seen = json.loads(refused.read_text())
        except (OSError, ValueError):
            seen = None
        if seen and all(seen.get(k) == v for k, v in stamp.items()):
            raise RuntimeUnavailable(seen["reason"], seen.get("fix", ""))
        if not Path(checkpoint, "config.json").exists():
            raise FileNotFoundError(f"no Hugging Face checkpoint at {checkpoint} (config.json missing)")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(out)
        cache = out.with_name(out.name + f".cache-{os.getpid()}")
        for p in (tmp, cache):
            shutil.rmtree(p, ignore_errors=True)
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(tmp),
               "-p", precision, "-e", ep, "-c", str(cache), "--extra_options", *BUILDER_OPTIONS]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        t0 = time.monotonic()
        # cwd: not inside the onnxruntime_genai package (its folder on sys.path breaks the import)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(out.parent))
        seconds = time.monotonic() - t0
        shutil.rmtree(cache, ignore_errors=True)
        ok = r.returncode == 0 and (tmp / "genai_config.json").exists() and any(tmp.glob("*.onnx"))
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
            last = _last_line(r.stderr) if r.returncode != 0 else _last_line(r.stderr or r.stdout)
            reason = f"onnxruntime-genai's model builder cannot convert {model} ({size}, {precision}, {ep}): {last}"
            fix = "choose a model the builder supports (Llama, Mistral, Qwen2/3, Phi, Gemma, Granite, OLMo, ...)"
            if last.startswith("NotImplementedError"):  # an architecture it has no builder for: remembered, skipped
                refused.write_text(json.dumps({**stamp, "reason": reason, "fix": fix}))
                raise RuntimeUnavailable(reason, fix)
            # anything else (memory, disk, a crash) is a failure, not a skip: its log says what
            raise RuntimeError(f"{reason} (exit {r.returncode}); the builder's output: "
                               f"{_last_line(r.stdout) if r.stdout else '(none)'}")
        (tmp / "builder.log").write_text((r.stdout or "") + (r.stderr or ""))
        cached = publish_conversion(tmp, out, stamp, seconds, "genai_config.json")
        refused.unlink(missing_ok=True)
        self.conversion = {"path": str(out), "cached": cached, "convert_s": 0.0 if cached else seconds}
        return out

    # -- build and generate --------------------------------------------------------------------
    def _build(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str, device: str) -> Any:
        og = self.og
        kind = device_kind(device)
        if kind == "cuda" and not self._cuda():
            raise RuntimeUnavailable(f"this onnxruntime-genai {og.__version__} build has no CUDA (the CPU wheel)",
                                     CUDA_FIX)
        path = self.convert(model, size, precision, checkpoint, work_dir, device)
        config = json.loads((path / "genai_config.json").read_text())
        self.context = int(config["model"].get("context_length") or 0)
        self.eos = config["model"].get("eos_token_id")
        cfg = og.Config(str(path))
        cfg.clear_providers()  # the CPU
        if kind == "cuda":
            cfg.append_provider("cuda")
            if ":" in device:
                cfg.set_provider_option("cuda", "device_id", device.split(":", 1)[1])
        self.folder = path
        self._params = {}
        return og.Model(cfg)

    def params(self, sequences: int, length: int):
        """Search options of a request: greedy, exactly ``length`` tokens per sequence (prompt
        included), the KV cache sized to them."""
        key = (sequences, length)
        p = self._params.get(key)
        if p is None:
            p = self.og.GeneratorParams(self.model)
            p.set_search_options(batch_size=sequences, max_length=length, min_length=length, do_sample=False)
            self._params[key] = p
        return p

    def _generate(self, prompt: np.ndarray, output_tokens: int, req: Request) -> np.ndarray:
        og = self.og
        sequences, prompt_tokens = prompt.shape
        length = prompt_tokens + output_tokens
        if self.context and length > self.context:
            raise ValueError(f"{prompt_tokens} prompt + {output_tokens} output tokens exceed the model's context of "
                             f"{self.context} tokens: shorten the prompt or the output")
        params = self.params(sequences, length)
        ids = np.ascontiguousarray(prompt, dtype=np.int32)
        with req.prefill():
            gen = og.Generator(self.model, params)
            gen.append_tokens(ids)
            gen.generate_next_token()
        for _ in range(output_tokens - 1):
            with req.decode():
                gen.generate_next_token()
        out = np.empty((sequences, output_tokens), dtype=np.int64)
        for i in range(sequences):
            seq = np.asarray(gen.get_sequence(i))
            if seq.shape[0] != length:
                raise RuntimeError(f"sequence {i} has {seq.shape[0] - prompt_tokens} of {output_tokens} tokens")
            out[i] = seq[prompt_tokens:]
        del gen
        return out

    def release(self) -> None:
        self._params = {}
        self.model = None
        self.folder = None
