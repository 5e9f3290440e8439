"""The generative study's models: decoder-only architectures from their published configurations,
with random weights (energy and time per token do not depend on the weights' values) and random
token ids (no tokenizer is downloaded). One local Hugging Face checkpoint per (model, size) is the
source every runtime converts with its own tools:

==============  ==================================  =============================================
model           published configuration             size = "tiny" (tests: steps of 5-50 ms on CPU)
==============  ==================================  =============================================
llama-3.2-1b    meta-llama/Llama-3.2-1B             Llama, 8 layers of 768, vocabulary 2000 (~50M)
qwen2.5-0.5b    Qwen/Qwen2.5-0.5B                   Qwen2, 8 layers of 768, vocabulary 2000
gpt2            openai-community/gpt2 (124M)        GPT-2, 6 layers of 768, vocabulary 2000
tiny            (unit tests: a micro Llama)         2 layers of 64, vocabulary 1000, either size
==============  ==================================  =============================================

Converters read a tokenizer beside the checkpoint: ``write_checkpoint`` trains a small
SentencePiece one locally (a few hundred pieces of BPE; the model's own vocabulary size is kept:
converters pad the vocabulary to it).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

GEN_SIZES = ("full", "tiny")


@dataclass(frozen=True)
class GenModel:
    name: str
    family: str           # transformers model_type: llama, qwen2, gpt2
    nominal_params: int   # as published
    source: str           # where the configuration is published


GEN_MODELS = {
    "llama-3.2-1b": GenModel("llama-3.2-1b", "llama", 1_235_814_400, "meta-llama/Llama-3.2-1B config.json"),
    "qwen2.5-0.5b": GenModel("qwen2.5-0.5b", "qwen2", 494_032_768, "Qwen/Qwen2.5-0.5B config.json"),
    "gpt2": GenModel("gpt2", "gpt2", 124_439_808, "openai-community/gpt2 config.json"),
    "tiny": GenModel("tiny", "llama", 0, "a tiny Llama for the tests"),
}

#: Llama 3.2 1B (meta-llama/Llama-3.2-1B, config.json)
LLAMA_3_2_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, hidden_act="silu",
                    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                    bos_token_id=128000, eos_token_id=128001)
#: Qwen2.5 0.5B (Qwen/Qwen2.5-0.5B, config.json)
QWEN2_5_0_5B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, hidden_act="silu",
                    use_sliding_window=False, sliding_window=32768, max_window_layers=21,
                    bos_token_id=151643, eos_token_id=151643)
#: GPT-2 small (openai-community/gpt2, config.json)
GPT2_124M = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                 activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=50256, eos_token_id=50256)

#: the tiny variants (``size = "tiny"``): the same families at about 50M parameters, so that a decode
#: step takes 5-50 ms on a CPU core or two, as a full model's step does on a GPU (the regime the
#: generative truth tests are for), with a 2,000-token vocabulary
TINY = {
    "llama": dict(vocab_size=2000, hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                  num_key_value_heads=4, head_dim=64, max_position_embeddings=2048, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2),
    "qwen2": dict(vocab_size=2000, hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
                  num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
                  tie_word_embeddings=True, hidden_act="silu", use_sliding_window=False, bos_token_id=1,
                  eos_token_id=2),
    "gpt2": dict(vocab_size=2000, n_positions=1024, n_embd=768, n_layer=6, n_head=12, n_inner=None,
                 activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=1, eos_token_id=2),
}
#: the model "tiny": a Llama of 2 layers of 64 for fast unit tests (steps well under a millisecond)
MICRO = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
             tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2)
FULL = {"llama-3.2-1b": LLAMA_3_2_1B, "qwen2.5-0.5b": QWEN2_5_0_5B, "gpt2": GPT2_124M}

#: tokens of the locally trained tokenizer (converters pad the vocabulary to the model's size)
TOKENIZER_PIECES = 400


def gen_spec(model: str) -> GenModel:
    try:
        return GEN_MODELS[model]
    except KeyError:
        raise ValueError(f"unknown generative model {model!r}: choose one of {', '.join(GEN_MODELS)}") from None


def config_values(model: str, size: str) -> dict:
    """The model's configuration (transformers keys), its family included as ``model_type``."""
    m = gen_spec(model)
    if size not in GEN_SIZES:
        raise ValueError(f"size must be one of {', '.join(GEN_SIZES)}, not {size!r}")
    values = MICRO if model == "tiny" else TINY[m.family] if size == "tiny" else FULL[model]
    return {"model_type": m.family, **values}


def context_tokens(model: str, size: str) -> int:
    """The longest sequence (prompt and output) the model's positions allow."""
    v = config_values(model, size)
    return int(v.get("max_position_embeddings") or v.get("n_positions"))


def vocab_size(model: str, size: str) -> int:
    return int(config_values(model, size)["vocab_size"])


def hf_config(model: str, size: str):
    """A transformers configuration object for the model."""
    import transformers

    values = dict(config_values(model, size))
    family = values.pop("model_type")
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "gpt2": transformers.GPT2Config}[family]
    return cls(**values)


def make_prompt(model: str, size: str, sequences: int, prompt_tokens: int, seed: int = 0) -> np.ndarray:
    """Random prompt token ids (sequences x prompt_tokens, int64), clear of the special ids below 3
    and of the vocabulary's end (padding pieces some converters add)."""
    if sequences < 1 or prompt_tokens < 1:
        raise ValueError("sequences and prompt_tokens must be >= 1")
    hi = min(vocab_size(model, size), TOKENIZER_PIECES)
    return np.random.default_rng(seed).integers(3, hi, size=(sequences, prompt_tokens), dtype=np.int64)


def checkpoint_name(model: str, size: str) -> str:
    return f"{model}-{size}"


def write_checkpoint(model: str, size: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Writes the model with random weights (``save_pretrained``, safetensors, float32) and a
    locally trained SentencePiece tokenizer into ``folder`` (made whole or not at all). Returns the
    folder; an existing complete one is kept."""
    folder = Path(folder)
    if (folder / "greenprobe.json").exists():
        return folder
    import torch
    import transformers

    import socket

    tmp = folder.with_name(f"{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}")  # nodes share the folder
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(seed)
    cfg = hf_config(model, size)
    with torch.no_grad():
        net = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    net.save_pretrained(tmp, safe_serialization=True)
    del net
    write_tokenizer(tmp, cfg)
    (tmp / "greenprobe.json").write_text(json.dumps({"model": model, "size": size, "seed": seed,
                                                      "source": gen_spec(model).source, "weights": "random"}))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process (a Slurm task on another node) finished first
        if not (folder / "greenprobe.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


#: the text the tokenizer is trained on: any words will do, the weights are random
_WORDS = ("energy power joule watt token prompt decode prefill sequence batch model runtime counter sensor sample "
          "interval estimate measure time clock thread kernel device memory cache layer attention head vector "
          "matrix weight random value green probe inference generation request response output input context "
          "length window update period regression uncertainty coverage bound idle load machine node job").split()


def write_tokenizer(folder: Path, cfg) -> None:
    """A SentencePiece BPE tokenizer (tokenizer.model) trained on a few hundred generated words,
    with the special ids the configuration names, and the transformers files that point at it."""
    import sentencepiece as spm

    rng = np.random.default_rng(0)
    text = folder / "corpus.txt"
    text.write_text("\n".join(" ".join(rng.choice(_WORDS, 12)) for _ in range(400)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "tokenizer"), model_type="bpe",
                                   vocab_size=TOKENIZER_PIECES, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    text.unlink()
    (folder / "tokenizer.vocab").unlink(missing_ok=True)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "model_max_length": int(
            getattr(cfg, "max_position_embeddings", 0) or getattr(cfg, "n_positions", 1024))}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                                "unk_token": "<unk>"}))


def checkpoint(model: str, size: str, cache: Optional[str | os.PathLike] = None) -> Path:
    """The local checkpoint of (model, size) under ``cache`` (default $GREENPROBE_MODEL_CACHE or
    ~/.cache/greenprobe/models), written on first use."""
    root = Path(cache or os.environ.get("GREENPROBE_MODEL_CACHE") or Path.home() / ".cache" / "greenprobe" / "models")
    return write_checkpoint(model, size, root / checkpoint_name(model, size))
