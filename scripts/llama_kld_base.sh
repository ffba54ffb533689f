#!/usr/bin/env bash
# Writes llama.cpp's KL-divergence base file (its full-vocabulary log-probs at
# every scored position) for a model over reference/kld/text.txt, into
# ${APR_KLD_DIR:-$HOME/.cache/apr/kld}/<model>.c<ctx>.kld, with llama-perplexity's
# log beside it (.log). These files are tens to hundreds of megabytes: never
# commit them. Idempotent: an existing base file is kept.
#
# Usage: scripts/llama_kld_base.sh [MODEL.gguf|qwen-0.5b|qwen-1.5b|smollm2] [--ctx N]
#   (default smollm2, N 128). Settings: reference/README.md, "KL-divergence base files".
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
model_dir="${APR_MODEL_DIR:-$HOME/.cache/apr/models}"
out_dir="${APR_KLD_DIR:-$HOME/.cache/apr/kld}"
bin="${APR_LLAMA_DIR:-$HOME/.cache/apr/llama.cpp}/build/bin"
model="${1:-smollm2}"
ctx=128
if [ "${2:-}" = "--ctx" ]; then ctx="$3"; fi
case "$model" in
  qwen-0.5b) model="$model_dir/qwen2.5-coder-0.5b-instruct.gguf" ;;
  qwen-1.5b) model="$model_dir/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" ;;
  smollm2) model="$model_dir/smollm2-135m-instruct-q4_1.gguf" ;;
esac
[ -f "$model" ] || { echo "no model at $model (scripts/fetch-models.sh fetches the reference ones)" >&2; exit 2; }
[ -x "$bin/llama-perplexity" ] || { echo "no $bin/llama-perplexity: run scripts/build-llama-cpp.sh" >&2; exit 2; }
mkdir -p "$out_dir"
base="$out_dir/$(basename "$model" .gguf).c$ctx.kld"
if [ -s "$base" ]; then
  echo "$base (present)"
  exit 0
fi
# One chunk per batch (-b = -c, so n_seq = 1), CPU, 2 threads, flash attention
# off (llama.cpp's default is auto, which turns it on), f16 KV cache (default).
nice "$bin/llama-perplexity" -m "$model" -f "$repo/reference/kld/text.txt" -c "$ctx" -b "$ctx" -ub "$ctx" \
  -t 2 -tb 2 -fa off --kl-divergence-base "$base.tmp" > "$base.log" 2>&1 \
  || { tail -20 "$base.log" >&2; rm -f "$base.tmp"; exit 1; }
# llama-perplexity exits 0 even when the text is too short for two chunks,
# leaving a 12-byte file: only a run that reached its final estimate counts.
if ! grep -q "Final estimate" "$base.log"; then
  tail -20 "$base.log" >&2
  rm -f "$base.tmp"
  exit 1
fi
mv "$base.tmp" "$base"
grep -E "Final estimate|computing over|calculating perplexity over" "$base.log" || true
echo "$base"
