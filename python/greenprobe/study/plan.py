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
        if self.precision:  # generate: the device (provider) named where it is not the CPU
            device = "" if self.provider == "cpu" else f"-{self.provider.replace(':', '')}"
            return f"{self.runtime}-{self.precision}-{self.model}-b{self.batch_size}{device}"
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


def gen_devices(env_rt: dict, providers: list) -> list[str]:
    """Where a generative runtime runs: with providers "all", its first CUDA device where it has
    one, else the CPU; otherwise each named ("cpu", "cuda": its first CUDA device, or "cuda" when it
    has none, which is then skipped with the reason)."""
    cuda = [d for d in env_rt.get("devices", []) if d.startswith("cuda")]
    if "all" in providers:
        return [cuda[0] if cuda else "cpu"]
    return [p if p == "cpu" else (cuda[0] if cuda else "cuda") for p in providers]


def gen_matrix(spec: StudySpec, env: dict) -> tuple[list[Config], list[dict]]:
    """task generate: runtime x precision x model x batch; a precision a runtime lacks on its device
    is skipped with the precisions it has (a precision named in the spec), or left out ("all")."""
    configs, skipped = [], []
    every = "all" in spec.precisions
    for rt in spec.runtimes:
        for device in gen_devices(env.get(rt, {}), spec.providers):
            _gen_runtime(spec, rt, env.get(rt, {}), device, every, configs, skipped)
    return configs, skipped


def _gen_runtime(spec: StudySpec, rt: str, e: dict, device: str, every: bool, configs: list, skipped: list) -> None:
    """One runtime's configurations on one device (gen_matrix): each precision it has there (or
    each named), what it lacks skipped with the reason."""
    kind = device.split(":")[0]
    reason_here = (e.get("reasons") or {}).get(kind, "")
    have = list((e.get("precisions") or {}).get(kind, []))
    if not e.get("installed"):
        rows = [(p, e.get("reason", "not installed"), e.get("fix", "")) for p in (["fp32"] if every else spec.precisions)]
    elif every and not have:
        rows = [("fp32", f"{rt} has no precision it can run on {device}: {reason_here or 'none listed'}",
                 f"run {rt} where it has a device (greenprobe runtimes lists what it has)")]
    else:
        rows = [(p, "" if p in have else f"{rt} has no {p} on {device}",
                 "" if p in have else f"{rt} has {', '.join(have) or 'nothing'} here" +
                 (f" ({reason_here})" if reason_here else "")) for p in (have if every else spec.precisions)]
    max_seq = e.get("max_sequences")
    for prec, why, fix in rows:
        for m in spec.models:
            for b in spec.batch_sizes:
                c = Config(rt, rt, device, m, int(b), prec)
                if not why and max_seq is not None and b > max_seq:  # llama-cpp-python: one per context
                    skipped.append({"id": c.id, **c.as_dict(), "reason": f"{rt}: {b} sequences asked; "
                                    f"{(e.get('reasons') or {}).get('batches', 'batches are not supported')}",
                                    "fix": f"run {rt} at batch size {max_seq}"})
                elif why:
                    skipped.append({"id": c.id, **c.as_dict(), "reason": why, "fix": fix})
                else:
                    configs.append(c)


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
