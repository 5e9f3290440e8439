"""Errors a user meets, each saying what failed, where, and how to fix it."""

from __future__ import annotations


class GreenprobeError(Exception):
    """Base class of every greenprobe error.

    Attributes: ``message`` (what failed, and where) and ``fix`` (what to do about it; empty where
    there is nothing to do). ``str()`` is the message, then a ``\n  fix: ...`` line if there is a fix.
    """

    def __init__(self, message: str, fix: str = ""):
        self.message = message
        self.fix = fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class ConfigError(GreenprobeError, ValueError):
    """An argument or option is invalid."""


class NoSensorError(GreenprobeError):
    """No sensor could be opened; the message lists every reason."""


class SensorError(GreenprobeError):
    """A sensor could not be opened or read.

    Attributes: ``category`` (permission, library-missing, unsupported, not-found, device-lost, io,
    config), ``message`` and ``fix``.
    """

    category = "io"

    def __init__(self, message: str, fix: str = "", category: str | None = None):
        if category is not None:
            self.category = category
        super().__init__(message, fix)


class SensorPermissionError(SensorError, PermissionError):
    category = "permission"


class SensorLibraryMissing(SensorError):
    category = "library-missing"


class SensorUnsupported(SensorError):
    category = "unsupported"


class SensorNotFound(SensorError):
    category = "not-found"


class DeviceLostError(SensorError):
    category = "device-lost"


class SensorConfigError(SensorError, ConfigError):
    category = "config"


_BY_CATEGORY = {
    "permission": SensorPermissionError,
    "library-missing": SensorLibraryMissing,
    "unsupported": SensorUnsupported,
    "not-found": SensorNotFound,
    "device-lost": DeviceLostError,
    "config": SensorConfigError,
    "io": SensorError,
}


def from_core(category: str, message: str, fix: str) -> SensorError:
    """Builds the Python exception for a C++ SensorError (called by greenprobe._core)."""
    cls = _BY_CATEGORY.get(category, SensorError)
    return cls(message, fix, category=category)


class DaemonError(GreenprobeError, RuntimeError):
    """The daemon could not be reached or refused a request; ``message`` says which and why, ``fix``
    what to do. (Also importable from greenprobe.client.)"""
