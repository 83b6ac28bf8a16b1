#!/usr/bin/env bash
# A session's first binary against its last, alternated in one run (README "Speculative
# decoding", "Session start against end", and Performance's F16 decode note): the draft pair and
# the n-gram drafter on models/default.gguf (3 rounds, 11 pairs of 1,024 tokens), the 302M
# self-draft (2 rounds), 5M plain decode, the 302M pp512/tg64 (Q4_0), pp512 (F16, Q8_0), and
# tg64 on F16 (5 rounds: its rate is bimodal on the development host).
# OLD_BIN: a chimera binary built from the session's first commit. Run from the repository root
# after a release build; about 6 minutes on a quiet machine (plus a few the first time, to write
# the 302M synthetic models to /tmp).
set -u
cd "$(dirname "$0")/../.."
NEW=build/bin/chimera
OLD=${OLD_BIN:?set OLD_BIN to an earlier chimera binary}
F16=/tmp/g4h-f16.gguf
Q40=/tmp/g4h-q4_0.gguf
Q80=/tmp/g4h-q8_0.gguf
[ -f "$F16" ] || "$NEW" synthetic --preset granite4h-small -o "$F16" >/dev/null
[ -f "$Q40" ] || "$NEW" quantize "$F16" "$Q40" Q4_0 >/dev/null
[ -f "$Q80" ] || "$NEW" quantize "$F16" "$Q80" Q8_0 >/dev/null
P=(-p 0 -n 1024 -r 11 -t 2 --spec-only --spec-prompt "And God said")
S=(-m "$F16" -p 0 -n 192 -r 2 -t 2 --spec-only --spec-prompt "And God said" --draft "$Q40")
echo "== speculative, $OLD against $NEW $(uptime)"
for r in 1 2 3; do
  for b in "$OLD" "$NEW"; do
    printf "%-24s pair  " "$b"
    "$b" bench -m models/default.gguf "${P[@]}" --draft models/draft.gguf 2>&1 |
      grep -E '^speed-up' | cut -c1-150
    printf "%-24s ngram " "$b"
    "$b" bench -m models/default.gguf "${P[@]}" --spec ngram 2>&1 | grep -E '^speed-up' | cut -c1-150
  done
done
for r in 1 2; do
  for b in "$OLD" "$NEW"; do
    printf "%-24s self  " "$b"
    "$b" bench "${S[@]}" 2>&1 | grep -E '^speed-up' | cut -c1-150
  done
done
echo "== plain decode and prefill $(uptime)"
for r in 1 2 3; do
  for b in "$OLD" "$NEW"; do
    printf "%-24s 5M    " "$b"
    "$b" bench -m models/default.gguf -p 0 -n 1024 -r 3 -t 2 2>&1 | grep -E 'tg1024' | tr -s ' '
  done
done
for r in 1 2; do
  for b in "$OLD" "$NEW"; do
    for f in "$Q40" "$F16" "$Q80"; do
      printf "%-24s %-22s " "$b" "$(basename "$f")"
      n=0
      [ "$f" = "$Q40" ] && n=64
      "$b" bench -m "$f" -p 512 -n "$n" -r 2 -t 2 2>&1 | grep -E 'pp512|tg64' | tr -s ' ' |
        tr '\n' ' '
      echo
    done
  done
done
echo "== F16 decode $(uptime)"
for r in 1 2 3 4 5; do
  for b in "$OLD" "$NEW"; do
    printf "%-24s f16   " "$b"
    "$b" bench -m "$F16" -p 0 -n 64 -r 2 -t 2 2>&1 | grep -E 'tg64' | tr -s ' '
  done
done
echo "== end $(uptime)"
