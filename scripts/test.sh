#!/usr/bin/env bash
# The test command (README; .ci/run calls it): installs greenprobe into .venv, runs the C++ unit
# tests under ASan+UBSan, the ring and sampler tests under ThreadSanitizer, then the Python tests
# (the runtime tests need scripts/setup-runtimes.sh, which this runs).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}

echo "== install greenprobe into .venv"
bash scripts/setup-venv.sh test

echo "== runtime environments (.venv: torch, tensorflow, onnxruntime; .venv-mxnet: mxnet)"
bash scripts/setup-runtimes.sh

echo "== generative runtimes (.venv: CTranslate2, llama.cpp; .venv-genai: ONNX Runtime GenAI)"
bash scripts/setup-genai.sh

echo "== services the tests run for real (Debian's prometheus)"
bash scripts/setup-services.sh

echo "== C++ unit tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
cmake -S . -B build/cpp-asan -DGREENPROBE_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Debug \
  -DGREENPROBE_SANITIZE=address,undefined > /dev/null
cmake --build build/cpp-asan -j "$JOBS" > /dev/null
ctest --test-dir build/cpp-asan --output-on-failure

echo "== C++ concurrency tests (ThreadSanitizer: ring and sampler)"
export TSAN_OPTIONS=halt_on_error=1
cmake -S . -B build/cpp-tsan -DGREENPROBE_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Debug \
  -DGREENPROBE_SANITIZE=thread > /dev/null
cmake --build build/cpp-tsan -j "$JOBS" --target test_ring test_sampler test_mark_ring > /dev/null
ctest --test-dir build/cpp-tsan -R 'test_ring|test_sampler|test_mark_ring' --output-on-failure

echo "== Python tests"
export GREENPROBE_REQUIRE_RUNTIMES=1  # a missing runtime environment fails the run instead of skipping
export GREENPROBE_REQUIRE_SERVICES=1  # and so does a missing Prometheus
.venv/bin/python -m pytest tests/python "$@"
