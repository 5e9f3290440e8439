"""The study's models, built from configuration with random weights (energy and time of inference
do not depend on weight values), with a path that loads local weights when a user has them.

Each framework builds its own idiomatic implementation of the same architecture:

=================  ===========================  ===============================  ==============================
model              PyTorch                      TensorFlow / Keras               MXNet (Gluon)
=================  ===========================  ===============================  ==============================
resnet50           transformers ResNet          keras.applications.ResNet50      gluon model_zoo resnet50_v1
mobilenet_v2       transformers MobileNetV2     keras.applications.MobileNetV2   gluon model_zoo mobilenet_v2_1_0
bert-base-uncased  transformers BertModel       keras_hub BertBackbone           gluonnlp BERTModel
=================  ===========================  ===============================  ==============================

(torchvision cannot be installed beside the CPU build of torch here; the transformers
implementations are the same architectures and load Hugging Face checkpoints.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str            # "image" or "text"
    nominal_params: int  # as published


MODELS = {
    "resnet50": ModelSpec("resnet50", "image", 25_600_000),
    "mobilenet_v2": ModelSpec("mobilenet_v2", "image", 3_500_000),
    "bert-base-uncased": ModelSpec("bert-base-uncased", "text", 110_000_000),
}

#: BERT-base-uncased hyper-parameters (Devlin et al. 2019; the uncased WordPiece vocabulary).
BERT_BASE = dict(vocab_size=30522, num_layers=12, hidden=768, heads=12, intermediate=3072, max_len=512, type_vocab=2)
#: A small BERT for tests: same vocabulary, 2 layers of 128.
BERT_TINY = dict(vocab_size=30522, num_layers=2, hidden=128, heads=2, intermediate=512, max_len=512, type_vocab=2)

SIZES = ("full", "tiny")


def spec(model: str) -> ModelSpec:
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}") from None


def bert_config(size: str) -> dict:
    return BERT_BASE if size == "full" else BERT_TINY


def make_input(model: str, batch_size: int, *, image_size: int = 224, seq_len: int = 128, seed: int = 0) -> dict:
    """The canonical input batch as numpy: images NCHW float32 in [0, 1); text token ids (int64),
    an all-ones attention mask and zero segment ids. Adapters convert to their layout."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    rng = np.random.default_rng(seed)
    if spec(model).kind == "image":
        return {"pixels": rng.random((batch_size, 3, image_size, image_size), dtype=np.float32)}
    ids = rng.integers(1000, 30000, size=(batch_size, seq_len), dtype=np.int64)
    ids[:, 0] = 101   # [CLS]
    ids[:, -1] = 102  # [SEP]
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
