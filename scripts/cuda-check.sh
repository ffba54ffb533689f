#!/usr/bin/env bash
# The CUDA backend's checks, for a machine with an NVIDIA GPU (CI has none:
# there these tests only check that CUDA's absence is reported with its reason).
#
#   scripts/cuda-check.sh                 # on a GPU machine with Rust: build and run everything
#   scripts/cuda-check.sh pack DIR        # on any machine with Rust: build the binaries into DIR
#   DIR/cuda-check.sh run DIR             # on a GPU machine without Rust, after copying DIR there
#
# Both ways need APR_MODEL_DIR (default ~/.cache/apr/models) to hold
# qwen2.5-coder-0.5b-instruct.gguf and smollm2-135m-instruct-q4_1.gguf
# (scripts/fetch-models.sh). What runs: every kernel against the CPU backends on
# made-up data (every weight dtype, 1/5/40 tokens on CUDA and tensor cores, the
# fused products, norm, RoPE, split attention past 12k positions), greedy tokens
# on the reference prompts on CUDA against llama.cpp's (0.5B and SmolLM2), CUDA
# against the exact backend isolated on both models (and a broken CUDA op caught
# at its layer), the examples' `*_cuda` model tests, a generation, and
# `bench --backend cuda`. The comparison with llama.cpp's CUDA build is
# scripts/bench-cuda-vs-llama.sh.
set -euo pipefail
mode=${1:-all}
models=${APR_MODEL_DIR:-$HOME/.cache/apr/models}
qwen=$models/qwen2.5-coder-0.5b-instruct.gguf

# Test binaries by name: (package, test target).
tests=("apr-engine cuda_kernels" "apr-engine engine_reference" "apr-engine backend_diff" "apr-examples format_equivalence" "apr-examples trace_diff")

run_checks() { # APR TEST_DIR
    local apr=$1 dir=$2
    "$dir/cuda_kernels" --nocapture
    "$dir/engine_reference" on_cuda --skip 1_5b --nocapture
    "$dir/backend_diff" cuda --nocapture
    "$dir/format_equivalence" _cuda --nocapture
    "$dir/trace_diff" _cuda --nocapture
    "$apr" apr run "$qwen" -p "What is 2+2?" -n 16 --backend cuda --verbose
    "$apr" apr bench "$qwen" --backend cuda -p 64,512 -n 128 -r 3
}

case $mode in
all)
    cd "$(dirname "$0")/.."
    cargo build --release -p cargo-apr
    for t in "${tests[@]}"; do set -- $t; cargo test --release -p "$1" --test "$2" --no-run; done
    dir=$(mktemp -d)
    for t in "${tests[@]}"; do set -- $t; cp "$(ls -t target/release/deps/"$2"-* | grep -v '\.d$' | head -1)" "$dir/$2"; done
    run_checks target/release/cargo-apr "$dir"
    ;;
pack)
    out=${2:?pack needs a folder}
    cd "$(dirname "$0")/.."
    mkdir -p "$out"
    cargo build --release -p cargo-apr
    strip -o "$out/cargo-apr" target/release/cargo-apr
    for t in "${tests[@]}"; do
        set -- $t
        exe=$(cargo test --release -p "$1" --test "$2" --no-run --message-format=json |
            python3 -c "import json,sys; print([m['executable'] for m in map(json.loads, sys.stdin) if m.get('executable') and m['target']['name'] == '$2'][0])")
        strip -o "$out/$2" "$exe"
    done
    cp "$0" "$out/cuda-check.sh"
    echo "copy $out to the GPU machine, then: $out/cuda-check.sh run $out" >&2
    ;;
run)
    dir=${2:?run needs the packed folder}
    # The examples' model tests find their crate (its Cargo.toml) at the path
    # they were built in: run this from a checkout at that path (or a link to it).
    run_checks "$dir/cargo-apr" "$dir"
    ;;
*)
    echo "usage: $0 [all | pack DIR | run DIR]" >&2
    exit 2
    ;;
esac
