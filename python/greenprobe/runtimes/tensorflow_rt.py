"""TensorFlow: Keras applications (ResNet50, MobileNetV2) and keras_hub's BertBackbone."""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ..models import bert_config
from .base import Runtime, RuntimeUnavailable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class TensorflowRuntime(Runtime):
    name = "tensorflow"

    def __init__(self):
        super().__init__()
        import tensorflow as tf

        self.tf = tf
        self._fn = None

    def describe(self) -> dict:
        tf = self.tf
        gpus = tf.config.list_physical_devices("GPU")
        import keras

        return {"runtime": self.name, "version": tf.__version__, "keras": keras.__version__,
                "devices": ["cpu"] + [f"gpu:{i}" for i in range(len(gpus))], "providers": []}

    def _build(self, model: str, size: str, weights: Optional[str], device: str, image_size: int = 224, seed: int = 0,
               **options) -> Any:
        import keras

        tf = self.tf
        if device.startswith("gpu") and not tf.config.list_physical_devices("GPU"):
            raise RuntimeUnavailable("TensorFlow sees no GPU", "install tensorflow[and-cuda] on a machine with an NVIDIA GPU")
        self._tf_device = "/GPU:0" if device.startswith("gpu") else "/CPU:0"
        keras.utils.set_random_seed(seed)
        tiny = size == "tiny"
        with tf.device(self._tf_device):
            if model == "resnet50":
                m = keras.applications.ResNet50(weights=weights, input_shape=(image_size, image_size, 3),
                                                classes=1000, classifier_activation=None)  # logits, as the others
            elif model == "mobilenet_v2":
                m = keras.applications.MobileNetV2(weights=weights, input_shape=(image_size, image_size, 3),
                                                   alpha=0.35 if tiny else 1.0, classes=1000,
                                                   classifier_activation=None)
            else:
                import keras_hub

                b = bert_config(size)
                m = keras_hub.models.BertBackbone(vocabulary_size=b["vocab_size"], num_layers=b["num_layers"],
                                                  num_heads=b["heads"], hidden_dim=b["hidden"],
                                                  intermediate_dim=b["intermediate"], max_sequence_length=b["max_len"],
                                                  num_segments=b["type_vocab"])
                if weights:
                    m.load_weights(weights)
        self._fn = tf.function(lambda x: m(x, training=False), reduce_retracing=True)
        return m

    def _convert_input(self, batch: dict) -> Any:
        tf = self.tf
        with tf.device(self._tf_device):
            if "pixels" in batch:
                return tf.constant(np.ascontiguousarray(batch["pixels"].transpose(0, 2, 3, 1)))  # NHWC
            return {"token_ids": tf.constant(batch["input_ids"].astype(np.int32)),
                    "segment_ids": tf.constant(batch["token_type_ids"].astype(np.int32)),
                    "padding_mask": tf.constant(batch["attention_mask"].astype(bool))}

    def _run(self, x: Any) -> Any:
        y = self._fn(x)
        if isinstance(y, dict):
            y = y["sequence_output"]
        # .numpy() waits for the device: the result exists only when the work is done
        return y.numpy()

    def _to_numpy(self, y: Any) -> np.ndarray:
        return np.asarray(y)

    def count_params(self) -> int:
        return int(self.model.count_params())

    def save_weights(self, path: str) -> str:
        if not path.endswith(".weights.h5"):
            raise ValueError("Keras weight files end in .weights.h5")
        self.model.save_weights(path)
        return path

    def export_onnx(self, path: str, batch: dict, finalize: bool = True) -> str:  # nothing to finalize
        import tf2onnx

        tf = self.tf
        x = self._convert_input(batch)
        m = self.model
        if isinstance(x, dict):
            spec = [tf.TensorSpec((None, None), tf.int32, name="token_ids"),
                    tf.TensorSpec((None, None), tf.int32, name="segment_ids"),
                    tf.TensorSpec((None, None), tf.bool, name="padding_mask")]

            @tf.function(input_signature=spec)
            def fn(token_ids, segment_ids, padding_mask):
                out = m({"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
                        training=False)
                return {"output": out["sequence_output"]}
        else:
            spec = [tf.TensorSpec((None,) + tuple(x.shape[1:]), tf.float32, name="pixels")]

            @tf.function(input_signature=spec)
            def fn(pixels):
                return {"output": m(pixels, training=False)}

        tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=path)
        return path
