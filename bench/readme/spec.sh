#!/usr/bin/env bash
# Speculative decoding (issue 12): chimera with vs without speculation, and llama.cpp's
# llama-speculative-simple vs its plain decode (llama-bench tg), on the same pairs of files,
# same prompt, greedy, 2 threads. Run from the repository root after a release build, with LLAMA_BIN set to the bin/ folder of your llama.cpp build. About 4-5 minutes
# on a quiet machine (plus ~1 minute the first time, to write the 302M synthetic models to /tmp).
#
# Cases:
#   ngram     default model (models/default.gguf), n-gram / prompt-lookup drafting
#   self      302M Granite-4.0-H-small-shaped synthetic model, F16 target, its own Q4_0 as draft
#   draft     default model drafted by the small trained models/draft.gguf
#   self / draft: the default --draft-p-min 0 (llama-speculative-simple's too: the adaptive draft
#             length settles how much to draft); self-p75 / draft-p75: --draft-p-min 0.75 (the
#             default until 2026-12-06; it cut the 302M self-draft's speed-up)
#   self-states: self with --spec-verify-states, the older verify path (the recurrent state
#             stored after every verified token instead of the kept prefix recomputed): the
#             recompute's gain is the ratio of the self and self-states speed-ups.
#   --spec-costs (self, draft): also times the parts of a speculative step apart (plain step,
#             verification of n tokens, one draft forward, a whole drafter call), as ratios to a
#             plain step: what bounds the speed-up.
#   *-nolk:   the draft model drafting token by token only (--no-draft-lookup): without the
#             lookup batch that checks an n-gram continuation of the history first (self / draft
#             use it, the default).
#   self-k16: up to 16 drafted tokens a step (--draft-max 16): with lookup staging a longer draft
#             costs the draft model little more, and every draft of this pair is accepted.
#   draft-k6: the draft length fixed at 6 (--draft-fixed): what the adaptive length leaves.
#   ngram-k16 / draft-k16: up to 16 drafted tokens a step on the 5M model too. A verification's
#             cost grows by ~0.4 plain steps a token against a fixed ~0.6 (plus the drafter's
#             call), so at ~99% acceptance a longer draft pays; llama.cpp's draft-k16 runs
#             --spec-draft-n-max 16 beside its default (3) to show its best setting.
#   *-td1:    the tiny draft model on one thread (--threads-draft 1) while the target uses two:
#             whether a second thread's synchronisation costs the 48-wide draft more than it gains.
#   *-t1:     seeded sampling at temperature 1.0 (--spec-temp 1): a draft token counts only when it
#             equals the target's sample, so acceptance falls; the back-off cases (speculation
#             must stay within 5% of plain decoding when acceptance is low).
#
# Run lengths: long enough for the steady state. A plain step of the 5M default model takes
# ~0.23 ms, so 128 tokens lasted ~30 ms: one time slice lost to another process (a few ms) or the
# controller's first probe moved a case by 10-20%, and speculation's learning steps were a large
# share of the run. 1024 tokens (~0.25 s a run) make such one-off costs ~1%; the 302M model
# (~25 ms a step) gets 192 tokens (~5 s a run). Every case runs once untimed first (chimera bench
# repetition 0: both paths warmed), then alternates plain-first and speculative-first.
# The 5M cases run 11 repetitions: the speed-up printed is the median of the back-to-back pairs'
# ratios (quartiles beside it), which a burst of another process's work moves far less than the
# ratio of means over 3 runs did (0.90-1.05x over 8 runs of the back-off cases). --spec-only: no
# tg test of its own.
set -u
cd "$(dirname "$0")/../.."
CH=${CH:-build/bin/chimera}
LL=${LL:-${LLAMA_BIN:?set LLAMA_BIN to the bin/ folder of a llama.cpp build}}
T=2
PROMPT="And God said"
F16=/tmp/spec-g4h-f16.gguf
Q40=/tmp/spec-g4h-q4_0.gguf
[ -f "$F16" ] || "$CH" synthetic --preset granite4h-small -o "$F16" >/dev/null
[ -f "$Q40" ] || "$CH" quantize "$F16" "$Q40" Q4_0 >/dev/null
echo "== spec.sh $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null); $(uptime)"

# chimera bench: plain vs speculative, interleaved per repetition, one line per case.
chimera_case() {  # name n reps model drafter-args...
  local name=$1 n=$2 reps=$3 model=$4
  shift 4
  local out
  out=$("$CH" bench -m "$model" -p 0 -n "$n" -r "$reps" -t $T --spec-only --spec-prompt "$PROMPT" "$@" 2>&1)
  local plain spec line pos
  plain=$(echo "$out" | awk '/^\| plain/ {print $4}')
  spec=$(echo "$out" | awk '/^\| spec / {print $4}')
  line=$(echo "$out" | grep '^speed-up')
  pos=$(echo "$out" | grep '^acceptance by draft position' | cut -d: -f2)
  printf "chimera   %-6s plain %8s tok/s  spec %8s tok/s  %s |%s\n" "$name" "$plain" "$spec" "$line" "$pos"
  echo "$out" | grep '^verifications by draft length' | sed 's/^/          /'
  # The controller's measured costs, and with --spec-costs each part of a step timed apart.
  echo "$out" | grep -E '^(controller|step costs)' | sed 's/^/          /'
}

# llama.cpp: plain decode speed from llama-bench (tg n), speculative from llama-speculative-simple.
llama_case() {  # name n model spec-args...
  local name=$1 n=$2 model=$3
  shift 3
  local plain out spec acc
  plain=$("$LL/llama-bench" -m "$model" -p 0 -n "$n" -t $T -r 3 -o csv 2>/dev/null |
    awk -F, 'NR==1 {for (i=1;i<=NF;i++) if ($i ~ /avg_ts/) c=i} NR==2 {gsub(/"/,"",$c); print $c}')
  out=$(timeout 120 "$LL/llama-speculative-simple" -m "$model" "$@" -p "$PROMPT" -n "$n" --temp 0 \
    -t $T -c 2048 2>&1)
  spec=$(echo "$out" | grep -o 'decoded.*speed: *[0-9.]*' | awk '{print $NF}')
  acc=$(echo "$out" | grep -oE 'n_drafted = [0-9]+|n_accept *= [0-9]+|accept *= [0-9.]+%' | tr '\n' ' ')
  awk -v n="$name" -v p="$plain" -v s="$spec" -v a="$acc" 'BEGIN {
    printf "llama.cpp %-6s plain %8.2f tok/s  spec %8.2f tok/s  speed-up %.2fx; %s\n", n, p, s,
      (p > 0 ? s / p : 0), a }'
}

chimera_case ngram 1024 11 models/default.gguf --spec ngram
chimera_case self 192 2 "$F16" --draft "$Q40" --spec-costs
chimera_case self-nolk 192 2 "$F16" --draft "$Q40" --no-draft-lookup
chimera_case self-k16 192 2 "$F16" --draft "$Q40" --draft-max 16
chimera_case self-p75 192 2 "$F16" --draft "$Q40" --draft-p-min 0.75
chimera_case draft 1024 11 models/default.gguf --draft models/draft.gguf --spec-costs
chimera_case draft-nolk 1024 11 models/default.gguf --draft models/draft.gguf --no-draft-lookup
chimera_case draft-p75 1024 11 models/default.gguf --draft models/draft.gguf --draft-p-min 0.75
chimera_case draft-k16 1024 11 models/default.gguf --draft models/draft.gguf --draft-max 16
chimera_case ngram-k16 1024 11 models/default.gguf --spec ngram --draft-max 16
chimera_case draft-k6 1024 11 models/default.gguf --draft models/draft.gguf --draft-max 6 --draft-fixed
chimera_case draft-td1 1024 11 models/default.gguf --draft models/draft.gguf --threads-draft 1
chimera_case self-states 192 2 "$F16" --draft "$Q40" --spec-verify-states
chimera_case ngram-t1 1024 11 models/default.gguf --spec ngram --spec-temp 1
chimera_case draft-t1 1024 11 models/default.gguf --draft models/draft.gguf --spec-temp 1
chimera_case self-t1 192 2 "$F16" --draft "$Q40" --spec-temp 1

llama_case ngram 1024 models/default.gguf --spec-type ngram-simple
llama_case self 192 "$F16" -md "$Q40" --spec-type draft-simple -td $T
llama_case draft 1024 models/default.gguf -md models/draft.gguf --spec-type draft-simple -td $T
llama_case draft-k16 1024 models/default.gguf -md models/draft.gguf --spec-type draft-simple -td $T \
  --spec-draft-n-max 16
echo "== done $(date -u +%FT%TZ); $(uptime)"
