"""ONNX Runtime on models converted from each framework, on every execution provider that really
loads here.

The trap: onnxruntime-gpu lists CUDAExecutionProvider and TensorrtExecutionProvider as available
even without CUDA, and a session silently falls back to the next provider when one fails to load.
So a provider counts as usable only if its shared library loads and a session built with it
reports it first in ``get_providers()``; otherwise it is reported as skipped with the loader's
reason. Nothing measured on the CPU is ever labelled CUDA.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Optional

import numpy as np

from .base import Runtime, RuntimeUnavailable

#: provider -> the shared library onnxruntime loads for it (None: built in)
PROVIDER_LIBRARIES = {
    "CPUExecutionProvider": None,
    "CUDAExecutionProvider": "libonnxruntime_providers_cuda.so",
    "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so",
    "OpenVINOExecutionProvider": "libonnxruntime_providers_openvino.so",
    "ROCMExecutionProvider": "libonnxruntime_providers_rocm.so",
}

SHORT = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt",
         "OpenVINOExecutionProvider": "openvino", "ROCMExecutionProvider": "rocm", "DnnlExecutionProvider": "dnnl"}
LONG = {v: k for k, v in SHORT.items()}


def _tiny_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    return model.SerializeToString()


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self):
        super().__init__()
        import onnxruntime as ort

        self.ort = ort
        ort.set_default_logger_severity(3)  # the loader's errors are reported by provider_status()
        self.session = None
        self.provider = "CPUExecutionProvider"

    def provider_status(self) -> list[dict]:
        """Every provider onnxruntime lists: does it really run here, and if not, why."""
        ort = self.ort
        capi = os.path.join(os.path.dirname(ort.__file__), "capi")
        out = []
        for p in ort.get_available_providers():
            lib = PROVIDER_LIBRARIES.get(p)
            reason = ""
            if lib:
                try:
                    ctypes.CDLL(os.path.join(capi, lib))
                except OSError as e:
                    reason = f"{lib} does not load: {e}"
            if not reason:
                try:
                    s = ort.InferenceSession(_tiny_model_bytes(), providers=[p])
                    if s.get_providers()[0] != p:
                        reason = f"a session asked for {p} fell back to {s.get_providers()[0]}"
                except Exception as e:  # noqa: BLE001 - the provider's own error is the reason
                    reason = f"session creation failed: {e}"
            out.append({"name": SHORT.get(p, p), "provider": p, "available": not reason, "reason": reason})
        return out

    def describe(self) -> dict:
        status = self.provider_status()
        return {"runtime": self.name, "version": self.ort.__version__, "devices": ["cpu"] +
                (["cuda"] if any(s["available"] and s["name"] in ("cuda", "tensorrt") for s in status) else []),
                "providers": status}

    def _build(self, model: str, size: str, weights: Optional[str], device: str, onnx_path: str = "",
               provider: str = "cpu", **options) -> Any:
        if not onnx_path:
            raise ValueError("onnxruntime builds from an ONNX file: pass onnx_path (exported by the source framework)")
        full = LONG.get(provider, provider)
        status = {s["provider"]: s for s in self.provider_status()}
        if full not in status:
            raise RuntimeUnavailable(f"onnxruntime {self.ort.__version__} does not offer {full}",
                                     "install the onnxruntime package that ships it (e.g. onnxruntime-gpu, onnxruntime-openvino)")
        if not status[full]["available"]:
            raise RuntimeUnavailable(f"{full} cannot run here: {status[full]['reason']}",
                                     "install CUDA/cuDNN (and TensorRT) matching onnxruntime-gpu on a machine with an NVIDIA GPU")
        so = self.ort.SessionOptions()
        sess = self.ort.InferenceSession(onnx_path, sess_options=so, providers=[full])
        used = sess.get_providers()[0]
        if used != full:  # never measure one provider and label it another
            raise RuntimeUnavailable(f"asked for {full}, the session runs on {used}", "see provider_status()")
        self.session, self.provider, self._onnx_path = sess, full, onnx_path
        self.device = "cuda" if full in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
        self._inputs = [i.name for i in sess.get_inputs()]
        self._types = {i.name: i.type for i in sess.get_inputs()}
        return sess

    def _convert_input(self, batch: dict) -> Any:
        # match the exporter's input names and types
        aliases = {"pixels": ["pixels", "data", "input", "data0", "input_1"], "input_ids": ["input_ids", "token_ids", "data0"],
                   "token_type_ids": ["token_type_ids", "segment_ids", "data1"],
                   "attention_mask": ["attention_mask", "padding_mask"], "valid_length": ["data2"]}
        if "input_ids" in batch:
            batch = dict(batch, valid_length=batch["attention_mask"].sum(axis=1))
        if "pixels" in batch:
            shape = self.session.get_inputs()[0].shape
            if len(shape) == 4 and shape[-1] == 3 and shape[1] != 3:  # exported from a channels-last framework
                batch = {"pixels": np.ascontiguousarray(batch["pixels"].transpose(0, 2, 3, 1))}
        feed = {}
        for key, value in batch.items():
            for name in aliases.get(key, [key]):
                if name in self._inputs and name not in feed:
                    feed[name] = value
                    break
        missing = set(self._inputs) - set(feed)
        if missing:
            raise ValueError(f"cannot feed ONNX inputs {sorted(missing)} from {sorted(batch)}")
        typed = {}
        for name, value in feed.items():
            t = self._types[name]
            dt = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                  "tensor(bool)": np.bool_}.get(t, value.dtype)
            typed[name] = np.ascontiguousarray(value.astype(dt))
        return typed

    def _run(self, x: Any) -> Any:
        return self.session.run(None, x)[0]  # synchronous: returns when the provider has finished

    def _to_numpy(self, y: Any) -> np.ndarray:
        return np.asarray(y)

    def count_params(self) -> int:
        import onnx

        m = onnx.load(self._onnx_path)
        return int(sum(int(np.prod(t.dims)) for t in m.graph.initializer))

    def release(self) -> None:
        self.session = None
        super().release()
