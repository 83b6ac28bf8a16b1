#!/usr/bin/env bash
# Issue 15 item 2 (prompt processing, gemm): pp512 per weight type, chimera vs llama.cpp on the
# same files, interleaved, at 2 threads and 1 thread; then chimera's kernel GEMM GFLOP/s.
# Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build. About 4-5 minutes on a quiet 2-core machine.
cd "$(dirname "$0")/../.."
set -euo pipefail
[ -f /tmp/g4h-f16.gguf ] || build/bin/chimera synthetic -o /tmp/g4h-f16.gguf --preset granite4h-small --type F16 >/dev/null
[ -f /tmp/g4h-q4_0.gguf ] || build/bin/chimera quantize /tmp/g4h-f16.gguf /tmp/g4h-q4_0.gguf Q4_0 >/dev/null
C=build/bin/chimera
L=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in Q8_0 Q4_K_M; do "$C" quantize /tmp/g4h-f16.gguf "$tmp/g4h-$t.gguf" "$t" >/dev/null; done
uptime
for threads in 2 1; do
  echo "== pp512, $threads thread(s): llama.cpp then chimera, per file"
  for f in /tmp/g4h-q4_0.gguf "$tmp/g4h-Q8_0.gguf" "$tmp/g4h-Q4_K_M.gguf" /tmp/g4h-f16.gguf; do
    echo "-- $f"
    "$L/llama-bench" -m "$f" -t "$threads" -p 512 -n 0 -r 3
    "$C" bench -m "$f" -t "$threads" -p 512 -n 0 -r 3
  done
  uptime
done
echo "== kernel GEMM GFLOP/s (512 x 4096 . 4096 x 1024), 2 threads then 1"
for threads in 2 1; do
  "$C" bench kernels --no-ops -t "$threads" --types f16,q8_0,q4_0,q4_k,q6_k --set-mb 64 --repeats 5
done
uptime
