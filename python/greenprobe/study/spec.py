"""What a study runs: the paper's matrix and the measuring protocol, from defaults, a TOML file
and command-line options (in that order of precedence, last wins)."""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from ..config import MAX_BASELINE_S, MAX_PERIOD_US, MIN_PERIOD_US, PERIOD_US

RUNTIMES = ("torch", "tensorflow", "mxnet", "onnxruntime")
NATIVE = ("torch", "tensorflow", "mxnet")
MODELS = ("resnet50", "mobilenet_v2", "bert-base-uncased")
TASKS = ("classify", "generate")
#: task = "generate" (issue 21): its runtimes, models and precisions (names as in a spec)
GEN_RUNTIMES = ("torch", "onnxruntime-genai", "llama.cpp", "ctranslate2", "vllm")
GEN_MODELS = ("llama-3.2-1b", "qwen2.5-0.5b", "gpt2", "tiny")
GEN_DEFAULT_MODELS = ("llama-3.2-1b", "qwen2.5-0.5b", "gpt2")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "q8_0", "q4_k_m", "int4")


@dataclass
class StudySpec:
    # each field's type is checked by validate(), from its annotation (TYPES)
    runtimes: list[str] = field(default_factory=lambda: list(RUNTIMES))
    models: list[str] = field(default_factory=lambda: list(MODELS))
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    providers: list[str] = field(default_factory=lambda: ["all"])  # ONNX Runtime execution providers ("all": every one that works)
    sources: list[str] = field(default_factory=lambda: list(NATIVE))  # frameworks whose ONNX export ONNX Runtime runs
    size: str = "full"            # "full" models, or "tiny" ones (tests)
    image_size: int = 224
    seq_len: int = 128
    runs: int = 30                # repetitions of each configuration
    target_rel_ci: float = 0.0    # > 0: after its runs, a configuration is run again until the 95 % interval of
                                  # its energy figures (gross, all domains) is within this fraction of each
                                  # (half-width / figure), or it has max_runs; 0: exactly `runs`
    max_runs: int = 0             # with target_rel_ci: the most runs a configuration gets (0: 3 x runs)
    min_run_s: float = 5.0        # each run lasts at least this long ...
    min_inferences: int = 32      # ... and holds at least this many inferences
    max_inferences: int = 100_000
    warmup: int = 5               # inferences before measuring
    rest_s: float = 1.0           # idle between runs
    order: str = "interleaved"    # "interleaved": round r runs every configuration's run r, in random order;
                                  # "blocked": a configuration's runs one after another (one model in memory)
    baseline_s: float = 5.0       # idle measured before and after the study
    max_foreign_cores: float = 0.25  # a run (or idle window) during which other processes used more CPU
                                     # cores than this on average is disturbed: run (measured) again
    max_foreign_gpu: float = 0.1  # ... or kept a GPU's SMs busier than this (mean GPUs' worth; NVML's
                                  # per-process use, where the driver gives it)
    disturbed_retries: int = 2    # ... at most this many times; then kept, flagged
    sensors: str = "auto"
    period_us: float = PERIOD_US
    seed: int = 0
    profile: str = "standard"
    task: str = "classify"        # "classify" (the paper) or "generate" (LLMs: prefill and decode steps)
    prompt_tokens: int = 128      # generate: prompt tokens per sequence
    output_tokens: int = 64       # generate: tokens produced per sequence (fixed: EOS ignored)
    precisions: list[str] = field(default_factory=lambda: ["all"])  # generate: "all" = every one each runtime has here

    def validate(self) -> "StudySpec":
        self._validate_types()
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}", f"choose from {', '.join(TASKS)} (task = \"generate\" "
                                                             "in a spec file, --task generate)")
        if self.task == "generate":
            self._validate_generate()
        else:
            bad = set(self.runtimes) - set(RUNTIMES)
            if bad:
                raise ConfigError(f"unknown runtimes {sorted(bad)}", f"choose from {', '.join(RUNTIMES)}")
            bad = set(self.models) - set(MODELS)
            if bad:
                raise ConfigError(f"unknown models {sorted(bad)}", f"choose from {', '.join(MODELS)}")
        return self._validate_common()

    def _validate_types(self) -> None:
        """Each field against its annotation (a spec file can hold any TOML value: a string where a
        list belongs, nan or inf where a number does), before any rule reads it."""
        for f in fields(self):
            words, ok = TYPES[f.type]
            value = getattr(self, f.name)
            if not ok(value):
                default = f.default if f.default is not MISSING else f.default_factory()
                raise ConfigError(f"{f.name} must be {words}, got {value!r}",
                                  f"write {f.name} = {json.dumps(default)} (for example) in the spec file")

    def _validate_generate(self) -> None:
        from ..models.generative import context_tokens

        bad = set(self.runtimes) - set(GEN_RUNTIMES)
        if bad:
            raise ConfigError(f"unknown generative runtimes {sorted(bad)}", f"choose from {', '.join(GEN_RUNTIMES)}")
        bad = set(self.models) - set(GEN_MODELS)
        if bad:
            raise ConfigError(f"unknown generative models {sorted(bad)}", f"choose from {', '.join(GEN_MODELS)}")
        bad = set(self.precisions) - set(PRECISIONS) - {"all"}
        if bad:
            raise ConfigError(f"unknown precisions {sorted(bad)}", f"choose from {', '.join(PRECISIONS)}, or all")
        bad = set(self.providers) - {"all", "cpu", "cuda"}
        if bad:
            raise ConfigError(f"unknown devices {sorted(bad)} for the generative study",
                              "pass --providers cpu, cuda or cpu,cuda (default all: each runtime's GPU where it has one)")
        if "all" in self.precisions and len(self.precisions) > 1:
            raise ConfigError(f"precisions {self.precisions}: 'all' stands alone",
                              "pass all (every precision each runtime has here) or a list of names, not both")
        for name in ("prompt_tokens", "output_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {v!r}",
                                  f"set {name} = 1 or more (--{name.replace('_', '-')} N)")
        if self.output_tokens < 2:
            raise ConfigError("output_tokens must be >= 2: the first token comes from the prefill, the decode steps "
                              "make the rest", "set output_tokens = 2 or more (--output-tokens N)")
        for m in self.models:
            ctx = context_tokens(m, self.size)
            if self.prompt_tokens + self.output_tokens > ctx:
                raise ConfigError(f"{m} ({self.size}) holds {ctx} tokens of context: a prompt of {self.prompt_tokens} "
                                  f"and {self.output_tokens} output tokens do not fit",
                                  f"make prompt_tokens + output_tokens at most {ctx}, or leave {m} out")

    def _validate_common(self) -> "StudySpec":
        bad = set(self.sources) - set(NATIVE)
        if bad:
            raise ConfigError(f"unknown ONNX sources {sorted(bad)}", f"choose from {', '.join(NATIVE)}")
        if not self.batch_sizes or any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_sizes}",
                              "pass whole numbers >= 1: --batch-sizes 1,64 (batch_sizes = [1, 64] in a spec file)")
        if self.order not in ("interleaved", "blocked"):
            raise ConfigError(f"order must be interleaved or blocked, not {self.order!r}",
                              'use --order interleaved or --order blocked (order = "blocked" in a spec file)')
        if self.size not in ("full", "tiny"):
            raise ConfigError(f"size must be full or tiny, not {self.size!r}",
                              'use --size full or --size tiny (size = "tiny" in a spec file)')
        if self.runs < 2:  # before the >= 1 checks: runs = 0 gets the reason too
            raise ConfigError(f"runs must be >= 2, got {self.runs}: the 95 % intervals come from the spread "
                              "between runs",
                              "pass --runs 2 or more (runs = N in a spec file); the default is 30, --quick 3")
        if not 0 <= self.target_rel_ci < 1:
            raise ConfigError(f"target_rel_ci must be from 0 (off) to below 1, got {self.target_rel_ci}",
                              "set target_rel_ci = 0.025 (run until each figure's 95 % interval is within 2.5 %) "
                              "or 0 in the spec file")
        if self.max_runs and self.max_runs < self.runs:
            raise ConfigError(f"max_runs ({self.max_runs}) is below runs ({self.runs})",
                              f"set max_runs = {3 * self.runs} or more (0: 3 x runs) in the spec file")
        for name in ("min_inferences", "max_inferences", "image_size", "seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", f"set {name} = 1 or more in the spec file")
        for name in ("min_run_s", "rest_s", "baseline_s", "warmup"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0", f"set {name} = 0 or more in the spec file")
        for name in ("rest_s", "baseline_s"):  # idle waits, each slept whole
            if getattr(self, name) > MAX_BASELINE_S:
                raise ConfigError(f"{name} must be at most {MAX_BASELINE_S:g} s, got {getattr(self, name)}",
                                  f"set {name} = {MAX_BASELINE_S:g} or less in the spec file")
        if self.max_foreign_cores <= 0:
            raise ConfigError(f"max_foreign_cores must be > 0, got {self.max_foreign_cores}",
                              "set max_foreign_cores = 0.25 (the default: a quarter of a core used by other processes "
                              "disturbs a run) or more in the spec file")
        if self.max_foreign_gpu <= 0:
            raise ConfigError(f"max_foreign_gpu must be > 0, got {self.max_foreign_gpu}",
                              "set max_foreign_gpu = 0.1 (the default: other processes keeping a tenth of a GPU's SMs "
                              "busy disturb a run) or more in the spec file")
        if not 0 <= self.disturbed_retries <= 10:
            raise ConfigError(f"disturbed_retries must be from 0 to 10, got {self.disturbed_retries}",
                              "set disturbed_retries = 2 (the default) in the spec file")
        if not MIN_PERIOD_US <= self.period_us <= MAX_PERIOD_US:
            raise ConfigError(f"period_us must be from {MIN_PERIOD_US} to {MAX_PERIOD_US}, got {self.period_us}",
                              f"set period_us = {PERIOD_US} (the default) or another value in that range")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: StudySpec's field annotations: what each asks for, in words, and its check
TYPES = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("a whole number", _whole),
    "float": ("a finite number", lambda v: (_whole(v) or isinstance(v, float)) and math.isfinite(v)),
    "list[str]": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "list[int]": ("a list of whole numbers", lambda v: isinstance(v, list) and all(_whole(x) for x in v)),
}


#: --quick: the whole matrix on a 2-core CPU machine in under 20 minutes; smaller inputs (the
#: report says so), few short runs. Not for conclusions about the runtimes.
QUICK = dict(image_size=96, seq_len=32, runs=3, min_run_s=0.3, min_inferences=3, warmup=1, rest_s=0.2,
             baseline_s=1.0, profile="quick")
#: --quick with task = "generate": small prompts and outputs, the smallest published models (still
#: no conclusions about the runtimes: the report says so)
QUICK_GENERATE = dict(prompt_tokens=32, output_tokens=16, batch_sizes=[1], models=["gpt2", "qwen2.5-0.5b"],
                      min_inferences=2)
#: task = "generate" without runtimes/models/batch sizes given: its own defaults
GENERATE_DEFAULTS = dict(runtimes=list(GEN_RUNTIMES), models=list(GEN_DEFAULT_MODELS), batch_sizes=[1, 8],
                         min_inferences=4)


def load_spec(path: Optional[str] = None, quick: bool = False, **overrides) -> StudySpec:
    values: dict = {}
    data: dict = {}
    if quick:
        values.update(QUICK)
    if path:
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            import tomli as tomllib
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"study spec not found: {path}",
                              "check the path, or leave the spec out to run the defaults (or --quick)") from None
        except OSError as e:  # a folder, or no permission
            raise ConfigError(f"cannot read study spec {path}: {e.strerror}",
                              "pass a readable TOML file with a [study] table") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}",
                              'write a [study] table of key = value lines, e.g. runs = 30, models = ["resnet50"]'
                              ) from None
        data = data.get("study", data)
        known = {f.name for f in fields(StudySpec)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}", f"known keys: {', '.join(sorted(known))}")
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    given = {k for k, v in overrides.items() if v is not None} | set(data if path else ())
    defaults = StudySpec()
    # a saved spec.json (a Slurm task, a resume) holds every key at its default: only a value said is refused
    only_generate = sorted(k for k in given & {"precisions", "prompt_tokens", "output_tokens"}
                           if values.get(k) != getattr(defaults, k))
    if values.get("task", "classify") != "generate" and only_generate:
        raise ConfigError(f"{', '.join(only_generate)} belong to the generative study", "add --task generate "
                          "(task = \"generate\" in a spec file), or leave them out")
    if values.get("task") == "generate":  # its own defaults where nothing was said
        for k, v in {**GENERATE_DEFAULTS, **(QUICK_GENERATE if quick else {})}.items():
            if k not in given:
                values[k] = v
    return StudySpec(**values).validate()
