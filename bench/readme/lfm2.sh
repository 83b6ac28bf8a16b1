#!/usr/bin/env bash
# LFM2: pp512 / tg128, chimera vs llama.cpp, on one synthetic file shaped like LFM2-350M (16
# layers: 10 gated short conv + 6 attention, 1024 wide, FFN 4608, vocabulary 65536), F16 and Q8_0
# weights, 2 threads. Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build. Takes about 4 minutes.
cd "$(dirname "$0")/../.."
set -euo pipefail
CHIMERA=build/bin/chimera
LLAMA_BENCH=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}/llama-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for type in F16 Q8_0; do
  f="$tmp/lfm2-350m-$type.gguf"
  "$CHIMERA" synthetic -o "$f" --preset lfm2-350m --type "$type" >/dev/null
  echo "== LFM2-350M shape, $type weights: chimera"
  "$CHIMERA" bench -m "$f" -p 512 -n 128 -t 2 -r 3
  echo "== LFM2-350M shape, $type weights: llama.cpp"
  "$LLAMA_BENCH" -m "$f" -p 512 -n 128 -t 2 -r 3
done
