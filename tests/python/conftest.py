import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from standins import build_fake_amd_smi, build_fake_nvml  # noqa: E402


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


@pytest.fixture(scope="session")
def fake_amd_smi(tmp_path_factory) -> Path:
    """Path of the fake libamd_smi.so, compiled once per test session."""
    return build_fake_amd_smi(tmp_path_factory.mktemp("amd_smi"))


@pytest.fixture
def amd_env(monkeypatch):
    """Sets FAKE_AMD_SMI_* variables for one test (the fake reads them in amdsmi_init)."""

    def setenv(**values):
        for k, v in values.items():
            monkeypatch.setenv(f"FAKE_AMD_SMI_{k.upper()}", str(v))

    return setenv


# The caller's environment must not steer a test: a daemon address, token or TLS setting, or the
# GPUs CUDA would show, each changes what greenprobe does.
LEAKY_ENV = ("GREENPROBE_DAEMON", "GREENPROBE_TOKEN", "GREENPROBE_TLS_CA", "GREENPROBE_TLS_CERT", "GREENPROBE_TLS_KEY",
             "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "ROCR_VISIBLE_DEVICES",
             "HIP_VISIBLE_DEVICES")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in LEAKY_ENV:
        monkeypatch.delenv(name, raising=False)
