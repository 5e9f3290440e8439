"""What runs where: the configurations of a study's matrix that this machine can run (and the
ones it cannot, with the reason), from the runtimes it has."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .spec import StudySpec


@dataclass(frozen=True)
class Config:
    runtime: str
    source: str      # the framework an ONNX model came from; the runtime itself otherwise
    provider: str    # ONNX Runtime execution provider; "native" otherwise
    model: str
    batch_size: int

    @property
    def id(self) -> str:
        src = f"{self.source}-{self.provider}" if self.runtime == "onnxruntime" else "native"
        return f"{self.runtime}-{src}-{self.model}-b{self.batch_size}"


def environment(spec: StudySpec) -> dict:
    """What this machine offers for the runtimes asked (versions, devices, ONNX Runtime providers)."""
    from ..runtimes import describe_all

    needed = set(spec.runtimes) | (set(spec.sources) if "onnxruntime" in spec.runtimes else set())
    return {d["runtime"]: d for d in describe_all(sorted(needed))}


def hardware(gpus, proc_root: str = "/proc") -> dict:
    """CPU model and count, memory, GPUs (NVML names, or why there are none)."""
    info = {"cpus": os.cpu_count(), "cpu_model": "", "memory_bytes": 0, "gpus": list(gpus.names),
            "gpu_reason": "" if gpus.available else gpus.reason.splitlines()[0]}
    try:
        for line in Path(proc_root, "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path(proc_root, "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return info


def matrix(spec: StudySpec, env: dict) -> tuple[list[Config], list[dict]]:
    """The configurations this machine can run, and the ones it cannot with the reason."""
    configs, skipped = [], []

    def skip(rt, source, provider, why, fix=""):
        for m in spec.models:
            for b in spec.batch_sizes:
                skipped.append({"id": Config(rt, source, provider, m, int(b)).id, "runtime": rt, "source": source,
                                "provider": provider, "model": m, "batch_size": int(b), "reason": why, "fix": fix})

    def add(rt, source, provider):
        for m in spec.models:
            for b in spec.batch_sizes:
                configs.append(Config(rt, source, provider, m, int(b)))

    for rt in spec.runtimes:
        if rt == "onnxruntime":
            continue
        e = env.get(rt, {})
        if e.get("installed"):
            add(rt, rt, "native")
        else:
            skip(rt, rt, "native", e.get("reason", "not installed"), e.get("fix", ""))
    if "onnxruntime" in spec.runtimes:
        e = env.get("onnxruntime", {})
        providers = e.get("providers", []) if e.get("installed") else []
        wanted = None if "all" in spec.providers else set(spec.providers)
        for source in spec.sources:
            src_env = env.get(source, {})
            for p in providers:
                if wanted is not None and p["name"] not in wanted:
                    continue
                if not p["available"]:
                    skip("onnxruntime", source, p["name"], p["reason"])
                elif not src_env.get("installed"):
                    skip("onnxruntime", source, p["name"], f"the {source} exporter is not installed: "
                                                            f"{src_env.get('reason', '')}", src_env.get("fix", ""))
                else:
                    add("onnxruntime", source, p["name"])
            if not e.get("installed"):
                skip("onnxruntime", source, "cpu", e.get("reason", "not installed"), e.get("fix", ""))
    return configs, skipped
