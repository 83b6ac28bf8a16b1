#!/usr/bin/env bash
# llama.cpp built for AVX2 only (GGML_NATIVE=OFF, AVX/AVX2/FMA/F16C, no AVX-512: the Zen 3 the
# issues describe) on the same files, for a second reference column; then the one-shot peak RSS
# and pp512/tg128 (Q4_0) through python/bench_vs_llama_cpp.py against the native build.
set -u
cd "$(dirname "$0")/../.."
C=build/bin/chimera
L=${LLAMA_AVX2_BIN:?set LLAMA_AVX2_BIN to the bin/ folder of an AVX2-only llama.cpp build}
tmp=/tmp/bq; mkdir -p $tmp
for t in Q8_0 Q4_K_M; do [ -f $tmp/g4h-$t.gguf ] || "$C" quantize /tmp/g4h-f16.gguf "$tmp/g4h-$t.gguf" "$t" >/dev/null; done
uptime
for f in /tmp/g4h-q4_0.gguf $tmp/g4h-Q8_0.gguf $tmp/g4h-Q4_K_M.gguf /tmp/g4h-f16.gguf; do
  echo "-- $f (llama.cpp AVX2-only)"
  "$L/llama-bench" -m "$f" -t 2 -p 512 -n 128 -r 3
done
"$L/llama-batched-bench" -m /tmp/g4h-q4_0.gguf -t 2 -tb 2 -c 4096 -b 2048 -ub 512 -npp 128 -ntg 64 -npl 4,16 2>/dev/null
uptime
.venv/bin/python python/bench_vs_llama_cpp.py --llama-bin "${LLAMA_BIN:?set LLAMA_BIN}" --chimera $C \
  --models /tmp/g4h-q4_0.gguf --threads 2 --depths "" --parallel "" --reps 3
uptime
