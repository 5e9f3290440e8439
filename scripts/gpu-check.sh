#!/usr/bin/env bash
# The prepared check for a machine with an NVIDIA GPU (GPU machines are lent rarely and briefly):
# unattended, within 10 minutes, it
#   1. records the machine (GPU, driver, CPU, Python);
#   2. builds the core for this machine's python3, the sampler benchmark and the fake libraries;
#   3. lists the sensors (`greenprobe sensors -v`);
#   4. runs the nvml sensor's tests against the real driver (tests/python/test_nvml_driver.py);
#   5. runs the sampler benchmark on the real sensors (bench_sampler real: poll cost against the
#      timer floor, the update period learned, how narrowly updates are dated);
#   6. runs a quick study with PyTorch on CUDA and ONNX Runtime with every provider that works
#      (CUDA and TensorRT where installed; each one missing is listed with the reason);
#   7. runs a quick generative study: transformers on CUDA at each precision, and vLLM where installed
#      (engine steps marked; its own per-request metrics kept), each missing one listed with the reason;
# and prints tables ready for benchmarks/RESULTS.md (also written to $OUT/gpu-check.md).
#
# Usage: bash scripts/gpu-check.sh [--standin]
#   --standin   no GPU needed: the same steps against the fake NVML (its GPU power follows the load's
#               CPU time), shorter; tests/python/test_gpu_check.py runs this on every CI run.
# Environment: OUT (default benchmarks/out/gpu-check), PYTHON (default python3; with --standin
#   .venv/bin/python), GPU_CHECK_SECONDS (benchmark seconds per row, default 5; --standin 1),
#   GPU_CHECK_STUDY_S (the study's time limit, default 160; --standin 240), GPU_CHECK_GEN_S (the
#   generative study's, default 150; --standin 120).
# On a lent device machine: run with timeout_s 600 and fetch $OUT (the files come back).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STANDIN=0
[ "${1:-}" = "--standin" ] && STANDIN=1
OUT=${OUT:-benchmarks/out/gpu-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPORT=$OUT/gpu-check.md
: > "$REPORT"
: > "$OUT/steps.txt"
T0=$(date +%s)

if [ $STANDIN = 1 ]; then
  PY=${PYTHON:-$ROOT/.venv/bin/python}
  SECS=${GPU_CHECK_SECONDS:-1}
  STUDY_S=${GPU_CHECK_STUDY_S:-240}
  GEN_S=${GPU_CHECK_GEN_S:-120}
else  # the whole check within 10 minutes: build 1-2, tests and benchmark 2, the studies at most 3 + 2
  PY=${PYTHON:-python3}
  SECS=${GPU_CHECK_SECONDS:-5}
  STUDY_S=${GPU_CHECK_STUDY_S:-160}
  GEN_S=${GPU_CHECK_GEN_S:-150}
fi
BUILD=build/gpu-check
JOBS=$(nproc)

say() { echo "$*" | tee -a "$REPORT"; }
# step NAME LIMIT_S COMMAND...: runs it under a time limit, logs to $OUT/NAME.log, records the outcome
step() {
  local name=$1 limit=$2; shift 2
  local t=$(date +%s)
  echo "== $name (limit ${limit}s, $(( t - T0 ))s in)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local outcome=ok
  if [ $rc = 124 ] || [ $rc = 137 ]; then outcome="timed out after ${limit}s"; elif [ $rc != 0 ]; then outcome="failed (exit $rc)"; fi
  echo "$name: $outcome ($(( $(date +%s) - t ))s)" | tee -a "$OUT/steps.txt"
  [ "$outcome" = ok ] || tail -n 25 "$OUT/$name.log"
  return $rc
}

# 1. The machine
{
  echo "## GPU check $(date -u +%Y-%m-%dT%H:%MZ) $([ $STANDIN = 1 ] && echo '(STAND-IN: fake NVML, no GPU)')"
  echo
  echo "Command: \`bash scripts/gpu-check.sh$([ $STANDIN = 1 ] && echo ' --standin')\`"
  echo
  echo "- CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=index,name,driver_version,pci.bus_id,power.limit --format=csv,noheader 2>&1 | sed 's/^/- GPU: /'
  else
    echo "- GPU: no nvidia-smi on this machine"
  fi
  echo "- Python: $($PY -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>&1)"
  echo
} | tee -a "$REPORT"

# 2. Build: the core for this Python, the benchmark, the fake libraries
build() {
  local pyb
  pyb=$($PY -c 'import pybind11; print(pybind11.get_cmake_dir())' 2>/dev/null || true)
  local skbuild=()
  if [ $STANDIN = 0 ]; then
    [ -n "$pyb" ] || { echo "pybind11 is not installed for $PY: pip install pybind11"; return 1; }
    skbuild=(-DSKBUILD=ON "-Dpybind11_DIR=$pyb" "-DPython_EXECUTABLE=$(command -v "$PY")" "-DPYTHON_EXECUTABLE=$(command -v "$PY")")
  fi
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGREENPROBE_BUILD_BENCHMARKS=ON "${skbuild[@]}" &&
    cmake --build "$BUILD" -j "$JOBS" &&
    if [ $STANDIN = 0 ]; then cp "$BUILD"/_core*.so python/greenprobe/; fi
}
export -f build; export PY BUILD STANDIN JOBS
step build 300 bash -c build || { say "build failed: see $OUT/build.log"; exit 1; }
if [ $STANDIN = 0 ]; then
  export PYTHONPATH=$ROOT/python:$ROOT/tests/python${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$ROOT/tests/python${PYTHONPATH:+:$PYTHONPATH}
  # The fake NVML: a Hopper whose counter updates every 20 ms, 80 W idle, +150 W per CPU-second per
  # second that the check's load processes spend.
  export GREENPROBE_NVML_LIBRARY=$ROOT/$BUILD/libfake_nvml.so FAKE_NVML_GPUS=1 FAKE_NVML_UPDATE_MS=20 \
    FAKE_NVML_BASE_W=80 FAKE_NVML_WAVEFORM=constant FAKE_NVML_FOLLOW=greenprobe-nvml-check-load FAKE_NVML_FOLLOW_W=150
fi
export PYTHONUNBUFFERED=1

# 3. Sensors
step sensors 60 "$PY" -m greenprobe sensors -v
{ echo "### greenprobe sensors -v"; echo; echo '```'; cat "$OUT/sensors.log"; echo '```'; echo; } >> "$REPORT"

# 4. The nvml sensor against the driver
GREENPROBE_NVML_CHECK=1 GREENPROBE_CHECK_OUT=$OUT step nvml-tests 180 "$PY" -m pytest -q -s -p no:cacheprovider \
  tests/python/test_nvml_driver.py
"$PY" - "$OUT/nvml_driver.json" >> "$REPORT" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except OSError:
    print("### nvml against the driver\n\nno results (see nvml-tests.log)\n"); sys.exit()
print("### nvml against the driver (tests/python/test_nvml_driver.py)\n")
print("| GPU | idle W | load W | counter J | power readings integrated J | ratio | learned counter update ms | median update window µs |")
print("|---|---|---|---|---|---|---|---|")
for g, p in sorted(d.get("mean_power_w_by_label", {}).items()):
    a = d.get("counter_vs_power_readings", {}).get(g, {})
    w = d.get("update_windows", {}).get(g, {})
    fmt = lambda v, f: (f % v) if isinstance(v, (int, float)) else "-"
    print(f"| {g} | {fmt(p.get('idle'), '%.1f')} | {fmt(p.get('load'), '%.1f')} | {fmt(a.get('counter_j'), '%.1f')} | "
          f"{fmt(a.get('power_integral_j'), '%.1f')} | {fmt(a.get('ratio'), '%.4f')} | "
          f"{fmt(d.get('learned_update_period_ms', {}).get(g), '%.2f')} | {fmt(w.get('median_window_us'), '%.0f')} |")
info = d.get("sensor_info", {})
print("\n" + "\n".join(f"- {k}: {v}" for k, v in sorted(info.items())) + "\n")
EOF

# 5. The sampler on the real sensors
step bench 240 "$BUILD/benchmarks/cpp/bench_sampler" real "$SECS"
{ echo "### bench_sampler real $SECS"; echo; cat "$OUT/bench.log"; echo; } >> "$REPORT"

# 6. A quick study on the GPU
STUDY=$OUT/study
rm -rf "$STUDY"
if [ $STANDIN = 1 ]; then
  study_args=(--runtimes onnxruntime --models mobilenet_v2 --batch-sizes 1 --runs 2 --size tiny --sensors nvml)
else
  # every runtime in this Python (GREENPROBE_PYTHON_<RUNTIME> names the others), every provider that works
  export GREENPROBE_PYTHON_TORCH=${GREENPROBE_PYTHON_TORCH:-$(command -v "$PY")}
  export GREENPROBE_PYTHON_ONNXRUNTIME=${GREENPROBE_PYTHON_ONNXRUNTIME:-$(command -v "$PY")}
  # two models (a CNN and a transformer), both batch sizes, 2 runs: within the study's time limit
  study_args=(--runtimes torch,onnxruntime --models resnet50,bert-base-uncased --batch-sizes 1,64 --runs 2)
fi
if [ $STANDIN = 0 ]; then step runtimes 120 "$PY" -m greenprobe runtimes; else echo "(stand-in: the study lists its runtimes)" > "$OUT/runtimes.log"; fi
# (stand-in: the fake GPU's power follows the study's worker processes)
FAKE_NVML_FOLLOW=greenprobe.runtimes.worker step study "$STUDY_S" "$PY" -m greenprobe study --quick "${study_args[@]}" --out "$STUDY"
{
  echo "### greenprobe runtimes"; echo; echo '```'; cat "$OUT/runtimes.log"; echo '```'; echo
  echo "### quick study: greenprobe study --quick ${study_args[*]}"; echo
  "$PY" - "$STUDY/summary.parquet" <<'EOF'
import sys
try:
    import pyarrow.parquet as pq
    rows = pq.read_table(sys.argv[1]).to_pylist()
except Exception as e:
    print(f"no summary ({e}); see study.log")
    sys.exit()
f = lambda v, fmt: "-" if v is None or v != v else fmt % v
print("| runtime | source | provider | model | batch | status | ms per inference | J per inference (95 % interval) | net J "
      "| idle W | GPU util % | domains |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    ms = None if r.get("time_s_per_inference") is None else r["time_s_per_inference"] * 1e3
    print(f"| {r.get('runtime')} | {r.get('source') or '-'} | {r.get('provider') or '-'} | {r.get('model')} | {r.get('batch_size')} "
          f"| {r.get('status')} | {f(ms, '%.3f')} | {f(r.get('energy_j_per_inference'), '%.4g')} "
          f"({f(r.get('energy_j_per_inference_low'), '%.4g')} to {f(r.get('energy_j_per_inference_high'), '%.4g')}) "
          f"| {f(r.get('energy_j_per_inference_net'), '%.4g')} | {f(r.get('idle_power_w'), '%.1f')} "
          f"| {f(r.get('gpu_util_pct'), '%.0f')} | {r.get('total_domains') or r.get('domains') or '-'} |")
EOF
  echo
  if [ -f "$STUDY/skipped.json" ]; then echo "skipped here:"; echo '```'; cat "$STUDY/skipped.json"; echo '```'; fi
  echo
} >> "$REPORT"

# 7. A quick generative study on the GPU (issue 21): transformers on CUDA at every precision it has
#    there, and vLLM where this machine's Python has it (the GPU image has no vLLM and its wheels
#    exceed what a call may carry: then it is listed as skipped with that reason)
GSTUDY=$OUT/gen-study
rm -rf "$GSTUDY"
if [ $STANDIN = 1 ]; then
  gen_args=(--runtimes torch --models tiny --batch-sizes 1 --runs 2 --prompt-tokens 16 --output-tokens 4 --sensors nvml)
else
  export GREENPROBE_PYTHON_VLLM=${GREENPROBE_PYTHON_VLLM:-$(command -v "$PY")}
  # GPT-2 on CUDA at fp16 and bf16, batch 1 and 8: 4 configurations a runtime, within GEN_S
  gen_args=(--runtimes torch,vllm --models gpt2 --precisions fp16,bf16 --batch-sizes 1,8 --runs 2 --prompt-tokens 128
            --output-tokens 64 --providers cuda)
fi
FAKE_NVML_FOLLOW=greenprobe.runtimes.worker step gen-study "$GEN_S" "$PY" -m greenprobe study --quick --task generate \
  "${gen_args[@]}" --out "$GSTUDY"
{
  echo "### quick generative study: greenprobe study --quick --task generate ${gen_args[*]}"; echo
  "$PY" - "$GSTUDY/summary.parquet" <<'EOF2'
import sys
try:
    import pyarrow.parquet as pq
    rows = pq.read_table(sys.argv[1]).to_pylist()
except Exception as e:
    print(f"no summary ({e}); see gen-study.log")
    sys.exit()
f = lambda v, fmt: "-" if v is None or v != v else fmt % v
print("| configuration | status | TTFT ms | TPOT ms | J per output token (95 %) | J per prompt token (95 %) | J per request "
      "| idle W | domains |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    ms = lambda k: None if r.get(k) is None else r[k] * 1e3
    ci = lambda k: f"{f(r.get(k), '%.4g')} ({f(r.get(k + '_low'), '%.4g')} to {f(r.get(k + '_high'), '%.4g')})"
    print(f"| {r.get('id')} | {r.get('status')} {(r.get('error') or '')[:80]} | {f(ms('ttft_s'), '%.2f')} "
          f"| {f(ms('tpot_s'), '%.2f')} | {ci('energy_j_per_output_token')} | {ci('energy_j_per_prompt_token')} "
          f"| {f(r.get('energy_j_per_request'), '%.4g')} | {f(r.get('idle_power_w'), '%.1f')} "
          f"| {r.get('total_domains') or r.get('domains') or '-'} |")
EOF2
  echo
  if [ -f "$GSTUDY/skipped.json" ]; then echo "skipped here:"; echo '```'; cat "$GSTUDY/skipped.json"; echo '```'; fi
  echo
  # vLLM's own per-request timestamps (its RequestMetrics, kept in each run's record) beside the marks
  "$PY" - "$GSTUDY" <<'EOF3'
import json, pathlib, sys
rows = []
for p in sorted(pathlib.Path(sys.argv[1]).glob("configs/*/runs/r*.json")):
    r = json.loads(p.read_text())
    if "runtime_ttft_s" in r:
        rows.append(f"| {p.parts[-3]} | {r['run']} | {r['ttft_s'] * 1e3:.2f} | {r['runtime_ttft_s'] * 1e3:.2f} "
                    f"| {r.get('runtime_queue_s', float('nan')) * 1e3:.2f} |")
if rows:
    print("TTFT from greenprobe's prefill marks beside vLLM's own metrics (first token - arrival):\n")
    print("| configuration | run | marks ms | vLLM ms | vLLM queue ms |\n|---|---|---|---|---|")
    print("\n".join(rows))
else:
    print("no runtime kept its own per-request timings (vLLM absent, or its V1 engine leaves RequestOutput.metrics None)")
EOF3
  echo
} >> "$REPORT"

# 8. A GPU's energy split among the processes that use it (issue 22): two torch workers, NVML's
#    per-process use (the stand-in's is tested by tests/python/test_consumer_gpu.py)
if [ $STANDIN = 0 ]; then
  step gpu-consumers 120 "$PY" scripts/gpu_consumers.py 20
  { echo "### a GPU's energy per process (scripts/gpu_consumers.py 20)"; echo; cat "$OUT/gpu-consumers.log"; echo; } >> "$REPORT"
fi

echo
echo "== steps ($(( $(date +%s) - T0 ))s in all)"
cat "$OUT/steps.txt"
{ echo "### steps"; echo; sed 's/^/- /' "$OUT/steps.txt"; } >> "$REPORT"
echo "report: $REPORT"
! grep -qv ': ok (' "$OUT/steps.txt"
