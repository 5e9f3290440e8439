"""The one small interface every runtime adapter implements."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable, Optional

import numpy as np

from ..models import make_input, spec


class RuntimeUnavailable(Exception):
    """The runtime, a device or an execution provider cannot be used here; says why and the fix."""

    def __init__(self, message: str, fix: str = ""):
        self.message, self.fix = message, fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class Runtime:
    """Adapter life cycle: describe() -> build(model, ...) -> make_input(batch) -> infer(x) ... -> release().

    ``infer`` returns only when the work has really finished (GPU work is asynchronous: adapters
    synchronise the device). ``output(x)`` returns the primary output as numpy (logits for image
    models, the last hidden state for BERT) for cross-runtime comparisons.
    """

    name = "?"

    def __init__(self):
        self.model_name: Optional[str] = None
        self.model: Any = None
        self.device = "cpu"
        self.size = "full"

    # -- to implement --------------------------------------------------------------------------
    def describe(self) -> dict:
        raise NotImplementedError

    def _build(self, model: str, size: str, weights: Optional[str], device: str, **options) -> Any:
        raise NotImplementedError

    def _convert_input(self, batch: dict) -> Any:
        raise NotImplementedError

    def _run(self, x: Any) -> Any:
        """One inference, synchronised."""
        raise NotImplementedError

    def _to_numpy(self, y: Any) -> np.ndarray:
        raise NotImplementedError

    def count_params(self) -> int:
        raise NotImplementedError

    def export_onnx(self, path: str, batch: dict, finalize: bool = True) -> str:
        raise RuntimeUnavailable(f"{self.name} has no ONNX exporter")

    def save_weights(self, path: str) -> str:
        """Writes the model's weights where ``build(..., weights=path)`` loads them from."""
        raise RuntimeUnavailable(f"{self.name} cannot save weights")

    # -- shared --------------------------------------------------------------------------------
    def build(self, model: str, *, size: str = "full", weights: Optional[str] = None, device: str = "cpu",
              **options) -> None:
        spec(model)
        if size not in ("full", "tiny"):
            raise ValueError("size must be 'full' or 'tiny'")
        self.release()
        self.model_name, self.size, self.device = model, size, device
        self.model = self._build(model, size, weights, device, **options)

    def make_input(self, batch_size: int, *, image_size: int = 224, seq_len: int = 128, seed: int = 0) -> Any:
        return self._convert_input(make_input(self.model_name, batch_size, image_size=image_size, seq_len=seq_len,
                                              seed=seed))

    def infer(self, x: Any) -> Any:
        return self._run(x)

    def output(self, batch: dict) -> np.ndarray:
        return self._to_numpy(self._run(self._convert_input(batch)))

    def timed_runs(self, x: Any, n: int, warmup: int = 0, gap_s: Optional[np.ndarray] = None,
                   wrap: Optional[Callable[[int], Any]] = None) -> list:
        """Runs n inferences after warmup ones; returns [(start_ns, end_ns)] on CLOCK_MONOTONIC.
        ``wrap(i)``: a context manager around inference i (e.g. a greenprobe.mark)."""
        for _ in range(warmup):
            self._run(x)
        out = []
        mono = time.monotonic_ns
        for i in range(n):
            if gap_s is not None and gap_s[i] > 0:
                time.sleep(float(gap_s[i]))
            with nullcontext() if wrap is None else wrap(i):
                a = mono()
                self._run(x)
                out.append((a, mono()))
        return out

    def release(self) -> None:
        self.model = None
