"""greenprobe: the energy of deep-learning inference, measured per call.

    import greenprobe
    with greenprobe.Probe(sensors="auto", period_us=200) as probe:
        with greenprobe.mark("infer", runtime="torch"):
            model(x)
    probe.save("run1/")
    probe.intervals()   # pyarrow Table: one row per (mark, sensor, domain)
"""

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

from ._face import Probe, _core, dither, list_sensors, now_ns  # noqa: E402,F401 (_core: None in a client-only install)
from .records import Mark  # noqa: E402

__all__ = [
    "Probe", "mark", "Mark", "dither", "now_ns", "list_sensors", "connect", "RemoteProbe", "DaemonError",
    "GreenprobeError", "ConfigError", "NoSensorError", "SensorError",
    "SensorPermissionError", "SensorLibraryMissing", "SensorUnsupported", "SensorNotFound", "DeviceLostError",
]
