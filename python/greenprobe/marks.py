"""Marks: named intervals on the sampler's clock (CLOCK_MONOTONIC, ``time.monotonic_ns``).

``mark`` (implemented in C in ``greenprobe._core`` for speed) is a context manager and a
decorator. It is thread-safe (each use records one immutable tuple with a single list append
under the GIL), nests freely, and takes free-form attributes:

    with greenprobe.mark("infer", runtime="torch", batch=64):
        model(x)

    @greenprobe.mark("step")
    def step(...): ...

Each use records ``(label, start_ns, end_ns, thread_id, attrs or None, ok)``; ``ok`` is False
when the block raised. Marks go to the innermost running local Probe; with none, to the daemon
named by ``GREENPROBE_DAEMON`` (``unix:/path.sock`` or ``host:port``), in batches.

GPU work is asynchronous: a kernel launched inside a mark may still run after the mark ends, so
its energy would fall outside the interval. Pass ``sync=torch.cuda.synchronize`` (or any callable
that waits for the device) and the mark calls it before taking each timestamp.
"""

from __future__ import annotations

import functools
import threading
import warnings

from . import _core

mark = _core.Mark

_sink_stack: list = []
_sink_lock = threading.Lock()
_warned = False


def _default_sink():
    """Where marks go when no local Probe runs: the daemon named by $GREENPROBE_DAEMON, if set
    (its shared-memory ring for a local daemon, else its gRPC sender)."""
    from .client import default_remote

    remote = default_remote()
    return remote.mark_sink if remote is not None else None


def _push_sink(records: list) -> None:
    with _sink_lock:
        _sink_stack.append(records)
        _core._set_mark_sink(records)


def _pop_sink(records: list) -> None:
    with _sink_lock:
        for i in range(len(_sink_stack) - 1, -1, -1):
            if _sink_stack[i] is records:
                del _sink_stack[i]
                break
        _core._set_mark_sink(_sink_stack[-1] if _sink_stack else _default_sink())


def _no_sink() -> None:
    """Called by a mark that has nowhere to go."""
    global _warned
    with _sink_lock:
        if not _sink_stack:
            remote = _default_sink()
            if remote is not None:  # GREENPROBE_DAEMON was set after import: this mark goes there too
                _core._set_mark_sink(remote)
                return
    if not _warned:
        _warned = True
        warnings.warn("greenprobe.mark used with no active Probe (and no GREENPROBE_DAEMON): marks are not recorded",
                      RuntimeWarning, stacklevel=3)


def _decorate(m, fn):
    """``@mark(label, **attrs)``: every call of ``fn`` runs inside a fresh mark with the same arguments."""
    label, attrs, sync = m.label, m.attrs, m.sync

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with mark(label, sync=sync, **attrs):
            return fn(*args, **kwargs)

    return wrapper


if _default_sink() is not None:
    _core._set_mark_sink(_default_sink())
