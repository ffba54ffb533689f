#!/usr/bin/env bash
# Builds llama.cpp (outside the repository) and apr, then benchmarks both on
# the reference models in one run and prints the ratios. Arguments go to
# scripts/bench_vs_llama.py (--threads, --reps, --gen, model paths).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-llama-cpp.sh
cargo build --release -p cargo-apr
python3 scripts/bench_vs_llama.py "$@"
