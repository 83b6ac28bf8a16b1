#!/usr/bin/env bash
# Shared set-up of the per-architecture llama.cpp comparisons (arch, falcon, gemma, lfm2, qwen):
# sourced, not run. Moves to the repository root, checks LLAMA_BIN, makes a scratch folder that
# is removed on exit, and defines `compare` (one synthetic file, both engines, same settings).
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
set -euo pipefail
CHIMERA=build/bin/chimera
LLAMA_BENCH=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}/llama-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
uptime

# compare PRESET TYPE REPS [LABEL]: write `chimera synthetic --preset PRESET --type TYPE` to the
# scratch folder (kept as $tmp/PRESET-TYPE.gguf for later steps), then pp512/tg128 with chimera and
# with llama-bench, 2 threads, REPS repetitions each.
compare() {
  local preset=$1 type=$2 reps=$3 label=${4:-$1 shape}
  local f="$tmp/$preset-$type.gguf"
  [ -f "$f" ] || "$CHIMERA" synthetic -o "$f" --preset "$preset" --type "$type" >/dev/null
  echo "== $label, $type weights: chimera"
  "$CHIMERA" bench -m "$f" -p 512 -n 128 -t 2 -r "$reps"
  echo "== $label, $type weights: llama.cpp"
  "$LLAMA_BENCH" -m "$f" -p 512 -n 128 -t 2 -r "$reps"
}
