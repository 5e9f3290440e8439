#!/usr/bin/env bash
# Sampler benchmarks (issue: native sampler). Builds the C++ benchmark, runs every part, writes
# markdown tables to benchmarks/out/. Usage: bash benchmarks/run_sampler.sh [POLL_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
mkdir -p benchmarks/out
cmake -S . -B build/bench -DGREENPROBE_BUILD_BENCHMARKS=ON -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/bench -j 2 --target bench_sampler > /dev/null
b=build/bench/benchmarks/cpp/bench_sampler
{ echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"; } > benchmarks/out/machine.txt
$b ring > benchmarks/out/ring.md
$b poll "$secs" > benchmarks/out/poll.md
$b edges 3 > benchmarks/out/edges.md
$b drops 60 > benchmarks/out/drops.md
.venv/bin/python benchmarks/bench_mark.py 200000 > benchmarks/out/mark.md
echo "done: benchmarks/out/*.md"
