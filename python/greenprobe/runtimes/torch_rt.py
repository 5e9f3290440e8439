"""PyTorch: Hugging Face transformers' PyTorch implementations of ResNet-50, MobileNetV2 and BERT."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..models import bert_config
from .base import Runtime, RuntimeUnavailable


def inference_torch() -> Any:
    """torch with autograd off (inference only): where both torch adapters start (this one and
    gen_torch's)."""
    import torch

    torch.set_grad_enabled(False)
    return torch


def torch_devices(torch) -> list[str]:
    """The devices torch can run on: cpu, and each CUDA device it sees."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else ["cpu"]


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self):
        super().__init__()
        self.torch = inference_torch()

    def describe(self) -> dict:
        t = self.torch
        return {"runtime": self.name, "version": t.__version__, "devices": torch_devices(t), "providers": [],
                "threads": t.get_num_threads()}

    def _build(self, model: str, size: str, weights: Optional[str], device: str, seed: int = 0, **options) -> Any:
        import transformers as tr

        if device.startswith("cuda") and not self.torch.cuda.is_available():
            raise RuntimeUnavailable(f"torch {self.torch.__version__} sees no CUDA device",
                                     "install a CUDA build of torch on a machine with an NVIDIA GPU")
        tiny = size == "tiny"
        if model == "resnet50":
            cls = tr.ResNetForImageClassification
            cfg = (tr.ResNetConfig(num_labels=10, embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1])
                   if tiny else tr.ResNetConfig(num_labels=1000))  # defaults: ResNet-50 v1.5
        elif model == "mobilenet_v2":
            cls = tr.MobileNetV2ForImageClassification
            cfg = tr.MobileNetV2Config(num_labels=10 if tiny else 1000, depth_multiplier=0.35 if tiny else 1.0)
        else:
            b = bert_config(size)
            cls = tr.BertModel
            cfg = tr.BertConfig(vocab_size=b["vocab_size"], hidden_size=b["hidden"], num_hidden_layers=b["num_layers"],
                                num_attention_heads=b["heads"], intermediate_size=b["intermediate"],
                                max_position_embeddings=b["max_len"], type_vocab_size=b["type_vocab"])
        if weights:  # a local Hugging Face checkpoint folder
            m = cls.from_pretrained(weights, local_files_only=True)
        else:
            self.torch.manual_seed(seed)
            m = cls(cfg)
            if model != "bert-base-uncased":
                self._torchvision_init(m)
        return m.eval().to(device)

    def _torchvision_init(self, m) -> None:
        """torchvision's initialisation for CNNs (He/fan-out convs, unit BatchNorm): with random
        weights the activations keep their scale through the network instead of fading to ~0, so
        outputs can be compared across runtimes. Timing and energy do not depend on it."""
        nn = self.torch.nn
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, 0, 0.01)
                nn.init.zeros_(mod.bias)

    def _convert_input(self, batch: dict) -> Any:
        t = self.torch
        return {k: t.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in batch.items()}

    def _forward(self, x):
        if "pixels" in x:
            return self.model(pixel_values=x["pixels"]).logits
        return self.model(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                          token_type_ids=x["token_type_ids"]).last_hidden_state

    def _run(self, x: Any) -> Any:
        y = self._forward(x)
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()  # kernels are asynchronous: wait for them
        return y

    def _to_numpy(self, y: Any) -> np.ndarray:
        return y.detach().cpu().numpy()

    def count_params(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def save_weights(self, path: str) -> str:
        self.model.save_pretrained(path)  # a Hugging Face checkpoint folder (config + weights)
        return path

    def export_onnx(self, path: str, batch: dict, finalize: bool = True) -> str:  # nothing to finalize
        t = self.torch
        x = self._convert_input(batch)
        model = self.model

        class Wrapper(t.nn.Module):  # plain tensors in, the primary output out
            def __init__(self, inner, forward):
                super().__init__()
                self.inner, self._f = inner, forward

            def forward(self, *args):
                keys = ["pixels"] if len(args) == 1 else ["input_ids", "attention_mask", "token_type_ids"]
                return self._f(dict(zip(keys, args)))

        wrapped = Wrapper(model, self._forward).eval()
        names = list(x)
        args = tuple(x[k] for k in names)
        text = len(names) > 1
        dynamic = {n: ({0: "batch", 1: "seq"} if text else {0: "batch"}) for n in names}
        dynamic["output"] = {0: "batch", 1: "seq"} if text else {0: "batch"}
        t.onnx.export(wrapped, args, path, input_names=names, output_names=["output"], dynamic_axes=dynamic,
                      opset_version=17, dynamo=False)
        return path
