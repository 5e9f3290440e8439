"""What a person reads when the command line refuses: `greenprobe: <message>`, then `  fix: <fix>`,
on stderr, exit 1, nothing else (no traceback, no Python tuple); argparse's usage errors stay exit 2.
Every path here is one a user can hit without hardware, and each fails before writing anything."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import greenprobe
from greenprobe.cli import main as cli_main
from greenprobe import _core
from greenprobe.study.spec import StudySpec

PACKAGE_PARENT = Path(greenprobe.__file__).resolve().parents[1]  # the greenprobe these tests import


def refuses(capsys, argv, message: str, fix: str) -> None:
    """Runs the CLI in-process and asserts the exact text on stderr, nothing on stdout, exit 1."""
    rc = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert not err.startswith("greenprobe: ("), err  # a tuple of (message, fix) printed as such
    assert (rc, out, err) == (1, "", f"greenprobe: {message}\n  fix: {fix}\n")


def usage_error(capsys, argv, says: str) -> str:
    """Runs the CLI in-process and asserts argparse's exit 2 with `says` in its message."""
    with pytest.raises(SystemExit) as e:
        cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert err.startswith("usage: ") and says in err and "Traceback" not in err, err
    return err


NO_SENSOR_FIX = ("pass sensors='auto' or a list such as ['rapl-msr', 'nvml'] "
                 "(on the command line: --sensors auto, or --sensors rapl-msr,nvml)")
PERIOD_FIX = "pass period_us=50 or more (on the command line: --period-us 50 or more)"

# (argv with {tmp} for the test's folder, message, fix)
CASES = {
    "study-unknown-runtime": (
        ["study", "--runtimes", "caffe", "--out", "{tmp}/out"],
        "unknown runtimes ['caffe']", "choose from torch, tensorflow, mxnet, onnxruntime"),
    "study-unknown-model": (
        ["study", "--models", "resnet50,vgg16", "--out", "{tmp}/out"],
        "unknown models ['vgg16']", "choose from resnet50, mobilenet_v2, bert-base-uncased"),
    "study-batch-size-0": (
        ["study", "--batch-sizes", "1,0", "--out", "{tmp}/out"],
        "batch sizes must be >= 1, got [1, 0]",
        "pass whole numbers >= 1: --batch-sizes 1,64 (batch_sizes = [1, 64] in a spec file)"),
    "study-batch-size-not-a-number": (
        ["study", "--batch-sizes", "1,x", "--out", "{tmp}/out"],
        "batch sizes must be whole numbers >= 1, got --batch-sizes 1,x",
        "pass a comma list, e.g. --batch-sizes 1,64"),
    "study-runs-1": (
        ["study", "--runs", "1", "--out", "{tmp}/out"],
        "runs must be >= 2, got 1: the 95 % intervals come from the spread between runs",
        "pass --runs 2 or more (runs = N in a spec file); the default is 30, --quick 3"),
    "study-runs-0": (
        ["study", "--quick", "--runs", "0", "--out", "{tmp}/out"],
        "runs must be >= 2, got 0: the 95 % intervals come from the spread between runs",
        "pass --runs 2 or more (runs = N in a spec file); the default is 30, --quick 3"),
    "study-spec-missing": (
        ["study", "{tmp}/nope.toml", "--out", "{tmp}/out"],
        "study spec not found: {tmp}/nope.toml",
        "check the path, or leave the spec out to run the defaults (or --quick)"),
    "report-without-summary": (
        ["report", "{tmp}"],
        "no study in {tmp}: summary.parquet is missing",
        "pass the folder a study wrote, or run `greenprobe study --out {tmp}` first"),
    "record-unknown-sensor": (
        ["record", "--sensors", "caffeine", "--duration", "0.1", "--out", "{tmp}/rec"],
        "unknown sensor kind 'caffeine'",
        "choose one of: " + ", ".join(r["name"] for r in _core.sensor_kinds()) + ", replay (from a recorded samples file)"),
    "record-period-below-minimum": (
        ["record", "--sensors", "synthetic", "--period-us", "10", "--duration", "0.1", "--out", "{tmp}/rec"],
        "period_us must be >= 50, got 10.0", PERIOD_FIX),
    "record-no-sensor": (
        ["record", "--sensors", ",", "--duration", "0.1", "--out", "{tmp}/rec"],
        "no sensor requested", NO_SENSOR_FIX),
    "record-sensor-twice": (
        ["record", "--sensors", "cpu-estimate,cpu-estimate", "--duration", "0.1", "--out", "{tmp}/rec"],
        "sensor 'cpu-estimate' requested twice",
        "name each sensor kind once (only synthetic may appear more than once)"),
    "record-sensor-option-not-key-value": (
        ["record", "--sensors", "synthetic:sine", "--duration", "0.1", "--out", "{tmp}/rec"],
        "sensor option 'sine' in 'synthetic:sine' is not key=value",
        "write options as kind:key=value;key=value, e.g. synthetic:waveform=sine;base_w=20"),
    "record-empty-sensor-name": (
        ["record", "--sensors", ":waveform=sine", "--duration", "0.1", "--out", "{tmp}/rec"],
        "empty sensor name in ':waveform=sine'",
        "name the kind before the options, e.g. synthetic:waveform=sine (`greenprobe sensors` lists the kinds)"),
    "record-replay-without-file": (
        ["record", "--sensors", "replay", "--duration", "0.1", "--out", "{tmp}/rec"],
        "the replay sensor needs a recorded file", "use replay:path=run1/samples.parquet"),
    "record-replay-file-missing": (
        ["record", "--sensors", "replay:path={tmp}/none.parquet", "--duration", "0.1", "--out", "{tmp}/rec"],
        "replay file not found: {tmp}/none.parquet", "record one with `greenprobe record --out DIR`"),
    "measure-period-below-minimum": (
        ["measure", "--sensors", "synthetic", "--period-us", "10", "--out", "{tmp}/m", "--", "true"],
        "period_us must be >= 50, got 10.0", PERIOD_FIX),
    "record-out-cannot-be-made": (
        ["record", "--sensors", "synthetic", "--duration", "0.1", "--out", "/dev/null/rec"],
        "--out /dev/null/rec cannot be made: /dev/null is not a folder", "give --out a path in a folder"),
    "measure-out-cannot-be-made": (
        ["measure", "--sensors", "synthetic", "--out", "/dev/null/m", "--", "true"],
        "--out /dev/null/m cannot be made: /dev/null is not a folder", "give --out a path in a folder"),
    "daemon-socket-in-a-missing-folder": (
        ["daemon", "--sensors", "synthetic", "--socket", "{tmp}/none/run/d.sock"],
        "--socket {tmp}/none/run/d.sock: {tmp}/none does not exist",
        "make it first (mkdir -p {tmp}/none), or give --socket a path in a folder that exists"),
    "daemon-spool-dir-missing": (
        ["daemon", "--sensors", "synthetic", "--socket", "{tmp}/run/d.sock", "--spool-dir", "{tmp}/spool"],
        "--spool-dir {tmp}/spool does not exist",
        "make it first (mkdir -p {tmp}/spool), or give --spool-dir a folder that exists"),
    "daemon-out-cannot-be-made": (
        ["daemon", "--sensors", "synthetic", "--socket", "{tmp}/run/d.sock", "--out", "/dev/null/out"],
        "--out /dev/null/out cannot be made: /dev/null is not a folder", "give --out a path in a folder"),
    "daemon-save-dir-cannot-be-made": (
        ["daemon", "--sensors", "synthetic", "--socket", "{tmp}/run/d.sock", "--save-dir", "/dev/null/save"],
        "--save-dir /dev/null/save cannot be made: /dev/null is not a folder", "give --save-dir a path in a folder"),
    "daemon-unknown-group": (
        ["daemon", "--sensors", "synthetic", "--socket", "{tmp}/run/d.sock", "--group", "no-such-group-here"],
        "no group 'no-such-group-here' (--group)", "create it (groupadd no-such-group-here) or name an existing one"),
    "daemon-listen-not-loopback": (
        ["daemon", "--sensors", "synthetic", "--socket", "{tmp}/run/daemon.sock", "--listen", "0.0.0.0:0"],
        "--listen 0.0.0.0:0 on TCP needs a token: a port, loopback included, serves every local user whatever "
        "--group says",
        "export GREENPROBE_TOKEN=$(openssl rand -hex 24) (or --token-file FILE) before starting the daemon; clients "
        "send the same token"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_error_prints_message_and_fix(case, tmp_path, capsys):
    argv, message, fix = CASES[case]
    fill = lambda s: s.replace("{tmp}", str(tmp_path))  # noqa: E731
    refuses(capsys, [fill(a) for a in argv], fill(message), fill(fix))
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


def spec_file(tmp_path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_study_spec_that_is_not_toml(tmp_path, capsys):
    path = spec_file(tmp_path, "[study\nruns = 3\n")
    rc = cli_main(["study", str(path), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    first, fix = err.splitlines()
    assert rc == 1 and out == ""
    assert first.startswith(f"greenprobe: {path} is not valid TOML: ") and "(at line 1" in first, first
    assert fix == '  fix: write a [study] table of key = value lines, e.g. runs = 30, models = ["resnet50"]'
    assert not (tmp_path / "out").exists()


def test_study_spec_with_unknown_keys(tmp_path, capsys):
    path = spec_file(tmp_path, '[study]\nmodels = ["resnet50"]\nfrobnicate = 1\nrepeats = 3\n')
    known = ", ".join(sorted(f.name for f in dataclasses.fields(StudySpec)))
    assert known.startswith("baseline_s, batch_sizes, disturbed_retries, image_size, max_foreign_cores, ")
    refuses(capsys, ["study", path, "--out", tmp_path / "out"],
            f"{path}: unknown keys ['frobnicate', 'repeats']", f"known keys: {known}")


def test_study_spec_with_a_bad_order_size_or_source(tmp_path, capsys):
    out = tmp_path / "out"
    path = spec_file(tmp_path, '[study]\norder = "random"\n')
    refuses(capsys, ["study", path, "--out", out], "order must be interleaved or blocked, not 'random'",
            'use --order interleaved or --order blocked (order = "blocked" in a spec file)')
    path = spec_file(tmp_path, '[study]\nsize = "huge"\n')
    refuses(capsys, ["study", path, "--out", out], "size must be full or tiny, not 'huge'",
            'use --size full or --size tiny (size = "tiny" in a spec file)')
    path = spec_file(tmp_path, '[study]\nsources = ["torch", "jax"]\n')
    refuses(capsys, ["study", path, "--out", out], "unknown ONNX sources ['jax']",
            "choose from torch, tensorflow, mxnet")
    path = spec_file(tmp_path, '[study]\nbatch_sizes = [1, "64"]\n')
    refuses(capsys, ["study", path, "--out", out], "batch_sizes must be a list of whole numbers, got [1, '64']",
            "write batch_sizes = [1, 64] (for example) in the spec file")
    path = spec_file(tmp_path, "[study]\nrest_s = -1\n")
    refuses(capsys, ["study", path, "--out", out], "rest_s must be >= 0", "set rest_s = 0 or more in the spec file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]  # OUT was not made


def test_study_spec_that_is_a_folder(tmp_path, capsys):
    refuses(capsys, ["study", tmp_path, "--out", tmp_path / "out"],
            f"cannot read study spec {tmp_path}: Is a directory", "pass a readable TOML file with a [study] table")


def test_study_out_folder_holding_another_study(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    other = json.dumps({**StudySpec().as_dict(), "runs": 7}, indent=2)
    (out / "spec.json").write_text(other)
    refuses(capsys, ["study", "--runtimes", "torch", "--models", "resnet50", "--batch-sizes", "1", "--out", out],
            f"{out} holds a study with another spec",
            f"to resume it, pass the options it was started with (they are in {out / 'spec.json'}); otherwise use "
            "another --out, or delete the folder to start over")
    assert (out / "spec.json").read_text() == other  # the old study is left as it was
    assert [p.name for p in out.iterdir()] == ["spec.json"]


def test_daemon_allow_remote_without_token_fails_before_sampling_or_binding(tmp_path, capsys, monkeypatch):
    import greenprobe.daemon.server as daemon_module
    from greenprobe.session import Probe

    monkeypatch.delenv("GREENPROBE_TOKEN", raising=False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the daemon went past the token check")

    monkeypatch.setattr(daemon_module.grpc, "server", must_not_run)  # no server made, so nothing bound
    monkeypatch.setattr(Probe, "start", must_not_run)  # no sensor opened
    sock = tmp_path / "run" / "daemon.sock"
    refuses(capsys, ["daemon", "--sensors", "synthetic", "--socket", sock, "--listen", "0.0.0.0:0", "--allow-remote"],
            "--listen 0.0.0.0:0 on TCP needs a token: a port, loopback included, serves every local user whatever "
            "--group says",
            "export GREENPROBE_TOKEN=$(openssl rand -hex 24) (or --token-file FILE) before starting the daemon; "
            "clients send the same token")
    assert not sock.parent.exists()


def test_usage_errors_stay_exit_2(capsys):
    says = "measure needs a command after --, e.g. greenprobe measure -- python infer.py"
    usage_error(capsys, ["measure"], says)
    usage_error(capsys, ["measure", "--sensors", "synthetic", "--"], says)
    usage_error(capsys, ["study", "--order", "random"], "argument --order: invalid choice: 'random'")
    usage_error(capsys, ["study", "--runs", "many"], "argument --runs: invalid int value: 'many'")
    usage_error(capsys, ["daemon", "--no-socket"], "--no-socket needs --listen HOST:PORT")
    usage_error(capsys, ["daemon", "--max-marks", "x"], "argument --max-marks: invalid int value: 'x'")


PERIOD_SAYS = "is not a polling period: give microseconds, more than 0 and at most 250000 (e.g. 1000)"
IDLE_SAYS = "is not an idle time: give seconds, 0 or more and at most 3600 (e.g. 3)"
DURATION_SAYS = "is not a duration: give seconds, 0 or more (e.g. 10 or 0.5)"
PASSING_SAYS = "is not a duration: give seconds, more than 0 (e.g. 2 or 0.5)"
PATH_SAYS = "'' is not a path: give a file or folder name, e.g. results/run1"
PORT_SAYS = "is not a port: give a whole number from 0 to 65535 (0: any free port)"
LISTEN_SAYS = "is not HOST:PORT with a port from 0 to 65535: give e.g. 127.0.0.1:50051 (port 0: any free port)"

# (argv, what argparse says): numbers, ports and paths are refused where they are read, naming what to give
NONSENSE = [
    *[(["record", "--period-us", v], f"argument --period-us: '{v}' {PERIOD_SAYS}") for v in ("nan", "inf", "1e30",
                                                                                            "1e9", "0", "-5")],
    *[(["record", "--baseline", v], f"argument --baseline: '{v}' {IDLE_SAYS}") for v in ("nan", "inf", "1e30", "-1")],
    *[(["record", "--duration", v], f"argument --duration: '{v}' {DURATION_SAYS}") for v in ("nan", "-1", "inf")],
    (["record", "--out", ""], f"argument --out: {PATH_SAYS}"),
    (["measure", "--period-us", "inf", "--", "true"], f"argument --period-us: 'inf' {PERIOD_SAYS}"),
    (["measure", "--baseline", "1e30", "--", "true"], f"argument --baseline: '1e30' {IDLE_SAYS}"),
    (["measure", "--kill-after", "nan", "--", "true"], f"argument --kill-after: 'nan' {DURATION_SAYS}"),
    (["measure", "--out", "", "--", "true"], f"argument --out: {PATH_SAYS}"),
    (["daemon", "--period-us", "nan"], f"argument --period-us: 'nan' {PERIOD_SAYS}"),
    (["daemon", "--flush-s", "0"], f"argument --flush-s: '0' {PASSING_SAYS}"),
    (["daemon", "--flush-s", "nan"], f"argument --flush-s: 'nan' {PASSING_SAYS}"),
    (["daemon", "--otlp-interval-s", "0"], f"argument --otlp-interval-s: '0' {PASSING_SAYS}"),
    (["daemon", "--memory-s", "inf"], f"argument --memory-s: 'inf' {DURATION_SAYS}"),
    (["daemon", "--compact-s", "-1"], f"argument --compact-s: '-1' {DURATION_SAYS}"),
    (["daemon", "--prometheus-port", "70000"], f"argument --prometheus-port: '70000' {PORT_SAYS}"),
    (["daemon", "--prometheus-port", "-1"], f"argument --prometheus-port: '-1' {PORT_SAYS}"),
    (["daemon", "--listen", "127.0.0.1:99999"], f"argument --listen: '127.0.0.1:99999' {LISTEN_SAYS}"),
    (["daemon", "--listen", "127.0.0.1"], f"argument --listen: '127.0.0.1' {LISTEN_SAYS}"),
    (["daemon", "--listen", ":50051"], f"argument --listen: ':50051' {LISTEN_SAYS}"),
    *[(["daemon", flag, ""], f"argument {flag}: {PATH_SAYS}") for flag in ("--out", "--save-dir", "--spool-dir",
                                                                          "--socket")],
]


@pytest.mark.parametrize("argv, says", NONSENSE, ids=[" ".join(a) for a, _ in NONSENSE])
def test_nonsense_numbers_ports_and_paths_are_refused_where_they_are_read(capsys, argv, says):
    usage_error(capsys, argv, says)


def test_every_daemon_limit_refuses_zero_and_less(capsys):
    from greenprobe.daemon.limits import Limits

    for f in Limits.flags():
        flag = "--" + f.name.replace("_", "-")
        least = "64M" if f.name == "max_mark_bytes" else "1"
        usage_error(capsys, ["daemon", flag, "0"],
                    f"argument {flag}: '0' is under {least}, the least this limit may be")
        usage_error(capsys, ["daemon", flag, "-1"], f"argument {flag}: '-1' is ")


def test_an_output_folder_nobody_may_write_in_is_refused_before_the_run(capsys):
    """Root may write almost anywhere: /proc is the folder even root cannot make one in."""
    for argv in (["record", "--sensors", "synthetic", "--duration", "0.1", "--out", "/proc/greenprobe-out"],
                 ["measure", "--sensors", "synthetic", "--out", "/proc/greenprobe-out", "--", "true"]):
        assert cli_main(argv) == 1
        out, err = capsys.readouterr()
        message, fix = err.splitlines()
        assert out == "" and message.startswith("greenprobe: --out /proc/greenprobe-out: cannot write in /proc (")
        assert fix == "  fix: give --out a folder this user may write to"


@pytest.mark.parametrize("line, message, fix", [
    ('batch_sizes = "1,64"', "batch_sizes must be a list of whole numbers, got '1,64'",
     "write batch_sizes = [1, 64] (for example) in the spec file"),
    ('models = "resnet50"', "models must be a list of strings, got 'resnet50'",
     'write models = ["resnet50", "mobilenet_v2", "bert-base-uncased"] (for example) in the spec file'),
    ('runs = "30"', "runs must be a whole number, got '30'", "write runs = 30 (for example) in the spec file"),
    ("runs = true", "runs must be a whole number, got True", "write runs = 30 (for example) in the spec file"),
    ('size = 3', "size must be a string, got 3", 'write size = "full" (for example) in the spec file'),
    ("rest_s = inf", "rest_s must be a finite number, got inf", "write rest_s = 1.0 (for example) in the spec file"),
    ("baseline_s = nan", "baseline_s must be a finite number, got nan",
     "write baseline_s = 5.0 (for example) in the spec file"),
    ("baseline_s = 1e30", "baseline_s must be at most 3600 s, got 1e+30",
     "set baseline_s = 3600 or less in the spec file"),
    ("period_us = 1e9", "period_us must be from 50 to 250000, got 1000000000.0",
     "set period_us = 1000 (the default) or another value in that range"),
    ("image_size = -5", "image_size must be >= 1", "set image_size = 1 or more in the spec file"),
    ("seq_len = 0", "seq_len must be >= 1", "set seq_len = 1 or more in the spec file"),
])
def test_study_spec_values_of_the_wrong_type_or_range_name_the_field(tmp_path, capsys, line, message, fix):
    path = spec_file(tmp_path, f"[study]\n{line}\n")
    refuses(capsys, ["study", path, "--out", tmp_path / "out"], message, fix)
    assert not (tmp_path / "out").exists()


def test_report_of_a_damaged_or_foreign_study_table(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from greenprobe.study.layout import DAMAGED_FIX

    summary = tmp_path / "summary.parquet"
    summary.write_bytes(b"PAR1 cut short")
    assert cli_main(["report", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    message, fix = err.splitlines()
    assert out == "" and message.startswith(f"greenprobe: cannot read {summary} as Parquet: ")
    assert fix == f"  fix: {DAMAGED_FIX}"
    pq.write_table(pa.table({"model": ["resnet50"]}), summary)
    refuses(capsys, ["report", tmp_path], f"{summary} is not a table greenprobe wrote: it has no column id, status",
            DAMAGED_FIX)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.parquet"]


def test_a_recording_to_replay_that_greenprobe_did_not_write(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from greenprobe.parquet import NOT_OURS_FIX

    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"t_ns": [1, 2], "value": [0.5, 0.7]}), foreign)
    refuses(capsys, ["record", "--sensors", f"replay:path={foreign}", "--duration", "0.1", "--out", tmp_path / "rec"],
            f"{foreign} holds no greenprobe metadata: another program wrote it", NOT_OURS_FIX)
    assert not (tmp_path / "rec").exists()


CLIENT_FIX = ("set GREENPROBE_DAEMON to the address `greenprobe daemon` prints: unix:/path/to/daemon.sock or host:port "
              "(e.g. 127.0.0.1:50051)")
NOT_AN_ADDRESS = "is not a daemon address: it needs unix:PATH, or HOST:PORT with a port from 1 to 65535"


@pytest.mark.parametrize("env, message, fix", [
    ({"GREENPROBE_DAEMON": "garbage"}, f"GREENPROBE_DAEMON='garbage' {NOT_AN_ADDRESS}", CLIENT_FIX),
    ({"GREENPROBE_DAEMON": "localhost:notaport"}, f"GREENPROBE_DAEMON='localhost:notaport' {NOT_AN_ADDRESS}",
     CLIENT_FIX),
    ({"GREENPROBE_DAEMON": "127.0.0.1:99999"}, f"GREENPROBE_DAEMON='127.0.0.1:99999' {NOT_AN_ADDRESS}", CLIENT_FIX),
    ({"GREENPROBE_DAEMON": "unix:"}, "GREENPROBE_DAEMON='unix:' names no socket", CLIENT_FIX),
    ({"GREENPROBE_DAEMON": "127.0.0.1:50051", "GREENPROBE_TOKEN": "0123456789abcdef\n"},
     "GREENPROBE_TOKEN holds a character a token cannot carry (a space, a newline or a non-ASCII character; gRPC "
     "refuses the header)",
     "give the daemon's token alone in GREENPROBE_TOKEN (printable ASCII, as `openssl rand -hex 24` makes)"),
], ids=["no-port", "port-not-a-number", "port-out-of-range", "unix-without-path", "token-with-newline"])
def test_a_client_environment_error_is_one_greenprobe_error_at_the_first_mark(tmp_path, env, message, fix):
    """Not a gRPC error about a target or a header, and not marks lost at exit without a word."""
    path = [str(PACKAGE_PARENT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    base = {k: v for k, v in os.environ.items() if not k.startswith("GREENPROBE_")}
    r = subprocess.run([sys.executable, "-c", "import greenprobe\nwith greenprobe.mark('x'):\n    pass\n"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**base, "PYTHONPATH": os.pathsep.join(path), **env})
    assert r.returncode == 1 and r.stdout == "", r.stderr
    assert r.stderr.endswith(f"greenprobe.errors.DaemonError: {message}\n  fix: {fix}\n"), r.stderr[-600:]
    assert "0123456789abcdef" not in r.stderr  # a token is never repeated


def _run(*argv, tmp_path):
    path = [str(PACKAGE_PARENT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run([sys.executable, "-m", "greenprobe", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_a_person_at_a_terminal_reads_the_message_and_the_fix(tmp_path):
    r = _run("study", "--runtimes", "torch,caffe", "--models", "resnet50", tmp_path=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", "greenprobe: unknown runtimes ['caffe']\n  fix: choose from torch, tensorflow, mxnet, onnxruntime\n")
    r = _run("measure", tmp_path=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.endswith("greenprobe: error: measure needs a command after --, e.g. greenprobe measure -- "
                             "python infer.py\n")
    assert list(tmp_path.iterdir()) == []


def test_every_error_carries_message_and_fix():
    e = greenprobe.ConfigError("bad thing", "do this")
    assert (e.message, e.fix, str(e)) == ("bad thing", "do this", "bad thing\n  fix: do this")
    assert isinstance(e, ValueError) and isinstance(e, greenprobe.GreenprobeError)
    e = greenprobe.NoSensorError("nothing opened")
    assert (e.message, e.fix, str(e)) == ("nothing opened", "", "nothing opened")
    e = greenprobe.SensorPermissionError("cannot read /dev/cpu/0/msr", "run as root")
    assert (e.category, e.message, e.fix, str(e)) == (
        "permission", "cannot read /dev/cpu/0/msr", "run as root", "cannot read /dev/cpu/0/msr\n  fix: run as root")
    assert isinstance(e, PermissionError)
    e = greenprobe.SensorError("gone", "plug it in", category="device-lost")
    assert (e.category, str(e)) == ("device-lost", "gone\n  fix: plug it in")


def test_daemon_errors_carry_a_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("GREENPROBE_DAEMON", raising=False)
    with pytest.raises(greenprobe.DaemonError) as e:
        greenprobe.connect()
    assert isinstance(e.value, greenprobe.GreenprobeError) and isinstance(e.value, RuntimeError)
    assert (e.value.message, e.value.fix) == (
        "no daemon address", "pass one (unix:/path/to.sock or host:port) or set GREENPROBE_DAEMON")
    address = f"unix:{tmp_path / 'nobody.sock'}"
    with pytest.raises(greenprobe.DaemonError) as e:
        greenprobe.connect(address, timeout_s=2)
    assert e.value.message.startswith(f"greenprobe daemon at {address} is not reachable (")
    assert e.value.fix == "start it with `greenprobe daemon` and point GREENPROBE_DAEMON at its socket"


def test_a_broken_file_given_to_the_replay_sensor_is_one_line(tmp_path, capsys):
    from greenprobe.parquet import NOT_OURS_FIX

    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"junk")
    refuses(capsys, ["record", "--sensors", f"replay:path={bad}", "--duration", "0.1", "--out", tmp_path / "out"],
            f"cannot read {bad} as Parquet: Parquet file size is 4 bytes, smaller than the minimum file footer "
            "(8 bytes)", NOT_OURS_FIX)
    assert not (tmp_path / "out").exists()
