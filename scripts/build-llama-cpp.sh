#!/usr/bin/env bash
# Builds llama.cpp (CPU) outside the repository, from the llama-cpp-python
# sdist's vendored copy (the same commit as shared/reference), into
# ${APR_LLAMA_DIR:-$HOME/.cache/apr/llama.cpp}. Idempotent.
set -euo pipefail
dir="${APR_LLAMA_DIR:-$HOME/.cache/apr/llama.cpp}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
if [ -x "$dir/build/bin/llama-bench" ]; then
  echo "$dir/build/bin (present)"
  exit 0
fi
mkdir -p "$dir"
python3 -m pip install --quiet --disable-pip-version-check cmake ninja
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$dir/sdist"
tar -xzf "$dir"/sdist/llama_cpp_python-"$version".tar.gz -C "$dir/sdist"
src="$dir/sdist/llama_cpp_python-$version/vendor/llama.cpp"
cmake -S "$src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
cmake --build "$dir/build" --target llama-bench llama-completion llama-tokenize
echo "$dir/build/bin"
