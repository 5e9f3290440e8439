#!/usr/bin/env bash
# .venv-bench: greenprobe (the same build as .venv) + the peers it is compared with (requirements/bench.txt).
# Kept apart from .venv so the peers' dependencies never change what the tests run against.
# Needs .venv with greenprobe installed first (scripts/setup-venv.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-bench/bin/python ]; then
  "$PY" -m venv .venv-bench
  .venv-bench/bin/python -m pip install -q --upgrade pip
fi
.venv-bench/bin/python -m pip install -q -r requirements/bench.txt
rm -rf build/wheel
.venv/bin/python -m pip wheel -q --no-deps -w build/wheel .
.venv-bench/bin/python -m pip install -q --force-reinstall --no-deps build/wheel/greenprobe-*.whl
.venv-bench/bin/python -m pip install -q "numpy>=1.23" "pyarrow>=12"
.venv-bench/bin/python -c "import greenprobe, zeus, codecarbon; print('bench env ok: zeus', zeus.__version__, 'codecarbon', codecarbon.__version__)"
