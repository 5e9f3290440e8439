#!/usr/bin/env bash
# Generates the Python gRPC stubs from proto/greenprobe/v1/probe.proto into python/greenprobe/v1/.
#   bash scripts/gen-proto.sh           regenerate in place
#   bash scripts/gen-proto.sh --check   fail if the committed stubs differ from what the .proto gives
# grpcio-tools 1.51.3 (protoc 21) is pinned on purpose: its generated code loads on every protobuf
# runtime from 3.20 (MXNet's environment) to 7.x (tested), which newer protoc output does not.
# It lives in its own environment (.venv-protoc) so it never changes another one's protobuf.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-protoc/bin/python ]; then
  "$PY" -m venv .venv-protoc
  .venv-protoc/bin/python -m pip install -q "grpcio-tools==1.51.3"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
.venv-protoc/bin/python -m grpc_tools.protoc -Iproto --python_out="$out" --grpc_python_out="$out" \
  proto/greenprobe/v1/probe.proto
for f in probe_pb2.py probe_pb2_grpc.py; do
  if [ "${1:-}" = "--check" ]; then
    if ! cmp -s "$out/greenprobe/v1/$f" "python/greenprobe/v1/$f"; then
      echo "python/greenprobe/v1/$f is out of date with proto/greenprobe/v1/probe.proto: run bash scripts/gen-proto.sh" >&2
      exit 1
    fi
  else
    cp "$out/greenprobe/v1/$f" "python/greenprobe/v1/$f"
  fi
done
[ "${1:-}" = "--check" ] && echo "generated stubs match proto/greenprobe/v1/probe.proto"
exit 0
