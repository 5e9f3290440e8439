"""What ``import greenprobe`` offers that depends on the compiled extension: the full Probe where
greenprobe is installed whole, and where it is only a client (no ``_core``: a runtime environment
that talks to a daemon), stand-ins that say what is missing and what to do."""

from __future__ import annotations

import time

from .dither import dither  # noqa: F401 (re-exported by __init__)

try:
    from . import _core
except ImportError as _e:  # client-only: an environment without the compiled extension
    _core = None
    _CORE_ERROR = _e

if _core is not None:
    from .sensors import list_sensors  # noqa: F401
    from .session import Probe  # noqa: F401

    now_ns = _core.now_ns
else:
    now_ns = time.monotonic_ns

    def _needs_core(name):
        def missing(*args, **kwargs):
            raise ImportError(f"greenprobe.{name} needs greenprobe's compiled extension, which this environment "
                              f"lacks ({_CORE_ERROR}); here greenprobe is a client: run `greenprobe daemon` where "
                              "greenprobe is installed in full and use greenprobe.connect() / GREENPROBE_DAEMON")
        return missing

    Probe = _needs_core("Probe")
    list_sensors = _needs_core("list_sensors")
