"""CTranslate2's and llama.cpp's generative adapters (runtimes/gen_ct2.py, runtimes/gen_llamacpp.py)
on the CPU, in this process (both live in .venv): the tiny model converted by each runtime's own
tools at every CPU precision, cached, then generation (prompt 16, output 8) with 1 sequence and, where
the runtime batches, 2, each phase marked on a Probe with a synthetic sensor.

Set GREENPROBE_REQUIRE_RUNTIMES=1 (scripts/test.sh does) to fail instead of skip when a runtime is
not installed (scripts/setup-genai.sh installs both).
"""

from __future__ import annotations

import importlib
import json
import os
import time

import numpy as np
import pytest

import greenprobe
from greenprobe.generation import Request
from greenprobe.models.generative import checkpoint, make_prompt, vocab_size
from greenprobe.runtimes import ENVIRONMENTS, GEN_ADAPTERS, IMPORTS
from greenprobe.runtimes.gen_base import RuntimeUnavailable

REQUIRE = os.environ.get("GREENPROBE_REQUIRE_RUNTIMES") == "1"
PROMPT, OUTPUT = 16, 8
RUNTIMES = ["ctranslate2", "llama.cpp"]
CPU_PRECISIONS = {"ctranslate2": ("fp32", "int8"), "llama.cpp": ("fp32", "q8_0", "q4_k_m")}
#: sequences per request each runtime generates together (llama-cpp-python: one per context)
SEQUENCES = {"ctranslate2": (1, 2), "llama.cpp": (1,)}
FOLDER = {"ctranslate2": "ctranslate2", "llama.cpp": "llama.cpp"}


def adapter(runtime):
    """The adapter class, or skip (fail under GREENPROBE_REQUIRE_RUNTIMES=1) when the runtime is
    not importable here."""
    try:
        importlib.import_module(IMPORTS[runtime])
    except ImportError as e:
        if REQUIRE:
            pytest.fail(f"{runtime} is not importable: {e} (fix: {ENVIRONMENTS[runtime][1]})")
        pytest.skip(f"{runtime} not installed: {e}")
    module, cls = GEN_ADAPTERS[runtime]
    return getattr(importlib.import_module(f"greenprobe.runtimes.{module}"), cls)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The tiny model's checkpoint, written once for the module on first use (random weights, local
    tokenizer; it needs torch: call it after adapter(), which skips where the runtime is missing)."""
    made = []

    def get():
        if not made:
            made.append(str(checkpoint("tiny", "tiny", cache=tmp_path_factory.mktemp("checkpoints"))))
        return made[0]

    return get


def _files(folder):
    return {name: (os.stat(os.path.join(folder, name)).st_mtime_ns, os.path.getsize(os.path.join(folder, name)))
            for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def runs(ckpt, tmp_path_factory):
    """Per runtime (made on first use): builds at each CPU precision, requests, second builds."""
    done = {}

    def get(runtime):
        if runtime in done:
            return done[runtime]
        cls = adapter(runtime)
        path = ckpt()
        work = tmp_path_factory.mktemp(runtime.replace(".", ""))
        out = {"describe": cls().describe(), "work": str(work), "builds": {}, "requests": []}
        for precision in CPU_PRECISIONS[runtime]:
            rt = cls()
            built = rt.build("tiny", size="tiny", precision=precision, checkpoint=path, work_dir=str(work))
            first = {**built, **rt.conversion, "files": _files(rt.conversion["path"])}
            with greenprobe.Probe(sensors=["synthetic:waveform=constant;base_w=40"], period_us=1000) as probe:
                for sequences in SEQUENCES[runtime] + SEQUENCES[runtime][:1]:  # the first shape twice
                    prompt = make_prompt("tiny", "tiny", sequences, PROMPT, seed=1)
                    req = Request(PROMPT, sequences, precision=precision)
                    t0 = time.perf_counter()
                    tokens = rt.generate(prompt, OUTPUT, req)
                    seconds = time.perf_counter() - t0
                    out["requests"].append({"precision": precision, "sequences": sequences, "request": req.request,
                                            "tokens": tokens, "seconds": seconds})
            for r in out["requests"]:
                if r["precision"] == precision:
                    r["marks"] = [(label, a, b, attrs) for label, a, b, _, attrs, ok in probe.marks()
                                  if ok and (attrs or {}).get("request") == r["request"]]
            rt.release()
            again = cls()  # a second build of the same model and precision reuses the conversion
            built = again.build("tiny", size="tiny", precision=precision, checkpoint=path, work_dir=str(work))
            second = {**built, **again.conversion, "files": _files(again.conversion["path"])}
            again.release()
            out["builds"][precision] = (first, second)
        done[runtime] = out
        return out

    return get


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_describe_lists_the_cpu_precisions_and_why_cuda_is_missing(runtime):
    d = adapter(runtime)().describe()
    assert d["runtime"] == runtime and d["version"] and "cpu" in d["devices"]
    assert d["precisions"]["cpu"] == list(CPU_PRECISIONS[runtime])
    if not any(dev.startswith("cuda") for dev in d["devices"]):
        assert d["precisions"]["cuda"] == [] and d["reasons"]["cuda"]
    assert d["batches"] == (len(SEQUENCES[runtime]) > 1)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_cpu_precision_converts_once_then_reuses_its_folder(runs, runtime):
    out = runs(runtime)
    for precision, (first, second) in out["builds"].items():
        folder = os.path.join(out["work"], f"{FOLDER[runtime]}-tiny-tiny-{precision}")
        assert first["path"] == second["path"] == folder and first["precision"] == precision
        assert not first["cached"] and first["convert_s"] > 0
        assert second["cached"] and second["convert_s"] == 0
        assert second["build_s"] < first["build_s"], (precision, first["build_s"], second["build_s"])
        assert second["files"] == first["files"]  # not rewritten: same names, times and sizes
        with open(os.path.join(folder, "greenprobe.json")) as f:
            stamp = json.load(f)
        if runtime == "llama.cpp" and precision != "fp32":  # quantised from the f32 GGUF by llama.cpp
            assert stamp["source"] == os.path.join(out["builds"]["fp32"][0]["path"], "model.gguf")
            assert stamp["ftype"] == f"LLAMA_FTYPE_MOSTLY_{precision.upper()}"
        else:  # converted from the checkpoint by the runtime's own converter
            assert stamp["checkpoint"].endswith("tiny-tiny")
    if runtime == "llama.cpp":  # each GGUF is of its precision's llama_ftype (gguf reads it back)
        gguf = pytest.importorskip("gguf")
        for precision, ftype in {"fp32": 0, "q8_0": 7, "q4_k_m": 15}.items():
            reader = gguf.GGUFReader(os.path.join(out["builds"][precision][0]["path"], "model.gguf"))
            field = reader.fields["general.file_type"]
            assert int(field.parts[field.data[0]][0]) == ftype, precision
    leftovers = [p for p in os.listdir(out["work"]) if ".tmp-" in p]
    assert not leftovers, leftovers


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_one_prefill_then_a_decode_mark_per_further_token(runs, runtime):
    out = runs(runtime)
    assert {(r["precision"], r["sequences"]) for r in out["requests"]} == {
        (p, s) for p in CPU_PRECISIONS[runtime] for s in SEQUENCES[runtime]}
    for r in out["requests"]:
        sequences, what = r["sequences"], (runtime, r["precision"], r["sequences"])
        tokens = r["tokens"]
        assert isinstance(tokens, np.ndarray) and tokens.shape == (sequences, OUTPUT) and tokens.dtype == np.int64
        assert ((tokens >= 0) & (tokens < vocab_size("tiny", "tiny"))).all(), what
        marks = sorted(r["marks"], key=lambda m: m[1])
        assert [m[0] for m in marks] == ["prefill"] + ["decode"] * (OUTPUT - 1), what
        for step, (label, start, end, attrs) in enumerate(marks):
            assert start <= end, what
            assert attrs["phase"] == label and attrs["step"] == step and attrs["precision"] == r["precision"]
            assert attrs["sequences"] == sequences and attrs["prompt_tokens"] == PROMPT
            if step == 0:
                assert attrs["context_tokens"] == PROMPT and attrs["tokens"] == sequences * PROMPT
            else:
                assert attrs["context_tokens"] == PROMPT + step and attrs["tokens"] == sequences
        for before, after in zip(marks, marks[1:]):  # one after the other, never overlapping ...
            assert before[2] <= after[1], what
            assert after[1] - before[2] < 50_000_000, what  # ... and back to back (the loop's own gaps)
        span = marks[-1][2] - marks[0][1]
        assert span <= r["seconds"] * 1e9, what  # all inside the generate call


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_greedy_generation_is_deterministic(runs, runtime):
    out = runs(runtime)
    for precision in CPU_PRECISIONS[runtime]:
        first, again = [r["tokens"] for r in out["requests"] if r["precision"] == precision and r["sequences"] == 1]
        assert np.array_equal(first, again), (runtime, precision)


def test_ctranslate2_batch_rows_are_the_prompts_own_generations(runs):
    """A batch of 2 generates each row as its prompt alone would (fp32, greedy): a batch's step is
    one token for every sequence, not one sequence after the other."""
    out = runs("ctranslate2")
    two, one = make_prompt("tiny", "tiny", 2, PROMPT, seed=1), make_prompt("tiny", "tiny", 1, PROMPT, seed=1)
    assert np.array_equal(two[:1], one)  # row 0 of the batch is the single request's prompt
    batch = next(r for r in out["requests"] if r["precision"] == "fp32" and r["sequences"] == 2)["tokens"]
    single = next(r for r in out["requests"] if r["precision"] == "fp32" and r["sequences"] == 1)["tokens"]
    assert np.array_equal(batch[0], single[0])


def test_llamacpp_refuses_batches_with_the_reason(runs, ckpt):
    out = runs("llama.cpp")
    rt = adapter("llama.cpp")()
    rt.build("tiny", size="tiny", precision="q8_0", checkpoint=ckpt(), work_dir=out["work"])
    assert rt.conversion["cached"]
    req = Request(PROMPT, 2)
    with pytest.raises(RuntimeUnavailable, match="one sequence per context"):
        rt.generate(make_prompt("tiny", "tiny", 2, PROMPT), OUTPUT, req)
    assert req.output_tokens == 0
    rt.release()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_precision_the_runtime_lacks_is_refused_with_the_choices(runtime, ckpt, tmp_path):
    cls = adapter(runtime)
    for precision, device in [("int4", "cpu"), ("bf16", "cpu")]:
        with pytest.raises(RuntimeUnavailable) as e:
            cls().build("tiny", size="tiny", precision=precision, checkpoint=ckpt(), work_dir=str(tmp_path),
                        device=device)
        assert f"no {precision} on {device}" in e.value.message
        assert e.value.fix == f"choose one of {', '.join(CPU_PRECISIONS[runtime])} for {runtime} on cpu"
    assert not os.listdir(tmp_path)  # refused before any conversion
