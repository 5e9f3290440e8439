import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from standins import build_fake_nvml  # noqa: E402


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory) -> Path:
    """Path of the fake libnvidia-ml.so.1, compiled once per test session."""
    return build_fake_nvml(tmp_path_factory.mktemp("nvml"))


@pytest.fixture
def nvml_env(monkeypatch):
    """Sets FAKE_NVML_* variables for one test (the fake reads them in nvmlInit)."""

    def setenv(**values):
        for k, v in values.items():
            monkeypatch.setenv(f"FAKE_NVML_{k.upper()}", str(v))

    return setenv
