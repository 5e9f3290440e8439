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
    batch_size: int      # generate: sequences generated together
    precision: str = ""  # generate only: fp32, fp16, bf16, int8, q8_0, q4_k_m, int4

    @property
    def id(self) -> str:
        if self.precision:
            return f"{self.runtime}-{self.precision}-{self.model}-b{self.batch_size}"
        src = f"{self.source}-{self.provider}" if self.runtime == "onnxruntime" else "native"
        return f"{self.runtime}-{src}-{self.model}-b{self.batch_size}"

    @property
    def task(self) -> str:
        return "generate" if self.precision else "classify"

    def as_dict(self) -> dict:
        d = {"runtime": self.runtime, "source": self.source, "provider": self.provider, "model": self.model,
             "batch_size": self.batch_size}
        if self.precision:
            d.update(precision=self.precision, task="generate")
        return d


def environment(spec: StudySpec) -> dict:
    """What this machine offers for the runtimes asked (versions, devices, ONNX Runtime providers;
    for task generate, each runtime's precisions per device)."""
    from ..runtimes import describe_all

    if spec.task == "generate":
        return {d["runtime"]: d for d in describe_all(list(spec.runtimes), task="generate")}
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


def gen_device(env_rt: dict) -> str:
    """Where a generative runtime runs: its first CUDA device where it has one, else the CPU."""
    cuda = [d for d in env_rt.get("devices", []) if d.startswith("cuda")]
    return cuda[0] if cuda else "cpu"


def gen_matrix(spec: StudySpec, env: dict) -> tuple[list[Config], list[dict]]:
    """task generate: runtime x precision x model x batch; a precision a runtime lacks on its device
    is skipped with the precisions it has (a precision named in the spec), or left out ("all")."""
    configs, skipped = [], []
    every = "all" in spec.precisions
    for rt in spec.runtimes:
        e = env.get(rt, {})
        device = gen_device(e)
        have = list((e.get("precisions") or {}).get("cuda" if device != "cpu" else "cpu", []))
        wanted = have if every else [p for p in spec.precisions]
        for prec in (wanted if e.get("installed") else (["fp32"] if every else wanted)):
            why, fix = "", ""
            if not e.get("installed"):
                why, fix = e.get("reason", "not installed"), e.get("fix", "")
            elif prec not in have:
                why = f"{rt} has no {prec} on {device}"
                fix = f"{rt} has {', '.join(have) or 'nothing'} here" + (
                    f" ({e['reasons'][device.split(':')[0]]})" if (e.get("reasons") or {}).get(device.split(":")[0]) else "")
            for m in spec.models:
                for b in spec.batch_sizes:
                    c = Config(rt, rt, device, m, int(b), prec)
                    if why:
                        skipped.append({"id": c.id, **c.as_dict(), "reason": why, "fix": fix})
                    else:
                        configs.append(c)
    return configs, skipped


def matrix(spec: StudySpec, env: dict) -> tuple[list[Config], list[dict]]:
    """The configurations this machine can run, and the ones it cannot with the reason."""
    if spec.task == "generate":
        return gen_matrix(spec, env)
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
