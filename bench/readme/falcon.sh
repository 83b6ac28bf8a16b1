#!/usr/bin/env bash
# Issue 14 (nemotron_h / falcon-h1): pp512 / tg128, chimera vs llama.cpp on the same synthetic
# files, 2 threads: Nemotron-H-4B's shape at reduced depth (9 layers M-M-M*-M-, 3072 wide,
# vocabulary 131072; Q8_0, ~1.4B parameters) and Falcon-H1-0.5B's shape (36 parallel
# attention + Mamba2 layers, 1024 wide; F16 and Q8_0). Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build.
# Takes about 5 minutes on a quiet 2-core machine (-r 2).
cd "$(dirname "$0")/../.."
set -euo pipefail
CHIMERA=build/bin/chimera
LLAMA_BENCH=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}/llama-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
uptime
run() {  # preset type
  local f="$tmp/$1-$2.gguf"
  "$CHIMERA" synthetic -o "$f" --preset "$1" --type "$2" >/dev/null
  echo "== $1 shape, $2 weights: chimera"
  "$CHIMERA" bench -m "$f" -p 512 -n 128 -t 2 -r 2
  echo "== $1 shape, $2 weights: llama.cpp"
  "$LLAMA_BENCH" -m "$f" -p 512 -n 128 -t 2 -r 2
  rm -f "$f"
}
run nemotron-h-4b Q8_0
run falcon-h1-0.5b F16
run falcon-h1-0.5b Q8_0
uptime
