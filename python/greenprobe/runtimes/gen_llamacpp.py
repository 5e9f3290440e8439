"""llama.cpp through llama-cpp-python: a GGUF written from the local checkpoint by llama.cpp's own
converter (``convert_hf_to_gguf.py``), quantised by llama.cpp's own quantiser
(``llama_model_quantize``), run with ``Llama.eval`` and ``Llama.sample``, greedy, EOS ignored.

Files: one folder per (model, size, precision) in ``work_dir``, ``llama.cpp-<model>-<size>-<precision>/``
holding ``model.gguf`` and ``greenprobe.json`` (the converter's or quantiser's version and
arguments), written under a temporary name and renamed when whole, reused by later builds. fp32 is
the converter's f32 GGUF; q8_0 and q4_k_m are quantised from it (llama.cpp's recommended source: full
precision). A tensor whose rows the quantised type cannot split (K-quants need rows of 256 values)
gets llama.cpp's own fallback type, as ``llama-quantize`` does.

The converter ships with llama.cpp, not with the wheel: scripts/setup-genai.sh copies it from the
llama-cpp-python sdist of the installed version (with its ``conversion/`` package and its own
``gguf-py``) into ``<environment>/share/llama.cpp-<version>/``; $GREENPROBE_LLAMA_CPP_CONVERT names
another folder holding ``convert_hf_to_gguf.py``. It runs in a subprocess (``CONVERT_WRAPPER``: two
adjustments for GPT-2 checkpoints, said there).

Context: a build reserves ``min(model positions, 4096)`` tokens; a request that needs more makes
a bigger context before its prefill opens (not measured, but between requests). Threads: every
core (``n_threads`` = ``n_threads_batch`` = os.cpu_count()). llama.cpp's threads spin while they
wait: another busy process on the same cores slows each step by orders of magnitude (0.1 ms steps
of the tiny model took 70 ms here while another worker ran).

Phases: the prefill is ``eval(prompt)`` and the sampling of the first token; each decode step is
``eval([token])`` and the sampling of the next one: llama-cpp-python's own token loop
(``Llama.generate``), with the marks around its parts. One greedy sampler chain serves a request,
as ``Llama.generate`` keeps one.

Batches: llama-cpp-python's ``Llama`` runs one sequence per context (its ``eval``/``sample`` take
one token list; the ``n_seq_max`` of the low-level API is not reachable through them), so requests
of more than one sequence raise RuntimeUnavailable and the study skips those configurations.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..generation import Request
from .gen_base import GenRuntime, RuntimeUnavailable, conversion_complete, publish_conversion, temp_name

#: precision -> (the converter's --outtype for fp32/fp16, else the llama_ftype name to quantise to)
OUTTYPES = {"fp32": "f32", "fp16": "f16"}
FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
SETUP_FIX = "bash scripts/setup-genai.sh   (builds llama-cpp-python once, then installs the cached wheel)"
CONVERT_ENV = "GREENPROBE_LLAMA_CPP_CONVERT"
#: the context a build reserves where the model allows it; a longer request makes a bigger one
DEFAULT_CONTEXT = 4096
BATCH_REASON = ("llama-cpp-python's Llama runs one sequence per context (eval/sample take one token list): "
                "batches of more than one sequence are not supported")


#: runs llama.cpp's converter (argv: the script, then its arguments) with two adjustments to what it
#: reads, each only where it would stop otherwise: a GPT-2 configuration saved by transformers 5 has
#: no ``n_ctx`` (the converter's GPT-2 reads it; the published config has it, = n_positions), and
#: the converter's GPT-2 reads only a BPE ``tokenizer.json`` (with merges, which llama.cpp needs to
#: load a BPE vocabulary) where the checkpoint has the SentencePiece ``tokenizer.model`` every
#: model here gets: it is written with the converter's own SentencePiece vocabulary writer, as for
#: Llama. Prompts go in as ids, so the vocabulary's kind changes no computation.
CONVERT_WRAPPER = r"""
import runpy, sys
from pathlib import Path
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, str(Path(script).parent))
sys.path.insert(1, str(Path(script).parent / "gguf-py"))
import conversion.base as base
from conversion.gpt2 import GPT2Model
_load = base.ModelBase.load_hparams
def load_hparams(dir_model, is_mistral_format):
    h = _load(dir_model, is_mistral_format)
    if h.get("model_type") == "gpt2" and "n_ctx" not in h and "n_positions" in h:
        h["n_ctx"] = h["n_positions"]
    return h
base.ModelBase.load_hparams = staticmethod(load_hparams)
_gpt2_vocab = GPT2Model.set_vocab
def set_vocab(self):
    if (self.dir_model / "tokenizer.model").is_file() and not (self.dir_model / "tokenizer.json").is_file():
        return self._set_vocab_sentencepiece()
    return _gpt2_vocab(self)
GPT2Model.set_vocab = set_vocab
runpy.run_path(script, run_name="__main__")
"""


def converter_script() -> Optional[Path]:
    """llama.cpp's convert_hf_to_gguf.py for the installed llama-cpp-python, or None."""
    env = os.environ.get(CONVERT_ENV)
    if env:
        p = Path(env)
        return p / "convert_hf_to_gguf.py" if p.is_dir() else p
    import llama_cpp

    p = Path(sys.prefix) / "share" / f"llama.cpp-{llama_cpp.__version__}" / "convert_hf_to_gguf.py"
    return p if p.exists() else None


class LlamaCppGen(GenRuntime):
    name = "llama.cpp"
    cpu_precisions = ("fp32", "q8_0", "q4_k_m")
    gpu_precisions = ("fp32", "fp16", "q8_0", "q4_k_m")

    def __init__(self):
        super().__init__()
        try:
            import llama_cpp
        except ImportError as e:
            raise RuntimeUnavailable(f"llama_cpp is not importable: {e}", SETUP_FIX) from None
        self.llama_cpp = llama_cpp
        self.threads = os.cpu_count() or 1
        self.n_ctx = 0
        self.conversion: dict = {}
        self._path: Optional[Path] = None

    # -- what is here --------------------------------------------------------------------------
    def _gpu(self) -> bool:
        try:
            return bool(self.llama_cpp.llama_supports_gpu_offload())
        except Exception:  # noqa: BLE001
            return False

    def precisions_for(self, device: str) -> tuple:
        if device.startswith("cuda"):
            return self.gpu_precisions if self._gpu() else ()
        return self.cpu_precisions

    def describe(self) -> dict:
        gpu = self._gpu()
        script = converter_script()
        reasons = {"batches": BATCH_REASON}
        if not gpu:
            reasons["cuda"] = (f"this llama-cpp-python {self.llama_cpp.__version__} build has no GPU offload "
                               "(scripts/setup-genai.sh builds it for the CPU)")
        if script is None:
            reasons["converter"] = f"llama.cpp's convert_hf_to_gguf.py is not installed: {SETUP_FIX}"
        return {"runtime": self.name, "version": self.llama_cpp.__version__,
                "devices": ["cpu"] + (["cuda:0"] if gpu else []),
                "precisions": {"cpu": list(self.cpu_precisions), "cuda": list(self.gpu_precisions) if gpu else []},
                "reasons": reasons, "converter": str(script) if script else None, "threads": self.threads,
                "batches": False, "max_sequences": 1,
                "system_info": self.llama_cpp.llama_print_system_info().decode(errors="replace").strip()}

    # -- conversion and quantisation -----------------------------------------------------------
    def _folder(self, work_dir: str, model: str, size: str, precision: str) -> Path:
        return Path(work_dir) / f"llama.cpp-{model}-{size}-{precision}"

    def gguf(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str) -> Path:
        """The GGUF of (model, size, precision) in ``work_dir``, written on first use (the f32 one
        first where a quantised one is asked for). Sets ``self.conversion`` = {path (the folder), file,
        cached, convert_s}."""
        folder = self._folder(work_dir, model, size, precision)
        version = self.llama_cpp.__version__
        checkpoint = str(Path(checkpoint).resolve())
        if precision in OUTTYPES:
            stamp = {"tool": f"llama.cpp convert_hf_to_gguf.py (llama-cpp-python {version})",
                     "outtype": OUTTYPES[precision], "checkpoint": checkpoint}
        else:
            source = self._folder(work_dir, model, size, "fp32") / "model.gguf"
            stamp = {"tool": f"llama.cpp llama_model_quantize (llama-cpp-python {version})",
                     "ftype": FTYPES[precision], "source": str(source)}
        if conversion_complete(folder, stamp, "model.gguf"):
            self.conversion = {"path": str(folder), "file": str(folder / "model.gguf"), "cached": True,
                               "convert_s": 0.0}
            return folder / "model.gguf"
        if precision not in OUTTYPES:
            self.gguf(model, size, "fp32", checkpoint, work_dir)  # the quantiser's source, converted once
        tmp = temp_name(folder)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        t0 = time.monotonic()
        try:
            if precision in OUTTYPES:
                self._convert(checkpoint, tmp / "model.gguf", OUTTYPES[precision], model, size)
            else:
                self._quantize(source, tmp / "model.gguf", precision)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.monotonic() - t0
        cached = publish_conversion(tmp, folder, stamp, seconds, "model.gguf")
        self.conversion = {"path": str(folder), "file": str(folder / "model.gguf"), "cached": cached,
                           "convert_s": 0.0 if cached else seconds}
        return folder / "model.gguf"

    def _convert(self, checkpoint: str, out: Path, outtype: str, model: str, size: str) -> None:
        script = converter_script()
        if script is None or not script.exists():
            raise RuntimeUnavailable(f"llama.cpp's convert_hf_to_gguf.py for llama-cpp-python "
                                     f"{self.llama_cpp.__version__} is not installed", SETUP_FIX)
        cmd = [sys.executable, "-c", CONVERT_WRAPPER, str(script), checkpoint, "--outfile", str(out),
               "--outtype", outtype]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        if r.returncode != 0 or not out.exists():
            tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
            if "is not supported" in tail or "not recognized" in tail:
                raise RuntimeUnavailable(f"llama.cpp's converter refuses {model} ({size}): {tail}",
                                         "choose a model llama.cpp's convert_hf_to_gguf.py supports")
            raise RuntimeError(f"convert_hf_to_gguf.py failed on {checkpoint} (exit {r.returncode}):\n{tail}")

    def _quantize(self, source: Path, out: Path, precision: str) -> None:
        import logging

        # llama.cpp logs every tensor through llama-cpp-python's logger (to stderr): errors only,
        # as Llama(verbose=False) sets it
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        lc = self.llama_cpp
        params = lc.llama_model_quantize_default_params()
        params.ftype = getattr(lc, FTYPES[precision])
        params.nthread = self.threads
        rc = lc.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
        if rc != 0 or not out.exists():
            raise RuntimeError(f"llama_model_quantize({source.name} -> {precision}) failed with {rc}")

    # -- build and generate --------------------------------------------------------------------
    def _build(self, model: str, size: str, precision: str, checkpoint: str, work_dir: str, device: str) -> Any:
        from ..models.generative import context_tokens

        path = self.gguf(model, size, precision, checkpoint, work_dir)
        self._path, self._gpu_layers = path, (-1 if device.startswith("cuda") else 0)
        self._max_ctx = context_tokens(model, size)
        return self._load(min(self._max_ctx, DEFAULT_CONTEXT))

    def _load(self, n_ctx: int) -> Any:
        self.model = None  # free the old context first
        llm = self.llama_cpp.Llama(model_path=str(self._path), n_ctx=int(n_ctx), n_threads=self.threads,
                                   n_threads_batch=self.threads, n_gpu_layers=self._gpu_layers, logits_all=False,
                                   verbose=False, seed=0)
        self.n_ctx = llm.n_ctx()
        self.model = llm
        return llm

    def _generate(self, prompt: np.ndarray, output_tokens: int, req: Request) -> np.ndarray:
        if prompt.shape[0] != 1:
            raise RuntimeUnavailable(f"llama.cpp: {prompt.shape[0]} sequences asked; {BATCH_REASON}",
                                     "run llama.cpp with batch size 1")
        need = prompt.shape[1] + output_tokens
        if need > self._max_ctx:
            raise ValueError(f"{prompt.shape[1]} prompt + {output_tokens} output tokens exceed the model's "
                             f"{self._max_ctx} positions")
        if need > self.n_ctx:  # before the prefill opens: a context that fits (not measured)
            self._load(need)
        llm = self.model
        ids = prompt[0].tolist()
        n_vocab = llm.n_vocab()
        if min(ids) < 0 or max(ids) >= n_vocab:
            raise ValueError(f"prompt ids must lie in [0, {n_vocab})")
        out = np.empty((1, output_tokens), dtype=np.int64)
        llm.reset()
        # one greedy chain for the request, as Llama.generate keeps one (sample() would make one a step)
        llm._sampler = llm._init_sampler(temp=0.0, repeat_penalty=1.0)
        try:
            with req.prefill():  # the prompt in one pass (n_batch tokens at a time) and the first token
                llm.eval(ids)
                token = llm.sample(temp=0.0, repeat_penalty=1.0)
            out[0, 0] = token
            for i in range(1, output_tokens):
                with req.decode():  # EOS ignored: the loop runs to output_tokens
                    llm.eval([token])
                    token = llm.sample(temp=0.0, repeat_penalty=1.0)
                out[0, i] = token
        finally:
            llm._sampler = None
        return out

    def release(self) -> None:
        self.model = None
