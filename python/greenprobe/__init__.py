"""greenprobe: the energy of deep-learning inference, measured per call.

    import greenprobe
    with greenprobe.Probe(sensors="auto", period_us=200) as probe:
        with greenprobe.mark("infer", runtime="torch"):
            model(x)
    probe.save("run1/")
    probe.intervals()   # pyarrow Table: one row per (mark, sensor, domain)
"""

import time as _time

from ._version import __version__  # noqa: F401 (re-exported)
from ._mark import mark

from .client import DaemonError, RemoteProbe, connect  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DeviceLostError,
    GreenprobeError,
    NoSensorError,
    SensorError,
    SensorLibraryMissing,
    SensorNotFound,
    SensorPermissionError,
    SensorUnsupported,
)

try:
    from . import _core  # noqa: E402
except ImportError as _e:  # client-only: an environment without the compiled extension
    _core = None
    _CORE_ERROR = _e

if _core is not None:
    from .dither import dither  # noqa: E402
    from .sensors import list_sensors  # noqa: E402
    from .session import Probe  # noqa: E402

    now_ns = _core.now_ns
else:
    from .dither import dither  # noqa: E402

    now_ns = _time.monotonic_ns

    def _needs_core(name):
        def missing(*args, **kwargs):
            raise ImportError(f"greenprobe.{name} needs greenprobe's compiled extension, which this environment "
                              f"lacks ({_CORE_ERROR}); here greenprobe is a client: run `greenprobe daemon` where "
                              "greenprobe is installed in full and use greenprobe.connect() / GREENPROBE_DAEMON")
        return missing

    Probe = _needs_core("Probe")
    list_sensors = _needs_core("list_sensors")

__all__ = [
    "Probe", "mark", "dither", "now_ns", "list_sensors", "connect", "RemoteProbe", "DaemonError",
    "GreenprobeError", "ConfigError", "NoSensorError", "SensorError",
    "SensorPermissionError", "SensorLibraryMissing", "SensorUnsupported", "SensorNotFound", "DeviceLostError",
]
