"""Marks for a generation loop: the prefill and each decode step of a request, on the sampler's clock.

A generative request has two phases of very different cost: the **prefill**, one forward pass over
the prompt that yields the first token, and the **decode steps**, one forward pass per further
token for every sequence in the batch. greenprobe marks each of them, so the estimator
(``probe.summary()``) can give the energy of a prefill and of a decode step even when a step (5-50
ms on a GPU) is far shorter than the sensor's update period (NVML: 100 ms)::

    import greenprobe
    from greenprobe.generation import Request

    with greenprobe.Probe() as probe:
        for prompt in prompts:
            req = Request(prompt_tokens=len(prompt), sequences=1)
            with req.prefill():
                logits, cache = model(prompt)            # the prompt: yields the first token
            for _ in range(63):
                with req.decode():
                    logits, cache = model(token, cache)  # one token for every sequence
    probe.summary()     # rows for the labels "prefill" and "decode"

Where the loop is not yours (``transformers``' ``generate``), a hook calls ``req.boundary()`` at
each step's end instead: the first call opens the prefill, each later one closes the phase that
ran and opens the next decode step (``greenprobe.runtimes.gen_torch.StepMarks`` does it through
``generate``'s stopping criteria); ``req.finish()`` closes the last.

Every mark carries, as attributes (columns in the marks and intervals tables):

    phase            "prefill" or "decode" (also the label, unless ``label_prefix`` is given)
    request          the request's id (a counter per process unless given)
    step             0 for the prefill, 1, 2, ... for the decode steps
    sequences        sequences generated together (the batch)
    prompt_tokens    prompt tokens per sequence
    context_tokens   tokens per sequence the step attends to: the prompt for the prefill, the prompt
                     and the tokens produced before it for a decode step
    tokens           tokens the step processed over all sequences: sequences x prompt_tokens for
                     the prefill (it also yields the first token), sequences for a decode step

Energy per prompt token and per output token follow from the marks (docs/SCHEMA.md, "Generation").
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Optional

PREFILL, DECODE = "prefill", "decode"
PHASES = (PREFILL, DECODE)

_ids = itertools.count()


def _mark():
    from ._mark import mark

    return mark


class Request:
    """One request: ``sequences`` sequences generated together from prompts of ``prompt_tokens``
    tokens each. Use ``prefill()`` once, then ``decode()`` per step (context managers), or
    ``boundary()`` from a per-step hook. ``attrs`` are added to every mark (e.g. config=, run=); ``record=False``
    counts the steps without marking them (warm-up)."""

    def __init__(self, prompt_tokens: int, sequences: int = 1, *, request: Any = None, label_prefix: str = "",
                 sync: Optional[Callable[[], Any]] = None, record: bool = True, **attrs):
        if int(prompt_tokens) < 1:
            raise ValueError(f"prompt_tokens must be >= 1, got {prompt_tokens}")
        if int(sequences) < 1:
            raise ValueError(f"sequences must be >= 1, got {sequences}")
        self.prompt_tokens, self.sequences = int(prompt_tokens), int(sequences)
        self.request = next(_ids) if request is None else request
        self.label_prefix, self.sync, self.attrs, self.record = label_prefix, sync, attrs, record
        self.produced = 0      # tokens per sequence produced so far (the prefill yields the first)
        self.steps = 0         # decode steps marked so far
        self._open = None      # the mark of the phase running under boundary(), if any
        self._open_phase = ""

    # -- the attributes of the next mark -------------------------------------------------------
    def _attrs(self, phase: str) -> dict:
        if phase == PREFILL:
            step, context, tokens = 0, self.prompt_tokens, self.sequences * self.prompt_tokens
        else:
            step, context, tokens = self.steps + 1, self.prompt_tokens + self.produced, self.sequences
        return {"phase": phase, "request": self.request, "step": step, "sequences": self.sequences,
                "prompt_tokens": self.prompt_tokens, "context_tokens": context, "tokens": tokens, **self.attrs}

    def _new(self, phase: str):
        if phase == PREFILL and (self.produced or self.steps):
            raise RuntimeError(f"request {self.request}: the prefill comes once, before any decode step")
        if phase == DECODE and not self.produced:
            raise RuntimeError(f"request {self.request}: a decode step before the prefill; mark the prefill first")
        if not self.record:
            return _Unrecorded()
        return _mark()(self.label_prefix + phase, sync=self.sync, **self._attrs(phase))

    def _done(self, phase: str) -> None:
        self.produced += 1
        if phase == DECODE:
            self.steps += 1

    # -- context managers ----------------------------------------------------------------------
    def prefill(self):
        """The forward pass over the prompt (yields each sequence's first token)."""
        return _Phase(self, PREFILL)

    def decode(self):
        """One decode step: one token for every sequence."""
        return _Phase(self, DECODE)

    # -- from a hook ---------------------------------------------------------------------------
    def boundary(self, last: bool = False) -> None:
        """A step boundary seen from a hook: closes the phase that ran (if any) and, unless
        ``last``, opens the next one (the prefill first, then decode steps)."""
        if self._open is not None:
            self._open.__exit__(None, None, None)
            self._done(self._open_phase)
            self._open = None
        if not last:
            phase = DECODE if self.produced else PREFILL
            m = self._new(phase)
            m.__enter__()
            self._open, self._open_phase = m, phase

    def finish(self) -> None:
        """Closes the phase left open by ``boundary()`` (nothing when none is)."""
        if self._open is not None:
            self.boundary(last=True)

    def abandon(self) -> None:
        """Drops the open phase without recording it (the loop failed inside it)."""
        self._open = None

    @property
    def output_tokens(self) -> int:
        """Tokens per sequence produced so far."""
        return self.produced


class _Unrecorded:
    """A phase of a request that is not recorded (warm-up)."""

    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        return False


class _Phase:
    __slots__ = ("req", "phase", "m")

    def __init__(self, req: Request, phase: str):
        self.req, self.phase, self.m = req, phase, None

    def __enter__(self):
        if self.req._open is not None:
            raise RuntimeError("a phase opened by boundary() is still running: call finish() first")
        self.m = self.req._new(self.phase)
        self.m.__enter__()
        return self.req

    def __exit__(self, et, ev, tb):
        self.m.__exit__(et, ev, tb)
        if et is None:
            self.req._done(self.phase)
        return False
