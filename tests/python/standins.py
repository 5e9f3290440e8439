"""Stand-in sensors built by the tests: a powercap tree, MSR register files, fake NVML and AMD SMI libraries."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"


def build_fake_nvml(out_dir: Path) -> Path:
    """Compiles tests/fixtures/fake_nvml.c into a shared library (NVML's real signatures)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("a C compiler (cc) is needed to build the fake NVML library")
    lib = out_dir / "libnvidia-ml.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(FIXTURES / "fake_nvml.c"), "-lm", "-pthread"], check=True)
    return lib


def build_fake_perf(out_dir: Path) -> Path:
    """Compiles tests/fixtures/fake_perf.c, the RAPL perf PMU at the libc boundary (syscall, read,
    close), into a library for LD_PRELOAD."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("a C compiler (cc) is needed to build the fake perf PMU library")
    lib = out_dir / "libfake_perf.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(FIXTURES / "fake_perf.c"), "-lm", "-pthread",
                    "-ldl"], check=True)
    return lib


def make_perf_tree(root: Path, cpus: dict[int, int], cpumask: str, events: dict[str, int], *, vendor="GenuineIntel",
                   model=85, paranoid=2, cap_eff="0000000000000000", pmu_type=42) -> tuple[dict, dict]:
    """A power PMU tree, a CPU topology (cpus: CPU -> package) and a /proc with perf_event_paranoid,
    self/status and cpuinfo. Returns the Probe options and the FAKE_PERF_* variables that make
    fake_perf.c the same hardware (add FAKE_PERF_SCALE and the power law)."""
    pmu = root / "devices" / "power"
    (pmu / "events").mkdir(parents=True)
    (pmu / "type").write_text(f"{pmu_type}\n")
    (pmu / "cpumask").write_text(cpumask + "\n")
    for name, config in events.items():
        (pmu / "events" / name).write_text(f"event=0x{config:02x}\n")
        (pmu / "events" / f"{name}.scale").write_text("2.3283064365386962890625e-10\n")
        (pmu / "events" / f"{name}.unit").write_text("Joules\n")
    sysfs = root / "sys" / "devices" / "system" / "cpu"
    for cpu, pkg in cpus.items():
        topo = sysfs / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{pkg}\n")
        (topo / "core_id").write_text(f"{cpu}\n")
    proc = root / "proc"
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "self").mkdir()
    (proc / "sys" / "kernel" / "perf_event_paranoid").write_text(f"{paranoid}\n")
    (proc / "self" / "status").write_text(f"Name:\tpython\nCapEff:\t{cap_eff}\n")
    family = 6 if vendor == "GenuineIntel" else 25
    (proc / "cpuinfo").write_text("".join(f"processor\t: {c}\nvendor_id\t: {vendor}\ncpu family\t: {family}\n"
                                          f"model\t\t: {model}\n\n" for c in cpus))
    options = {"perf_event_root": str(root / "devices"), "sysfs_cpu_root": str(sysfs), "proc_root": str(proc)}
    env = {"FAKE_PERF_TYPE": str(pmu_type), "FAKE_PERF_CPUS": ",".join(f"{c}:{p}" for c, p in cpus.items()),
           "FAKE_PERF_EVENTS": ",".join(str(c) for c in events.values())}
    return options, env


def build_fake_amd_smi(out_dir: Path) -> Path:
    """Compiles tests/fixtures/fake_amd_smi.c into a shared library (AMD SMI's real signatures)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("a C compiler (cc) is needed to build the fake AMD SMI library")
    lib = out_dir / "libamd_smi.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(FIXTURES / "fake_amd_smi.c"), "-lm"], check=True)
    return lib


class Writer:
    """Runs standin_writer.py in its own process; ``log()`` returns [(t_ns, unwrapped_raw), ...] per target."""

    def __init__(self, cfg: dict, workdir: Path):
        self.cfg_path = workdir / f"writer-{id(self)}.json"
        self.log_path = workdir / f"writer-{id(self)}.log.json"
        cfg = dict(cfg, log=str(self.log_path))
        self.cfg_path.write_text(json.dumps(cfg))
        self.proc = subprocess.Popen([sys.executable, str(HERE / "standin_writer.py"), str(self.cfg_path)])

    def wait_started(self, timeout=10.0):
        """Waits until the writer has written every target once."""
        started = Path(str(self.log_path) + ".started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("stand-in writer exited early")
            if started.exists():
                return
            time.sleep(0.005)
        raise RuntimeError("stand-in writer did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        return json.loads(self.log_path.read_text())


def make_powercap_tree(root: Path, zones: list[tuple[str, str, int]]) -> dict[str, Path]:
    """zones: (dir name, zone name, max_energy_range_uj). Returns name -> energy_uj path."""
    out = {}
    for zdir, name, max_uj in zones:
        d = root / zdir
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
        (d / "energy_uj").write_text("%020d\n" % 0)
        out[name] = d / "energy_uj"
    return out


def make_cpu_tree(root: Path, vendor: str, family: int, model: int, cpus: int = 2) -> dict:
    """A cpuinfo, a sysfs topology (one package) and empty MSR files; returns the option paths."""
    proc = root / "proc"
    proc.mkdir(parents=True)
    info = "".join(f"processor\t: {i}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                   f"model name\t: stand-in\n\n" for i in range(cpus))
    (proc / "cpuinfo").write_text(info)
    sysfs = root / "sys" / "devices" / "system" / "cpu"
    for i in range(cpus):
        topo = sysfs / f"cpu{i}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text("0\n")
        (topo / "core_id").write_text(f"{i}\n")
        msr_dir = root / "dev" / "cpu" / str(i)
        msr_dir.mkdir(parents=True)
        (msr_dir / "msr").write_bytes(b"")
    return {"proc_root": str(proc), "sysfs_cpu_root": str(sysfs), "msr_path": str(root / "dev" / "cpu" / "{cpu}" / "msr")}


def write_register(path: Path, register: int, value: int, offset_scale: int = 1) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack("<Q", value), register * offset_scale)
    finally:
        os.close(fd)
