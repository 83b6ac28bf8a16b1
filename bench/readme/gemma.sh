#!/usr/bin/env bash
# Gemma 3: pp512 / tg128, chimera vs llama.cpp, on one synthetic file shaped like Gemma-3-270M
# (18 layers, 5 sliding-window (512) : 1 global, 640 wide, 4 q / 1 kv heads of 256, GeGLU FFN
# 2048, vocabulary 262144, tied), F16 and Q8_0 weights, 2 threads, 3 repetitions. Also tg128 at
# depth 2048 (past the window: the local layers read 512 keys, the global ones all).
# Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build. Takes about 4-5 minutes on a quiet 2-core machine.
source "$(dirname "$0")/common.sh"
compare gemma3-270m F16 3 "Gemma-3-270M shape"
compare gemma3-270m Q8_0 3 "Gemma-3-270M shape"
f="$tmp/gemma3-270m-Q8_0.gguf"
echo "== tg128 at depth 2048 (Q8_0): chimera then llama.cpp"
"$CHIMERA" bench -m "$f" -p 0 -n 128 -d 2048 -t 2 -r 2 -c 2304
"$LLAMA_BENCH" -m "$f" -p 0 -n 128 -d 2048 -t 2 -r 2
uptime
