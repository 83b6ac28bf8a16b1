#!/usr/bin/env bash
# Qwen3.5: pp512 / tg128, chimera vs llama.cpp, on one synthetic file shaped like Qwen3.5-0.8B
# (`chimera synthetic --preset qwen35-0.8b`: 24 layers = 18 gated DeltaNet + 6 gated attention,
# 1024 wide, FFN 3584, vocabulary 248320, tied), F16 and Q8_0 weights, 2 threads, 2 repetitions.
# llama.cpp (this build) loads the file as arch qwen35 (checked on a tiny synthetic qwen35).
# Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build. Takes about 4-5 minutes (the file is ~1.6 GB F16).
cd "$(dirname "$0")/../.."
set -euo pipefail
CHIMERA=build/bin/chimera
LLAMA_BENCH=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}/llama-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
uptime
for type in F16 Q8_0; do
  f="$tmp/qwen35-0.8b-$type.gguf"
  "$CHIMERA" synthetic -o "$f" --preset qwen35-0.8b --type "$type" >/dev/null
  echo "== Qwen3.5-0.8B shape, $type weights: chimera"
  "$CHIMERA" bench -m "$f" -p 512 -n 128 -t 2 -r 2
  echo "== Qwen3.5-0.8B shape, $type weights: llama.cpp"
  "$LLAMA_BENCH" -m "$f" -p 512 -n 128 -t 2 -r 2
done
uptime
