#!/usr/bin/env bash
# LFM2: pp512 / tg128, chimera vs llama.cpp, on one synthetic file shaped like LFM2-350M (16
# layers: 10 gated short conv + 6 attention, 1024 wide, FFN 4608, vocabulary 65536), F16 and Q8_0
# weights, 2 threads. Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build. Takes about 4 minutes.
source "$(dirname "$0")/common.sh"
compare lfm2-350m F16 3 "LFM2-350M shape"
compare lfm2-350m Q8_0 3 "LFM2-350M shape"
uptime
