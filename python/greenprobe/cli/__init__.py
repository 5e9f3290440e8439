"""The greenprobe command line."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from .._version import __version__
from ..config import MIN_PERIOD_US, PERIOD_US

EPILOG = """\
examples:
  greenprobe sensors                      what this machine can measure, and how to fix what it cannot
  greenprobe record --duration 10         sample every available sensor for 10 s, write results/record/
  greenprobe record --sensors rapl-msr,nvml --period-us 200 --out run1
  greenprobe measure --out run2 -- python infer.py     run a command under a private daemon: whole-run
                                                       energy plus every mark its processes make
  greenprobe daemon --group greenprobe                 one sampler for many processes (GREENPROBE_DAEMON)
"""


def _bytes(text: str) -> int:
    """A size for argparse: 123, 512K, 20M, 20G, 1T (powers of 1024)."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().rstrip("B").rstrip("I")
    try:
        n = float(t[:-1]) * scale[t[-1]] if t and t[-1] in scale else float(t)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give bytes, or a number with K, M, G or T (e.g. 20G)")
    return int(n)


def _seconds(text: str) -> float:
    """A duration for argparse: seconds, 0 or more."""
    try:
        n = float(text)
    except ValueError:
        n = -1.0
    if not n >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give seconds, 0 or more (e.g. 10 or 0.5)")
    return n


def _at_least(parse, least: int, least_text: str):
    """A parser for argparse that refuses values under ``least``."""
    def check(text: str) -> int:
        n = parse(text)
        if n < least:
            raise argparse.ArgumentTypeError(f"{text!r} is under {least_text}, the least this limit may be (a gRPC "
                                             "batch alone is up to 16 MiB)")
        return n
    return check


def _epilog() -> str:
    """The examples, then every sensor option that has an environment variable (from the registry):
    each is also a Python argument of greenprobe.Probe and a kind:key=value option of --sensors."""
    from ..sensors import kinds

    lines, seen = [], set()
    for row in kinds():
        for key, var, text in row["options"]:
            if var and var not in seen:
                seen.add(var)
                lines.append(f"  {var:<31} {textwrap.shorten(text, 66, placeholder='...')}")
    return (EPILOG + "\nenvironment (each also a Python argument of greenprobe.Probe, and a kind:key=value option):\n"
            + "\n".join(lines) + "\n")


def _sensor_list() -> str:
    from ..sensors import kinds

    return ", ".join(r["name"] + ("[:k=v;k=v]" if r["name"] == "synthetic" else ":path=FILE" if r["name"] == "replay" else "")
                     for r in kinds())


def _add_sensor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sensors", default="auto",
                   help=f"'auto' or a comma list of: {_sensor_list()}; options as kind:key=value;key=value "
                        "(default: auto; `greenprobe sensors -v` lists each kind's options)")
    p.add_argument("--period-us", type=float, default=PERIOD_US,
                   help=f"polling period per sensor, >= {MIN_PERIOD_US} (default {PERIOD_US})")


def _paragraphs(*texts: str) -> str:
    import textwrap

    return "\n\n".join(textwrap.fill(t, 100) for t in texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="greenprobe",
        description="Measure the energy of deep-learning inference: a native high-rate sampler (NVML, RAPL), "
                    "marks on the same clock, energy per interval with honest bounds.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"greenprobe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sensors", help="list every sensor kind with its status, domains and the fix where unavailable",
                       description="Tries to open every sensor kind and says what works here and why not.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also each kind's domains and options, with their environment variables")

    p = sub.add_parser("runtimes", help="list each DL runtime (classification, then generative): environment, version, devices, execution providers or precisions, "
                                        "and what is missing with the fix",
                       description="Starts a worker in each runtime's environment and asks it what it can run here. "
                                   "An ONNX Runtime execution provider counts only if a session really runs on it.")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("record", help="sample sensors for a while (or until Ctrl-C) and write Parquet",
                       description="Samples the sensors for --duration seconds (or until Ctrl-C), then writes "
                                   "OUT/samples.parquet, OUT/intervals.parquet (one interval: the whole recording) "
                                   "and prints the energy per domain.")
    _add_sensor_args(p)
    p.add_argument("--duration", type=float, default=5.0, help="seconds to record (default 5; 0 = until Ctrl-C)")
    p.add_argument("--baseline", type=float, default=0.0, metavar="SECONDS",
                   help="also measure idle power for SECONDS before and after, and report energy net of it")
    p.add_argument("--out", default="results/record", help="output folder (default results/record)")

    p = sub.add_parser("study", help="the paper's experiment: runtimes x models x batch sizes, energy and time "
                                     "per inference with 95 %% intervals",
                       description="Runs every configuration of the study this machine can run (saying what it skips "
                                   "and why), each in its runtime's worker process; one daemon samples for all and "
                                   "every inference is marked through it. Protocol: warm-up, repeated runs "
                                   "interleaved across configurations in random order with rest between them, "
                                   "phase-dithered inferences, idle measured before and after, CPU use and (with "
                                   "NVML) GPU utilisation and memory per run. Writes OUT/summary.parquet (one row "
                                   "per configuration), per-inference and per-run Parquet under OUT/configs/. Each "
                                   "run is written when it ends: an interrupted study resumes where it stopped.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  greenprobe study --quick                      the whole matrix, small inputs, "
                              "few runs (< 20 min on 2 cores)\n  greenprobe study study.toml --out results/full\n"
                              "  greenprobe study --runtimes torch,onnxruntime --models resnet50 --batch-sizes 1\n"
                              "  greenprobe study study.toml --out /shared/results --executor slurm --partition gpu "
                              "--gpus-per-job 1\n"
                              "      (one array task per configuration, each alone on its node; run it again to resume)")
    p.add_argument("spec", nargs="?", help="a TOML file with [study] keys (those of StudySpec)")
    p.add_argument("--quick", action="store_true", help="small inputs (96 px images, 32-token text), 3 short runs")
    p.add_argument("--task", choices=["classify", "generate"],
                   help="classify (default): the paper's models, energy per inference; generate: LLMs, energy per "
                        "prompt token, per output token and per request, prefill and each decode step marked")
    p.add_argument("--runtimes", help="comma list of torch, tensorflow, mxnet, onnxruntime (default all); with --task "
                                      "generate: torch, onnxruntime-genai, llama.cpp, ctranslate2, vllm")
    p.add_argument("--models", help="comma list of resnet50, mobilenet_v2, bert-base-uncased (default all); with "
                                    "--task generate: llama-3.2-1b, qwen2.5-0.5b, gpt2, tiny")
    p.add_argument("--batch-sizes", help="comma list (default 1,64; generate: sequences generated together, 1,8)")
    p.add_argument("--precisions", help="generate: comma list of fp32, fp16, bf16, int8, q8_0, q4_k_m, int4 (default "
                                        "all: every one each runtime has on its device)")
    p.add_argument("--prompt-tokens", type=int, help="generate: prompt tokens per sequence (default 128; quick 32)")
    p.add_argument("--output-tokens", type=int, help="generate: tokens produced per sequence, EOS ignored (default "
                                                     "64; quick 16)")
    p.add_argument("--providers", help="ONNX Runtime providers, e.g. cpu,cuda (default: every one that works); with "
                                       "--task generate the device: cpu, cuda or cpu,cuda (default: each runtime's "
                                       "GPU where it has one)")
    p.add_argument("--runs", type=int, help="repetitions per configuration (default 30; quick 3)")
    p.add_argument("--size", choices=["full", "tiny"], help="model size (tiny: tests)")
    p.add_argument("--order", choices=["interleaved", "blocked"],
                   help="interleaved (default): round r runs every configuration's run r in a new random order, "
                        "all models kept built; blocked: one configuration's runs after another, one model in "
                        "memory at a time (for machines short of memory)")
    p.add_argument("--sensors", help="as for record (default auto)")
    p.add_argument("--out", default="results", help="output folder (default results/; with --executor slurm a "
                                                    "folder every node sees)")
    g = p.add_argument_group("Slurm (--executor slurm; or a [slurm] table in the spec file)")
    g.add_argument("--executor", choices=["local", "slurm"], default="local",
                   help="local (default): on this machine; slurm: each configuration an array task on a node of "
                        "its own, the summary built here when they end")
    g.add_argument("--partition", help="sbatch --partition")
    g.add_argument("--account", help="sbatch --account")
    g.add_argument("--time-limit", metavar="TIME", help="sbatch --time per task, e.g. 4:00:00")
    g.add_argument("--gpus-per-job", type=int, metavar="N", help="sbatch --gpus per task")
    g.add_argument("--sbatch-arg", action="append", metavar="ARG", dest="sbatch_args",
                   help="another sbatch argument, as it is (repeat for more), e.g. --sbatch-arg=--constraint=h100")
    g.add_argument("--no-wait", action="store_true",
                   help="submit and return; the same command later follows the jobs and builds the summary")

    p = sub.add_parser("report", help="an HTML report with tables and plots from a study's results",
                       description="Reads RESULTS_DIR/summary.parquet (and the per-run data) and writes "
                                   "RESULTS_DIR/report.html (self-contained) and PNG plots next to it.")
    p.add_argument("results", nargs="?", default="results", help="the study's output folder (default results/)")

    p = sub.add_parser("daemon", help="serve one sampler to many processes over gRPC (Unix socket by default)",
                       description=_paragraphs(
                           "Runs the sampler and serves status, marks (batched), sample streams, interval energy, "
                           "label summaries and saving over gRPC. Clients: greenprobe.connect(ADDR), or "
                           "greenprobe.mark() in any process with GREENPROBE_DAEMON=ADDR. Stops cleanly on "
                           "SIGTERM/SIGINT.",
                           "Who may connect: energy data is a side channel (CVE-2020-8694, PLATYPUS), so the socket "
                           "is 0660 (owner and --group) in a folder nobody else can write to; every TCP port (gRPC "
                           "--listen, --prometheus-port), loopback included, needs the token from $GREENPROBE_TOKEN or "
                           "--token-file (never the command line: ps shows it); off loopback only with --allow-remote "
                           "and TLS. Files are written 0640 in folders of the socket's group; clients' Save writes "
                           "only under --save-dir."),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  sudo greenprobe daemon --group greenprobe --out /var/lib/greenprobe   # root reads "
                              "RAPL; group members connect\n"
                              "  greenprobe daemon --socket /tmp/gp/d.sock --sensors synthetic\n"
                              "  export GREENPROBE_TOKEN=$(openssl rand -hex 24)\n"
                              "  greenprobe daemon --listen 127.0.0.1:50051 --prometheus-port 9464   # TCP, loopback\n"
                              "  greenprobe daemon --listen 0.0.0.0:50051 --allow-remote --tls-cert cert.pem "
                              "--tls-key key.pem\n"
                              "    (clients: GREENPROBE_TLS_CA=ca.pem GREENPROBE_TOKEN=... "
                              "GREENPROBE_DAEMON=host:50051)")
    _add_sensor_args(p)
    p.add_argument("--socket", help="Unix socket path (default /run/greenprobe/daemon.sock as root, else "
                                    "$XDG_RUNTIME_DIR/greenprobe/daemon.sock or /tmp/greenprobe-UID/daemon.sock); its "
                                    "folder must be this user's and writable by nobody else")
    p.add_argument("--no-socket", action="store_true", help="no Unix socket (needs --listen)")
    p.add_argument("--group", help="group (name or gid) that may connect to the socket and read the output files")
    p.add_argument("--listen", metavar="HOST:PORT", help="also serve TCP, token required (loopback only unless "
                                                         "--allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --listen or --prometheus-addr; requires TLS and a token")
    p.add_argument("--token", help=argparse.SUPPRESS)  # refused with the fix: a token on the command line leaks
    p.add_argument("--token-file", metavar="FILE", help="read the token from FILE (not readable by other users; "
                                                        "default $GREENPROBE_TOKEN)")
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate for TCP (required off loopback)")
    p.add_argument("--tls-key", metavar="PEM", help="its private key")
    p.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--out", help="write OUT/run-<time>-<pid>/parts/ as it goes (readable even after a crash) and the "
                                 "samples, intervals, labels and metadata files into that run folder when stopping")
    p.add_argument("--save-dir", metavar="DIR", help="the only folder clients' Save may write under (they name a "
                                                     "folder inside it); without it Save is refused")
    p.add_argument("--save-max-bytes", type=_bytes, default="20G", metavar="SIZE",
                   help="clients' Save is refused once --save-dir holds this much (default 20G; K, M, G, T "
                        "suffixes; 0: no limit)")
    p.add_argument("--flush-s", type=float, default=2.0, help="seconds between incremental writes (default 2)")
    p.add_argument("--memory-s", type=float, default=300.0, metavar="SECONDS",
                   help="samples kept in memory (default the last 300 s); older ones are read back from the parts "
                        "when a query needs them, so memory does not grow with time")
    p.add_argument("--spool-dir", metavar="DIR", help="where the parts go without --out (default the system's "
                                                      "temporary folder; removed at stop)")
    p.add_argument("--compact-s", type=float, default=3600, metavar="SECONDS",
                   help="merge the parts of every SECONDS of the run into one file once memory has let them go "
                        "(default 3600: 24 files a day instead of 43,200 at --flush-s 2; 0: never)")
    p.add_argument("--prometheus-port", type=int, metavar="N",
                   help="serve energy and power per domain at http://ADDR:N/metrics, bearer token required "
                        "(0: any free port)")
    p.add_argument("--prometheus-addr", default="127.0.0.1", help="address for --prometheus-port (default loopback)")
    p.add_argument("--otlp-endpoint", metavar="URL",
                   help="also push hw.energy (J) and hw.power (W) per domain as OpenTelemetry metrics to this OTLP/gRPC "
                        "collector: http://127.0.0.1:4317 on this machine, https://HOST:4317 elsewhere (needs "
                        "pip install 'greenprobe[otlp]')")
    p.add_argument("--otlp-interval-s", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between OTLP pushes (default 10)")
    p.add_argument("--max-marks", type=int, default=5_000_000, metavar="N",
                   help="marks held in memory at most, i.e. not yet written (default 5M)")
    p.add_argument("--max-mark-bytes", type=_at_least(_bytes, 64 << 20, "64M"), default="1G", metavar="SIZE",
                   help="bytes of those marks at most: labels and attributes as held in memory (default 1G; K, M, "
                        "G suffixes); beyond it clients keep their marks and send them again after the next write, "
                        "and rings wait to be drained")
    p.add_argument("--max-attr-names", type=int, default=256, metavar="N",
                   help="distinct mark attribute names at most (each is a column; default 256)")
    p.add_argument("--max-streams", type=int, default=8, metavar="N",
                   help="concurrent sample streams at most (default 8; the other threads serve short calls)")
    p.add_argument("--max-streams-per-user", type=int, default=4, metavar="N",
                   help="of those, per user (default 4; local clients are known by their mark ring's session, the "
                        "others share one such allowance)")
    p.add_argument("--max-query-samples", type=int, default=20_000_000, metavar="N",
                   help="samples one query (Summary, Table, Save, Energy, a stream's history) may read at once "
                        "(default 20M); a longer history stays in the run's parts")
    p.add_argument("--max-query-marks", type=int, default=1_000_000, metavar="N",
                   help="marks a Summary, Save or Table may read at once (default 1M)")
    p.add_argument("--max-backlog", type=int, default=500_000, metavar="N",
                   help="marks accepted but not yet written to --out at most; beyond, clients wait and retry, so a "
                        "crash loses little (default 500k)")
    p.add_argument("--max-rings", type=int, default=1024, metavar="N",
                   help="local clients' shared-memory mark rings at most (one per client process; default 1024)")
    p.add_argument("--max-rings-per-user", type=int, default=64, metavar="N",
                   help="of those, per user (default 64); a client beyond sends its marks through gRPC")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)

    p = sub.add_parser("setup-perf", help="let a group read RAPL at full rate without root (prints, or with --apply "
                                          "runs, the setcap and group commands)",
                       description="RAPL energy is root-only (CVE-2020-8694); perf_event's power PMU opens it for a "
                                   "program with CAP_PERFMON. This grants that capability to one small program shipped "
                                   "with greenprobe, greenprobe-perf-helper, executable by one group: it opens the RAPL "
                                   "events and hands the descriptors to the rapl-perf sensor of a group member, who "
                                   "then reads at full rate with no privilege and no daemon.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  greenprobe setup-perf                            print the commands\n"
                              "  sudo greenprobe setup-perf --apply --user alice  run them; alice joins the group")
    p.add_argument("--group", default="greenprobe", help="the group whose members may read (default greenprobe)")
    p.add_argument("--user", action="append", metavar="USER", help="add USER to the group (repeat for more)")
    p.add_argument("--helper", help="the helper's path (default: the one installed with the package)")
    p.add_argument("--apply", action="store_true", help="run the commands (as root) and check the result")
    p.add_argument("--check", action="store_true", help="only say whether the helper is set up (exit 1 if not)")

    p = sub.add_parser("measure", help="run a command under a private daemon and report its energy",
                       description="Starts a private daemon, runs CMD with GREENPROBE_DAEMON set (so greenprobe.mark() "
                                   "in any of its processes is recorded), records the whole run as one interval, "
                                   "writes OUT/*.parquet and prints time, energy per domain, average power and marks "
                                   "per label. The exit status is CMD's.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  greenprobe measure -- python infer.py --batch 64\n"
                              "  greenprobe measure --sensors nvml,rapl-msr --baseline 3 --out runs/a -- ./bench")
    _add_sensor_args(p)
    p.add_argument("--out", default="results/measure", help="output folder (default results/measure)")
    p.add_argument("--baseline", type=float, default=0.0, metavar="SECONDS",
                   help="measure idle power for SECONDS before and after the command; report energy net of it")
    p.add_argument("--kill-after", type=_seconds, default=10.0, metavar="SECONDS",
                   help="after a signal passed on to CMD, wait SECONDS for it to end, then send SIGTERM, and as long "
                        "again, then SIGKILL (default 10; a SIGINT that measure's caller ignored is ignored, as "
                        "shells expect of background jobs)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run")

    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "sensors":
            return _cmd_sensors(args)
        if args.command == "runtimes":
            return _cmd_runtimes(args)
        if args.command == "setup-perf":
            from .setup_perf import cmd_setup_perf

            return cmd_setup_perf(args)
        if args.command == "record":
            from .record import cmd_record

            return cmd_record(args)
        if args.command == "study":
            from pathlib import Path

            from ..study import LocalExecutor, load_spec

            def csv(v):
                return None if v is None else [x.strip() for x in v.split(",") if x.strip()]

            batch_sizes = csv(args.batch_sizes)
            if batch_sizes is not None:
                if not all(b.isascii() and b.isdigit() for b in batch_sizes):
                    from ..errors import ConfigError

                    raise ConfigError(f"batch sizes must be whole numbers >= 1, got --batch-sizes {args.batch_sizes}",
                                      "pass a comma list, e.g. --batch-sizes 1,64")
                batch_sizes = [int(b) for b in batch_sizes]
            spec = load_spec(args.spec, args.quick, runtimes=csv(args.runtimes), models=csv(args.models),
                             batch_sizes=batch_sizes, providers=csv(args.providers), runs=args.runs,
                             size=args.size, sensors=args.sensors, order=args.order, task=args.task,
                             precisions=csv(args.precisions), prompt_tokens=args.prompt_tokens,
                             output_tokens=args.output_tokens)
            if args.executor == "slurm":
                from ..study.slurm import SlurmExecutor, SlurmOptions

                executor = SlurmExecutor(SlurmOptions.load(
                    args.spec, partition=args.partition, account=args.account, time_limit=args.time_limit,
                    gpus_per_job=args.gpus_per_job, sbatch_args=args.sbatch_args), wait=not args.no_wait)
            else:
                executor = LocalExecutor()
            path = executor.run(spec, Path(args.out), lambda s: print(s, file=sys.stderr, flush=True))
            if path is not None:
                print(f"wrote {path}")
            return 0
        if args.command == "report":
            from ..study.report import write_report

            print(f"wrote {write_report(args.results)}")
            return 0
        if args.command == "daemon":
            if args.no_socket and not args.listen:
                parser.error("--no-socket needs --listen HOST:PORT")
            from ..daemon import run

            return run(args)
        if args.command == "measure":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                parser.error("measure needs a command after --, e.g. greenprobe measure -- python infer.py")
            from .measure import cmd_measure

            return cmd_measure(args, cmd)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # errors the user can act on: what failed, then the fix, no traceback
        from ..errors import GreenprobeError

        if isinstance(e, GreenprobeError):
            print(f"greenprobe: {e.message}", file=sys.stderr)
            if e.fix:
                print(f"  fix: {e.fix}", file=sys.stderr)
            return 1
        raise
    return 0


def _cmd_sensors(args) -> int:
    from ..sensors import list_sensors

    statuses = list_sensors()
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
        return 0
    roles = {"device": "auto: kept when it opens", "cpu": "auto: the first CPU kind that opens",
             "estimate": "auto: only when no CPU kind opens", "none": "only when named"}
    for s in statuses:
        mark = "ok " if s.available else "-- "
        print(f"{mark} {s.kind:<14} {s.description}")
        if args.verbose:
            print(textwrap.indent(textwrap.fill(f"({roles.get(s.auto, s.auto)}) reports: {s.domains_doc}", 100),
                                  "      "))
            for o in s.options:
                env = f" [{o['env']}]" if o["env"] else ""
                print(textwrap.indent(textwrap.fill(f"{o['key']}{env}: {o['help']}", 100,
                                                    subsequent_indent="    "), "      "))
        if s.available and s.domains:
            est = "  (ESTIMATED, not measured)" if s.estimated else ""
            print(f"      domains: {', '.join(s.domains)}{est}")
        elif not s.available:
            print(textwrap.indent(textwrap.fill(f"why: {s.reason}", 100), "      "))
            if s.fix:
                print(textwrap.indent(textwrap.fill(f"fix: {s.fix}", 100), "      "))
    return 0


def _cmd_runtimes(args) -> int:
    from ..runtimes import describe_all

    rows = describe_all() + describe_all(task="generate")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if not r.get("installed"):
            print(f"--  {r['runtime']:<17} not usable from {r['python']}")
            print(textwrap.indent(textwrap.fill(f"why: {r.get('reason', '')}", 100), "      "))
            print(textwrap.indent(textwrap.fill(f"fix: {r.get('fix', '')}", 100), "      "))
            continue
        print(f"ok  {r['runtime']:<17} {r['version']:<12} devices: {', '.join(r.get('devices', []))}   ({r['python']})")
        for dev, precs in (r.get("precisions") or {}).items():
            why = (r.get("reasons") or {}).get(dev, "")
            print(f"      {r['task']} on {dev}: {', '.join(precs) or 'none'}" + (f" ({why})" if why and not precs else ""))
        for p in r.get("providers", []):
            if p["available"]:
                print(f"      provider {p['name']}: runs here")
            else:
                print(textwrap.indent(textwrap.fill(f"provider {p['name']}: skipped: {p['reason']}", 100), "      "))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
