#!/usr/bin/env bash
# Issue 14 per-architecture follow-up: the F16 rows where chimera trailed
# llama.cpp -- Gemma-3-270M F16 pp512/tg128 (GeGLU now vectorized) and LFM2-350M F16 pp512/tg128 --
# on the same synthetic files for both engines, 2 threads, 5 repetitions, llama.cpp and chimera
# alternated twice so drift shows. Run from the repository root after a release build, with
# LLAMA_BIN set to the bin/ folder of your llama.cpp build.
# Takes about 3 minutes on a quiet 2-core machine.
source "$(dirname "$0")/common.sh"
for round in 1 2; do
  compare gemma3-270m F16 5 "round $round, gemma"
  compare lfm2-350m F16 5 "round $round, lfm2"
done
uptime
