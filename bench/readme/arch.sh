#!/usr/bin/env bash
# Issue 14 per-architecture follow-up: the F16 rows where chimera trailed
# llama.cpp -- Gemma-3-270M F16 pp512/tg128 (GeGLU now vectorized) and LFM2-350M F16 pp512/tg128 --
# on the same synthetic files for both engines, 2 threads, 5 repetitions, llama.cpp and chimera
# alternated twice so drift shows. Run from the repository root after a release build, with
# LLAMA_BIN set to the bin/ folder of your llama.cpp build.
# Takes about 3 minutes on a quiet 2-core machine.
cd "$(dirname "$0")/../.."
set -euo pipefail
CHIMERA=build/bin/chimera
LLAMA_BENCH=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}/llama-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
uptime
"$CHIMERA" synthetic -o "$tmp/gemma.gguf" --preset gemma3-270m --type F16 >/dev/null
"$CHIMERA" synthetic -o "$tmp/lfm2.gguf" --preset lfm2-350m --type F16 >/dev/null
for round in 1 2; do
  for m in gemma lfm2; do
    echo "== round $round, $m F16: chimera"
    "$CHIMERA" bench -m "$tmp/$m.gguf" -p 512 -n 128 -t 2 -r 5
    echo "== round $round, $m F16: llama.cpp"
    "$LLAMA_BENCH" -m "$tmp/$m.gguf" -p 512 -n 128 -t 2 -r 5
  done
done
uptime
