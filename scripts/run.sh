#!/usr/bin/env bash
# The main job on this machine's defaults: install greenprobe and the runtimes, show what can be
# measured here, run the quick study (the paper's whole matrix, small inputs, 3 runs each: about
# 26 minutes on a 2-core CPU machine, 2026-11-29) and write its report: results/summary.parquet, results/report.html.
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
