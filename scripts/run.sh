#!/usr/bin/env bash
# The main job on this machine's defaults: install, show what can be measured here, record.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
.venv/bin/greenprobe sensors
.venv/bin/greenprobe record --sensors auto --duration "${DURATION:-10}" --out results/record
