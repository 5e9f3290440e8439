"""Each record that crosses a boundary is defined once, and every side carries all of it: a field
missing from any side fails here."""

from __future__ import annotations

import threading
from dataclasses import fields

import numpy as np
import pyarrow.parquet as pq
import pytest

import greenprobe
from greenprobe import _core, records
from greenprobe.attribution import Channel
from greenprobe.daemon.servicer import Servicer
from greenprobe.parquet import read_metadata
from greenprobe.v1 import probe_pb2 as pb

SPEC = "synthetic:waveform=constant;base_w=10;domains=a,b"


def test_the_client_only_copy_of_the_channel_fields_is_the_cores():
    assert records._CHANNEL_INFO_FIELDS_WITHOUT_CORE == _core.CHANNEL_INFO_FIELDS == records.CHANNEL_INFO_FIELDS


def test_the_client_only_copy_of_the_sampler_defaults_is_the_cores():
    from greenprobe import config

    assert config._SAMPLER_DEFAULTS_WITHOUT_CORE == _core.SAMPLER_DEFAULTS == config.SAMPLER_DEFAULTS
    assert config.MIN_PERIOD_US * 1000 == _core.SAMPLER_DEFAULTS["min_period_ns"]
    with pytest.raises(ValueError, match="at least 50 us"):
        _core.Sampler([_core.open_sensor("synthetic", {})], period_ns=_core.SAMPLER_DEFAULTS["min_period_ns"] - 1)
    with pytest.raises(greenprobe.ConfigError, match=f">= {config.MIN_PERIOD_US}"):
        greenprobe.Probe(sensors=["synthetic"], period_us=config.MIN_PERIOD_US - 1)


def test_a_mark_is_framed_alike_in_python_and_in_c_and_decoded_once():
    """The one encoding (frames.py in Python, _core.encode_frames in C: byte for byte the same), the
    one decoder and validator (_core.decode_frames), the one table of limits (_core.MARK_LIMITS)."""
    from greenprobe import frames

    recs = [("infer", 10, 20, 7, {"a": 1, "b": 2.5, "c": "x", "d": None, "e": True, "é": "ü"}, True),
            ("x", 5, 6, 2**64 - 1, None, False)]
    data, odd = _core.encode_frames(recs)
    assert odd == [] and data == b"".join(frames.frame(r) for r in recs)
    cols = _core.decode_frames(frames.encode(recs + [("odd", 1, 2, 0, {"l": [1, 2], "n": 1 << 70}, True)]), 9)
    assert cols["refused"] == 0 and len(cols["start_ns"]) == 3
    limits = _core.MARK_LIMITS
    over = [("x" * (limits["label_bytes"] + 1), 1, 2, 0, None, True),
            ("x", 1, 2, 0, {f"a{i}": i for i in range(limits["attrs"] + 1)}, True),
            ("x", 1, 2, 0, {"a" * (limits["attr_name_bytes"] + 1): 1}, True),
            ("x", 1, 2, 0, {"a": "v" * (limits["attr_value_bytes"] + 1)}, True)]
    for rec in over:
        assert _core.encode_frames([rec])[1] == [0], "the C encoder hands a mark over a limit back"
        assert _core.decode_frames(frames.frame(rec), 1)["refused"] == 1, "and the decoder refuses it"


def test_channel_info_is_a_read_only_class_with_every_field():
    sensor = _core.open_sensor("synthetic", {"domains": "a"})
    (info,) = sensor.channel_infos()
    assert isinstance(info, _core.ChannelInfo) and info.domain == "a" and info.quantity == "energy"
    assert info.as_dict() == sensor.channels()[0]
    assert tuple(info.as_dict()) == _core.CHANNEL_INFO_FIELDS
    with pytest.raises(AttributeError):
        info.domain = "b"


def test_the_proto_channel_carries_every_field():
    missing = set(_core.CHANNEL_INFO_FIELDS) - set(pb.Channel.DESCRIPTOR.fields_by_name)
    assert not missing, f"probe.proto's Channel lacks {sorted(missing)}"


def test_the_estimators_channel_carries_every_field():
    missing = set(_core.CHANNEL_INFO_FIELDS) - {f.name for f in fields(Channel)}
    assert not missing, f"attribution.Channel lacks {sorted(missing)}"



class CallerContext:
    """What the servicer reads of a gRPC call's context to know its caller: an unverified one."""

    def invocation_metadata(self):
        return ()

    def peer(self):
        return "unix:"

def test_every_field_survives_each_crossing(tmp_path):
    """The sampler's descriptor → attribution.Channel, the daemon's Status reply and the Parquet
    metadata, field by field, values included."""
    with greenprobe.Probe(sensors=[SPEC], period_us=1000) as probe:
        with greenprobe.mark("x"):
            pass
    described = probe.channel_info()
    assert len(described) == 2
    for info, ch in zip(described, probe.channels()):
        for name in _core.CHANNEL_INFO_FIELDS:
            assert getattr(ch, name) == info[name], name
    reply = Servicer(probe, threading.Event()).Status(pb.StatusRequest(), CallerContext())
    for info, msg in zip(described, reply.channels):
        for name in _core.CHANNEL_INFO_FIELDS:
            assert getattr(msg, name) == pytest.approx(info[name]) if isinstance(info[name], float) else \
                getattr(msg, name) == info[name], name
    paths = probe.save(tmp_path)
    saved = read_metadata(paths["samples"])["channels"]
    for info, row in zip(described, saved):
        for name in _core.CHANNEL_INFO_FIELDS:
            assert row[name] == info[name], name
    assert pq.read_table(paths["samples"]).num_rows > 0


def test_a_replay_keeps_every_field(tmp_path):
    with greenprobe.Probe(sensors=[SPEC], period_us=1000) as probe:
        pass
    paths = probe.save(tmp_path)
    with greenprobe.Probe(sensors=[f"replay:path={paths['samples']}"], period_us=1000) as replayed:
        pass
    keep = set(_core.CHANNEL_INFO_FIELDS) - {"max_power_w", "wrap_j"}  # a replay checks no ceiling again
    for a, b in zip(probe.channel_info(), replayed.channel_info()):
        assert {k: a[k] for k in keep} == {k: b[k] for k in keep}


def test_probe_and_remote_probe_answer_alike(tmp_path):
    """One Protocol (api.Measurement) ties the local Probe and a daemon's RemoteProbe: the same
    methods, arguments and typed answers, checked here over one session seen both ways."""
    import inspect
    import time

    import numpy as np

    from greenprobe.api import ChannelDescriptor, DomainEnergy, Measurement, SensorStats
    from greenprobe.records import Mark
    from greenprobe.daemon import Daemon

    for name in [n for n in dir(Measurement) if not n.startswith("_")]:
        want = list(inspect.signature(getattr(Measurement, name)).parameters)
        for cls in (greenprobe.Probe, greenprobe.RemoteProbe):
            assert list(inspect.signature(getattr(cls, name)).parameters) == want, (cls.__name__, name)

    probe = greenprobe.Probe(sensors=["synthetic:waveform=sine;base_w=40;amp_w=10;domains=a,b"], period_us=1000,
                             columnar_marks=True).start()
    daemon = Daemon(probe, tmp_path / "d.sock").start()
    remote = greenprobe.connect(f"unix:{tmp_path / 'd.sock'}")
    try:
        t0 = probe.now_ns()
        time.sleep(0.15)
        probe.add_mark("local", t0, probe.now_ns())
        a = remote.now_ns()
        time.sleep(0.15)
        remote.add_mark("remote", a, remote.now_ns(), k=1)
        remote.flush()
        end = probe.now_ns()
        probe.settle(after_ns=end)
        assert isinstance(probe, Measurement) and isinstance(remote, Measurement)
        keys = ("channel", "sensor", *_core.CHANNEL_INFO_FIELDS)
        assert [{k: c[k] for k in keys} for c in remote.channel_info()] == \
            [{k: c[k] for k in keys} for c in probe.channel_info()]
        mine, theirs = probe.channels(end_ns=end), remote.channels(end_ns=end)
        for x, y in zip(mine, theirs):
            assert type(x) is type(y) is Channel
            for name in ("channel", "sensor", *_core.CHANNEL_INFO_FIELDS):
                assert getattr(x, name) == getattr(y, name), name
            for name in ("t_ns", "prev_t_ns", "energy_j_or_power_w", "flags"):
                assert getattr(x, name).dtype == getattr(y, name).dtype, name
                assert np.array_equal(getattr(x, name), getattr(y, name)), name
        here, there = probe.energy(t0, end), remote.energy(t0, end)
        assert [set(r) for r in here] == [set(r) for r in there]
        for r, s in zip(here, there):
            assert r["domain"] == s["domain"] and r["energy_j"] == pytest.approx(s["energy_j"], rel=1e-9)
        assert probe.mark_count() == remote.mark_count() == 2
        assert probe.intervals().schema.names == remote.intervals().schema.names
        assert probe.summary_table().schema.names == remote.summary_table().schema.names
        assert probe.samples_table().schema.names == remote.samples_table().schema.names
        assert {k for s in probe.stats() for k in s} >= {k for s in remote.stats() for k in s}
        # every answer is the typed record the Protocol names: its required keys, and no others
        for kind, answers in ((ChannelDescriptor, (probe.channel_info(), remote.channel_info())),
                              (DomainEnergy, (here, there)), (SensorStats, (probe.stats(), remote.stats()))):
            for rows in answers:
                assert rows
                for row in rows:
                    assert kind.__required_keys__ <= set(row) <= kind.__required_keys__ | kind.__optional_keys__, kind
        marks = probe.marks()
        assert all(type(m) is Mark for m in marks) and {m.label for m in marks} == {"local", "remote"}
        assert next(m for m in marks if m.label == "remote").attrs["k"] == 1
    finally:
        remote.close()
        daemon.stop()
        probe.stop()


def test_a_reading_and_a_resolution_say_their_unit_and_older_descriptors_are_read_by_quantity():
    counter = Channel.from_info({"channel": 0, "sensor": "s", "domain": "a", "quantity": "energy", "estimated": False,
                                 "resolution": 1e-6, "nominal_update_period_ns": 1}, energy_j_or_power_w=np.ones(2))
    power = Channel.from_info({"channel": 1, "sensor": "s", "domain": "b", "quantity": "power", "estimated": False,
                               "resolution": 1e-3, "nominal_update_period_ns": 1}, energy_j_or_power_w=np.ones(2))
    assert (counter.resolution_j, counter.resolution_w) == (1e-6, 0.0)
    assert (power.resolution_j, power.resolution_w) == (0.0, 1e-3)
    assert counter.energy_j is counter.energy_j_or_power_w and power.power_w is power.energy_j_or_power_w
    with pytest.raises(ValueError, match="reads power .W., not energy"):
        power.energy_j
    with pytest.raises(ValueError, match="reads energy .J., not power"):
        counter.power_w
    # the core sets the one that applies
    (info,) = _core.open_sensor("synthetic", {"domains": "a", "resolution_j": "0.001"}).channel_infos()
    assert (info.resolution_j, info.resolution_w) == (0.001, 0.0)
    (info,) = _core.open_sensor("synthetic", {"domains": "a", "quantity": "power", "update_us": "1000"}).channel_infos()
    assert info.resolution_j == 0.0


def test_the_channel_descriptor_names_every_channel_info_field():
    from greenprobe.api import ChannelDescriptor

    keys = ChannelDescriptor.__required_keys__ | ChannelDescriptor.__optional_keys__
    assert keys == {"channel", "sensor", "sensor_index", *_core.CHANNEL_INFO_FIELDS}


def test_a_local_probe_reads_each_mark_of_its_buffer_once_for_the_latest_end(monkeypatch):
    from greenprobe.store import BufferMarks

    store = BufferMarks()
    read = []
    real = store.sink.snapshot
    monkeypatch.setattr(store, "sink", type("Sink", (), {"append": store.sink.append, "__len__": lambda s: len(real()),
                                                         "snapshot": lambda s, start=0: read.append(start) or real(start)})())
    store.append(greenprobe.Mark("a", 1, 50, 0, None, True))
    store.append(greenprobe.Mark("b", 2, 9, 0, None, True))
    assert store.max_end_ns() == 50
    store.append(greenprobe.Mark("c", 3, 70, 0, None, True))
    assert store.max_end_ns() == 70 and read == [0, 2]
