"""greenprobe: the energy of deep-learning inference, measured per call.

    import greenprobe
    with greenprobe.Probe(sensors="auto", period_us=200) as probe:
        with greenprobe.mark("infer", runtime="torch"):
            model(x)
    probe.save("run1/")
    probe.intervals()   # pyarrow Table: one row per (mark, sensor, domain)
"""

__version__ = "0.1.0"

from . import _core  # noqa: E402
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
from .dither import dither  # noqa: E402
from .marks import mark  # noqa: E402
from .sensors import list_sensors  # noqa: E402
from .session import Probe  # noqa: E402

now_ns = _core.now_ns

__all__ = [
    "Probe", "mark", "dither", "now_ns", "list_sensors", "GreenprobeError", "ConfigError", "NoSensorError", "SensorError",
    "SensorPermissionError", "SensorLibraryMissing", "SensorUnsupported", "SensorNotFound", "DeviceLostError",
]
