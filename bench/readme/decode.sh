#!/usr/bin/env bash
# Issue 15 items 3-5 (decode): tg64 at depth 4096 / 16384, batched decode at 1/4/16 sequences,
# tg128 per weight type; chimera vs llama.cpp interleaved, same files, 2 threads.
# Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build. About 8-10 minutes on a quiet 2-core machine
# (the 16,384-token depth fill dominates: ~1 min per engine; llama-bench refills it per rep).
cd "$(dirname "$0")/../.."
set -euo pipefail
[ -f /tmp/g4h-f16.gguf ] || build/bin/chimera synthetic -o /tmp/g4h-f16.gguf --preset granite4h-small --type F16 >/dev/null
[ -f /tmp/g4h-q4_0.gguf ] || build/bin/chimera quantize /tmp/g4h-f16.gguf /tmp/g4h-q4_0.gguf Q4_0 >/dev/null
C=build/bin/chimera
L=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}
M=/tmp/g4h-q4_0.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in Q8_0 Q4_K_M; do "$C" quantize /tmp/g4h-f16.gguf "$tmp/g4h-$t.gguf" "$t" >/dev/null; done
uptime
echo "== tg64 at depth (Q4_0): llama.cpp then chimera, per depth"
for d in 4096 16384; do
  "$L/llama-bench" -m "$M" -t 2 -p 0 -n 64 -d "$d" -r 2
  "$C" bench -m "$M" -t 2 -p 0 -n 64 -d "$d" -r 2 -c $((d + 128))
done
uptime
echo "== batched decode (Q4_0), -npp 128 -ntg 64: llama-batched-bench S_TG vs chimera --parallel"
"$L/llama-batched-bench" -m "$M" -t 2 -tb 2 -c 4096 -b 2048 -ub 512 -npp 128 -ntg 64 -npl 1,4,16
"$C" bench -m "$M" -t 2 -p 0 -n 0 --parallel 1,4,16 --npp 128 --ntg 64 -r 2
uptime
echo "== tg128 per weight type"
for f in "$M" "$tmp/g4h-Q8_0.gguf" "$tmp/g4h-Q4_K_M.gguf" /tmp/g4h-f16.gguf; do
  echo "-- $f"
  "$L/llama-bench" -m "$f" -t 2 -p 0 -n 128 -r 3
  "$C" bench -m "$f" -t 2 -p 0 -n 128 -r 3
done
uptime
