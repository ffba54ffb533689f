#!/usr/bin/env bash
# apr's CUDA backend against llama.cpp's CUDA build on this machine's GPU, in
# one run: builds llama.cpp with CUDA for the GPU (once, outside the
# repository), then runs llama-bench (-ngl 99 -fa 1) and `cargo apr bench
# --backend cuda` on each model and prints the ratios (scripts/bench_vs_llama.py).
#
# Usage: scripts/bench-cuda-vs-llama.sh [--build-only] [MODEL.gguf ...]   (default: the two Qwen models)
#   APR_LLAMA_SRC  an unpacked llama.cpp source tree (default: the llama-cpp-python
#                  sdist's vendored copy, the commit of reference/, fetched with pip)
#   APR_LLAMA_DIR  where the CUDA build goes (default ~/.cache/apr/llama.cpp-cuda)
#   APR_BIN        the cargo-apr binary (default target/release/cargo-apr)
#   APR_LLAMA_SERVER=1  also builds llama-server (for scripts/bench_serve.py --backend cuda)
# A model's shape without its weights: `cargo apr synth --like MODEL --out FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${APR_LLAMA_DIR:-$HOME/.cache/apr/llama.cpp-cuda}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
server=${APR_LLAMA_SERVER:-0}
targets=(llama-bench)
[ "$server" = 1 ] && targets+=(llama-server)
if [ ! -x "$dir/build/bin/llama-bench" ] || { [ "$server" = 1 ] && [ ! -x "$dir/build/bin/llama-server" ]; }; then
    src=${APR_LLAMA_SRC:-}
    if [ -z "$src" ]; then
        python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$dir/sdist"
        tar -xzf "$dir/sdist/llama_cpp_python-$version.tar.gz" -C "$dir/sdist"
        src=$dir/sdist/llama_cpp_python-$version/vendor/llama.cpp
    fi
    command -v cmake >/dev/null && command -v ninja >/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check cmake ninja
    cmake -S "$src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=${APR_CUDA_ARCH:-native} -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER="$([ "$server" = 1 ] && echo ON || echo OFF)" -DLLAMA_BUILD_EXAMPLES=OFF
    cmake --build "$dir/build" -j "$(nproc)" --target "${targets[@]}"
fi
echo "llama.cpp (CUDA): $dir/build/bin/llama-bench"
[ "${1:-}" = --build-only ] && exit 0
APR_LLAMA_DIR=$dir python3 scripts/bench_vs_llama.py --backend cuda --prompt-sizes 512 --gen 128 --reps 5 "$@"
