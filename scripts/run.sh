#!/usr/bin/env bash
# The main job on this machine's defaults: install greenprobe and the runtimes, show what can be
# measured here, run the quick studies (the paper's whole matrix, small inputs, 3 runs each; and the
# generative one beside it) and write their report: results/summary.parquet, results/report.html
# (20.6 minutes on a 2-core CPU machine once set up, 2026-12-06: benchmarks/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
bash scripts/setup-venv.sh
bash scripts/setup-runtimes.sh
bash scripts/setup-genai.sh
.venv/bin/greenprobe sensors
.venv/bin/greenprobe study --quick --out "$OUT"
# the generative study beside it: its section joins the same report
.venv/bin/greenprobe study --quick --task generate --out "$OUT/generate"
.venv/bin/greenprobe report "$OUT"
