#!/usr/bin/env bash
# The generative runtimes (issue 21), reproducibly (pinned in requirements/):
#   .venv        + CTranslate2, llama-cpp-python, gguf, sentencepiece   (requirements/genai.txt)
#                  llama-cpp-python ships as source only: built once (about 4 min on 2 cores), its
#                  wheel kept in $GREENPROBE_CACHE (default ~/.cache/greenprobe: every checkout on this
#                  machine, CI's fresh clones included, shares it), installed from there afterwards
#   .venv-genai  greenprobe + ONNX Runtime GenAI and its model builder  (requirements/ortgenai.txt):
#                  onnxruntime-genai pulls the CPU onnxruntime, which must not meet .venv's onnxruntime-gpu
# Needs .venv with greenprobe installed first (scripts/setup-venv.sh). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# -- .venv: CTranslate2 and llama.cpp ----------------------------------------------------------
echo "== CTranslate2 and llama.cpp into .venv (requirements/genai.txt)"
LLAMA_CPP_VERSION=$(sed -n 's/^llama-cpp-python==\([0-9.]*\).*/\1/p' requirements/genai.txt)
CACHE=${GREENPROBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/greenprobe}
LLAMA_CPP_SDIST=$CACHE/sdist/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz
get_llama_cpp_sdist() {
  [ -f "$LLAMA_CPP_SDIST" ] || .venv/bin/python -m pip download -q --no-deps --no-binary llama-cpp-python \
    -d "$CACHE/sdist" "llama-cpp-python==$LLAMA_CPP_VERSION"
}
# CPU only whatever the environment says; no multimodal library (mtmd: imported only for vision
# chat formats); llama.cpp's tools, tests and examples are off in a subproject build anyway.
LLAMA_CPP_CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_HIP=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF"
# Built for this CPU (llama.cpp's default -march=native) but without AMX: llama.cpp's AMX matmul
# (q8_0/q4 on CPUs with AMX-INT8, such as these Xeons) dies of SIGILL at its first `tilezero` here
# (its tile configuration is optimised away; llama.cpp PR 26954), while AMX itself works.
LLAMA_CPP_CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# One cache folder per CPU model and flag set and build options: a build/ carried to another machine
# never installs a wheel it cannot run, and changed options rebuild.
cpu_key=$( { grep -m2 -E '^(model name|flags)' /proc/cpuinfo; echo "$LLAMA_CPP_CMAKE_ARGS $LLAMA_CPP_CFLAGS"; } \
  | md5sum | cut -c1-12)
LLAMA_CPP_WHEELS=$CACHE/wheels/llama-cpp-$cpu_key
if ! compgen -G "$LLAMA_CPP_WHEELS/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl" >/dev/null; then
  get_llama_cpp_sdist
  echo "   building llama-cpp-python $LLAMA_CPP_VERSION once (CPU only, niced: 4-9 min on 2 cores)"
  rm -rf "$LLAMA_CPP_WHEELS.tmp"
  CMAKE_ARGS="$LLAMA_CPP_CMAKE_ARGS" CFLAGS="$LLAMA_CPP_CFLAGS" CXXFLAGS="$LLAMA_CPP_CFLAGS" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) FORCE_CMAKE=1 \
    nice -n 10 .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir -w "$LLAMA_CPP_WHEELS.tmp" "$LLAMA_CPP_SDIST"
  mkdir -p "$CACHE/wheels"
  rm -rf "$LLAMA_CPP_WHEELS" && mv "$LLAMA_CPP_WHEELS.tmp" "$LLAMA_CPP_WHEELS"
fi
.venv/bin/python -m pip install -q --find-links "$LLAMA_CPP_WHEELS" -r requirements/genai.txt
# the cached wheel is the one installed (pip keeps an installed llama-cpp-python of the same version,
# whatever it was built with): a stamp in the environment names the wheel that went in
llama_cpp_wheel=$(compgen -G "$LLAMA_CPP_WHEELS/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl" | head -1)
if [ "$(cat .venv/.llama-cpp-wheel 2>/dev/null)" != "$llama_cpp_wheel" ]; then
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "$llama_cpp_wheel"
  echo "$llama_cpp_wheel" > .venv/.llama-cpp-wheel
fi
# llama.cpp's own HF -> GGUF converter, from the same sdist, kept inside the environment where
# greenprobe.runtimes.gen_llamacpp finds it: $VENV/share/llama.cpp-<version>/convert_hf_to_gguf.py
# with its conversion/ package and its own gguf-py beside it (the script puts gguf-py first on its
# path: it needs gguf-py's newer code than PyPI's gguf of the same version number).
LLAMA_CPP_CONVERT=.venv/share/llama.cpp-$LLAMA_CPP_VERSION
if [ ! -f "$LLAMA_CPP_CONVERT/gguf-py/gguf/__init__.py" ]; then
  get_llama_cpp_sdist
  rm -rf "$LLAMA_CPP_CONVERT.tmp" && mkdir -p "$LLAMA_CPP_CONVERT.tmp"
  src=llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp
  tar -xzf "$LLAMA_CPP_SDIST" -C "$LLAMA_CPP_CONVERT.tmp" --strip-components=3 \
    "$src/convert_hf_to_gguf.py" "$src/conversion" "$src/gguf-py" "$src/LICENSE"
  rm -rf "$LLAMA_CPP_CONVERT" && mv "$LLAMA_CPP_CONVERT.tmp" "$LLAMA_CPP_CONVERT"
fi
.venv/bin/python -c "import ctranslate2, llama_cpp, gguf; print('ctranslate2', ctranslate2.__version__, \
'llama_cpp', llama_cpp.__version__, 'gguf ok;', llama_cpp.llama_print_system_info().decode().strip(), ';', 'ct2 cpu compute types:', sorted(ctranslate2.get_supported_compute_types('cpu')))"


# -- .venv-genai: ONNX Runtime GenAI -------------------------------------------------------------
# about 1.5 GB (torch's CPU build is most of it); the first run about 2 min here (50 s of packages,
# the greenprobe wheel the rest), a second one about 5 s
echo "== ONNX Runtime GenAI environment .venv-genai (requirements/ortgenai.txt)"
make_venv .venv-genai
.venv-genai/bin/python -m pip install -q -r requirements/ortgenai.txt
# the same greenprobe build as .venv (the worker module, on the same clock): rebuilt only when
# greenprobe's sources changed since it was last installed here (always, outside a git checkout)
src=$(git ls-files -co --exclude-standard -- pyproject.toml CMakeLists.txt cpp proto python 2>/dev/null | LC_ALL=C sort \
      | while read -r f; do if [ -f "$f" ]; then sha1sum "$f"; fi; done | sha1sum | cut -c1-40) || src=""
if [ -z "$src" ] || [ "$(cat .venv-genai/.greenprobe-source 2>/dev/null)" != "$src" ]; then
  install_greenprobe_wheel .venv-genai
  echo "$src" > .venv-genai/.greenprobe-source
fi
.venv-genai/bin/python -c "import onnxruntime_genai as og, onnx_ir, torch, transformers, greenprobe.runtimes.worker, \
greenprobe.runtimes.gen_ortgenai; print('onnxruntime-genai', og.__version__, 'ok; its builder: torch', torch.__version__, \
'transformers', transformers.__version__)"
