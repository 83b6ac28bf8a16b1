#!/usr/bin/env bash
# Lookup staging A/B (README "Speculative decoding", the third 2026-12-07 session), alternated in
# one run, greedy, "And God said":
#   the draft pair (models/default.gguf drafted by models/draft.gguf; 11 back-to-back pairs of
#   1,024 tokens per entry) and the 302M self-draft (F16 target, its Q4_0 copy as draft; 2 pairs
#   of 192 tokens), each with lookup staging (the default) and with --no-draft-lookup;
#   with OLD_BIN set (a chimera binary built from an earlier commit): that binary against
#   build/bin/chimera on both pairs, twice.
# Run from the repository root after a release build; about 5 minutes on a quiet machine (plus
# ~1 minute the first time, to write the 302M synthetic models to /tmp).
set -u
cd "$(dirname "$0")/../.."
NEW=build/bin/chimera
F16=/tmp/spec-g4h-f16.gguf
Q40=/tmp/spec-g4h-q4_0.gguf
[ -f "$F16" ] || "$NEW" synthetic --preset granite4h-small -o "$F16" >/dev/null
[ -f "$Q40" ] || "$NEW" quantize "$F16" "$Q40" Q4_0 >/dev/null
PAIR=(-m models/default.gguf -p 0 -n 1024 -r 11 -t 2 --spec-only --spec-prompt "And God said"
      --draft models/draft.gguf)
SELF=(-m "$F16" -p 0 -n 192 -r 2 -t 2 --spec-only --spec-prompt "And God said" --draft "$Q40")
line() {  # label binary args...
  local label=$1 bin=$2
  shift 2
  printf "%-22s " "$label"
  "$bin" bench "$@" 2>&1 | grep -E '^speed-up' | cut -c1-150
}
echo "== the pair, staging on / off $(uptime)"
for r in 1 2 3; do
  line "pair on" "$NEW" "${PAIR[@]}"
  line "pair off" "$NEW" "${PAIR[@]}" --no-draft-lookup
done
echo "== the 302M self-draft, staging on / off $(uptime)"
for r in 1 2; do
  line "self on" "$NEW" "${SELF[@]}"
  line "self off" "$NEW" "${SELF[@]}" --no-draft-lookup
done
if [ -n "${OLD_BIN:-}" ]; then
  echo "== $OLD_BIN against $NEW $(uptime)"
  for r in 1 2; do
    line "pair old" "$OLD_BIN" "${PAIR[@]}"
    line "pair new" "$NEW" "${PAIR[@]}"
    line "self old" "$OLD_BIN" "${SELF[@]}"
    line "self new" "$NEW" "${SELF[@]}"
  done
fi
echo "== end $(uptime)"
