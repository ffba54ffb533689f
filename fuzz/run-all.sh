#!/usr/bin/env bash
# Runs the built fuzz targets one after another, each with its seeds, its
# dictionary and the limits below, then prints a summary per target. Needs
# only the fuzz binaries (built elsewhere with `cargo fuzz build -O`) and this
# directory's seeds/ and dict/: no Rust, no cargo.
#
#   run-all.sh BIN_DIR [-j JOBS] [-t SECONDS | -n RUNS] [-o OUT_DIR] [TARGET...]
#
#   BIN_DIR   folder holding the binaries gguf, apr, safetensors, load, chat_template
#   -j JOBS   libFuzzer processes per target, run in parallel (default 1); they
#             share the target's corpus folder
#   -t SECS   fuzzing time per target (default 60), for each job
#   -n RUNS   a number of executions per job instead of a time
#   -o OUT    where logs, corpora and crash artifacts go (default ./fuzz-out);
#             the corpora are kept, so a second run starts from the first's finds
#   TARGET    targets to run (default: all five)
#
# Writes OUT/fuzz-<target>.log (libFuzzer's own output, with every job's log),
# OUT/corpus/<target>/ (what the fuzzer found) and OUT/artifacts/<target>/
# (crash-*, oom-*, timeout-*, leak-* inputs: each one a finding).
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[[ $# -ge 1 && $1 != -* ]] || usage
BIN_DIR=$(cd "$1" && pwd)
shift
JOBS=1
SECONDS_PER_TARGET=60
RUNS=""
OUT=./fuzz-out
while getopts "j:t:n:o:h" opt; do
    case $opt in
        j) JOBS=$OPTARG ;;
        t) SECONDS_PER_TARGET=$OPTARG ;;
        n) RUNS=$OPTARG ;;
        o) OUT=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(gguf apr safetensors load chat_template)

HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Flags every target gets: 2 GB of RSS (an input that needs more is an
# out-of-memory finding), 10 s per input (a slower one is a timeout finding),
# and the final statistics the summary reads.
COMMON=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1)

# Per-target flags. `load` takes whole tiny models (its seeds are about
# 25-35 KB), so it may grow inputs up to 128 KiB.
target_flags() {
    case $1 in
        gguf | apr) echo "-max_len=65536" ;;
        safetensors) echo "-max_len=65536 -dict=$HERE/dict/safetensors.dict" ;;
        load) echo "-max_len=131072" ;;
        chat_template) echo "-max_len=65536 -dict=$HERE/dict/jinja.dict" ;;
        *) echo "unknown target $1" >&2; return 1 ;;
    esac
}

# The engine's matrix kernels use rayon: one thread per process, since the
# jobs already fill the cores (`load` sets this itself too).
export RAYON_NUM_THREADS=1

declare -A ELAPSED
for target in "${TARGETS[@]}"; do
    bin=$BIN_DIR/$target
    flags=$(target_flags "$target")
    if [[ ! -x $bin ]]; then
        echo "skipping $target: no executable $bin" >&2
        continue
    fi
    corpus=$OUT/corpus/$target
    artifacts=$OUT/artifacts/$target
    work=$OUT/work/$target
    mkdir -p "$corpus" "$artifacts" "$work"
    rm -f "$work"/fuzz-*.log
    if [[ -n $RUNS ]]; then limit=(-runs="$RUNS"); else limit=(-max_total_time="$SECONDS_PER_TARGET"); fi
    echo "== $target: $JOBS job(s), ${RUNS:+$RUNS runs}${RUNS:-$SECONDS_PER_TARGET s} each, $flags"
    started=$(date +%s)
    # -jobs runs each job in its own process, writing fuzz-<n>.log in the
    # current folder; a job that crashes stops, the others go on.
    # shellcheck disable=SC2086 # $flags is a list of flags
    (cd "$work" && "$bin" "${COMMON[@]}" $flags "${limit[@]}" -jobs="$JOBS" -workers="$JOBS" \
        -artifact_prefix="$artifacts/" "$corpus" "$HERE/seeds/$target" >"$work/parent.log" 2>&1) || true
    ELAPSED[$target]=$(($(date +%s) - started))
    # The parent's output holds each job's log as that job ends.
    cp "$work/parent.log" "$OUT/fuzz-$target.log"
done

# The summary, from the jobs' own logs (work/<target>/fuzz-<n>.log): executions
# summed over the jobs, wall seconds, the corpus at the end, the best coverage
# a job reached, the largest RSS, and the artifacts.
echo
printf '%-14s %14s %8s %10s %8s %8s %7s  %s\n' target executions seconds exec/s corpus cov rss_mb artifacts
for target in "${TARGETS[@]}"; do
    [[ -e $OUT/fuzz-$target.log ]] || continue
    jobs=("$OUT/work/$target"/fuzz-*.log)
    [[ -e ${jobs[0]} ]] || jobs=(/dev/null)
    execs=$(awk '/^stat::number_of_executed_units:/ {s += $NF} END {print s + 0}' "${jobs[@]}")
    rss=$(awk '/^stat::peak_rss_mb:/ {if ($NF + 0 > m) m = $NF + 0} END {print m + 0}' "${jobs[@]}")
    cov=$(cat "${jobs[@]}" | grep -o 'cov: [0-9]*' | awk '{if ($2 + 0 > m) m = $2 + 0} END {print m + 0}')
    secs=${ELAPSED[$target]:-0}
    rate=$((secs > 0 ? execs / secs : 0))
    corpus_files=$(find "$OUT/corpus/$target" -type f | wc -l)
    corpus_kb=$(du -sk "$OUT/corpus/$target" | cut -f1)
    found=$(find "$OUT/artifacts/$target" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \
        -o -name 'leak-*' \) | sort)
    if [[ -z $found ]]; then
        verdict=none
    else
        verdict="$(echo "$found" | wc -l) FOUND: $(echo "$found" | xargs -n1 basename | tr '\n' ' ')"
    fi
    printf '%-14s %14s %8s %10s %8s %8s %7s  %s\n' "$target" "$execs" "$secs" "$rate" \
        "${corpus_files} (${corpus_kb}K)" "$cov" "$rss" "$verdict"
done
