"""The daemon's access policy, tried as a hostile or careless local user would: a socket-group
member, an outsider (another uid, through setpriv), and the daemon's own operator.

The uid-switched clients are the system's python3 with the standard library only (a raw connect,
an open(), an HTTP request): the policy they test is the kernel's and the listeners', not grpc's.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest

import greenprobe
from helpers import mark_batch, own_channel
from greenprobe.daemon import Daemon, Limits
from greenprobe.daemon import access
from greenprobe.v1 import probe_pb2 as pb
from greenprobe.v1 import probe_pb2_grpc as pb_grpc

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root (CI runs as root)")
OUTSIDER, MEMBER_GID = 65534, 4242  # `nobody`, and a group no one else has
TOKEN = "t" * 24
STDLIB_PY = "/usr/bin/python3"


def as_user(code: str, *args, groups=()) -> subprocess.CompletedProcess:
    """Runs stdlib-only Python ``code`` as the outsider uid, in ``groups`` if any."""
    ids = ["--reuid", str(OUTSIDER), "--regid", str(OUTSIDER)]
    ids += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", *ids, STDLIB_PY, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin"})


CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); print("connected")
except OSError as e:
    print(type(e).__name__)
"""
READ = """
import sys
try:
    open(sys.argv[1], "rb").read(1); print("read")
except OSError as e:
    print(type(e).__name__)
"""


@pytest.fixture
def shared_dir():
    """A folder others may pass through (0711), as /run is; pytest's tmp_path is root-only 0700."""
    d = Path(tempfile.mkdtemp(prefix="gp-access-", dir="/tmp"))  # not $TMPDIR: an earlier test may point it
    os.chmod(d, 0o711)                                            # into a root-only folder
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def served(sock: Path, **kw) -> tuple[greenprobe.Probe, Daemon]:
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    daemon = Daemon(probe, sock, **kw)
    probe.start()
    daemon.start()
    return probe, daemon


def stop(probe, daemon) -> None:
    daemon.stop()
    probe.stop()


# -- the socket ----------------------------------------------------------------------------------
@ROOT_ONLY
def test_only_the_socket_group_connects_and_reads_the_output_files(shared_dir):
    sock_dir = shared_dir / "run"
    sock_dir.mkdir()
    os.chmod(sock_dir, 0o711)  # passable by all: the socket file itself must keep the outsider out
    probe, daemon = served(sock_dir / "d.sock", group=str(MEMBER_GID), save_dir=shared_dir / "saves")
    try:
        st = os.stat(sock_dir / "d.sock")
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, MEMBER_GID)
        assert as_user(CONNECT, sock_dir / "d.sock").stdout.strip() == "PermissionError"
        assert as_user(CONNECT, sock_dir / "d.sock", groups=[MEMBER_GID]).stdout.strip() == "connected"
        ring = sock_dir / "d.sock.ring"  # the shared-memory mark rings' socket: the same policy
        st = os.stat(ring)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, MEMBER_GID)
        assert as_user(CONNECT, ring).stdout.strip() == "PermissionError"
        assert as_user(CONNECT, ring, groups=[MEMBER_GID]).stdout.strip() == "connected"
        stub = pb_grpc.ProbeStub(own_channel(f"unix:{sock_dir / 'd.sock'}"))
        probe.add_mark("x", 1, 2)
        old = os.umask(access.UMASK)  # as `greenprobe daemon` runs
        try:
            paths = stub.Save(pb.SaveRequest(directory="run1"), timeout=30).paths
        finally:
            os.umask(old)
    finally:
        stop(probe, daemon)
    saved = Path(paths["intervals"])
    assert saved.parent == (shared_dir / "saves" / "run1").resolve()
    st = os.stat(saved)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, MEMBER_GID)  # the group's, through the setgid folder
    folder = os.stat(saved.parent)
    assert stat.S_IMODE(folder.st_mode) == 0o2750 and folder.st_gid == MEMBER_GID
    os.chmod(shared_dir / "saves", 0o2751)  # even with the way open, the files keep the outsider out
    os.chmod(saved.parent, 0o2751)
    assert as_user(READ, saved).stdout.strip() == "PermissionError"
    assert as_user(READ, saved, groups=[MEMBER_GID]).stdout.strip() == "read"


def test_a_socket_path_that_is_a_file_is_refused_and_kept(tmp_path):
    victim = tmp_path / "important.txt"
    victim.write_text("keep me")
    with pytest.raises(greenprobe.ConfigError, match="is not a socket: the daemon will not replace it"):
        Daemon(greenprobe.Probe(sensors=["synthetic"]), victim).prepare()
    assert victim.read_text() == "keep me"


@ROOT_ONLY
def test_a_socket_folder_someone_else_made_or_can_write_is_refused(tmp_path):
    theirs = tmp_path / "greenprobe-0"  # as /tmp/greenprobe-UID made first by another user
    theirs.mkdir(mode=0o700)
    os.chown(theirs, OUTSIDER, OUTSIDER)
    probe = greenprobe.Probe(sensors=["synthetic"])
    with pytest.raises(greenprobe.ConfigError, match="belongs to uid 65534.*someone else could swap the socket"):
        Daemon(probe, theirs / "daemon.sock", private_socket_dir=True).prepare()
    with pytest.raises(greenprobe.ConfigError, match="belongs to uid 65534, not this user"):
        Daemon(probe, theirs / "daemon.sock").prepare()
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with pytest.raises(greenprobe.ConfigError, match=r"writable by others \(mode 0777\)"):
        Daemon(probe, open_dir / "daemon.sock").prepare()
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(greenprobe.ConfigError, match="is not a folder"):
        Daemon(probe, link / "daemon.sock").prepare()
    made = tmp_path / "fresh"
    Daemon(probe, made / "daemon.sock", private_socket_dir=True).prepare()
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700  # made private, accepted


# -- Save ----------------------------------------------------------------------------------------
def test_save_writes_only_under_the_save_folder_and_never_through_a_link(tmp_path):
    saves, elsewhere = tmp_path / "saves", tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "intervals.parquet"
    target.write_text("root-only data")
    probe, daemon = served(tmp_path / "d.sock", save_dir=saves)
    stub = pb_grpc.ProbeStub(own_channel(f"unix:{tmp_path / 'd.sock'}"))

    def save(name):
        try:
            return grpc.StatusCode.OK, dict(stub.Save(pb.SaveRequest(directory=name), timeout=30).paths)
        except grpc.RpcError as e:
            return e.code(), e.details()

    try:
        probe.add_mark("x", 1, 2)
        for name in (str(elsewhere), "../elsewhere", "a/../../elsewhere", "/etc", ".hidden", "", "a/" * 9 + "b"):
            code, why = save(name)
            assert code == grpc.StatusCode.PERMISSION_DENIED, (name, code, why)
        (saves / "trap").symlink_to(elsewhere)  # a link planted in the save folder is not followed
        code, why = save("trap")
        assert code == grpc.StatusCode.PERMISSION_DENIED and "not a folder the daemon made" in why
        code, why = save("trap/deeper")
        assert code == grpc.StatusCode.PERMISSION_DENIED
        (saves / "ok").mkdir()
        (saves / "ok" / ".intervals.parquet.tmp").symlink_to(target)  # the old fixed temporary name, as a trap
        code, paths = save("ok")
        assert code == grpc.StatusCode.OK and paths["intervals"] == str((saves / "ok" / "intervals.parquet").resolve())
        code, paths2 = save(str(saves / "nested" / "run2"))  # an absolute name inside the folder is fine
        assert code == grpc.StatusCode.OK
    finally:
        stop(probe, daemon)
    assert target.read_text() == "root-only data"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["intervals.parquet"]
    assert pq.read_table(paths["intervals"]).num_rows >= 1
    assert Path(paths2["labels"]).parent == (saves / "nested" / "run2").resolve()
    assert not list(saves.rglob("*.tmp")) or list(saves.rglob("*.tmp")) == [saves / "ok" / ".intervals.parquet.tmp"]


def test_save_without_a_save_folder_is_refused_with_the_fix(tmp_path):
    probe, daemon = served(tmp_path / "d.sock")
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(f"unix:{tmp_path / 'd.sock'}"))
    try:
        with pytest.raises(grpc.RpcError) as e:
            stub.Save(pb.SaveRequest(directory=str(tmp_path / "x")), timeout=30)
    finally:
        stop(probe, daemon)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "--save-dir" in e.value.details()
    assert not (tmp_path / "x").exists()


def test_saves_stop_once_the_save_folder_holds_its_limit(tmp_path):
    import argparse

    from greenprobe.cli.common import parse_bytes as _bytes

    probe, daemon = served(tmp_path / "d.sock", save_dir=tmp_path / "saves", save_max_bytes=64 << 10)
    stub = pb_grpc.ProbeStub(own_channel(f"unix:{tmp_path / 'd.sock'}"))
    try:
        probe.add_mark("x", 1, 2)
        saved = 0
        with pytest.raises(grpc.RpcError) as e:
            for k in range(100):  # each save holds a few tens of KiB: the limit is reached within a few
                stub.Save(pb.SaveRequest(directory=f"run{k}"), timeout=30)
                saved += 1
    finally:
        stop(probe, daemon)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--save-max-bytes 0 MiB" not in e.value.details()
    assert "--save-max-bytes" in e.value.details() and "save_local()" in e.value.details()
    assert 1 <= saved < 100 and not (tmp_path / "saves" / f"run{saved}").exists()
    used = sum(f.stat().st_blocks * 512 for f in (tmp_path / "saves").rglob("*") if f.is_file())
    last = sum(f.stat().st_blocks * 512 for f in (tmp_path / "saves" / f"run{saved - 1}").iterdir())
    assert used - last < 64 << 10 <= used, "refused only once the limit was reached, at most one save over it"
    assert (_bytes("20G"), _bytes("512k"), _bytes("1.5MiB"), _bytes("0")) == (20 << 30, 512 << 10, 3 << 19, 0)
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        _bytes("lots")


# -- TCP, tokens, TLS, Prometheus ----------------------------------------------------------------
def test_tcp_needs_a_token_even_on_loopback_and_checks_it(tmp_path):
    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    with pytest.raises(greenprobe.ConfigError, match="loopback included, serves every local user"):
        Daemon(probe, None, listen="127.0.0.1:0")
    with pytest.raises(greenprobe.ConfigError, match="is not a loopback address"):
        Daemon(probe, None, listen="0.0.0.0:0", token=TOKEN)
    with pytest.raises(greenprobe.ConfigError, match="off loopback needs TLS"):
        Daemon(probe, None, listen="0.0.0.0:0", token=TOKEN, allow_remote=True)
    probe, daemon = served(tmp_path / "d.sock", listen="127.0.0.1:0", token=TOKEN)
    try:
        tcp = next(a for a in daemon.addresses if not a.startswith("unix:"))
        stub = pb_grpc.ProbeStub(grpc.insecure_channel(tcp))
        for meta in ((), (("authorization", "Bearer wrong"),), (("authorization", f"Bearer {TOKEN}x"),)):
            with pytest.raises(grpc.RpcError) as e:
                stub.Status(pb.StatusRequest(), metadata=meta, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.Status(pb.StatusRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
        assert ok.version == greenprobe.__version__
        local = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))  # the socket needs no token
        assert local.Status(pb.StatusRequest(), timeout=10).version == greenprobe.__version__
    finally:
        stop(probe, daemon)


def make_certs(d: Path) -> dict:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, by openssl."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "2",
         "-subj", "/CN=greenprobe test CA")
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / f"{who}.key", "-out", d / f"{who}.csr",
             "-subj", f"/CN={who}")
        (d / f"{who}.ext").write_text(ext + "\n")
        ossl("x509", "-req", "-in", d / f"{who}.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key", "-CAcreateserial",
             "-out", d / f"{who}.pem", "-days", "2", "-extfile", d / f"{who}.ext")
    return {k: (d / k).read_bytes() for k in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_remote_listening_speaks_tls_and_mutual_tls_with_the_token(tmp_path):
    c = make_certs(tmp_path)
    tls = access.tls_files(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    probe, daemon = served(tmp_path / "d.sock", listen="0.0.0.0:0", allow_remote=True, token=TOKEN, tls=tls)
    port = daemon.addresses[-1].rsplit(":", 1)[1]
    auth = (("authorization", f"Bearer {TOKEN}"),)
    try:
        mutual = grpc.ssl_channel_credentials(c["ca.pem"], c["client.key"], c["client.pem"])
        stub = pb_grpc.ProbeStub(grpc.secure_channel(f"127.0.0.1:{port}", mutual))
        assert stub.Status(pb.StatusRequest(), metadata=auth, timeout=10).version == greenprobe.__version__
        for creds in (None, grpc.ssl_channel_credentials(c["ca.pem"])):  # plain text; TLS without a client cert
            chan = grpc.insecure_channel(f"127.0.0.1:{port}") if creds is None else \
                grpc.secure_channel(f"127.0.0.1:{port}", creds)
            with pytest.raises(grpc.RpcError) as e:
                pb_grpc.ProbeStub(chan).Status(pb.StatusRequest(), metadata=auth, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as e:  # the certificate alone does not replace the token
            stub.Status(pb.StatusRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stop(probe, daemon)


def test_prometheus_needs_the_bearer_token_and_tls_off_loopback(tmp_path):
    from greenprobe.prometheus import serve

    with pytest.raises(greenprobe.ConfigError, match="loopback included"):
        access.check_tcp("--prometheus-port", "127.0.0.1", False, None, False)
    with pytest.raises(greenprobe.ConfigError, match="0.0.0.0 is not a loopback address"):
        access.check_tcp("--prometheus-port", "0.0.0.0", False, TOKEN, False)
    with pytest.raises(greenprobe.ConfigError, match="off loopback needs TLS"):
        access.check_tcp("--prometheus-port", "0.0.0.0", True, TOKEN, False)
    c = make_certs(tmp_path)
    tls = access.tls_files(tmp_path / "server.pem", tmp_path / "server.key", None)
    with greenprobe.Probe(sensors=["synthetic"], period_us=1000) as probe:
        time.sleep(0.3)
        plain, _ = serve(probe, 0, token=TOKEN)
        secure, _ = serve(probe, 0, token=TOKEN, tls=tls)
        url = f"http://127.0.0.1:{plain.server_port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=5)
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer nope"}), timeout=5)
        assert e.value.code == 401
        ok = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"}),
                                    timeout=5).read().decode()
        assert "greenprobe_energy_joules_total" in ok
        import ssl

        ctx = ssl.create_default_context(cadata=c["ca.pem"].decode())
        req = urllib.request.Request(f"https://127.0.0.1:{secure.server_port}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        assert "greenprobe_power_watts" in urllib.request.urlopen(req, timeout=5, context=ctx).read().decode()
        plain.shutdown()
        secure.shutdown()


def test_the_token_comes_from_the_environment_or_a_private_file_never_the_command_line(tmp_path, monkeypatch,
                                                                                       capsys):
    from greenprobe.cli import main as cli_main
    from greenprobe.session import Probe

    def must_not_run(*args, **kwargs):
        raise AssertionError("the daemon went past its checks")

    monkeypatch.setattr(Probe, "start", must_not_run)
    monkeypatch.delenv("GREENPROBE_TOKEN", raising=False)
    sock = tmp_path / "run" / "d.sock"
    base = ["daemon", "--sensors", "synthetic", "--socket", str(sock)]

    def refused(argv) -> tuple[str, str]:
        assert cli_main(base + argv) == 1
        out, err = capsys.readouterr()
        message, fix = err.splitlines()
        return message.removeprefix("greenprobe: "), fix.removeprefix("  fix: ")

    assert refused(["--token", TOKEN]) == (
        "--token puts the token on the command line, where every user sees it (ps)",
        "export GREENPROBE_TOKEN=... or pass --token-file FILE (mode 600)")
    message, fix = refused(["--listen", "127.0.0.1:0"])
    assert message.endswith("needs a token: a port, loopback included, serves every local user whatever --group says")
    assert fix.startswith("export GREENPROBE_TOKEN=$(openssl rand -hex 24)")
    assert refused(["--prometheus-port", "0"])[0].startswith("--prometheus-port on TCP needs a token")
    monkeypatch.setenv("GREENPROBE_TOKEN", "short")
    assert refused(["--listen", "127.0.0.1:0"])[0] == "the token has 5 characters: too short to resist guessing"
    monkeypatch.setenv("GREENPROBE_TOKEN", TOKEN)
    assert refused(["--prometheus-port", "0", "--prometheus-addr", "0.0.0.0"])[0] == \
        "--prometheus-port on 0.0.0.0 is not a loopback address"
    assert refused(["--listen", "0.0.0.0:0", "--allow-remote"])[0] == \
        "--listen 0.0.0.0:0 off loopback needs TLS: the token would cross the network in clear"
    monkeypatch.delenv("GREENPROBE_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o644)
    for mode in (0o644, 0o660, 0o604):  # readable or writable by anyone but its owner
        os.chmod(token_file, mode)
        assert refused(["--token-file", str(token_file), "--listen", "127.0.0.1:0"]) == (
            f"--token-file {token_file} is not this user's alone (owner uid {os.geteuid()}, mode {mode:04o})",
            f"chown $(id -u) {token_file}; chmod 600 {token_file}")
    link = tmp_path / "token-link"
    link.symlink_to(token_file)
    assert refused(["--token-file", str(link), "--listen", "127.0.0.1:0"])[0].startswith(
        f"cannot read --token-file {link}: ")
    os.chmod(token_file, 0o600)
    assert access.load_tokens(str(token_file)).holder(f"Bearer {TOKEN}").name == "token"
    (tmp_path / "bin").write_bytes(b"\xff" * 20)
    os.chmod(tmp_path / "bin", 0o600)
    assert refused(["--token-file", str(tmp_path / "bin"), "--listen", "127.0.0.1:0"])[0].endswith("is not UTF-8 text")
    assert not sock.parent.exists(), "nothing was made before the refusals"


# -- limits --------------------------------------------------------------------------------------
def test_streams_beyond_the_cap_are_refused_and_other_clients_stay_served(tmp_path):
    # the cap in all (a share per user above it: test_mark_ring tests that one)
    probe, daemon = served(tmp_path / "d.sock", limits=Limits(max_streams=4, max_streams_per_user=8))
    address = daemon.addresses[0]
    streams = []
    try:
        refused = 0
        for _ in range(200):  # each on its own connection, as 200 clients would be
            stub = pb_grpc.ProbeStub(grpc.insecure_channel(address))
            it = stub.StreamSamples(pb.StreamSamplesRequest())
            try:
                next(it)
                streams.append(it)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams" in e.details()
                refused += 1
        assert (len(streams), refused) == (4, 196)
        other = pb_grpc.ProbeStub(grpc.insecure_channel(address))
        t0 = time.monotonic()
        assert other.Status(pb.StatusRequest(), timeout=1.0).version == greenprobe.__version__
        assert other.RecordMarks(mark_batch([("a", 1, 2, 0, None, True)]), timeout=1.0).accepted
        assert time.monotonic() - t0 < 1.0
        for it in streams:  # closing a stream frees its place
            it.cancel()
        deadline = time.monotonic() + 5
        while True:
            try:
                next(pb_grpc.ProbeStub(grpc.insecure_channel(address)).StreamSamples(pb.StreamSamplesRequest()))
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "a cancelled stream never gave its place back"
                time.sleep(0.1)
    finally:
        stop(probe, daemon)


def test_hostile_batches_leave_other_clients_served_within_a_second(tmp_path):
    """Four clients send, over and over, the biggest batches the daemon reads (garbage JSON, and
    messages over the size limit) while another asks for its status: each answer within a second."""
    import threading

    probe, daemon = served(tmp_path / "d.sock")
    address = daemon.addresses[0]
    stop_flag = threading.Event()
    refused = []

    def hostile(k: int):
        stub = pb_grpc.ProbeStub(grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]))
        junk = b"\x07" * (15 << 20)  # 15 MiB of frames whose framing is broken
        big = b"\x00" * (20 << 20)  # over the 16 MiB a request may be
        while not stop_flag.is_set():
            for frames in (junk, big):
                try:
                    stub.RecordMarks(mark_batch(frames=frames), timeout=30)
                except grpc.RpcError as e:
                    refused.append(e.code())

    threads = [threading.Thread(target=hostile, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    worst = 0.0
    try:
        other = pb_grpc.ProbeStub(grpc.insecure_channel(address))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            other.Status(pb.StatusRequest(), timeout=1.0)
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.05)
    finally:
        stop_flag.set()
        for t in threads:
            t.join()
        stop(probe, daemon)
    assert worst < 1.0
    assert {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED} <= set(refused)
    assert len(probe.marks()) == 0


def test_attribute_values_parquet_cannot_hold_are_kept_as_text_and_names_are_capped(tmp_path):
    probe, daemon = served(tmp_path / "d.sock", save_dir=tmp_path / "saves", limits=Limits(max_attr_names=10))
    stub = pb_grpc.ProbeStub(own_channel(daemon.addresses[0]))

    def batch(attrs: list, label="x"):
        return mark_batch([(label, 5, 9, 0, a, True) for a in attrs])

    try:
        odd = [{"request_id": 2 ** 64}, {"request_id": 7}, {"cfg": {}}, {"cfg": {"a": [1, 2]}}, {"n": -(2 ** 70)}]
        assert stub.RecordMarks(batch(odd), timeout=10).accepted == 5
        stub.Save(pb.SaveRequest(directory="odd"), timeout=60)  # one odd value must not break Save
        rows = pq.read_table(tmp_path / "saves" / "odd" / "intervals.parquet").to_pylist()
        assert [r["request_id"] for r in rows] == [str(2 ** 64), "7", None, None, None]
        assert [r["cfg"] for r in rows] == [None, None, "{}", '{"a":[1,2]}', None]
        many = [{f"k{i}": i} for i in range(20)]
        with pytest.raises(grpc.RpcError) as e:
            stub.RecordMarks(batch(many), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-attr-names" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.RecordMarks(batch([{"s": "v" * 2000}]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "longer than 1024 bytes" in e.value.details()
        assert len(probe.marks()) == 5, "refused batches are refused whole"
        table = stub.Table(pb.TableRequest(name="intervals"), timeout=60)
        assert len(table.arrow_ipc) > 0
    finally:
        stop(probe, daemon)


def test_marks_beyond_the_cap_are_refused_with_the_limit(tmp_path):
    """Each user holds at most half of the marks the daemon keeps (back-pressure: it sends again once
    they are written); the daemon's cap holds for all users together."""
    probe, daemon = served(tmp_path / "d.sock", limits=Limits(max_marks=4))
    unverified = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))
    daemon.identities.sessions.update({"s1": (os.getpid(), 1001), "s2": (os.getpid(), 1002)})

    def as_uid(uid):
        return [("greenprobe-session", f"s{uid - 1000}")]

    try:
        two = mark_batch([("a", 1, 2, 0, None, True)] * 2)
        assert unverified.RecordMarks(two, timeout=10).accepted == 2
        with pytest.raises(grpc.RpcError) as e:
            unverified.RecordMarks(mark_batch([("a", 1, 2, 0, None, True)]), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unverified has 2 marks not yet written, its share" in e.value.details()
        one = mark_batch([("b", 1, 2, 0, None, True)])
        assert unverified.RecordMarks(one, metadata=as_uid(1001), timeout=10).accepted == 1
        with pytest.raises(grpc.RpcError) as e:
            unverified.RecordMarks(two, metadata=as_uid(1002), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "holds 3 marks in memory and keeps at most 4 (--max-marks)" in e.value.details()
        assert len(probe.marks()) == 3
        assert sorted(probe.marks_table().column("owner").to_pylist()) == ["uid:1001", "unverified", "unverified"]
    finally:
        stop(probe, daemon)


def test_a_local_probe_saves_marks_with_odd_attribute_values(tmp_path):
    with greenprobe.Probe(sensors=["synthetic"], period_us=1000) as probe:
        with greenprobe.mark("infer", request_id=2 ** 64, cfg={}):
            pass
        with greenprobe.mark("infer", request_id=3, cfg={"b": 1}):
            pass
    probe.save(tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / "intervals.parquet").to_pylist()
    assert [(r["request_id"], r["cfg"]) for r in rows if r["label"] == "infer"] == [(str(2 ** 64), "{}"),
                                                                                   ("3", '{"b":1}')]
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "out").iterdir())


def test_raw_socket_connect_helper_sees_a_live_socket(tmp_path):
    """The stdlib client the uid tests use really connects to a live daemon (so its refusals mean something)."""
    probe, daemon = served(tmp_path / "d.sock")
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(tmp_path / "d.sock"))
        s.close()
        assert access.socket_in_use(tmp_path / "d.sock")
    finally:
        stop(probe, daemon)
    assert not access.socket_in_use(tmp_path / "d.sock")


# -- fuzzing -------------------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NAMES = st.one_of(st.text(max_size=60), st.lists(st.sampled_from(["a", "..", ".", "", "b.c", "-x", "~", "/", "%2e"]),
                                                  max_size=10).map("/".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_no_save_name_leads_outside_the_save_folder(tmp_path, name):
    root = access.SaveRoot(tmp_path / "saves", None)
    try:
        fd, _ = root.open(name)
    except access.Refused:
        return
    try:
        where = Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)
    assert where.is_relative_to(root.root.resolve()) and where != root.root.resolve(), (name, where)


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    probe, daemon = served(d / "d.sock", save_dir=d / "saves", limits=Limits(max_marks=10_000))
    yield pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))
    stop(probe, daemon)


CLEAN = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
I64 = st.integers(-(2 ** 63), 2 ** 63 - 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=st.one_of(
    st.builds(lambda a, b: ("Energy", pb.EnergyRequest(start_ns=a, end_ns=b)), I64, I64),
    st.builds(lambda n: ("Table", pb.TableRequest(name=n)), st.one_of(st.sampled_from(["intervals", "labels"]),
                                                                       st.text(max_size=20))),
    st.builds(lambda n: ("Save", pb.SaveRequest(directory=n)), NAMES),
    st.builds(lambda s, c, m: ("StreamSamples", pb.StreamSamplesRequest(since_ns=s, channels=c, max_batch=m)),
              I64, st.lists(st.integers(0, 2 ** 32 - 1), max_size=3), st.integers(0, 2 ** 32 - 1)),
    st.just(("Summary", pb.SummaryRequest())),
    st.builds(lambda f, pid: ("RecordMarks", pb.MarkBatch(columns=pb.MarkColumns(frames=f, pid=pid))),
              st.binary(max_size=300), st.integers(0, 2 ** 32 - 1)),
))
def test_every_rpc_answers_fuzzed_requests_with_a_clean_status(fuzz_daemon, call):
    name, request = call
    stream = name == "StreamSamples"
    try:
        reply = getattr(fuzz_daemon, name)(request, timeout=1.0 if stream else 30)
        if stream:  # one batch at most (a stream from the future has none: its deadline ends it)
            next(iter(reply), None)
            reply.cancel()
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
        if stream and code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
            code = grpc.StatusCode.OK
    assert code in CLEAN, (name, request, code)
    assert fuzz_daemon.Status(pb.StatusRequest(), timeout=5).version == greenprobe.__version__


def test_the_client_speaks_mutual_tls_from_the_environment_and_saves_locally(tmp_path, monkeypatch):
    c = make_certs(tmp_path)
    tls = access.tls_files(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    probe, daemon = served(tmp_path / "d.sock", listen="127.0.0.1:0", token=TOKEN, tls=tls)
    address = daemon.addresses[-1]
    try:
        monkeypatch.setenv("GREENPROBE_TLS_CA", str(tmp_path / "ca.pem"))
        with pytest.raises(greenprobe.DaemonError, match="not reachable"):  # no client certificate
            greenprobe.connect(address, token=TOKEN, timeout_s=3)
        monkeypatch.setenv("GREENPROBE_TLS_CERT", str(tmp_path / "client.pem"))
        with pytest.raises(greenprobe.DaemonError, match="go together"):
            greenprobe.connect(address, token=TOKEN, timeout_s=3)
        monkeypatch.setenv("GREENPROBE_TLS_KEY", str(tmp_path / "client.key"))
        remote = greenprobe.connect(address, token=TOKEN)
        t = time.monotonic_ns()
        for i in range(50):
            remote.add_mark("tls", t + i * 1000, t + i * 1000 + 500, i=i)
        remote.flush()
        paths = remote.save_local(tmp_path / "mine")
        remote.close()
    finally:
        stop(probe, daemon)
    rows = pq.read_table(paths["intervals"]).to_pylist()
    assert sorted(r["i"] for r in rows if r["label"] == "tls") == list(range(50))
    assert pq.read_table(paths["samples"]).num_rows > 0
    assert '"channels"' in Path(paths["metadata"]).read_text()
    assert c["ca.pem"].startswith(b"-----BEGIN CERTIFICATE")


def test_a_batch_sent_twice_with_its_sequence_numbers_is_held_once(tmp_path):
    probe, daemon = served(tmp_path / "d.sock")
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))

    def batch(first_seq, n, sender=77):
        return mark_batch([("d", 10 + i, 20 + i, 0, None, True) for i in range(n)], sender_id=sender,
                          first_seq=first_seq)

    try:
        assert stub.RecordMarks(batch(1, 100), timeout=10).accepted == 100
        assert stub.RecordMarks(batch(1, 100), timeout=10).accepted == 100  # the reply was lost: sent again
        assert stub.RecordMarks(batch(51, 100), timeout=10).accepted == 100  # overlaps by 50
        assert stub.RecordMarks(batch(1, 100, sender=78), timeout=10).accepted == 100  # another sender
        assert stub.RecordMarks(batch(0, 5), timeout=10).accepted == 5  # no sequence: an old client
        assert stub.RecordMarks(batch(0, 5), timeout=10).accepted == 5
    finally:
        stop(probe, daemon)
    assert len(probe.marks()) == 100 + 50 + 100 + 10


# -- what a review found, held ----------------------------------------------------------------
@ROOT_ONLY
def test_folders_under_a_folder_another_user_can_change_are_refused(tmp_path):
    theirs = tmp_path / "alice"  # another user's folder: they could swap what lies below it at any time
    theirs.mkdir()
    os.chown(theirs, OUTSIDER, OUTSIDER)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    probe = greenprobe.Probe(sensors=["synthetic"])
    for place in (theirs / "save", open_dir / "save", theirs / "deeper" / "save"):
        with pytest.raises(greenprobe.ConfigError, match="they could swap a folder on the way"):
            Daemon(probe, None, save_dir=place)
        with pytest.raises(greenprobe.ConfigError, match="they could swap a folder on the way"):
            Daemon(probe, place / "d.sock").prepare()
    assert not (theirs / "save").exists() and not (open_dir / "save").exists()
    link = tmp_path / "mine"  # a link in a trusted folder to a folder under an untrusted one
    link.symlink_to(theirs)
    with pytest.raises(greenprobe.ConfigError, match="they could swap a folder on the way"):
        Daemon(probe, None, save_dir=link / "save")


def test_an_existing_output_folder_keeps_its_mode_and_group(tmp_path):
    existing = tmp_path / "srv"
    existing.mkdir()
    os.chmod(existing, 0o755)
    fd = access.make_output_dir(existing, MEMBER_GID)
    os.close(fd)
    st = os.stat(existing)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o755, os.getegid())  # only what it made is the group's
    fd = access.make_output_dir(existing / "new", MEMBER_GID)
    os.close(fd)
    st = os.stat(existing / "new")
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o2750, MEMBER_GID)


def test_a_socket_in_a_world_writable_folder_is_refused_even_if_sticky(tmp_path):
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    with pytest.raises(greenprobe.ConfigError, match=r"writable by others \(mode 1777\)"):
        Daemon(greenprobe.Probe(sensors=["synthetic"]), sticky / "d.sock").prepare()


def test_the_client_keeps_its_token_off_sockets_and_plain_remote_links(tmp_path, monkeypatch):
    from greenprobe.client import _channel

    seen = []

    class Spy(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            seen.append(dict(details.invocation_metadata or ()).get("authorization"))
            return continuation(details)

    probe = greenprobe.Probe(sensors=["synthetic"], period_us=1000)
    daemon = Daemon(probe, tmp_path / "d.sock")
    daemon.local = None  # a listener that records what clients send, in place of the daemon's
    daemon.servers.clear()
    daemon.local = daemon._server([Spy()])
    probe.start()
    daemon.start()
    try:
        remote = greenprobe.connect(daemon.addresses[0], token=TOKEN)
        remote.status()
    finally:
        stop(probe, daemon)
    assert seen and seen == [None] * len(seen)  # a Unix socket is guarded by the kernel: no token sent
    with pytest.raises(greenprobe.DaemonError, match="would cross the network in clear"):
        _channel("10.255.255.1:50051", TOKEN)
    with pytest.raises(greenprobe.DaemonError, match="GREENPROBE_TLS_CA"):
        greenprobe.connect("dns:///example.org:50051", token=TOKEN)


def test_the_daemon_parses_no_json_of_a_client_and_holds_the_senders_pid(tmp_path):
    """Attributes arrive typed, in frames: text that looks like JSON is held as text, a value or a
    mark over a limit is refused naming it, and `pid` is the sender's whatever the attributes say."""
    probe, daemon = served(tmp_path / "d.sock")
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))

    def send(attrs, pid: int = 42):
        try:
            stub.RecordMarks(mark_batch([("x", 5, 9, 0, attrs, True)], pid=pid), timeout=30)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()

    try:
        code, why = send({f"k{i}": "v" * 200 for i in range(60)})  # 12 KB of attributes as JSON
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "over 8 KiB as JSON" in why
        code, why = send({"big": list(range(400))})  # a list value: its text, over 1 KiB
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "longer than 1024 bytes" in why
        assert send({"nest": "[" * 1000})[0] == grpc.StatusCode.OK  # text, never parsed
        assert send({"pid": 1, "k": 3})[0] == grpc.StatusCode.OK
    finally:
        stop(probe, daemon)
    nest, mark = probe.marks()
    assert nest[4] == {"nest": "[" * 1000, "pid": 42}
    assert mark[4] == {"k": 3, "pid": 42}  # the sender's pid, whatever the attributes said


def test_queries_that_would_read_too_much_history_are_refused(tmp_path):
    probe, daemon = served(tmp_path / "d.sock", save_dir=tmp_path / "saves", limits=Limits(max_query_samples=50))
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))
    try:
        time.sleep(0.3)  # a few hundred samples at 1 kHz
        calls = [lambda: stub.Summary(pb.SummaryRequest(), timeout=30),
                 lambda: stub.Table(pb.TableRequest(name="samples"), timeout=30),
                 lambda: stub.Save(pb.SaveRequest(directory="x"), timeout=30),
                 lambda: stub.Energy(pb.EnergyRequest(start_ns=1, end_ns=2 ** 62), timeout=30),
                 lambda: next(stub.StreamSamples(pb.StreamSamplesRequest(since_ns=0), timeout=30))]
        for call in calls:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-query-samples" in e.value.details()
    finally:
        stop(probe, daemon)


def test_prometheus_survives_clients_that_connect_and_say_nothing(tmp_path, monkeypatch):
    import ssl
    import threading

    from greenprobe import prometheus
    from greenprobe.prometheus import MAX_CONNECTIONS, serve

    monkeypatch.setattr(prometheus, "HANDLER_TIMEOUT_S", 2.0)

    c = make_certs(tmp_path)
    tls = access.tls_files(tmp_path / "server.pem", tmp_path / "server.key", None)
    with greenprobe.Probe(sensors=["synthetic"], period_us=1000) as probe:
        plain, _ = serve(probe, 0, token=TOKEN)
        secure, _ = serve(probe, 0, token=TOKEN, tls=tls)
        silent = [socket.create_connection(("127.0.0.1", secure.server_port))]  # holds no handshake hostage
        ctx = ssl.create_default_context(cadata=c["ca.pem"].decode())
        req = urllib.request.Request(f"https://127.0.0.1:{secure.server_port}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        t0 = time.monotonic()
        assert "greenprobe_power_watts" in urllib.request.urlopen(req, timeout=5, context=ctx).read().decode()
        assert time.monotonic() - t0 < 3
        before = threading.active_count()
        silent += [socket.create_connection(("127.0.0.1", plain.server_port)) for _ in range(3 * MAX_CONNECTIONS)]
        time.sleep(0.5)
        assert threading.active_count() - before <= MAX_CONNECTIONS  # one thread per connection, capped
        for s in silent:
            s.close()
        deadline = time.monotonic() + 15
        url = urllib.request.Request(f"http://127.0.0.1:{plain.server_port}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        while True:  # the slots come back as the silent connections end
            try:
                assert "greenprobe_energy" in urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the endpoint never came back"
                time.sleep(0.2)
        plain.shutdown()
        secure.shutdown()


def test_queries_over_more_marks_than_the_daemon_reads_at_once_are_refused(tmp_path):
    probe, daemon = served(tmp_path / "d.sock", save_dir=tmp_path / "saves", limits=Limits(max_query_marks=5))
    stub = pb_grpc.ProbeStub(grpc.insecure_channel(daemon.addresses[0]))
    try:
        stub.RecordMarks(mark_batch([("a", 1, 2, 0, None, True)] * 6), timeout=10)
        for call in (lambda: stub.Summary(pb.SummaryRequest(), timeout=30),
                     lambda: stub.Table(pb.TableRequest(name="intervals"), timeout=30),
                     lambda: stub.Save(pb.SaveRequest(directory="x"), timeout=30)):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "all 6 marks" in e.value.details()
        assert stub.Table(pb.TableRequest(name="samples"), timeout=30).arrow_ipc  # samples need no marks
    finally:
        stop(probe, daemon)
