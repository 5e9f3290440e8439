"""ONNX Runtime GenAI's adapter (runtimes/gen_ortgenai.py), in its own environment (.venv-genai) as
the study runs it: the tiny model built by the model builder at every CPU precision, cached, then
generation with 1 and 2 sequences, each phase marked on a Probe with a synthetic sensor.

Set GREENPROBE_REQUIRE_RUNTIMES=1 (scripts/test.sh does) to fail instead of skip when .venv-genai
is missing.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from greenprobe.runtimes import probe_environment

RUNTIME = "onnxruntime-genai"
REQUIRE = os.environ.get("GREENPROBE_REQUIRE_RUNTIMES") == "1"
PROMPT, OUTPUT, SEQUENCES = 16, 8, (1, 2)

#: runs in .venv-genai: builds, generates, prints one JSON line per request, then the second build
DRIVER = r"""
import json, sys, time
import greenprobe
from greenprobe.generation import Request
from greenprobe.models.generative import checkpoint, make_prompt
from greenprobe.runtimes.gen_base import RuntimeUnavailable
from greenprobe.runtimes.gen_ortgenai import OrtGenaiGen

args = json.loads(sys.argv[1])
ckpt = checkpoint(args["model"], "tiny", args["cache"])
out = {"describe": OrtGenaiGen().describe(), "builds": {}, "requests": [], "refused": {}}
for precision in args["precisions"]:
    rt = OrtGenaiGen()
    try:
        built = rt.build(args["model"], size="tiny", precision=precision, checkpoint=str(ckpt), work_dir=args["work"])
    except RuntimeUnavailable as e:
        out["refused"][precision] = e.message
        continue
    out["builds"][precision] = [{**built, **rt.conversion}]
    with greenprobe.Probe(sensors=["synthetic:waveform=constant;base_w=40"], period_us=1000) as probe:
        for sequences in args["sequences"]:
            prompt = make_prompt(args["model"], "tiny", sequences, args["prompt"], seed=1)
            req = Request(args["prompt"], sequences, precision=precision)
            t0 = time.perf_counter()
            tokens = rt.generate(prompt, args["output"], req)
            s = time.perf_counter() - t0
            marks = [(label, a, b, attrs) for label, a, b, _, attrs, ok in probe.marks()
                     if ok and (attrs or {}).get("request") == req.request]
            out["requests"].append({"precision": precision, "sequences": sequences, "request": req.request,
                                    "shape": list(tokens.shape), "dtype": str(tokens.dtype), "seconds": s,
                                    "tokens": tokens.tolist(), "marks": marks})
    rt.release()
    again = OrtGenaiGen()  # a second build of the same model and precision: the folder is reused
    built = again.build(args["model"], size="tiny", precision=precision, checkpoint=str(ckpt), work_dir=args["work"])
    out["builds"][precision].append({**built, **again.conversion})
print(json.dumps(out))
"""


def _env() -> dict:
    env = probe_environment(RUNTIME)
    if not env["installed"]:
        if REQUIRE:
            pytest.fail(f"{RUNTIME} is not installed in {env['python']}: {env['reason']} (fix: {env['fix']})")
        pytest.skip(f"{RUNTIME} not installed: {env['reason']}")
    return env


def drive(python: str, tmp_path, model: str, precisions, sequences=SEQUENCES) -> dict:
    args = {"model": model, "cache": str(tmp_path / "checkpoints"), "work": str(tmp_path / "work"),
            "precisions": list(precisions), "sequences": list(sequences), "prompt": PROMPT, "output": OUTPUT}
    r = subprocess.run([python, "-c", DRIVER, json.dumps(args)], capture_output=True, text=True, timeout=900,
                       cwd=str(tmp_path), env=dict(os.environ, GREENPROBE_MODEL_CACHE=args["cache"]))
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    env = _env()
    tmp = tmp_path_factory.mktemp("ortgenai")
    from greenprobe.runtimes.gen_ortgenai import OrtGenaiGen

    return drive(env["python"], tmp, "tiny", OrtGenaiGen.cpu_precisions)


def test_describe_lists_cpu_precisions_and_why_others_are_missing(tiny):
    d = tiny["describe"]
    assert d["runtime"] == RUNTIME and d["version"] == "0.18.0" and "cpu" in d["devices"]
    assert d["precisions"]["cpu"] == ["fp32", "int8", "int4"]
    assert d["reasons"]["cpu/fp16"] and d["reasons"]["cpu/bf16"]
    if "cuda" not in d["devices"]:
        assert "CUDA" in d["reasons"]["cuda"] and d["precisions"]["cuda"] == []


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
def test_every_cpu_precision_builds_once_then_reuses_its_folder(tiny, precision):
    assert not tiny["refused"], tiny["refused"]
    first, second = tiny["builds"][precision]
    assert first["path"].endswith(f"onnxruntime-genai-tiny-tiny-{precision}") and first["precision"] == precision
    assert not first["cached"] and first["convert_s"] > 0
    assert second["cached"] and second["path"] == first["path"] and second["build_s"] < first["build_s"]
    with open(os.path.join(first["path"], "greenprobe.json")) as f:
        stamp = json.load(f)
    assert stamp["precision"] == precision and stamp["execution_provider"] == "cpu"
    assert not [p for p in os.listdir(os.path.dirname(first["path"])) if ".tmp-" in p or ".cache-" in p]


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
@pytest.mark.parametrize("sequences", SEQUENCES)
def test_one_prefill_then_a_decode_mark_per_further_token(tiny, precision, sequences):
    req = next(r for r in tiny["requests"] if r["precision"] == precision and r["sequences"] == sequences)
    assert req["shape"] == [sequences, OUTPUT] and req["dtype"] == "int64"
    assert all(0 <= t < 1000 for row in req["tokens"] for t in row)
    marks = sorted(req["marks"], key=lambda m: m[1])
    assert [m[0] for m in marks] == ["prefill"] + ["decode"] * (OUTPUT - 1)
    for step, (label, start, end, attrs) in enumerate(marks):
        assert start <= end
        assert attrs["phase"] == label and attrs["step"] == step and attrs["precision"] == precision
        assert attrs["sequences"] == sequences and attrs["prompt_tokens"] == PROMPT
        if step == 0:
            assert attrs["context_tokens"] == PROMPT and attrs["tokens"] == sequences * PROMPT
        else:
            assert attrs["context_tokens"] == PROMPT + step and attrs["tokens"] == sequences
    for before, after in zip(marks, marks[1:]):  # one after the other, never overlapping
        assert before[2] <= after[1]


def test_eos_is_ignored_every_sequence_gets_every_token(tiny):
    # min_length = prompt + output masks the EOS id (2) until the last token
    for req in tiny["requests"]:
        assert all(len(row) == OUTPUT and 2 not in row for row in req["tokens"])


def test_gpt2_is_refused_with_the_builders_reason(tmp_path):
    env = _env()
    out = drive(env["python"], tmp_path, "gpt2", ["fp32"], sequences=[1])
    reason = out["refused"]["fp32"]
    assert "model builder cannot convert gpt2" in reason and "not currently supported" in reason, reason
    assert not out["requests"]
