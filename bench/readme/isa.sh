#!/usr/bin/env bash
# The AVX-512 VNNI path against the AVX2 path (CHIMERA_ISA=avx2), on a CPU that has AVX-512
# F/BW/VL/DQ + VNNI: pp512 per weight type with llama.cpp next to them, F16 also with 9-token
# batches (a speculative verify pass of 8 drafts), then the kernel GEMM and GEMV rows of both
# paths, alternated. Both paths give the same bits; only the speed differs.
# Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of
# your llama.cpp build. About 5 minutes on a quiet 2-core machine.
cd "$(dirname "$0")/../.."
set -euo pipefail
C=build/bin/chimera
L=${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}
[ -f /tmp/g4h-f16.gguf ] || "$C" synthetic -o /tmp/g4h-f16.gguf --preset granite4h-small --type F16 >/dev/null
[ -f /tmp/g4h-q4_0.gguf ] || "$C" quantize /tmp/g4h-f16.gguf /tmp/g4h-q4_0.gguf Q4_0 >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in Q8_0 Q4_K_M; do "$C" quantize /tmp/g4h-f16.gguf "$tmp/g4h-$t.gguf" "$t" >/dev/null; done
git log --oneline -1 || true
uptime
for f in /tmp/g4h-q4_0.gguf "$tmp/g4h-Q8_0.gguf" "$tmp/g4h-Q4_K_M.gguf" /tmp/g4h-f16.gguf; do
  echo "-- $f: chimera avx2, chimera avx512, llama.cpp"
  CHIMERA_ISA=avx2 "$C" bench -m "$f" -t 2 -p 512 -n 0 -r 3
  CHIMERA_ISA=avx512 "$C" bench -m "$f" -t 2 -p 512 -n 0 -r 3
  "$L/llama-bench" -m "$f" -t 2 -p 512 -n 0 -r 3
done
echo "-- /tmp/g4h-f16.gguf, 9-token batches: chimera avx2, avx512, avx2, avx512"
for isa in avx2 avx512 avx2 avx512; do
  CHIMERA_ISA=$isa "$C" bench -m /tmp/g4h-f16.gguf -t 2 -p 9 -n 0 -r 20
done
uptime
for round in 1 2; do
  for isa in avx2 avx512; do
    echo "== round $round: kernels on $isa (GEMV 1x4096 by 4096x4096, GEMM 512x4096 by 4096x1024)"
    "$C" bench kernels --no-ops -t 2 --isa "$isa" --repeats 4 --set-mb 256 \
      --types q8_0,q4_0,q4_1,q5_0,q5_1,iq4_nl,iq4_xs,q4_k,q5_k,q6_k,f16,bf16,f32
  done
done
uptime
