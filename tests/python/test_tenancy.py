"""A daemon shared by users who do not trust each other (issue 23): each user's own namespace and a
fair share of every daemon-wide resource, tried with a hostile member of the socket's group beside
a good one. Both are uids made for the test (setpriv), running greenprobe's own client, so the
daemon knows them as the kernel does (SO_PEERCRED on the ring socket)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

import greenprobe
from greenprobe.daemon import Daemon, Limits
from greenprobe.daemon.identity import Caller, Identities, Tokens, parse_tokens
from greenprobe.daemon.limits import FairSlots
from greenprobe.daemon.servicer import pid_vouched

GROUP, HOSTILE, GOOD = 4242, 4243, 4244
PYTHON_DIR = Path(greenprobe.__file__).resolve().parents[1]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root (CI runs as root)")


def as_user(uid: int, code: str, *args, wait: bool = True):
    """greenprobe's client code run as ``uid`` in the socket's group (a subprocess, or its Popen)."""
    cmd = ["setpriv", "--reuid", str(uid), "--regid", str(GROUP), "--clear-groups", sys.executable, "-c", code,
           *map(str, args)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PYTHON_DIR), "HOME": "/tmp"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def shared(tmp_path_factory):
    """A daemon whose socket the group reaches, in a folder others may pass through, and the folder."""
    if os.geteuid() != 0:
        pytest.skip("switching uid needs root (CI runs as root)")
    check = as_user(GOOD, "import greenprobe, grpc")
    if check.returncode:
        pytest.skip(f"another uid cannot run this checkout's Python: {check.stderr.strip()[-200:]}")
    d = Path(tempfile.mkdtemp(prefix="gp-tenancy-", dir="/tmp"))
    os.chmod(d, 0o711)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def serve(folder: Path, clock: str = "real", **limits) -> tuple:
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000, columnar_marks=True, clock=clock)
    probe.start()
    daemon = Daemon(probe, folder / "d.sock", group=str(GROUP), save_dir=folder / "saves",
                    limits=Limits(**limits)).start()
    return probe, daemon, daemon.addresses[0]


def stop(probe, daemon) -> None:
    daemon.stop(grace_s=0.5)
    probe.stop()


class Polls:
    """Polls a virtual-clock Probe at the real clock's instants, every millisecond, until ``freeze``:
    then no sample comes any more, and a figure asked twice rests on the same samples."""

    def __init__(self, probe):
        import threading

        self.probe, self.frozen = probe, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.frozen.is_set():
            self.probe.poll_at(time.monotonic_ns())
            time.sleep(0.001)

    def freeze(self):
        self.frozen.set()
        self.thread.join()


GOOD_MARKS = """
import json, os, sys, time, greenprobe
from greenprobe.client import default_remote
address, marked, frozen, ready, go = sys.argv[1:6]
os.environ["GREENPROBE_DAEMON"] = address
probe = default_remote()  # the one greenprobe.mark sends to
for i in range(30):
    with greenprobe.mark("infer", step=i):
        t = time.perf_counter()
        while time.perf_counter() - t < 0.01:
            pass
probe.flush()
open(marked, "w").close()
while not os.path.exists(frozen):  # the daemon's sampling stops: both figures rest on the same samples
    time.sleep(0.02)

def figures():
    rows = [r for r in probe.summary() if r["label"] == "infer"]
    return {f"{r['sensor']}/{r['domain']}": r["energy_j_per_call"] for r in rows}

before = figures()
open(ready, "w").write(json.dumps([greenprobe.now_ns(), probe.status()["marks"]]))
while not os.path.exists(go):
    time.sleep(0.02)
after = figures()
# a new attribute name and a new label, after the other user used up its own share of both
with greenprobe.mark("late", brand_new_attribute=1):
    pass
probe.flush()
table = probe.intervals()
owners = sorted(set(table.column("owner").to_pylist()))
verified = sorted(set(table.column("pid_verified").to_pylist()))
try:
    probe.summary(owner="uid:%d" % (os.getuid() - 1))
    peek = "allowed"
except greenprobe.DaemonError as e:
    peek = str(e)
print(json.dumps({"before": before, "after": after, "marks": probe.status()["marks"], "owners": owners,
                  "verified": verified, "rows": table.num_rows, "peek": peek}))
"""

HOSTILE_MARKS = """
import json, os, sys, time, greenprobe
from greenprobe.client import _channel
from greenprobe.ring_client import IdentityLink, ring_socket
from greenprobe.v1 import probe_pb2 as pb, probe_pb2_grpc as pb_grpc
from greenprobe.frames import frame
address, t0 = sys.argv[1], int(sys.argv[2])
probe = greenprobe.connect(address)
# 400 fake 1 us marks of the good user's label, over the good user's own run
for k in range(400):
    probe.add_mark("infer", t0 - 400_000_000 + k * 1_000_000, t0 - 400_000_000 + k * 1_000_000 + 1_000)
probe.flush()
for j in range(4):  # 253 attribute names (64 a mark at most), 254 with pid: all but 2 of its share
    probe.add_mark("names", t0, t0 + 1, **{f"a{k}": k for k in range(64 * j, min(64 * j + 64, 253))})
probe.flush()
for k in range(300):  # 300 labels: past its share
    probe.add_mark(f"label{k}", t0, t0 + 1)
try:
    probe.flush()
    flushed = "ok"
except greenprobe.DaemonError as e:
    flushed = str(e)
# a batch claiming pid 1, through a session of its own
link = IdentityLink(ring_socket(address))
link.session_metadata(5)
stub = pb_grpc.ProbeStub(_channel(address, None, session=lambda: link.session_metadata(0)))
msg = pb.MarkBatch()
msg.columns.frames = frame(("claimed", t0, t0 + 1, 0, None, True))
msg.columns.pid = 1
stub.RecordMarks(msg, timeout=10)
print(json.dumps({"flushed": flushed, "own": probe.status()["marks"]}))
"""


@ROOT_ONLY
def test_each_user_sees_only_their_marks_and_their_figures_hold_beside_a_hostile_one(shared):
    probe, daemon, address = serve(shared, "virtual", max_labels_per_user=256, max_attr_names=256)
    polls = Polls(probe)
    try:
        hand = shared / "hand"  # where the good user says it is ready, and hears to go on
        hand.mkdir()
        os.chown(hand, GOOD, GROUP)
        good = as_user(GOOD, GOOD_MARKS, address, *(hand / f for f in ("marked", "frozen", "ready", "go")), wait=False)
        deadline = time.monotonic() + 60
        while not (hand / "marked").exists():
            assert good.poll() is None and time.monotonic() < deadline, good.stderr.read() if good.poll() else "slow"
            time.sleep(0.05)
        time.sleep(0.05)  # the sensor updates once more after the last mark
        polls.freeze()
        (hand / "frozen").write_text("")
        while not (hand / "ready").exists():
            assert good.poll() is None and time.monotonic() < deadline, good.stderr.read() if good.poll() else "slow"
            time.sleep(0.05)
        time.sleep(0.1)
        t0, good_marks = json.loads((hand / "ready").read_text())
        hostile = as_user(HOSTILE, HOSTILE_MARKS, address, t0)
        assert hostile.returncode == 0, hostile.stderr
        (hand / "go").write_text("")
        out, err = good.communicate(timeout=120)
        assert good.returncode == 0, err
        admin = greenprobe.connect(address)  # root: the daemon's user, an admin
        rows = admin.summary()
        everyone = admin.intervals()
    finally:
        polls.freeze()
        stop(probe, daemon)
    bad = json.loads(hostile.stdout)
    seen = json.loads(out)
    # the hostile user's own limits: the 300th label passed its share, refused with the limit and the user
    assert "--max-labels-per-user" in bad["flushed"] and f"uid:{HOSTILE}" in bad["flushed"], bad
    assert seen["before"] and seen["after"] == pytest.approx(seen["before"], rel=0.01), seen
    assert seen["marks"] == good_marks + 1 == 31, "the good user counts its own marks only"
    assert seen["owners"] == [f"uid:{GOOD}"] and seen["rows"] % 31 == 0 and seen["rows"] > 0
    assert seen["verified"] == [True], "a ring's pid is the kernel's"
    assert "PERMISSION_DENIED" in seen["peek"] and "only an admin" in seen["peek"], seen["peek"]
    owners = {r["owner"] for r in rows}
    assert {f"uid:{GOOD}", f"uid:{HOSTILE}"} <= owners, "an admin sees every owner's rows, named"
    infer_calls = {r["owner"]: r["calls"] for r in rows if r["label"] == "infer" and r["sensor"] == "all"}
    assert infer_calls == {f"uid:{GOOD}": 30, f"uid:{HOSTILE}": 400}
    claimed = [r for r in everyone.to_pylist() if r["label"] == "claimed"]
    assert claimed and {(r["pid"], r["pid_verified"]) for r in claimed} == {(1, False)}, "a claimed pid is marked so"


FLOOD = """
import os, sys, threading, time, greenprobe
from greenprobe.client import _channel
from greenprobe.ring_client import IdentityLink, ring_socket
from greenprobe.v1 import probe_pb2 as pb, probe_pb2_grpc as pb_grpc
from greenprobe.frames import frame
address, seconds, kinds = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
link = IdentityLink(ring_socket(address))
link.session_metadata(5)
stop = time.monotonic() + seconds
batch = pb.MarkBatch()
batch.columns.frames = b"".join(frame(("flood", 1000 + k, 2000 + k, 0, None, True)) for k in range(100_000))
batch.columns.pid = os.getpid()

def channel():
    return pb_grpc.ProbeStub(_channel(address, None, session=lambda: link.session_metadata(0)))

def flood():
    stub = channel()
    while time.monotonic() < stop:
        try:
            stub.RecordMarks(batch, timeout=30)
        except Exception:
            time.sleep(0.01)

def query():
    stub = channel()
    while time.monotonic() < stop:
        for call in (lambda: stub.Summary(pb.SummaryRequest(), timeout=30),
                     lambda: stub.Table(pb.TableRequest(name="intervals"), timeout=30)):
            try:
                call()
            except Exception:
                time.sleep(0.01)

def streams():
    held = []
    while time.monotonic() < stop:
        try:
            it = channel().StreamSamples(pb.StreamSamplesRequest(since_ns=time.monotonic_ns()))
            next(it)
            held.append(it)
        except Exception:
            time.sleep(0.05)
    for it in held:
        it.cancel()

def rings():
    links = []
    while time.monotonic() < stop and len(links) < 200:
        links.append(IdentityLink(ring_socket(address)))
    time.sleep(max(stop - time.monotonic(), 0))

work = {"batches": [flood] * 8, "queries": [query] * 4, "streams": [streams], "sessions": [rings]}
threads = [threading.Thread(target=f) for k in kinds for f in work[k]]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done")
"""

GOOD_CALLS = """
import json, os, sys, time, greenprobe
from greenprobe.client import default_remote
address, seconds = sys.argv[1], float(sys.argv[2])
os.environ["GREENPROBE_DAEMON"] = address
probe = default_remote()  # the one greenprobe.mark sends to
os.environ["GREENPROBE_MARK_RING"] = "0"
by_grpc = greenprobe.connect(address)  # its marks through gRPC
lat, errors = {}, []

def timed(name, fn):
    t = time.monotonic()
    try:
        fn()
    except Exception as e:
        errors.append(f"{name}: {e}")
    lat.setdefault(name, []).append(time.monotonic() - t)

def ring_mark():
    with greenprobe.mark("good"):
        pass
    probe.flush()

def grpc_mark():
    now = time.monotonic_ns()
    by_grpc.add_mark("good", now - 1000, now)
    by_grpc.flush()

def stream():
    it = probe.samples(since_ns=time.monotonic_ns() - 10**8)
    next(it)
    it.close()

time.sleep(1.0)  # the flood is under way
stop = time.monotonic() + seconds
while time.monotonic() < stop:
    timed("status", probe.status)
    timed("ring mark and flush", ring_mark)
    timed("grpc mark and flush", grpc_mark)
    now = time.monotonic_ns()
    timed("energy", lambda: probe.energy(now - 10**9, now))
    timed("stream", stream)
    time.sleep(0.3)
print(json.dumps({"worst": {k: max(v) for k, v in lat.items()}, "calls": sum(map(len, lat.values())),
                  "errors": errors, "latencies": lat}))
"""


@ROOT_ONLY
def test_one_users_flood_of_batches_queries_streams_and_sessions_leaves_another_served(shared):
    probe, daemon, address = serve(shared)
    try:
        hostile = as_user(HOSTILE, FLOOD, address, 9, "batches,queries,streams,sessions", wait=False)
        good = as_user(GOOD, GOOD_CALLS, address, 6)
        hostile_out, hostile_err = hostile.communicate(timeout=120)
    finally:
        stop(probe, daemon)
    assert hostile.returncode == 0, hostile_err
    assert good.returncode == 0, good.stderr
    seen = json.loads(good.stdout)
    assert seen["errors"] == [], seen["errors"]
    assert seen["calls"] >= 2 * 5, seen  # two rounds of the five calls at least
    assert max(seen["worst"].values()) <= 1.0, seen["worst"]


# -- the parts, without uids ---------------------------------------------------------------------
def test_tokens_name_their_holders_and_a_bare_token_is_one_shared_admin():
    (bare,) = parse_tokens("  s3cret-s3cret-s3cret\n", "file")
    assert (bare.name, bare.admin, bare.shared) == ("token", True, True)
    named = parse_tokens("# users\nalice aaaaaaaaaaaaaaaaaaaa\nbob bbbbbbbbbbbbbbbbbbbb admin\n", "file")
    tokens = Tokens(named)
    assert tokens.holder("Bearer aaaaaaaaaaaaaaaaaaaa").name == "alice"
    assert tokens.holder("Bearer bbbbbbbbbbbbbbbbbbbb").admin
    assert tokens.holder("Bearer cccccccccccccccccccc") is None and tokens.holder(None) is None
    for text, says in (("alice a b c\n", "is not NAME TOKEN"), ("alice x\nalice y\n", "appears twice"),
                       ("a x\nb x\n", "share one token"), ("al/ice xxxxxxxxxxxxxxxxxxxxx\n", "characters other")):
        with pytest.raises(greenprobe.ConfigError, match=says):
            parse_tokens(text, "file")


class Context:
    def __init__(self, peer: str, metadata=(), cn: bytes | None = None):
        self._peer, self._meta, self._cn = peer, tuple(metadata), cn

    def peer(self):
        return self._peer

    def invocation_metadata(self):
        return self._meta

    def auth_context(self):
        return {"x509_common_name": [self._cn]} if self._cn else {}


def test_a_call_is_its_sessions_uid_its_tokens_name_or_its_certificates_name():
    ids = Identities({"s1": (1234, 1000), "s0": (99, 0)},
                     Tokens(parse_tokens("alice aaaaaaaaaaaaaaaaaaaa\n", "f")))
    assert ids.of(Context("unix:", [("greenprobe-session", "s1")])) == Caller("uid:1000", False, 1000, 1234)
    assert ids.of(Context("unix:", [("greenprobe-session", "s0")])).admin, "root is an admin"
    assert ids.of(Context("unix:", [("greenprobe-session", "forged")])).owner == "unverified"
    assert ids.of(Context("unix:")).owner == "unverified"
    tcp = Context("ipv4:127.0.0.1:5", [("authorization", "Bearer aaaaaaaaaaaaaaaaaaaa")], cn=b"carol")
    assert ids.of(tcp) == Caller("token:alice"), "a named token names its holder, whatever the certificate"
    shared = Identities(tokens=Tokens(parse_tokens("ssssssssssssssssssss\n", "f")))
    assert shared.of(Context("ipv6:[::1]:5", [("authorization", "Bearer ssssssssssssssssssss")], cn=b"carol")) == \
        Caller("cert:carol"), "one shared token: the client certificate names the person"
    assert Caller("uid:1000").folder == "uid-1000" and Caller("cert:a b/../c").folder == "cert-a-b-..-c"


def test_a_pid_is_vouched_for_only_as_the_sessions_process_or_its_descendant():
    me = Caller("uid:0", pid=os.getpid())
    assert pid_vouched(me, os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_vouched(me, child.pid), "a worker the client started sends for it"
        assert not pid_vouched(Caller("uid:0", pid=child.pid), os.getpid()), "a parent is not a descendant"
    finally:
        child.kill()
        child.wait()
    assert not pid_vouched(me, 1) and not pid_vouched(Caller("unverified"), os.getpid())
    assert not pid_vouched(me, 2 ** 22 + 7), "a pid that does not exist"


def test_fair_slots_keep_a_share_for_each_user_and_serve_waiters_in_turn():
    import threading

    slots = FairSlots(total=2, per_owner=1, wait_s=5.0)
    assert slots.acquire("a") is None
    assert slots.acquire("a") == "share", "a's second call passes its share at once, not after a wait"
    assert slots.acquire("b") is None
    order = []

    def waiter(owner):
        assert slots.acquire(owner) is None
        order.append(owner)

    t = threading.Thread(target=waiter, args=("c",))
    t.start()
    time.sleep(0.1)
    assert order == [] and slots.acquire("c") == "share", "c waits with one call at most"
    slots.release("a")
    t.join(5)
    assert order == ["c"]
    quick = FairSlots(total=1, per_owner=1, wait_s=0.05)
    assert quick.acquire("x") is None and quick.acquire("y") == "busy"
    quick.release("x")
    assert quick.acquire("y") is None


def scrape(port: int, token: str) -> str:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    return urllib.request.urlopen(req, timeout=5).read().decode()


def test_prometheus_shows_each_token_its_own_label_series_within_its_share():
    import re

    from greenprobe.daemon.access import as_tokens  # noqa: F401 - the daemon passes Tokens
    from greenprobe.prometheus import serve
    from greenprobe.store import marks_table

    alice, bob, admin = "a" * 24, "b" * 24, "c" * 24
    tokens = Tokens(parse_tokens(f"alice {alice}\nbob {bob}\nops {admin} admin\n", "f"))
    with greenprobe.Probe(sensors=["synthetic:waveform=constant;base_w=40"], period_us=1000,
                          columnar_marks=True) as probe:
        server, _ = serve(probe, 0, token=tokens, max_series_per_user=3)
        t = time.monotonic_ns()
        probe.marks_store.extend_table(marks_table([("infer", t, t + 5_000_000, 0, None, True)] * 4, "token:alice"), t)
        bob_marks = [(f"l{k}", t, t + 1000, 0, None, True) for k in range(5)] + [("infer", t, t + 1000, 0, None, True)]
        probe.marks_store.extend_table(marks_table(bob_marks, "token:bob"), t)
        pages = {who: scrape(server.server_port, tok) for who, tok in (("alice", alice), ("bob", bob), ("ops", admin))}
        server.shutdown()

    def calls(page):
        return {(o, label): float(v) for label, o, v in
                re.findall(r'^greenprobe_label_calls_total\{host="[^"]+",label="([^"]+)",owner="([^"]*)"\} (\S+)$',
                           page, re.M)}

    assert calls(pages["alice"]) == {("token:alice", "infer"): 4.0}, "alice sees her series only"
    assert calls(pages["bob"]) == {("token:bob", "l0"): 1.0, ("token:bob", "l1"): 1.0, ("token:bob", "l2"): 1.0,
                                   ("token:bob", "(other)"): 3.0}, "bob's labels past his share fold into his own"
    assert calls(pages["ops"]) == {**calls(pages["alice"]), **calls(pages["bob"])}, "an admin sees every owner's"
    assert "greenprobe_energy_joules_total" in pages["alice"], "the machine's figures are everyone's"


IDLE_CONNECTIONS = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    try:
        held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2))
    except OSError:
        pass
print(len(held), flush=True)
time.sleep(float(sys.argv[3]))
"""


@ROOT_ONLY
def test_one_users_idle_connections_to_metrics_leave_the_scrapes_served():
    from greenprobe.prometheus import serve

    token = "t" * 24
    with greenprobe.Probe(sensors=["synthetic"], period_us=1000) as probe:
        server, _ = serve(probe, 0, token=token)
        idle = subprocess.Popen(["setpriv", "--reuid", str(HOSTILE), "--regid", str(HOSTILE), "--clear-groups",
                                 "/usr/bin/python3", "-c", IDLE_CONNECTIONS, str(server.server_port), "200", "8"],
                                stdout=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})
        try:
            assert int(idle.stdout.readline()) == 200  # the kernel accepted them all; the server keeps few
            worst = 0.0
            for _ in range(5):
                t0 = time.monotonic()
                assert "greenprobe_energy_joules_total" in scrape(server.server_port, token)
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.3)
        finally:
            idle.kill()
            idle.wait()
            server.shutdown()
    assert worst < 1.0, worst


def test_one_users_marks_fill_at_most_half_the_disk_the_run_may_take(tmp_path):
    """--max-out-bytes: a user whose marks reach half of it is refused, saying so (nothing written is
    deleted), while another user's marks are still taken."""
    from helpers import mark_batch, own_channel
    from test_daemon import start_daemon, stop_daemon

    from greenprobe.v1 import probe_pb2 as pb  # noqa: F401
    from greenprobe.v1 import probe_pb2_grpc as pb_grpc

    proc, address, _, out = start_daemon(tmp_path, "--max-out-bytes", "2M", "--flush-s", "0.2")
    try:
        me = pb_grpc.ProbeStub(own_channel(address))  # root: uid:0
        batch = mark_batch([("big", 10 + k, 20 + k, 0, {"blob": "x" * 1000}, True) for k in range(100)])
        sent, why = 0, ""
        for _ in range(100):  # ~100 KiB a batch: the 1 MiB share within a dozen
            try:
                me.RecordMarks(batch, timeout=10)
                sent += 100
            except grpc.RpcError as e:
                why = f"{e.code().name}: {e.details()}"
                break
        parts_then = sorted(p.name for p in out.glob("run-*/parts/marks/*.parquet"))
        other = pb_grpc.ProbeStub(grpc.insecure_channel(address))  # another identity: its own share
        assert other.RecordMarks(mark_batch([("small", 10, 20, 0, None, True)]), timeout=10).accepted == 1
        time.sleep(0.5)
        parts_now = sorted(p.name for p in out.glob("run-*/parts/marks/*.parquet"))
    finally:
        err = stop_daemon(proc)
    assert why.startswith("RESOURCE_EXHAUSTED: uid:0 has sent") and "half of --max-out-bytes 2 MiB" in why, why
    assert 0 < sent < 10_000
    assert set(parts_then) <= set(parts_now), "nothing written is deleted"
    assert "may take 2 MiB (--max-out-bytes)" in err
