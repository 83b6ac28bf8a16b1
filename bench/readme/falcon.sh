#!/usr/bin/env bash
# Issue 14 (nemotron_h / falcon-h1): pp512 / tg128, chimera vs llama.cpp on the same synthetic
# files, 2 threads: Nemotron-H-4B's shape at reduced depth (9 layers M-M-M*-M-, 3072 wide,
# vocabulary 131072; Q8_0, ~1.4B parameters) and Falcon-H1-0.5B's shape (36 parallel
# attention + Mamba2 layers, 1024 wide; F16 and Q8_0). Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build.
# Takes about 5 minutes on a quiet 2-core machine (-r 2).
source "$(dirname "$0")/common.sh"
compare nemotron-h-4b Q8_0 2
compare falcon-h1-0.5b F16 2
compare falcon-h1-0.5b Q8_0 2
uptime
