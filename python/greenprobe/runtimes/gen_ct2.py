"""CTranslate2: the local checkpoint converted by CTranslate2's own converter
(``ct2-transformers-converter``), greedy generation with EOS ignored, each phase marked from the
decoding loop's per-step callback.

Conversion: one folder per (model, size, precision) in ``work_dir``,
``ctranslate2-<model>-<size>-<precision>/``, written under a temporary name and renamed when whole,
reused by later builds (``greenprobe.json`` in it records the converter's version and arguments).
The weights are stored in the precision's own type (``--quantization``: float32, float16,
bfloat16, int8); the compute type chosen at load (``COMPUTE_TYPES``) is the one CTranslate2 runs.

Generation and marks: ``Generator.generate_batch`` (greedy, ``include_prompt_in_result=False``: the
prompt goes through the decoder in one forward pass, ``max_length`` = output tokens,
``end_token=[]``: no token ends a sequence) with ``callback=``, which CTranslate2 calls from its
decoding loop once per sequence and step, as soon as that step's token is chosen (it waits for the
callback). The prefill is opened just before the call (time to first token: the call's set-up
included) and every step is closed when the last sequence of the batch got its token of that
step, so batches (sequences > 1) are marked like single sequences.

Why not ``generate_tokens``, the documented per-step API: it runs the same callback on
CTranslate2's thread and hands each step to the caller through a queue; the caller's thread then
waits for the GIL, and its yields lagged the steps by up to 5 ms here (Python's switch interval)
for steps of 0.2 ms. The callback is the step's own instant. Marks are therefore closed on
CTranslate2's thread (a mark's thread column says so); the request's marks never overlap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..generation import Request
from .gen_base import (GenRuntime, RuntimeUnavailable, conversion_complete, device_kind,
                       publish_conversion, temp_name)

#: precision -> the weights' type on disk (the converter's --quantization)
QUANTIZATION = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}
#: device kind -> precision -> CTranslate2 compute type (int8 weights with float32 activations on
#: the CPU, with float16 ones on a GPU: each device's usual int8 mode)
COMPUTE_TYPES = {"cpu": {"fp32": "float32", "int8": "int8_float32"},
                 "cuda": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8_float16"}}
SETUP_FIX = "bash scripts/setup-genai.sh   (pip install -r requirements/genai.txt)"
#: runs ct2-transformers-converter (its main(), argv as on the command line) with one adjustment,
#: only where the vocabulary is shorter than the model's: the locally trained tokenizer has fewer
#: pieces than the published vocabulary size, which CTranslate2's Llama and Qwen2 loaders pad with
#: "<extra_id_N>" tokens but its GPT-2 loader refuses ("Vocabulary has size 400 but the model
#: expected a vocabulary of size 1000"): every loader pads the same way here.
CONVERT_WRAPPER = r"""
import sys
from ctranslate2.converters import transformers as t
_call = t.ModelLoader.__call__
def __call__(self, model, tokenizer):
    get = self.get_vocabulary
    def padded(model, tokenizer):
        tokens = list(get(model, tokenizer))
        n = int(getattr(model.config, "vocab_size", 0) or 0)
        return tokens + ["<extra_id_%d>" % i for i in range(max(0, n - len(tokens)))]
    self.get_vocabulary = padded
    return _call(self, model, tokenizer)
t.ModelLoader.__call__ = __call__
sys.exit(t.main())
"""


def _cuda_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


class Ct2Gen(GenRuntime):
    name = "ctranslate2"
    cpu_precisions = ("fp32", "int8")
    gpu_precisions = ("fp32", "fp16", "bf16", "int8")

    def __init__(self):
        super().__init__()
        try:
            import ctranslate2
        except ImportError as e:
            raise RuntimeUnavailable(f"ctranslate2 is not importable: {e}", SETUP_FIX) from None
        self.ct2 = ctranslate2
        self.vocab: list = []
        self.conversion: dict = {}
        self.threads = 0

    # -- what is here --------------------------------------------------------------------------
    def _supported(self, kind: str) -> set:
        try:
            return set(self.ct2.get_supported_compute_types(kind))
        except Exception:  # noqa: BLE001 - no CUDA device or a CPU-only build
            return set()

    def _cuda_devices(self) -> int:
        try:
            return int(self.ct2.get_cuda_device_count())
        except Exception:  # noqa: BLE001
            return 0

    def _precisions(self, kind: str) -> tuple[list, dict]:
        """The precisions that run on this device kind, and why each other one does not."""
        supported = self._supported(kind)
        wanted = self.gpu_precisions if kind == "cuda" else self.cpu_precisions
        ok, why = [], {}
        for p in wanted:
            ct = COMPUTE_TYPES[kind][p]
            if ct in supported:
                ok.append(p)
            else:
                have = ", ".join(sorted(supported)) or "none"
                why[p] = f"compute type {ct} not supported on {kind} here (supported: {have})"
        return ok, why

    def precisions_for(self, device: str) -> tuple:
        return tuple(self._precisions(device_kind(device))[0])

    def describe(self) -> dict:
        n = self._cuda_devices()
        cpu, cpu_why = self._precisions("cpu")
        reasons = {f"cpu/{p}": r for p, r in cpu_why.items()}
        if n:
            cuda, cuda_why = self._precisions("cuda")
            reasons.update({f"cuda/{p}": r for p, r in cuda_why.items()})
        else:
            cuda = []
            reasons["cuda"] = f"ctranslate2 {self.ct2.__version__} sees no CUDA device"
        return {"runtime": self.name, "version": self.ct2.__version__,
                "devices": ["cpu"] + [f"cuda:{i}" for i in range(n)],
                "precisions": {"cpu": cpu, "cuda": cuda}, "reasons": reasons,
                "compute_types": {"cpu": {p: COMPUTE_TYPES["cpu"][p] for p in cpu},
                                  "cuda": {p: COMPUTE_TYPES["cuda"][p] for p in cuda}},
                "supported_compute_types": {"cpu": sorted(self._supported("cpu")),
                                            "cuda": sorted(self._supported("cuda")) if n else []},
                "threads": os.cpu_count(), "batches": True}

    # -- conversion ----------------------------------------------------------------------------
    def convert(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str) -> Path:
        """The converted model of (model, size, precision) in ``work_dir``, converted on first use.
        Sets ``self.conversion`` = {path, cached, convert_s}."""
        quant = QUANTIZATION[precision]
        out = Path(work_dir) / f"ctranslate2-{model}-{size}-{precision}"
        stamp = {"converter": f"ctranslate2 {self.ct2.__version__}", "quantization": quant,
                 "checkpoint": str(Path(checkpoint).resolve())}
        if conversion_complete(out, stamp, "model.bin"):
            self.conversion = {"path": str(out), "cached": True, "convert_s": 0.0}
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(out)
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [sys.executable, "-c", CONVERT_WRAPPER, "--model", str(checkpoint), "--output_dir", str(tmp),
               "--quantization", quant, "--low_cpu_mem_usage"]
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        seconds = time.monotonic() - t0
        if r.returncode != 0 or not (tmp / "model.bin").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
            if "No conversion is registered" in tail or "not supported" in tail.lower():
                raise RuntimeUnavailable(f"ctranslate2's converter refuses {model} ({size}): {tail}",
                                         "choose a model the converter supports (ctranslate2.converters.transformers)")
            raise RuntimeError(f"ct2-transformers-converter failed on {checkpoint} (exit {r.returncode}):\n{tail}")
        cached = publish_conversion(tmp, out, stamp, seconds, "model.bin")
        self.conversion = {"path": str(out), "cached": cached, "convert_s": 0.0 if cached else seconds}
        return out

    # -- build and generate --------------------------------------------------------------------
    def _build(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str, device: str) -> Any:
        kind = device_kind(device)
        if kind == "cuda" and not self._cuda_devices():
            raise RuntimeUnavailable(f"ctranslate2 {self.ct2.__version__} sees no CUDA device",
                                     "run on a machine with an NVIDIA GPU (the ctranslate2 wheel includes CUDA)")
        compute = COMPUTE_TYPES[kind][precision]
        path = self.convert(model, size, precision, checkpoint, work_dir)
        # every core on the CPU, as llama.cpp is given (CTranslate2's default is 4 threads)
        self.threads = (os.cpu_count() or 1) if kind == "cpu" else 0
        gen = self.ct2.Generator(str(path), device=kind, device_index=_cuda_index(device) if kind == "cuda" else 0,
                                 compute_type=compute, inter_threads=1, intra_threads=self.threads)
        vocab_file = path / "vocabulary.json"
        if vocab_file.exists():
            self.vocab = json.loads(vocab_file.read_text())
        else:  # older layouts: one token a line
            self.vocab = (path / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        self.compute_type = gen.compute_type
        return gen

    def tokens(self, prompt: np.ndarray) -> list:
        """Prompt ids as the converted model's token strings (the generator takes strings)."""
        n = len(self.vocab)
        if prompt.size and (prompt.min() < 0 or prompt.max() >= n):
            raise ValueError(f"prompt ids must lie in [0, {n}) (the converted vocabulary)")
        return [[self.vocab[i] for i in row] for row in prompt.tolist()]

    def _generate(self, prompt: np.ndarray, output_tokens: int, req: Request) -> np.ndarray:
        sequences = prompt.shape[0]
        start = self.tokens(prompt)
        out = np.full((sequences, output_tokens), -1, dtype=np.int64)
        seen = [0] * output_tokens  # sequences that got their token of each step
        failure: list = []

        def step(result) -> bool:  # on CTranslate2's thread, inside its decoding loop
            try:
                s = result.step
                out[result.batch_id, s] = result.token_id
                seen[s] += 1
                if seen[s] == sequences:  # the whole batch has its token of step s: close it
                    req.boundary(last=s + 1 >= output_tokens)
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                failure.append(e)
                return True  # stop decoding
            return False

        req.boundary()  # the prefill opens: the call's set-up, the prompt's forward pass, the first token
        results = self.model.generate_batch(start, max_batch_size=0, beam_size=1, sampling_topk=1,
                                            max_length=output_tokens, end_token=[], include_prompt_in_result=False,
                                            callback=step)
        if failure:
            raise failure[0]
        got = np.array([r.sequences_ids[0] for r in results], dtype=np.int64)
        if got.shape != out.shape or not np.array_equal(got, out):
            raise RuntimeError(f"ctranslate2 returned tokens of shape {got.shape} that differ from its steps' "
                               f"(expected {out.shape})")
        return out

    def release(self) -> None:
        self.model = None
        self.vocab = []
