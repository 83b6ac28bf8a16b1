#!/usr/bin/env bash
# Qwen3.5: pp512 / tg128, chimera vs llama.cpp, on one synthetic file shaped like Qwen3.5-0.8B
# (`chimera synthetic --preset qwen35-0.8b`: 24 layers = 18 gated DeltaNet + 6 gated attention,
# 1024 wide, FFN 3584, vocabulary 248320, tied), F16 and Q8_0 weights, 2 threads, 2 repetitions.
# llama.cpp (this build) loads the file as arch qwen35 (checked on a tiny synthetic qwen35).
# Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build. Takes about 4-5 minutes (the file is ~1.6 GB F16).
source "$(dirname "$0")/common.sh"
compare qwen35-0.8b F16 2 "Qwen3.5-0.8B shape"
rm -f "$tmp/qwen35-0.8b-F16.gguf"  # ~1.6 GB
compare qwen35-0.8b Q8_0 2 "Qwen3.5-0.8B shape"
uptime
