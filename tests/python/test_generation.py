"""greenprobe.generation's marks, the generative spec's checks, the phase convention's arithmetic
and the progress line's time estimate: fast, deterministic, no runtime needed (the runtimes run in
test_gen_truth.py, test_gen_runtimes_cpu.py and test_gen_ortgenai.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import greenprobe
from greenprobe import marks
from greenprobe.errors import ConfigError
from greenprobe.generation import Request
from greenprobe.study import load_spec


@pytest.fixture
def recorded():
    """Marks recorded into a list (no sampler needed)."""
    recs: list = []
    marks._push_sink(recs)
    yield recs
    marks._pop_sink(recs)


def attrs_of(recs):
    return [(r[0], r[4]) for r in recs]


def test_context_managers_mark_the_prefill_and_each_decode_step(recorded):
    req = Request(prompt_tokens=16, sequences=4, request="r1", config="c")
    with req.prefill():
        pass
    for _ in range(3):
        with req.decode():
            pass
    got = attrs_of(recorded)
    assert [g[0] for g in got] == ["prefill", "decode", "decode", "decode"]
    assert got[0][1] == {"phase": "prefill", "request": "r1", "step": 0, "sequences": 4, "prompt_tokens": 16,
                         "context_tokens": 16, "tokens": 64, "config": "c"}
    # a decode step attends to the prompt and the tokens made before it; makes one token per sequence
    assert [(a["step"], a["context_tokens"], a["tokens"]) for _, a in got[1:]] == [(1, 17, 4), (2, 18, 4), (3, 19, 4)]
    assert req.output_tokens == 4
    assert all(r[1] <= r[2] for r in recorded) and all(a[2] <= b[1] for a, b in zip(recorded, recorded[1:]))


def test_boundaries_from_a_hook_make_contiguous_phases(recorded):
    req = Request(prompt_tokens=8)
    req.boundary()                  # generate starts: the prefill opens
    for k in range(4):              # a hook after each token: closes its phase, opens the next
        req.boundary(last=k == 3)
    req.finish()                    # nothing open: no-op
    assert [r[0] for r in recorded] == ["prefill"] + ["decode"] * 3
    assert [r[4]["step"] for r in recorded] == [0, 1, 2, 3]
    # the next phase opens right after the last one closed: no time falls between them unmarked
    gaps = [b[1] - a[2] for a, b in zip(recorded, recorded[1:])]
    assert all(0 <= g < 5_000_000 for g in gaps), gaps
    assert req.output_tokens == 4


def test_misuse_is_refused_with_what_to_do(recorded):
    with pytest.raises(RuntimeError, match="decode step before the prefill"):
        with Request(prompt_tokens=8).decode():
            pass
    req = Request(prompt_tokens=8)
    with req.prefill():
        pass
    with pytest.raises(RuntimeError, match="prefill comes once"):
        with req.prefill():
            pass
    with pytest.raises(ValueError, match="prompt_tokens"):
        Request(prompt_tokens=0)
    with pytest.raises(ValueError, match="sequences"):
        Request(prompt_tokens=4, sequences=0)


def test_a_failed_step_is_recorded_as_failed_and_not_counted(recorded):
    req = Request(prompt_tokens=8)
    with req.prefill():
        pass
    with pytest.raises(ZeroDivisionError):
        with req.decode():
            1 / 0
    assert recorded[-1][5] is False and req.output_tokens == 1


def test_unrecorded_requests_count_their_steps_without_marks(recorded):
    req = Request(prompt_tokens=8, record=False)
    with req.prefill():
        pass
    with req.decode():
        pass
    assert recorded == [] and req.output_tokens == 2


def test_marks_reach_a_probe_with_their_attributes_as_columns():
    with greenprobe.Probe(sensors="synthetic:update_us=1000", period_us=500) as probe:
        req = Request(prompt_tokens=4, sequences=2)
        with req.prefill():
            pass
        with req.decode():
            pass
    table = probe.intervals()
    for col in ("phase", "step", "sequences", "prompt_tokens", "context_tokens", "tokens"):
        assert col in table.column_names, table.column_names
    assert sorted(set(table["phase"].to_pylist())) == ["decode", "prefill"]


# -- the spec --------------------------------------------------------------------------------------
def test_generative_defaults_and_quick_profile():
    s = load_spec(None, task="generate")
    assert s.runtimes == ["torch", "onnxruntime-genai", "llama.cpp", "ctranslate2", "vllm"]
    assert s.models == ["llama-3.2-1b", "qwen2.5-0.5b", "gpt2"] and s.precisions == ["all"]
    q = load_spec(None, quick=True, task="generate")
    assert (q.prompt_tokens, q.output_tokens, q.runs) == (32, 16, 3)
    assert load_spec(None, task="generate", models=["gpt2"]).models == ["gpt2"]


@pytest.mark.parametrize("kw,match", [
    (dict(runtimes=["tensorrt-llm"]), r"unknown generative runtimes \['tensorrt-llm'\].*choose from torch, "
                                      r"onnxruntime-genai"),
    (dict(models=["llama-70b"]), r"unknown generative models.*choose from llama-3.2-1b"),
    (dict(precisions=["fp8"]), r"unknown precisions \['fp8'\].*fp32, fp16, bf16, int8, q8_0, q4_k_m"),
    (dict(models=["gpt2"], prompt_tokens=1000, output_tokens=64), r"gpt2 \(full\) holds 1024 tokens.*at most 1024"),
    (dict(output_tokens=1), r"output_tokens must be >= 2"),
    (dict(task="translate"), r"unknown task 'translate'.*classify, generate"),
])
def test_bad_generative_specs_are_refused_with_the_choices_or_the_fix(kw, match):
    with pytest.raises(ConfigError) as e:
        load_spec(None, **{"task": "generate", **kw})
    assert e.value.fix
    import re

    assert re.search(match, f"{e.value.message} {e.value.fix}", re.S), f"{e.value.message} | {e.value.fix}"


def test_the_cli_refuses_a_bad_precision_in_one_line_before_anything_runs(tmp_path, capsys):
    from greenprobe.cli import main

    rc = main(["study", "--task", "generate", "--precisions", "fp8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "unknown precisions ['fp8']" in err and "fix:" in err
    assert not (tmp_path / "out").exists()


# -- the convention --------------------------------------------------------------------------------
def test_phase_figures_follow_the_convention_exactly():
    """A made-up run with round numbers: every figure by hand."""
    from greenprobe.study.generate import gen_run_figures

    run = {"requests": 2, "sequences": 4, "window_s": 10.0, "prompt_tokens_total": 2 * 4 * 100,
           "decode_tokens_total": 2 * 4 * 9, "prefill_time_s": 1.0, "decode_time_s": 6.0, "request_time_s": 7.0,
           "energy_j_window[nvml/gpu0]": 1000.0 + 80.0 * 10.0,  # 1000 J above an 80 W idle
           "prefill": {"nvml/gpu0": {"status": "ok", "energy_j": 200.0 + 80.0 * 1.0, "time_s": 1.0}},
           "decode_bins": []}
    f = gen_run_figures(run, ["nvml/gpu0"], {"nvml/gpu0": (80.0, 0.1)})
    assert f["energy_j_per_prompt_token_net[nvml/gpu0]"] == pytest.approx(200.0 / 800)
    assert f["energy_j_per_prompt_token[nvml/gpu0]"] == pytest.approx((200.0 + 80.0) / 800)
    assert f["energy_j_per_output_token_net[nvml/gpu0]"] == pytest.approx(800.0 / 72)  # the rest of the net
    assert f["energy_j_per_output_token[nvml/gpu0]"] == pytest.approx((800.0 + 80.0 * 6.0) / 72)
    assert f["energy_j_per_request_net[nvml/gpu0]"] == pytest.approx(1000.0 / 8)
    assert f["energy_j_per_request[nvml/gpu0]"] == pytest.approx((1000.0 + 80.0 * 7.0) / 8)
    assert math.isnan(f["energy_j_per_output_token_per_1k_context[nvml/gpu0]"])  # no bins: no slope


def test_the_context_slope_recovers_a_known_line():
    from greenprobe.study.generate import context_bins, context_slope

    # a step costs 0.5 J + 2 mJ per token of context above an idle of 50 W x 10 ms, for 2 sequences
    bins = [{"context_tokens": c, "time_s_per_step": 0.01, "energy_j_per_step[d]": 0.5 + 0.002 * c + 50 * 0.01,
             "energy_j_per_step_se[d]": 0.01} for c in (100, 300, 500, 700)]
    slope = context_slope({"decode_bins": bins, "sequences": 2}, "d", 50.0)
    assert slope == pytest.approx(0.002 * 1000 / 2)  # J per output token per 1,000 tokens of context
    assert list(context_bins(np.arange(100, 108), 4)) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(context_bins(np.full(5, 7), 4)) == [0] * 5


# -- the progress line -----------------------------------------------------------------------------
def test_time_left_counts_the_builds_still_to_come():
    """The quick study's first round builds every configuration: an estimate without the builds
    held still while they ran (issue 21: 'about 4.9 min left' from run 14 to 24); one that counted
    every build as fresh said 30 min where 10.5 were left (configurations that differ only in batch
    share a model)."""
    from greenprobe.study.execute import format_seconds, time_left
    from greenprobe.study.plan import Config

    def cfg(model, b):
        return Config("torch", "torch", "native", model, b)

    a1, a2, b1, b2 = cfg("a", 1), cfg("a", 2), cfg("b", 1), cfg("b", 2)
    todo = [(c, r) for r in range(3) for c in (a1, a2, b1, b2)]
    # a1 was built fresh (60 s) and run (2 s); a2 shares a1's model, b1 needs a fresh build, b2 shares b1's
    left = time_left(todo[1:], {a1: 2.0}, {a1: 60.0}, {a1}, set())
    assert left == pytest.approx(11 * 2.0 + 2.0 + 60.0 + 2.0)  # a shared build not timed yet: a run's length
    left = time_left(todo[2:], {a1: 2.0, a2: 2.0}, {a1: 60.0, a2: 5.0}, {a1, a2}, set(), shared={a2})
    assert left == pytest.approx(10 * 2.0 + 60.0 + 5.0)  # b1 fresh, b2 shares b1's
    # after every build: the runs only
    every = {a1: 60.0, a2: 5.0, b1: 60.0, b2: 5.0}
    assert time_left(todo[4:], dict.fromkeys(every, 2.0), every, set(every), set(), {a2, b2}) == pytest.approx(16.0)
    assert time_left(todo, {}, {}, set(), set()) is None
    # b1 failed: its runs are left out; a2 shares a1's model (a run's length), b2 is a fresh build
    assert time_left(todo[4:], {a1: 1.0}, {a1: 5.0}, {a1}, {b1}) == pytest.approx(6 * 1.0 + 1.0 + 5.0)
    assert format_seconds(42) == "42 s" and format_seconds(300) == "5.0 min"
    # a configuration not run yet lasts as those of its batch size (its model's first), not as the mean
    every = {a1: 60.0, a2: 60.0, b1: 60.0, b2: 60.0}
    left = time_left([(b1, 0), (b2, 0)], {a1: 2.0, a2: 20.0}, every, set(every), set())
    assert left == pytest.approx(2.0 + 20.0)  # the mean of all would say 11 + 11
    a3 = cfg("a", 64)
    assert time_left([(a3, 0)], {a1: 2.0, a2: 20.0}, every, set(every) | {a3}, set()) == pytest.approx(11.0)


def _write_run(d, r, window_j, pre_j, ok=True, session="0"):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    run = {"run": r, "session": session, "requests": 2, "sequences": 1, "window_s": 10.0, "prompt_tokens": 100,
           "output_tokens": 11, "prompt_tokens_total": 200, "decode_tokens_total": 20, "prefill_time_s": 1.0,
           "decode_time_s": 6.0, "request_time_s": 7.0, "ttft_s": 0.5, "tpot_s": 0.3, "output_tokens_per_s": 3.0,
           "device": "cpu", "estimated": False, "domains": "d/x", "window_complete": True, "cpu_util_pct": 50.0,
           "rss_bytes": 1, "energy_j_window[d/x]": window_j, "decode_bins": [],
           "prefill": {"d/x": {"status": "ok" if ok else "not-estimated", "reason": "" if ok else "too few updates",
                               "energy_j": pre_j if ok else None, "time_s": 1.0 if ok else None}}}
    (d / "runs").mkdir(parents=True, exist_ok=True)
    (d / "runs" / f"r{r:04d}.json").write_text(json.dumps(run))
    pq.write_table(pa.table({"run": [r], "phase": ["prefill"]}), d / "runs" / f"r{r:04d}.parquet")


def test_a_configurations_intervals_by_hand_with_the_idle_error_and_a_run_that_could_not_be_split(tmp_path):
    """Three runs' J per output token (net) with the idle power's error 2 W: the t interval over the
    runs widened in quadrature by 1.96 x 2 W x its idle coefficient; a fourth run whose prefill was
    not split is left out of the phase figures, not of the rest."""
    import json

    from greenprobe.study.generate import gen_config_row
    from greenprobe.summary import t975

    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"runtime": "torch", "precision": "fp32", "model": "tiny",
                                               "batch_size": 1, "task": "generate"}))
    nets = [1000.0, 1100.0, 900.0]
    for r, net in enumerate(nets):  # window: 80 W x 10 s idle + net; prefill: 80 W x 1 s + 200 J
        _write_run(d, r, 800.0 + net, 80.0 + 200.0)
    _write_run(d, 3, 1800.0, None, ok=False)
    row = gen_config_row(d, 4, {"0": {"d/x": (80.0, 2.0)}}, sensors=[])
    per_run = [(n - 200.0) / 20 for n in nets]  # output net per decode token
    m = float(np.mean(per_run))
    half_t = t975(2) * float(np.std(per_run, ddof=1)) / math.sqrt(3)
    half = math.hypot(half_t, 1.959963984540054 * 2.0 * (10.0 - 1.0) / 20)  # coefficient (window - prefill) / tokens
    for key in ("energy_j_per_output_token_net", "energy_j_per_output_token_net[d/x]"):
        assert row[key] == pytest.approx(m)
        assert row[key + "_low"] == pytest.approx(m - half) and row[key + "_high"] == pytest.approx(m + half)
    assert row["energy_j_per_prompt_token_net"] == pytest.approx(200.0 / 200)
    assert row["runs"] == 4 and row["runs_split"] == 3 and row["prefill_status"] == "partly"
    assert "too few updates" in row["prefill_reason"]
    # the request figure needs no split: all 4 runs
    assert row["energy_j_per_request_net"] == pytest.approx(np.mean(nets + [1000.0]) / 2)


@pytest.mark.parametrize("kw,match", [
    (dict(precisions=["fp16"]), r"precisions belong to the generative study.*--task generate"),
    (dict(prompt_tokens=5000), r"prompt_tokens belong to the generative study"),
    (dict(task="generate", prompt_tokens=True), r"prompt_tokens must be a whole number"),
    (dict(task="generate", precisions=["all", "fp16"]), r"'all' stands alone"),
])
def test_generative_options_out_of_place_are_refused(kw, match):
    import re

    with pytest.raises(ConfigError) as e:
        load_spec(None, **kw)
    assert re.search(match, f"{e.value.message} {e.value.fix}", re.S), f"{e.value.message} | {e.value.fix}"


def test_a_runtime_with_nothing_it_can_run_here_gets_a_skipped_row_with_the_reason():
    from greenprobe.study.plan import gen_matrix

    spec = load_spec(None, task="generate", runtimes=["vllm", "llama.cpp"], models=["gpt2"], batch_sizes=[1, 2])
    env = {"vllm": {"installed": True, "devices": [], "precisions": {"cpu": [], "cuda": []},
                    "reasons": {"cpu": "vLLM runs on NVIDIA GPUs only"}},
           "llama.cpp": {"installed": True, "devices": ["cpu"], "precisions": {"cpu": ["fp32", "q8_0"]},
                         "max_sequences": 1, "reasons": {"batches": "one sequence per context"}}}
    configs, skipped = gen_matrix(spec, env)
    assert sorted(c.id for c in configs) == ["llama.cpp-fp32-gpt2-b1", "llama.cpp-q8_0-gpt2-b1"]
    why = {s["id"]: s["reason"] for s in skipped}
    assert "vLLM runs on NVIDIA GPUs only" in why["vllm-fp32-gpt2-b1"]
    assert "one sequence per context" in why["llama.cpp-q8_0-gpt2-b2"]


def test_devices_are_chosen_with_providers_and_named_in_the_id():
    from greenprobe.study.plan import gen_matrix

    env = {"torch": {"installed": True, "devices": ["cpu", "cuda:0"],
                     "precisions": {"cpu": ["fp32", "bf16"], "cuda": ["fp32", "fp16"]}}}
    ids = lambda **kw: sorted(c.id for c in gen_matrix(load_spec(None, task="generate", runtimes=["torch"],  # noqa
                                                                  models=["gpt2"], batch_sizes=[1], **kw), env)[0])
    assert ids() == ["torch-fp16-gpt2-b1-cuda0", "torch-fp32-gpt2-b1-cuda0"]  # all: the GPU where there is one
    assert ids(providers=["cpu"]) == ["torch-bf16-gpt2-b1", "torch-fp32-gpt2-b1"]
    assert len(ids(providers=["cpu", "cuda"])) == 4
    with pytest.raises(ConfigError, match="unknown devices"):
        load_spec(None, task="generate", providers=["tensorrt"])


def test_a_saved_classification_spec_loads_again(tmp_path):
    """A Slurm task and a resume load spec.json, which holds every key, the generative ones at their
    defaults: only a generative value actually said is refused."""
    saved = load_spec(None, quick=True).as_dict()
    assert load_spec(None, **saved).as_dict() == saved


def test_a_runtimes_own_timings_come_back_with_each_request():
    """vLLM's per-request metrics (wall-clock instants) become durations beside the marks, and the
    worker hands them back request by request; a runtime that keeps none adds nothing."""
    from types import SimpleNamespace

    from greenprobe.runtimes.gen_base import GenRuntime
    from greenprobe.runtimes.gen_vllm import timings_of
    from greenprobe.runtimes.worker import GenSlots

    m = SimpleNamespace(arrival_time=100.0, first_scheduled_time=100.25, first_token_time=100.5, finished_time=102.0)
    assert timings_of(m) == {"ttft_s": 0.5, "queue_s": 0.25, "e2e_s": 2.0}
    assert timings_of(SimpleNamespace(arrival_time=1.0, last_token_time=3.0)) == {"e2e_s": 2.0}
    assert timings_of(None) == {}

    class Stepping(GenRuntime):
        name = "stand-in"

        def __init__(self, keeps):
            super().__init__()
            self.keeps, self.k = keeps, 0

        def _generate(self, prompt, output_tokens, req):
            for _ in range(output_tokens):
                req.boundary(last=req.produced + 1 >= output_tokens)
            self.k += 1
            self.last_timings = [{"ttft_s": 0.01 * self.k}] if self.keeps else []
            return np.zeros((prompt.shape[0], output_tokens), np.int64)

    for keeps in (True, False):
        slots = GenSlots("stand-in")
        slots.slots["s"] = (Stepping(keeps), np.zeros((2, 3), np.int64), "key")
        out = slots.generate({"slot": "s", "n": 2, "output_tokens": 2})
        assert len(out["requests"]) == 2
        assert out.get("runtime_timings") == ([[{"ttft_s": 0.01}], [{"ttft_s": 0.02}]] if keeps else None)


def test_a_runs_record_keeps_the_runtimes_own_timings_and_their_means():
    from greenprobe.study.generate import runtime_means

    assert runtime_means(None) == {} and runtime_means([[], []]) == {}
    got = runtime_means([[{"ttft_s": 0.1, "e2e_s": 1.0}, {"ttft_s": 0.3, "e2e_s": 2.0}], [{"ttft_s": 0.2}]])
    assert got["runtime_ttft_s"] == pytest.approx(0.2) and got["runtime_e2e_s"] == pytest.approx(1.5)
    assert len(got["runtime_timings"]) == 2
