#!/usr/bin/env bash
# Issue 15, prompt processing. pp512 at 2 threads on Q8_0, Q4_0 and Q4_K_M,
# llama.cpp and chimera alternated on the same files, two rounds (ABAB) so drift shows; then one
# round at 1 thread. Run from the repository root after a release build.
# About 2.5-3 minutes on a quiet 2-core machine (plus ~30 s if the model files must be made).
set -euo pipefail
cd "$(dirname "$0")/../.."
C=build/bin/chimera
L=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}
q8=/tmp/bq/g4h-Q8_0.gguf
q4km=/tmp/bq/g4h-Q4_K_M.gguf
q40=/tmp/g4h-q4_0.gguf
f16=/tmp/g4h-f16.gguf
mkdir -p /tmp/bq
[ -f "$f16" ] || "$C" synthetic -o "$f16" --preset granite4h-small --type F16 >/dev/null
[ -f "$q8" ] || "$C" quantize "$f16" "$q8" Q8_0 >/dev/null
[ -f "$q4km" ] || "$C" quantize "$f16" "$q4km" Q4_K_M >/dev/null
[ -f "$q40" ] || "$C" quantize "$f16" "$q40" Q4_0 >/dev/null
git log --oneline -1 2>/dev/null || true
uptime
log=$(mktemp)
trap 'rm -f "$log"' EXIT
pp() {  # engine file threads -> one line: engine type threads tokens/s
  local e=$1 f=$2 t=$3 v
  if [ "$e" = llama.cpp ]; then
    v=$("$L/llama-bench" -m "$f" -t "$t" -p 512 -n 0 -r 3 -o csv 2>/dev/null | tail -1 |
      awk -F, '{gsub(/"/, "", $0); print $(NF-1)}')
  else
    v=$("$C" bench -m "$f" -t "$t" -p 512 -n 0 -r 3 | awk -F'|' '/pp512/ {print $5}' |
      awk '{print $1}')
  fi
  printf '%-10s %-28s t=%s pp512 %s\n' "$e" "$(basename "$f")" "$t" "$v" | tee -a "$log"
}
for round in 1 2; do
  echo "== round $round, 2 threads"
  for f in "$q8" "$q40" "$q4km"; do
    pp llama.cpp "$f" 2
    pp chimera "$f" 2
  done
  uptime
done
echo "== 1 thread"
for f in "$q8" "$q40" "$q4km"; do
  pp llama.cpp "$f" 1
  pp chimera "$f" 1
done
uptime
echo "== chimera / llama.cpp, per pair (each chimera line over the llama.cpp line before it)"
awk '$1 == "llama.cpp" {l = $5; next} $1 == "chimera" && l > 0 {printf "%-28s %s  %.2fx\n", $2, $3, $5 / l}' "$log"
