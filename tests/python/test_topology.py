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


def _rapl_domain_sets():
    """Domain sets as the RAPL sensors name them (1 and 2 sockets, with and without psys, core,
    uncore and dram), and a few names no sensor gives."""
    one = ["package-0", "core", "uncore", "dram", "psys"]
    two = [f"{d}-{s}" for s in (0, 1) for d in ("package", "core", "uncore", "dram")] + ["psys"]
    sets = []
    for full in (one, two):
        for drop in [(), ("psys",), ("package-0",), ("package-0", "psys"), ("core", "core-0", "dram", "dram-1"),
                     ("package-1",)]:
            sets.append([d for d in full if d not in drop])
    sets.append(["package", "core", "dram", "psys"])
    sets.append(["package-0", "core-00", "core-0x", "core-", "psys-0", "dram-1\n", "gpu0", "", "PSYS", "core-1"])
    return sets


def test_rapl_rule_by_name_is_the_cores_and_its_python_copy_agrees():
    """topology asks the C++ core (the rule the RAPL sensors apply) for RAPL parents by name; the
    Python copy, used only without the compiled extension, gives the same answers."""
    import pytest

    from greenprobe import topology

    core = pytest.importorskip("greenprobe._core")
    assert hasattr(core, "rapl_parent"), "the compiled extension is older than topology.py: rebuild it"
    assert topology._core_rapl_parent is core.rapl_parent, "topology must use the core's rule when it is there"
    asked, answers = 0, set()
    for domains in _rapl_domain_sets():
        # each domain among its set, and names absent from it (a parent without samples)
        for domain in set(domains) | {"package-0", "package-1", "core-0", "dram-0", "psys", "uncore-1"}:
            for siblings in (set(domains), list(domains)):
                want = core.rapl_parent(domain, siblings)
                assert topology._rapl_parent_py(domain, siblings) == want, (domain, sorted(siblings))
                asked, answers = asked + 1, answers | {want}
    assert asked > 200 and answers == {"", "psys", "package-0", "package-1"}
    # and the answers are the sensors' (test_two_socket_powercap_parents_reach_the_metadata's WANT)
    assert {d: topology.parent_by_name("rapl-powercap", d, set(WANT)) for d in WANT} == WANT
    assert topology.parent_by_name("rapl-msr", "core", {"package-0", "core", "dram"}) == "package-0"
    assert topology.parent_by_name("nvml", "core", {"package-0", "core"}) == ""


def test_the_python_copy_stands_in_without_the_extension(monkeypatch):
    from greenprobe import topology

    monkeypatch.setattr(topology, "_core_rapl_parent", None)
    rapl = [{"sensor": "rapl-msr", "domain": d} for d in ("package-0", "core-0", "dram-0", "package-1", "core-1", "psys")]
    assert topology.parents(rapl) == {
        ("rapl-msr", "package-0"): "psys", ("rapl-msr", "core-0"): "package-0", ("rapl-msr", "dram-0"): "psys",
        ("rapl-msr", "package-1"): "psys", ("rapl-msr", "core-1"): "package-1", ("rapl-msr", "psys"): ""}
    assert topology.top_level(rapl) == {("rapl-msr", "psys")}
