#!/usr/bin/env bash
# .venv-bench: greenprobe (the same build as .venv) + the peers it is compared with (requirements/bench.txt).
# Kept apart from .venv so the peers' dependencies never change what the tests run against.
# Needs .venv with greenprobe installed first (scripts/setup-venv.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
make_venv .venv-bench
.venv-bench/bin/python -m pip install -q -r requirements/bench.txt
install_greenprobe_wheel .venv-bench
.venv-bench/bin/python -m pip install -q "numpy>=1.23" "pyarrow>=12"
.venv-bench/bin/python -c "import greenprobe, zeus, codecarbon; print('bench env ok: zeus', zeus.__version__, 'codecarbon', codecarbon.__version__)"
