#!/usr/bin/env bash
# The services the tests run for real, from Debian's packages: Prometheus (it scrapes a daemon and
# answers rate() queries in tests/python/test_prometheus_server.py) and a one-node Slurm
# (scripts/slurm-local.sh: the study's --executor slurm in tests/python/test_study_slurm.py), and
# setcap from libcap2-bin (greenprobe setup-perf).
# Idempotent: installs only what is missing, starts only what is not running. Needs root (CI runs
# as root); without it, says what to run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus > /dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "prometheus is missing; install it as root: apt-get update && apt-get install -y prometheus" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: the server alone (no node exporter); policy-rc.d keeps the service stopped
  apt-get install -y -qq --no-install-recommends prometheus > /dev/null
fi
echo "prometheus: $(prometheus --version 2>&1 | head -1)"
# setcap/getcap: `greenprobe setup-perf --apply` in tests/python/test_perf_helper.py
if ! command -v setcap > /dev/null && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libcap2-bin > /dev/null
fi
if [ "$(id -u)" != 0 ]; then
  echo "a local Slurm needs root: sudo bash scripts/slurm-local.sh start" >&2
  exit 1
fi
bash scripts/slurm-local.sh start
