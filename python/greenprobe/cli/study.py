"""`greenprobe study`: the paper's experiment, on this machine or a Slurm cluster."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
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
    p.add_argument("--target-rel-ci", type=float, metavar="FRACTION",
                   help="run a configuration again until the 95 %% interval of each energy figure is within this "
                        "fraction of it, e.g. 0.025 (default 0: exactly --runs)")
    p.add_argument("--max-runs", type=int, metavar="N", help="with --target-rel-ci: the most runs a configuration gets "
                                                             "(default 3 x --runs)")
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
    p.set_defaults(run=run)


def run(args, parser) -> int:
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
                     output_tokens=args.output_tokens, target_rel_ci=args.target_rel_ci, max_runs=args.max_runs)
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
