#!/usr/bin/env bash
# Builds llama.cpp (CPU) outside the repository, from the llama-cpp-python
# sdist's vendored copy (the same commit as reference/), into
# ${APR_LLAMA_DIR:-$HOME/.cache/apr/llama.cpp}. Idempotent: a second run
# only builds what is missing.
#
# Shared libraries (BUILD_SHARED_LIBS=ON) so that the sdist's own Python
# package `llama_cpp` can load them through LLAMA_CPP_LIB_PATH=$dir/build/bin
# without a second compile (scripts/llama_reference.py does this).
set -euo pipefail
dir="${APR_LLAMA_DIR:-$HOME/.cache/apr/llama.cpp}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
tools=(llama-bench llama-completion llama-tokenize llama-perplexity)
# APR_LLAMA_SERVER=1 adds llama-server (for scripts/bench_serve.py; a long compile).
server="${APR_LLAMA_SERVER:-0}"
[ "$server" = 1 ] && tools+=(llama-server)
bin="$dir/build/bin"
if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-perplexity" ] && [ -e "$bin/libllama.so" ] \
  && grep -q -- "-mno-amx-int8" "$dir/build/CMakeCache.txt" 2>/dev/null \
  && { [ "$server" != 1 ] || [ -x "$bin/llama-server" ]; }; then
  echo "$bin (present)"
  exit 0
fi
mkdir -p "$dir"
src="$dir/sdist/llama_cpp_python-$version/vendor/llama.cpp"
if [ ! -d "$src" ]; then
  python3 -m pip install --quiet --disable-pip-version-check cmake ninja
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$dir/sdist"
  tar -xzf "$dir"/sdist/llama_cpp_python-"$version".tar.gz -C "$dir/sdist"
fi
# A build directory configured before this script asked for shared libraries
# would keep its static setting in the cache: reconfigure explicitly.
# AMX off: virtual machines report AMX in cpuid yet trap its instructions, and
# llama.cpp's AMX path then dies with SIGILL (apr does not use AMX either, so
# both run AVX-512 VNNI). An explicit -mno-* wins over -march=native in GCC.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" \
  -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER="$([ "$server" = 1 ] && echo ON || echo OFF)"
# The library first: scripts/llama_reference.py needs only libllama.so.
nice cmake --build "$dir/build" -j "${APR_LLAMA_JOBS:-2}" --target llama
nice cmake --build "$dir/build" -j "${APR_LLAMA_JOBS:-2}" --target "${tools[@]}"
echo "$bin"
