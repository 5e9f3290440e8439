#!/usr/bin/env bash
# Creates the runtime environments reproducibly (pinned in requirements/):
#   .venv        greenprobe + PyTorch, TensorFlow, ONNX Runtime, exporters  (requirements/runtimes.txt)
#   .venv-mxnet  greenprobe + MXNet 1.9.1 with numpy < 1.24                (requirements/mxnet.txt)
# Needs .venv with greenprobe installed first (scripts/setup-venv.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

echo "== runtimes into .venv (requirements/runtimes.txt)"
.venv/bin/python -m pip install -q -r requirements/runtimes.txt

echo "== MXNet environment .venv-mxnet (requirements/mxnet.txt)"
make_venv .venv-mxnet
.venv-mxnet/bin/python -m pip install -q -r requirements/mxnet.txt
# the same greenprobe build as .venv (the worker module, on the same clock)
install_greenprobe_wheel .venv-mxnet
.venv-mxnet/bin/python -m pip install -q "pyarrow>=12"
.venv-mxnet/bin/python -c "import mxnet, greenprobe.runtimes.worker; print('mxnet', mxnet.__version__, 'ok')"
