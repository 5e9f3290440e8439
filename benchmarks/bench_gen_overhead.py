"""What greenprobe.generation costs a decode step (issue 21: at most 1 % of a 5 ms step).

    .venv/bin/python benchmarks/bench_gen_overhead.py [N]

1. One decode step's marking alone: ``with req.decode(): pass`` against an empty ``with`` block,
   best of 7 repeats of N steps, the marks going to a local Probe (synthetic sensor) and to a
   daemon through this process's shared-memory ring, as the study's workers send them.
2. The hook in transformers' generate (the StepMarks stopping criterion), end to end: the tiny
   model generating 64 tokens with and without it, interleaved, median of 40 pairs; the difference
   per step is the hook's cost (noisier: it also holds generate's own variation).
Every mark must arrive: the counts are checked.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import greenprobe  # noqa: E402
from greenprobe.generation import Request  # noqa: E402

STEP_S = 0.005  # the reference: a 5 ms decode step


def per_step_ns(n: int, repeat: int = 7) -> tuple[float, float]:
    """Best-of ns per step: marked and bare."""
    class Bare:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    bare, marked = float("inf"), float("inf")
    for _ in range(repeat):
        b = Bare()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            with b:
                pass
        bare = min(bare, (time.perf_counter_ns() - t0) / n)
        req = Request(prompt_tokens=128, sequences=8, config="bench", run=0)
        req.produced = 1  # the prefill done
        t0 = time.perf_counter_ns()
        for _ in range(n):
            with req.decode():
                pass
        marked = min(marked, (time.perf_counter_ns() - t0) / n)
    return marked, bare


def generate_hook_cost(pairs: int = 40, tokens: int = 64) -> tuple[float, float, float]:
    """(median ms per step with the hook, without, hook's cost per step in µs)."""
    import torch
    import transformers

    from greenprobe.models.generative import checkpoint, make_prompt
    from greenprobe.runtimes.gen_torch import step_marks

    torch.set_grad_enabled(False)
    ck = checkpoint("tiny", "tiny", cache=tempfile.mkdtemp(prefix="gp-bench-"))
    model = transformers.AutoModelForCausalLM.from_pretrained(ck, local_files_only=True).eval()
    ids = torch.from_numpy(make_prompt("tiny", "tiny", 1, 32))
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
              pad_token_id=0)
    with_hook, without = [], []
    for k in range(pairs + 3):
        for hooked in ((True, False) if k % 2 else (False, True)):
            t0 = time.perf_counter()
            if hooked:
                req = Request(prompt_tokens=32, config="bench", run=k)
                req.boundary()
                model.generate(ids, stopping_criteria=[step_marks(req, tokens)], **kw)
                req.finish()
            else:
                model.generate(ids, **kw)
            if k >= 3:  # warm-up pairs left out
                (with_hook if hooked else without).append((time.perf_counter() - t0) / tokens)
    a, b = float(np.median(with_hook)), float(np.median(without))
    return a * 1e3, b * 1e3, (a - b) * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    from bench_mark import remote_sink, start_daemon

    print(f"# greenprobe.generation overhead, {os.cpu_count()} cores, N={n}")
    with greenprobe.Probe(sensors="synthetic", period_us=1000) as probe:
        marked, bare = per_step_ns(n)
        got = len(probe.marks())
    assert got == 7 * n, f"{got} of {7 * n} marks reached the probe"
    print(f"local Probe:  {marked:8.1f} ns per marked step, {bare:6.1f} ns bare: {marked - bare:8.1f} ns = "
          f"{(marked - bare) * 1e-9 / STEP_S:.5%} of a 5 ms step")
    work = Path(tempfile.mkdtemp(prefix="gp-bench-"))
    proc, address = start_daemon(work)
    try:
        from greenprobe import _core

        remote = remote_sink(address, ring=True)
        before = remote.mark_count()
        _core._set_mark_sink(remote.mark_sink)
        marked, bare = per_step_ns(n)
        remote.flush()
        _core._set_mark_sink(None)
        held = remote.mark_count() - before
        assert held == 7 * n, f"the daemon holds {held} of {7 * n} marks"
        print(f"daemon ring:  {marked:8.1f} ns per marked step, {bare:6.1f} ns bare: {marked - bare:8.1f} ns = "
              f"{(marked - bare) * 1e-9 / STEP_S:.5%} of a 5 ms step")
    finally:
        proc.send_signal(__import__("signal").SIGTERM)
        proc.wait(timeout=60)
    with greenprobe.Probe(sensors="synthetic", period_us=1000) as probe:
        a, b, cost = generate_hook_cost()
        got = len(probe.marks())
    print(f"transformers generate, tiny model, 64 tokens: {a:.3f} ms per step with the hook, {b:.3f} ms without "
          f"(medians of 40): the hook costs {cost:.1f} us per step = {cost * 1e-6 / STEP_S:.3%} of a 5 ms step "
          f"({got} marks recorded)")


if __name__ == "__main__":
    main()
