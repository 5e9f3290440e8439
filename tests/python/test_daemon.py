"""The daemon: one sampler served over gRPC to several processes; hostile input; measure."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import greenprobe
from helpers import mark_batch
from greenprobe.daemon import MAX_BATCH, Daemon
from greenprobe.v1 import probe_pb2 as pb
from greenprobe.v1 import probe_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
MXNET_PY = ROOT / ".venv-mxnet" / "bin" / "python"


def start_daemon(tmp_path, *extra, sensors="synthetic"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    sock, ready, out = tmp_path / "d.sock", tmp_path / "ready", tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "greenprobe", "daemon", "--sensors", sensors, "--socket", str(sock),
                             "--ready-file", str(ready), "--out", str(out), *extra],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"daemon did not start: {proc.stderr.read()}")
        time.sleep(0.05)
    return proc, f"unix:{sock}", sock, out


def run_dir(out: Path) -> Path:
    """The one run folder a daemon made under --out."""
    (run,) = out.glob("run-*")
    return run


def stop_daemon(proc, grace_s: float = 60) -> str:
    """SIGTERM, and the daemon's stderr once it has ended cleanly. One still running grace_s later is
    killed (a hung daemon must not outlive the suite) and fails the test with what it wrote."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # something it started still holds its stderr
            err = "(its stderr stayed open)"
        raise AssertionError(f"the daemon had not ended {grace_s:g} s after SIGTERM and was killed; "
                             f"its stderr:\n{err}") from None
    assert proc.returncode == 0, err
    return err


CLIENT = """
import os, sys, greenprobe
n = int(sys.argv[1])
for i in range(n):
    with greenprobe.mark("work", i=i, who=sys.argv[2]):
        pass
"""


def client_only_copy(tmp_path) -> Path:
    """greenprobe's Python files without the compiled extension: what a client-only install is."""
    dst = tmp_path / "clientonly" / "greenprobe"
    shutil.copytree(ROOT / "python" / "greenprobe", dst, ignore=shutil.ignore_patterns("_core*.so", "__pycache__"))
    return dst.parent


def test_marks_from_several_processes_and_environments_reach_one_daemon(tmp_path):
    proc, address, sock, out = start_daemon(tmp_path)
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660, "the socket must not be world-accessible"
        env = dict(os.environ, GREENPROBE_DAEMON=address)
        clients = [subprocess.Popen([sys.executable, "-c", CLIENT, "500", f"c{k}"], env=env) for k in range(3)]
        expected = 1500
        if MXNET_PY.exists():  # a client in MXNet's environment: protobuf 3.20, no compiled greenprobe
            only = client_only_copy(tmp_path)
            probe_env = dict(env, PYTHONPATH=str(only))
            check = subprocess.run([str(MXNET_PY), "-c", "import greenprobe, google.protobuf as p; "
                                    "print(greenprobe._core is None, p.__version__)"],
                                   env=probe_env, capture_output=True, text=True)
            assert check.stdout.split() == ["True", "3.20.3"], check.stderr
            clients.append(subprocess.Popen([str(MXNET_PY), "-c", CLIENT, "500", "mx"], env=probe_env))
            expected += 500
        for c in clients:
            assert c.wait(timeout=120) == 0
        remote = greenprobe.connect(address)
        st_ = remote.status()
        assert st_["marks"] == expected and st_["channels"][0]["sensor"] == "synthetic"
        # what a client needs to bound energy itself: the ceiling, and the channel's place
        assert all(c["max_power_w"] > 0 and "parent_domain" in c for c in st_["channels"]), st_["channels"]
        assert abs(st_["now_ns"] - time.monotonic_ns()) < 1e9  # one clock
        rows = remote.summary()
        assert rows and rows[0]["label"] == "work" and rows[0]["calls"] == expected
        table = remote.intervals()  # the local Probe's surface: the same columns
        assert table.num_rows == expected and {"energy_j", "energy_j_low", "label", "pid"} <= set(table.column_names)
        assert remote.summary_table().num_rows == len(rows) and remote.samples_table().num_rows > 0
        assert remote.mark_count() == expected and remote.stats()[0]["polls"] > 0
    finally:
        err = stop_daemon(proc)
    assert "serving on unix:" in err and "CVE-2020-8694" in err
    assert not sock.exists(), "a clean stop removes the socket"
    marks = pq.read_table(run_dir(out) / "intervals.parquet").to_pylist()
    assert len(marks) == expected
    assert len({r["pid"] for r in marks}) == len(clients)
    assert {r["who"] for r in marks} >= {"c0", "c1", "c2"}


@pytest.fixture
def served(tmp_path):
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    daemon = Daemon(probe, tmp_path / "d.sock")
    probe.start()
    daemon.start()
    channel = grpc.insecure_channel(f"unix:{tmp_path / 'd.sock'}")
    yield probe, pb_grpc.ProbeStub(channel), tmp_path / "d.sock"
    channel.close()
    daemon.stop()
    probe.stop()


def _code(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_malformed_requests_get_clear_errors_and_the_daemon_keeps_serving(served):
    probe, stub, sock = served
    t = time.monotonic_ns()
    good = ("ok", t, t, 1, None, True)
    bad = {
        "ends before it starts": ("x", t, t - 1, 1, None, True),
        "label empty": ("", t, t, 1, None, True),
        "longer than 256 bytes": ("x" * 300, t, t, 1, None, True),
        "CLOCK_MONOTONIC": ("x", 0, 5, 1, None, True),
        "more than 64 attributes": ("x", t, t, 1, {f"a{i}": i for i in range(65)}, True),
        "attribute value longer than 1024 bytes": ("x", t, t, 1, {"a": "v" * 1025}, True),
    }
    for words, m in bad.items():
        code, details = _code(lambda: stub.RecordMarks(mark_batch([good, m])))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, (words, details)
    broken = {  # frames whose framing is wrong: the batch is refused, naming what is wrong
        "frames": b"\x07" * 12,
        "frames:": (64).to_bytes(4, "little") + (1).to_bytes(4, "little") + b"\x00" * 8,  # says 64 bytes, has 16
    }
    for words, junk in broken.items():
        code, details = _code(lambda: stub.RecordMarks(mark_batch([good], frames=junk)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, (words, details)
    # the encodings of API 1 (marks one by one, columns) are refused with the reason, not dropped unseen
    old = pb.MarkBatch()
    old.columns.pid = 1
    old.columns.ParseFromString(old.columns.SerializeToString() + bytes([0x1a, 2]) + b"ab")  # field 3: start_ns
    code, details = _code(lambda: stub.RecordMarks(old))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "only as frames" in details, details
    assert len(probe.marks()) == 0, "a batch with a bad mark records nothing"
    huge = mark_batch([("x", t, t, 0, None, True)] * (MAX_BATCH + 1))
    assert _code(lambda: stub.RecordMarks(huge))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: stub.Energy(pb.EnergyRequest(start_ns=t, end_ns=t - 5)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: stub.Table(pb.TableRequest(name="passwords")))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: next(stub.StreamSamples(pb.StreamSamplesRequest(channels=[99]))))[0] == \
        grpc.StatusCode.INVALID_ARGUMENT
    # garbage bytes on the socket, then a client that hangs up mid-stream
    for junk in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", os.urandom(4096)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(sock))
        s.sendall(junk)
        s.close()
    stream = stub.StreamSamples(pb.StreamSamplesRequest())
    next(stream)
    stream.cancel()
    reply = stub.RecordMarks(mark_batch([("after", t, t + 10, 0, None, True)]))
    assert reply.accepted == 1 and stub.Status(pb.StatusRequest()).marks == 1


marks_strategy = st.lists(st.tuples(
    st.text(max_size=300), st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1), st.integers(0, 2**64 - 1),
    st.one_of(st.none(), st.dictionaries(st.text(max_size=70), st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=1100)), max_size=70)),
    st.booleans()), max_size=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=marks_strategy, pid=st.integers(0, 2**32 - 1))
def test_fuzzed_mark_batches_are_accepted_whole_or_refused_whole(served, batch, pid):
    probe, stub, _ = served
    before = len(probe.marks())
    code, _ = _code(lambda: stub.RecordMarks(mark_batch(batch, pid=pid)))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
    assert len(probe.marks()) - before == (len(batch) if code == grpc.StatusCode.OK else 0)


def test_a_client_over_tcp_sends_the_token_and_a_wrong_one_says_which_variable(tmp_path):
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    token = "s3cret-" * 4
    daemon = Daemon(probe, None, listen="127.0.0.1:0", token=token)
    probe.start()
    daemon.start()
    try:
        address = daemon.addresses[0]
        with pytest.raises(greenprobe.DaemonError, match="GREENPROBE_TOKEN"):
            greenprobe.connect(address, token="wrong")
        remote = greenprobe.connect(address, token=token)
        assert remote.status()["version"] == greenprobe.__version__
    finally:
        daemon.stop()
        probe.stop()


def test_connect_to_nothing_says_how_to_start_a_daemon(tmp_path):
    with pytest.raises(greenprobe.DaemonError, match="greenprobe daemon"):
        greenprobe.connect(f"unix:{tmp_path / 'nobody.sock'}", timeout_s=2)


def test_measure_runs_a_command_and_reports_its_energy(tmp_path):
    child = "import greenprobe, sys\nfor i in range(20):\n    with greenprobe.mark('step'): pass\nsys.exit(3)"
    r = subprocess.run([sys.executable, "-m", "greenprobe", "measure", "--sensors", "synthetic", "--out",
                        str(tmp_path / "m"), "--", sys.executable, "-c", child], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3, r.stderr  # the command's exit status
    assert "synthetic/synthetic0" in r.stderr and "step x20" in r.stderr and "s elapsed" in r.stderr
    rows = pq.read_table(tmp_path / "m" / "intervals.parquet").to_pylist()
    labels = sorted({r["label"] for r in rows})
    assert labels == ["command", "step"]
    (cmd,) = [r for r in rows if r["label"] == "command"]
    assert cmd["exit_code"] == 3 and cmd["energy_j"] > 0
    steps = [r for r in rows if r["label"] == "step"]
    assert all(cmd["start_ns"] <= s["start_ns"] <= s["end_ns"] <= cmd["end_ns"] for s in steps)


def test_generated_stubs_match_the_proto():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gen-proto.sh"), "--check"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr


def test_sigkill_leaves_parquet_readable_up_to_the_last_flush(tmp_path):
    proc, address, sock, out = start_daemon(tmp_path, "--flush-s", "0.2")
    remote = greenprobe.connect(address)
    t = time.monotonic_ns()
    for i in range(300):
        remote.add_mark("before-kill", t + i * 1000, t + i * 1000 + 500, i=i)
    remote.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until a flush has written the marks
        parts = list(out.glob("run-*/parts/marks/part-*.parquet"))
        if parts and pq.read_table(run_dir(out) / "parts" / "marks").num_rows == 300:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=10)
    parts = run_dir(out) / "parts"
    marks = pq.read_table(parts / "marks")
    assert marks.num_rows == 300 and set(marks.column("label").to_pylist()) == {"before-kill"}
    samples = pq.read_table(parts / "samples")
    assert samples.num_rows > 0 and samples.column("t_ns").to_pylist()[0] > 0
    assert (parts / "metadata.json").exists()
    assert not list(parts.glob("*/*.tmp")), "a part is whole or absent"


def test_prometheus_endpoint_serves_energy_and_power_per_domain_and_label(tmp_path):
    import re
    import socket as socket_module
    import urllib.request

    from greenprobe.prometheus import serve

    with greenprobe.Probe(sensors=["synthetic:waveform=constant;base_w=40"], period_us=1000) as probe:
        server, _ = serve(probe, 0)
        t = time.monotonic_ns()
        for i, label in enumerate(["infer", "load", "infer"] * 20):  # 40 infer, 20 load, 5 ms each
            probe.add_mark(label, t + i * 10_000_000, t + i * 10_000_000 + 5_000_000)
        time.sleep(1.2)
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        again = urllib.request.urlopen(url, timeout=5).read().decode()  # counters: nothing counted twice
        server.shutdown()
    host = socket_module.gethostname()
    labels = f'domain="synthetic0",estimated="false",host="{host}",sensor="synthetic",uuid=""'
    power = float(re.search(r"^greenprobe_power_watts\{" + labels + r"\} (\S+)$", text, re.M).group(1))
    energy = float(re.search(r"^greenprobe_energy_joules_total\{" + labels + r"\} (\S+)$", text, re.M).group(1))
    assert abs(power - 40) < 0.5 and 40 * 1.0 < energy < 40 * 3
    assert re.search(r'^greenprobe_sampler_polls_total\{host="[^"]+",sensor="synthetic"\} [1-9]', text, re.M)
    for page in (text, again):
        # a local Probe's own marks: the owner "" (a daemon's clients': uid:N, token:NAME)
        calls = dict(re.findall(r'^greenprobe_label_calls_total\{host="[^"]+",label="(\w+)",owner=""\} (\S+)$', page,
                                re.M))
        assert {k: float(v) for k, v in calls.items()} == {"infer": 40.0, "load": 20.0}
        joules = dict(re.findall(r'^greenprobe_label_energy_joules_total\{domain="synthetic0",host="[^"]+",'
                                 r'label="(\w+)",owner="",sensor="synthetic"\} (\S+)$', page, re.M))
        assert abs(float(joules["infer"]) - 40 * 0.005 * 40) < 0.05 * 8  # 40 W over 40 × 5 ms = 8 J
        assert abs(float(joules["load"]) - 40 * 0.005 * 20) < 0.05 * 4



def test_the_daemons_summary_carries_every_column_and_absent_figures_stay_absent(tmp_path):
    """Over gRPC the label summary has the local table's columns, and a label that could not be
    estimated arrives with its status and reason and no energy (not an energy of 0)."""
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    daemon = Daemon(probe, tmp_path / "d.sock")
    probe.start()
    daemon.start()
    try:
        remote = greenprobe.connect(daemon.addresses[0])
        t = time.monotonic_ns()
        for i in range(40):
            remote.add_mark("work", t + i * 4_000_000, t + i * 4_000_000 + 2_000_000)
        remote.add_mark("instant", t + 1, t + 1)  # no time at all: nothing to estimate
        remote.flush()
        time.sleep(0.3)
        probe.stop()  # the same samples for both answers
        rows = remote.summary()
        local = {(r["label"], r["sensor"]): r for r in probe.summary().to_pylist()}
    finally:
        daemon.stop()
        probe.stop()
    from greenprobe.parquet import LABEL_COLUMNS

    got = {(r["label"], r["sensor"]): r for r in rows}
    assert set(got) == set(local)
    assert set(LABEL_COLUMNS) <= set(rows[0])
    work = got[("work", "synthetic")]
    for k, v in local[("work", "synthetic")].items():
        assert work[k] == v or (v is None and work[k] in ("", None)) or (v != v and work[k] is None), k
    instant = got[("instant", "synthetic")]
    assert instant["status"] == "not-estimated" and instant["reason"]
    assert instant["energy_j_per_call"] is None and instant["energy_j_per_call_low"] is None


def test_a_client_streams_samples_whose_columns_say_their_units(tmp_path):
    probe = greenprobe.Probe(sensors=["synthetic:domains=a", "synthetic:quantity=power;domains=b"], period_us=1000)
    daemon = Daemon(probe, tmp_path / "d.sock")
    probe.start()
    daemon.start()
    try:
        remote = greenprobe.connect(daemon.addresses[0])
        kinds = {c["channel"]: c["quantity"] for c in remote.channel_info()}
        assert sorted(kinds.values()) == ["energy", "power"]
        seen = {"energy": 0, "power": 0}
        for batch in remote.samples(since_ns=0):
            assert "value" not in batch
            for c, e, w in zip(batch["channel"], batch["energy_j"], batch["power_w"]):
                assert (e is None, w is None) == ((False, True) if kinds[c] == "energy" else (True, False))
                seen[kinds[c]] += 1
            if min(seen.values()) >= 5:
                break
        assert min(seen.values()) >= 5
    finally:
        daemon.stop()
        probe.stop()


def test_a_sigterm_sent_while_the_daemon_is_stopped_ends_it_after_sigcont(tmp_path):
    """SIGSTOP (a cgroup freezer, a Slurm suspend), then SIGTERM, then SIGCONT: the pending SIGTERM may
    go to any of the daemon's threads, and the daemon must still act on it within 5 s."""
    for k in range(3):
        proc, _, _, out = start_daemon(tmp_path / f"d{k}")
        try:
            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            proc.send_signal(signal.SIGCONT)
            _, err = proc.communicate(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert "stopping: flushing" in err and (run_dir(out) / "intervals.parquet").exists()


def test_the_first_mark_after_greenprobe_daemon_is_set_reaches_the_daemon(tmp_path):
    """$GREENPROBE_DAEMON set after `import greenprobe` (a notebook, a script that reads its config
    first): the mark that finds the daemon is sent too, not only the ones after it."""
    proc, address, _, _ = start_daemon(tmp_path)
    code = ("import os, sys, greenprobe\nfrom greenprobe.client import default_remote\n"
            "os.environ['GREENPROBE_DAEMON'] = sys.argv[1]\n"
            "for i in range(3):\n    with greenprobe.mark('first', i=i):\n        pass\n"
            "default_remote().flush()\nprint(default_remote().mark_count())\n")
    try:
        r = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=60)
    finally:
        stop_daemon(proc)
    assert r.returncode == 0 and "not recorded" not in r.stderr, r.stderr
    assert int(r.stdout) == 3
