"""Marks: named intervals on the sampler's clock (CLOCK_MONOTONIC, ``time.monotonic_ns``).

``mark`` is a context manager and a decorator. It is thread-safe (each use records one
immutable tuple with a single ``list.append``), nests freely, and takes free-form attributes.

GPU work is asynchronous: a kernel launched inside a mark may still run after the mark ends, so
its energy would fall outside the interval. Pass ``sync=torch.cuda.synchronize`` (or any callable
that waits for the device) and the mark calls it before taking each timestamp.
"""

from __future__ import annotations

import functools
import threading
import time
import warnings
from typing import Any, Callable, Optional

_monotonic_ns = time.monotonic_ns
_get_ident = threading.get_ident

#: Where marks go: a list owned by the active probe, or None.
_sink: Optional[list] = None
_sink_stack: list = []
_sink_lock = threading.Lock()
_warned = False


def _push_sink(records: list) -> None:
    global _sink
    with _sink_lock:
        _sink_stack.append(records)
        _sink = records


def _pop_sink(records: list) -> None:
    global _sink
    with _sink_lock:
        if records in _sink_stack:
            _sink_stack.remove(records)
        _sink = _sink_stack[-1] if _sink_stack else None


def _no_sink() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn("greenprobe.mark used with no active Probe (and no GREENPROBE_DAEMON): marks are not recorded",
                      RuntimeWarning, stacklevel=3)


class mark:
    """Stamps an interval: ``with greenprobe.mark("infer", runtime="torch"): ...`` or ``@greenprobe.mark("infer")``.

    Records ``(label, start_ns, end_ns, thread_id, attrs, ok)`` where ok is False when the block raised.
    """

    __slots__ = ("label", "attrs", "sync", "start_ns")

    def __init__(self, label: str, /, *, sync: Optional[Callable[[], Any]] = None, **attrs: Any):
        if not isinstance(label, str) or not label:
            raise TypeError("mark label must be a non-empty string")
        self.label = label
        self.attrs = attrs or None
        self.sync = sync
        self.start_ns = 0

    def __enter__(self) -> "mark":
        if self.sync is not None:
            self.sync()
        self.start_ns = _monotonic_ns()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.sync is not None:
            self.sync()
        end = _monotonic_ns()
        sink = _sink
        if sink is not None:
            sink.append((self.label, self.start_ns, end, _get_ident(), self.attrs, exc_type is None))
        else:
            _no_sink()

    def __call__(self, fn: Callable) -> Callable:
        label, attrs, sync = self.label, self.attrs or {}, self.sync

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with mark(label, sync=sync, **attrs):
                return fn(*args, **kwargs)

        return wrapper
