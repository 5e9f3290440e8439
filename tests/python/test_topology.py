"""Domain topology: each channel names the domain whose energy includes its own (parent_domain)."""

from __future__ import annotations

import json
import time

import greenprobe
from standins import make_powercap_tree

RANGE_UJ = 262_143_328_850

TWO_SOCKETS = [
    ("intel-rapl:0", "package-0", RANGE_UJ), ("intel-rapl:0:0", "core", RANGE_UJ), ("intel-rapl:0:1", "dram", RANGE_UJ),
    ("intel-rapl:1", "package-1", RANGE_UJ), ("intel-rapl:1:0", "core", RANGE_UJ), ("intel-rapl:1:1", "dram", RANGE_UJ),
    ("intel-rapl:2", "psys", RANGE_UJ),
]

WANT = {"package-0": "psys", "core-0": "package-0", "dram-0": "psys",
        "package-1": "psys", "core-1": "package-1", "dram-1": "psys", "psys": ""}


def test_two_socket_powercap_parents_reach_the_metadata(tmp_path):
    root = tmp_path / "powercap"
    make_powercap_tree(root, TWO_SOCKETS)
    with greenprobe.Probe(sensors=["rapl-powercap"], period_us=1000, powercap_root=str(root)) as probe:
        with greenprobe.mark("idle"):
            time.sleep(0.01)
    channels = probe.metadata()["channels"]
    assert {c["domain"]: c["parent_domain"] for c in channels} == WANT
    assert all(c["sensor"] == "rapl-powercap" for c in channels)
    paths = probe.save(tmp_path / "run")
    on_disk = json.loads(open(paths["metadata"]).read())["channels"]
    assert {c["domain"]: c["parent_domain"] for c in on_disk} == WANT
    with greenprobe.Probe(sensors=[f"replay:path={paths['samples']}"], period_us=1000) as replayed:
        time.sleep(0.05)
    assert {c["domain"]: c["parent_domain"] for c in replayed.metadata()["channels"]} == WANT  # a replay keeps it


def test_one_socket_without_psys_keeps_packages_and_dram_at_the_top(tmp_path):
    root = tmp_path / "powercap"
    make_powercap_tree(root, TWO_SOCKETS[:3])
    with greenprobe.Probe(sensors=["rapl-powercap"], period_us=1000, powercap_root=str(root)) as probe:
        time.sleep(0.005)
    parents = {c["domain"]: c["parent_domain"] for c in probe.metadata()["channels"]}
    assert parents == {"package-0": "", "core": "package-0", "dram": ""}


def test_gpu_inside_its_grace_hopper_module_by_statement_and_by_name():
    from greenprobe.topology import parents, top_level

    stated = [{"sensor": "nvml", "domain": "gpu0", "parent_domain": "module0"},
              {"sensor": "nvml", "domain": "module0", "parent_domain": ""},
              {"sensor": "nvml", "domain": "gpu1", "parent_domain": ""}]
    assert top_level(stated) == {("nvml", "module0"), ("nvml", "gpu1")}
    # a recording that does not state parents (a study's names only): the names say the same
    named = [{"sensor": "nvml", "domain": d} for d in ("gpu0", "module0", "gpu1")]
    assert parents(named) == {("nvml", "gpu0"): "module0", ("nvml", "module0"): "", ("nvml", "gpu1"): ""}
    assert top_level(named) == top_level(stated)


def test_a_domain_whose_parent_is_absent_counts_in_its_place():
    """A parent with no channel here (no usable samples, or left out of a study's domains) contains
    nothing: its child is not dropped from the total, and the chain goes on above the parent."""
    from greenprobe.topology import top_level

    assert top_level([{"sensor": "nvml", "domain": "gpu0", "parent_domain": "module0"},
                      {"sensor": "nvml", "domain": "gpu1", "parent_domain": ""}]) == {("nvml", "gpu0"), ("nvml", "gpu1")}
    # core-0 in package-0 (absent) in psys (present): psys holds it, it is not added again
    rapl = [{"sensor": "rapl-powercap", "domain": "core-0", "parent_domain": "package-0"},
            {"sensor": "rapl-powercap", "domain": "psys", "parent_domain": ""}]
    assert top_level(rapl) == {("rapl-powercap", "psys")}
    # a parent of another sensor's name space does not count: parents are within one sensor
    assert top_level([{"sensor": "nvml", "domain": "gpu0", "parent_domain": "module0"},
                      {"sensor": "synthetic", "domain": "module0", "parent_domain": ""}]) == {
        ("nvml", "gpu0"), ("synthetic", "module0")}
