#!/usr/bin/env bash
# Issue 12 back-off and thin-gain cases on the 5M default model (engine session, 2026-12-06).
# Run from anywhere after a release build (build/bin/chimera). About 1 minute on a quiet machine
# (5 cases x 16 pairs of ~0.2 s runs, plus loading).
# Each case is one `chimera bench` run: 15 timed repetitions of plain vs speculative generation of
# 1024 tokens, back to back (order alternating); the speed-up printed is the median of the 15
# pairs' ratios with its quartiles (the ratio of means beside it). Target: the back-off cases
# (ngram-t1 at ~0% acceptance, draft-t1 at ~30%) >= 0.95x; draft (greedy, ~72%) not below 1.0x.
set -u
cd "$(dirname "$0")/../.."
CH=${CH:-build/bin/chimera}
echo "== spec_backoff.sh $(date -u +%FT%TZ) $(git rev-parse --short HEAD); $(uptime)"
run() {  # name args...
  local name=$1; shift
  local out
  out=$("$CH" bench -m models/default.gguf -p 0 -n 1024 -r 15 -t 2 --spec-only --spec-prompt "And God said" "$@" 2>&1)
  printf "%-10s %s\n" "$name" "$(echo "$out" | grep '^speed-up')"
  echo "$out" | grep -E '^controller' | sed 's/^/           /'
}
run ngram-t1  --spec ngram --spec-temp 1
run draft-t1  --draft models/draft.gguf --spec-temp 1
run draft     --draft models/draft.gguf
run draft-td1 --draft models/draft.gguf --threads-draft 1
run ngram     --spec ngram
echo "== done $(date -u +%FT%TZ); $(uptime)"
