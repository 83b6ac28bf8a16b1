#!/usr/bin/env bash
# The draft pair at draft lengths 8 (the default), 12 and 16, alternated in one run (README
# "Speculative decoding", the host's two states): models/default.gguf drafted by
# models/draft.gguf, greedy, "And God said", 11 back-to-back pairs of 1,024 tokens per entry,
# ROUNDS rounds (default 3). The plain rate beside each speed-up tells the host's state.
# Run from the repository root after a release build; about a minute on a quiet machine.
set -u
cd "$(dirname "$0")/../.."
BIN=build/bin/chimera
P=(-m models/default.gguf -p 0 -n 1024 -r 11 -t 2 --spec-only --spec-prompt "And God said"
   --draft models/draft.gguf)
echo "== draft lengths 8, 12, 16 $(uptime)"
for r in $(seq "${ROUNDS:-3}"); do
  for k in 8 12 16; do
    printf "k=%-3s " "$k"
    "$BIN" bench "${P[@]}" --draft-max "$k" 2>&1 | grep -E '^\| plain|^speed-up' | tr -s ' ' |
      tr '\n' ' ' | cut -c1-170
    echo
  done
done
echo "== end $(uptime)"
