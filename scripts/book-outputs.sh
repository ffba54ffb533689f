#!/usr/bin/env bash
# Regenerates the command outputs that book/src/commands.md and
# book/src/writing-model-tests.md include (book/src/output/*.txt), by running
# the release `cargo apr` on the real 0.5B model.
#
#   scripts/book-outputs.sh            # build the release binary, then run everything
#   APR_BIN=path/to/cargo-apr scripts/book-outputs.sh
#   scripts/book-outputs.sh run check  # only the named outputs
#
# Each file starts with the command line, holds its stdout and stderr (long
# outputs trimmed with an explicit `...` line) and ends with the exit code.
# Timings and throughputs are this machine's, on the day the file was made.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z "${APR_BIN:-}" ]]; then
    cargo build --release -p cargo-apr >&2 || exit 1
    cargo build --release -p apr-examples --example corrupt --example permute_qk >&2 || exit 1
    APR_BIN=$target/release/cargo-apr
fi
corrupt=${APR_CORRUPT_BIN:-$target/release/examples/corrupt}
permute_qk=${APR_PERMUTE_QK_BIN:-$target/release/examples/permute_qk}
model_dir=${APR_MODEL_DIR:-$HOME/.cache/apr/models}
model=$model_dir/qwen2.5-coder-0.5b-instruct.gguf
[[ -f $model ]] || { echo "missing $model: run scripts/fetch-models.sh" >&2; exit 1; }
out=$root/book/src/output
mkdir -p "$out"
scratch=$(mktemp -d /tmp/apr-book.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
# Shown paths: ~ for the home directory, $S for the scratch folder.
tidy() { sed -e "s#$scratch#\$S#g" -e "s#$target#target#g" -e "s#$HOME#~#g" -e "s#$root/##g"; }

# `cargo apr test`'s stdout: cargo's own test output cut, the matrix and summary kept.
matrix() { awk '/^gate /{ on = 1; if (NR > 1) print "..." } on { print }'; }

# A model test's panic message: from its header to its last check, the position table cut to 6 rows.
panic_message() {
    awk '/^model test /{ on = 1 } on && /^stack backtrace:/{ exit } on' |
        awk '/^ +[0-9]+ +[0-9]+ +[0-9]+ /{ if (++rows == 7) print "      ..."; if (rows > 6) next } { print }' |
        sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
}

# The arguments as a shell would need them typed: quoted where they hold spaces or specials.
shown() {
    local arg words=()
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./~=:,+@%-]+$ ]]; then words+=("$arg"); else words+=("\"$arg\""); fi
    done
    echo "${words[*]}"
}

# capture NAME MAX_LINES -- ARGS...: runs `cargo apr ARGS`, keeps the first MAX_LINES lines.
capture() {
    local name=$1 max=$2
    shift 3
    local raw=$scratch/raw.txt
    "$APR_BIN" apr "$@" >"$raw" 2>&1 </dev/null
    local code=$?
    {
        echo "\$ cargo apr $(shown "$@")" | tidy
        trim "$max" <"$raw" | tidy
        echo "[exit code $code]"
    } >"$out/$name.txt"
    echo "$name: exit $code" >&2
}

# The first N lines, then `...` when there were more.
trim() {
    awk -v max="$1" 'NR <= max { print } NR == max + 1 { print "..." }'
}

wanted() { [[ ${#selected[@]} -eq 0 ]] || [[ " ${selected[*]} " == *" $1 "* ]]; }
selected=("$@")

M=$model
q=$scratch/qwen.apr
"$APR_BIN" apr convert "$M" "$q" >/dev/null 2>&1
"$corrupt" "$M" "$scratch/layer5.apr" blk.5.ffn_down.weight 1.5 >/dev/null

wanted run && capture run 40 -- run "$M" --prompt "What is 2+2?"
wanted run-json && capture run-json 30 -- run "$M" --prompt "What is 2+2?" --max-tokens 8 --json
wanted run-verbose && capture run-verbose 40 -- run "$M" --prompt "fn main() {" --raw --max-tokens 12 --verbose
wanted run-trace && capture run-trace 16 -- run "$M" --prompt "What is 2+2?" --max-tokens 3 --trace --trace-level layer
if wanted chat; then
    printf 'What is 2+2?\nAnd times three?\n' | "$APR_BIN" apr chat "$M" --max-tokens 32 >"$scratch/raw.txt" 2>&1
    code=$?
    {
        echo "\$ printf 'What is 2+2?\\nAnd times three?\\n' | cargo apr chat $M --max-tokens 32" | tidy
        tidy <"$scratch/raw.txt"
        echo "[exit code $code]"
    } >"$out/chat.txt"
fi
wanted check && capture check 40 -- check "$M"
wanted inspect && capture inspect 40 -- inspect "$M"
wanted validate && capture validate 40 -- validate "$M"
wanted convert && capture convert 20 -- convert "$M" "$scratch/converted.apr"
wanted convert-exists && capture convert-exists 20 -- convert "$M" "$scratch/converted.apr"
wanted convert-q8 && capture convert-q8 20 -- convert "$M" "$scratch/q8_0.gguf" --dtype q8_0
if wanted synth; then
    capture synth-header 20 -- synth --header-only --like "$M" --out "$scratch/header.gguf"
    capture synth 20 -- synth --like "$scratch/header.gguf" --out "$scratch/synthetic.gguf" --seed 1
    capture synth-check 40 -- check "$scratch/synthetic.gguf"
fi
wanted diff-same && capture diff-same 20 -- diff-tensors "$M" "$q"
wanted diff-corrupt && capture diff-corrupt 20 -- diff-tensors "$M" "$scratch/layer5.apr"
wanted compare-same && capture compare-same 20 -- compare-inference "$M" "$q" --prompt "What is 2+2?" --max-tokens 8
wanted compare-corrupt && capture compare-corrupt 30 -- compare-inference "$M" "$scratch/layer5.apr" --prompt "What is 2+2?" --max-tokens 8
wanted trace-same && capture trace-same 30 -- trace-diff "$M" "$q" --prompt "What is 2+2?" --max-tokens 4
wanted trace-corrupt && capture trace-corrupt 40 -- trace-diff "$M" "$scratch/layer5.apr" --prompt "What is 2+2?" --max-tokens 4
if wanted trace-qk-order; then
  smollm2="$(dirname "$M")/smollm2-135m-instruct-q4_1.gguf"
  "$permute_qk" "$smollm2" "$scratch/qk.apr" >/dev/null
  capture trace-qk-order 40 -- trace-diff "$smollm2" "$scratch/qk.apr" --prompt "What is the capital of France?" --max-tokens 4
fi
if wanted kld; then
  # llama.cpp's base file for the same text: scripts/build-llama-cpp.sh, then scripts/llama_kld_base.sh.
  smollm2="$(dirname "$M")/smollm2-135m-instruct-q4_1.gguf"
  base=${APR_KLD_DIR:-$HOME/.cache/apr/kld}/smollm2-135m-instruct-q4_1.c128.kld
  [[ -f $base ]] || scripts/llama_kld_base.sh smollm2 >&2 || exit 1
  capture kld 20 -- kld "$smollm2" --text reference/kld/text.txt --against-llama-logits "$base"
fi
wanted trace-backends && capture trace-backends 30 -- trace-diff "$M" "$M" --prompt "What is 2+2?" --max-tokens 2 --candidate-backend cpu-reference
wanted trace-broken-op && capture trace-broken-op 30 -- trace-diff "$M" "$M" --prompt "What is 2+2?" --max-tokens 8 --broken-op skip-rope:9
wanted profile && capture profile 30 -- profile "$M" --warmup 4 --measure 32
wanted profile-ci && capture profile-ci 30 -- profile "$M" --warmup 4 --measure 16 --ci --assert-throughput 1000
wanted bench && capture bench 30 -- bench "$M" --prompt-tokens 64 --gen-tokens 16 --reps 2
wanted fetch && capture fetch 20 -- fetch -p apr-examples
wanted review && capture review 20 -- review -p apr-examples
if wanted review-pending; then
    # A pending snapshot as a test run leaves one: the pinned file with one logit moved.
    golden=$root/examples/tests/golden/clean_conversion
    python3 - "$golden.json" "$golden.new.json" <<'EOF'
import json, sys
snapshot = json.load(open(sys.argv[1]))
snapshot["prompts"][0]["top_logits"][1][0][1] += 0.25
json.dump(snapshot, open(sys.argv[2], "w"), indent=2)
EOF
    capture review-pending 30 -- review -p apr-examples
    capture review-reject 30 -- review -p apr-examples --reject
    rm -f "$golden.new.json"
fi
wanted usage && capture usage 20 -- diff-tensors "$M"
if wanted serve; then
    # The server on a free port with --trace, a few requests with curl, then SIGINT.
    log=$scratch/serve.log
    "$APR_BIN" apr serve "$M" --port 0 --trace 2>"$log" &
    pid=$!
    for _ in $(seq 1 600); do grep -q "loaded on" "$log" && break; sleep 0.2; done
    port=$(sed -n 's#.*listening on http://127.0.0.1:\([0-9]*\).*#\1#p' "$log")
    url=http://127.0.0.1:$port
    question='{"messages":[{"role":"user","content":"What is 2+2?"}],"temperature":0,"max_tokens":16}'
    # JSON arguments shown in single quotes, as they would be typed.
    curl_shown() {
        local arg words=()
        for arg in "$@"; do
            if [[ $arg =~ ^[A-Za-z0-9_./~=:,+@%-]+$ ]]; then words+=("$arg"); elif [[ $arg == *\"* ]]; then words+=("'$arg'"); else words+=("\"$arg\""); fi
        done
        echo "\$ curl ${words[*]}" | sed "s#$port#\$PORT#g"
    }
    ask() { curl_shown "$@"; curl -s "$@" | grep -iv '^date:' | tidy; echo; }
    raw=$scratch/serve.txt
    {
        echo "\$ cargo apr serve $(shown "$M") --port 0 --trace &" | tidy
        ask "$url/health"
        ask "$url/v1/chat/completions" -H "Content-Type: application/json" -d "$question"
        ask -D - -o /dev/null "$url/v1/chat/completions" -H "X-Trace-Level: layer" -d "$question"
        ask -i "$url/v1/chat/completions" -d '{"messages":[]}'
    } >"$raw"
    kill -INT $pid
    wait $pid
    code=$?
    {
        cat "$raw"
        echo "\$ kill -INT %1  # the server's stderr:"
        sed "s#$port#\$PORT#g" "$log" | tidy
        echo "[exit code $code]"
    } >"$out/serve.txt"
    echo "serve: exit $code" >&2
fi
# CPU only, two prompts of eight tokens: the points table as book/src/qualify.md shows it.
wanted qualify && capture qualify 60 -- qualify "$M" --backends cpu --max-prompts 2 --max-tokens 8
if wanted test; then
    # The whole example suite: the matrix on stdout, cargo's output on stderr (trimmed here).
    "$APR_BIN" apr test -p apr-examples >"$scratch/raw.txt" 2>"$scratch/err.txt"
    code=$?
    {
        echo "\$ cargo apr test -p apr-examples"
        matrix <"$scratch/raw.txt" | tidy
        echo "[exit code $code]"
    } >"$out/test.txt"
fi
if wanted model-test-failure; then
    # The trace-diff example expecting `identical` of the scaled layer-5 copy: how a failure reads.
    demo=$root/examples/tests/book_failure_demo.rs
    trap 'rm -rf "$scratch" "$demo"' EXIT
    cat >"$demo" <<'EOF'
use apr_engine::model_test;

#[model_test(
    trace_diff,
    reference = "qwen2.5-coder-0.5b-instruct",
    candidate = convert(apr, fault = scale("blk.5.ffn_down.weight", 1.5)),
    prompts = ["What is 2+2?"],
    max_tokens = 2,
    expect = identical,
)]
fn scaled_ffn_down_is_identical() {}
EOF
    "$APR_BIN" apr test -p apr-examples -- --test book_failure_demo >"$scratch/raw.txt" 2>"$scratch/err.txt"
    code=$?
    rm -f "$demo"
    panic_message <"$scratch/raw.txt" | tidy >"$out/model-test-failure.txt"
    {
        echo "\$ cargo apr test -p apr-examples -- --test book_failure_demo"
        matrix <"$scratch/raw.txt" | tidy
        echo "[exit code $code]"
    } >"$out/test-failure.txt"
fi
