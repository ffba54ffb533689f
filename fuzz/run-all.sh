#!/usr/bin/env bash
# Runs the built fuzz targets one after another, each with its seeds, its
# dictionary and the limits below, then prints a summary per target. Needs
# only the fuzz binaries (built elsewhere with `cargo fuzz build -O`) and this
# directory's seeds/ and dict/: no Rust, no cargo.
#
#   run-all.sh BIN_DIR [-j JOBS] [-t SECONDS | -n RUNS] [-o OUT_DIR] [TARGET...]
#
#   BIN_DIR   folder holding the binaries gguf, apr, safetensors, load, chat_template
#   -j JOBS   fuzzing processes per target, run in parallel (default 1); they
#             share the target's corpus folder
#   -t SECS   fuzzing time per target (default 60)
#   -n RUNS   a number of executions per job instead of a time
#   -o OUT    where logs, corpora and findings go (default ./fuzz-out); the
#             corpora are kept, so a second run starts from the first's finds
#   TARGET    targets to run (default: all five)
#
# A finding (crash, timeout, out-of-memory) ends a libFuzzer process; the job
# then starts a new one for the time or runs it has left, so that a known
# problem found early does not end the job (after 5 findings in a row that
# each came within 10 s of a start, the job gives up).
#
# Writes OUT/fuzz-<target>.log (every job's output, one job after another),
# OUT/corpus/<target>/ (what the fuzzer found) and OUT/artifacts/<target>/
# (crash-*, oom-*, timeout-*, leak-* inputs: each one a finding).
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

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

# Per-target flags. `load` takes whole tiny models (its seeds are 30-75 KB),
# so it may grow inputs up to 128 KiB.
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
# jobs already fill the cores (`load` makes its fuzzing thread rayon's only one).
export RAYON_NUM_THREADS=1

# Executions that a log's final statistics report, summed.
executed() { awk '/^stat::number_of_executed_units:/ {s += $NF} END {print s + 0}' "$@"; }

# One job: libFuzzer processes one after another, appending to LOG, until
# the deadline (or the runs) are used up.
run_job() {
    local bin=$1 log=$2 deadline=$3 corpus=$4 artifacts=$5 seeds=$6
    shift 6
    local quick=0 started left status
    local -a limit
    : >"$log"
    while :; do
        if [[ -n $RUNS ]]; then
            left=$((RUNS - $(executed "$log")))
            limit=(-runs="$left")
        else
            left=$((deadline - $(date +%s)))
            limit=(-max_total_time="$left")
        fi
        ((left > 0)) || break
        started=$(date +%s)
        status=0
        "$bin" "${COMMON[@]}" "$@" "${limit[@]}" -artifact_prefix="$artifacts/" "$corpus" "$seeds" \
            >>"$log" 2>&1 || status=$?
        ((status != 0)) || break # the time or the runs are used up
        echo "===== run-all.sh: exit status $status; starting again" >>"$log"
        if (($(date +%s) - started < 10)); then quick=$((quick + 1)); else quick=0; fi
        if ((quick >= 5)); then
            echo "===== run-all.sh: 5 findings in a row within 10 s of a start; this job stops" >>"$log"
            break
        fi
    done
}

declare -A ELAPSED
for target in "${TARGETS[@]}"; do
    bin=$BIN_DIR/$target
    if [[ ! -x $bin ]]; then
        echo "skipping $target: no executable $bin" >&2
        continue
    fi
    flags=$(target_flags "$target")
    corpus=$OUT/corpus/$target
    artifacts=$OUT/artifacts/$target
    work=$OUT/work/$target
    mkdir -p "$corpus" "$artifacts" "$work"
    if [[ -n $RUNS ]]; then budget="$RUNS runs each"; else budget="$SECONDS_PER_TARGET s"; fi
    echo "== $target: $JOBS job(s), $budget, $flags"
    started=$(date +%s)
    deadline=$((started + SECONDS_PER_TARGET))
    for ((job = 0; job < JOBS; job++)); do
        # shellcheck disable=SC2086 # $flags is a list of flags
        run_job "$bin" "$work/job-$job.log" "$deadline" "$corpus" "$artifacts" "$HERE/seeds/$target" $flags &
    done
    wait
    ELAPSED[$target]=$(($(date +%s) - started))
    for ((job = 0; job < JOBS; job++)); do
        echo "===== job $job"
        cat "$work/job-$job.log"
    done >"$OUT/fuzz-$target.log"
done

# The summary: executions (the final statistics of every process, summed),
# wall seconds, the corpus at the end, the best coverage a process reached,
# the largest RSS, and the findings.
echo
printf '%-14s %14s %8s %10s %14s %8s %7s  %s\n' target executions seconds exec/s corpus cov rss_mb findings
for target in "${TARGETS[@]}"; do
    log=$OUT/fuzz-$target.log
    [[ -e $log && -n ${ELAPSED[$target]:-} ]] || continue
    execs=$(executed "$log")
    rss=$(awk '/^stat::peak_rss_mb:/ {if ($NF + 0 > m) m = $NF + 0} END {print m + 0}' "$log")
    cov=$({ grep -o 'cov: [0-9]*' "$log" || true; } | awk '{if ($2 + 0 > m) m = $2 + 0} END {print m + 0}')
    secs=${ELAPSED[$target]}
    rate=$((secs > 0 ? execs / secs : 0))
    corpus_files=$(find "$OUT/corpus/$target" -type f | wc -l)
    corpus_kb=$(du -sk "$OUT/corpus/$target" | cut -f1)
    found=$(find "$OUT/artifacts/$target" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \
        -o -name 'leak-*' \) -printf '%f\n' | sort)
    if [[ -z $found ]]; then
        verdict=none
    else
        verdict="$(echo "$found" | wc -l): $(echo "$found" | cut -c1-20 | tr '\n' ' ')"
    fi
    printf '%-14s %14s %8s %10s %14s %8s %7s  %s\n' "$target" "$execs" "$secs" "$rate" \
        "${corpus_files} (${corpus_kb}K)" "$cov" "$rss" "$verdict"
done
