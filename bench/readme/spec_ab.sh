#!/usr/bin/env bash
# Speculative A/B (README "Speculative decoding", this session's A/B): the draft pair
# (models/default.gguf drafted by a draft model, greedy, "And God said", 11 back-to-back pairs of
# 1,024 tokens per entry), alternated in one run:
#   controller: OLD_BIN against build/bin/chimera, both with OLD_DRAFT;
#   draft file: build/bin/chimera with OLD_DRAFT against models/draft.gguf;
#   both:       OLD_BIN with OLD_DRAFT against build/bin/chimera with models/draft.gguf.
# OLD_BIN: a chimera binary built from an earlier commit; OLD_DRAFT: an earlier draft model
# (e.g. `git show 50ffc55:models/draft.gguf > /tmp/old-draft.gguf`). Run from the repository
# root after a release build; about 2 minutes on a quiet machine.
set -u
cd "$(dirname "$0")/../.."
NEW=build/bin/chimera
OLD=${OLD_BIN:?set OLD_BIN to an earlier chimera binary}
OLD_DRAFT=${OLD_DRAFT:?set OLD_DRAFT to an earlier draft model}
P=(-p 0 -n 1024 -r 11 -t 2 --spec-only --spec-prompt "And God said")
case_line() {  # label binary draft
  printf "%-10s %-24s " "$1" "$3"
  "$2" bench -m models/default.gguf "${P[@]}" --draft "$3" 2>&1 | grep -E '^speed-up' | cut -c1-150
}
echo "== controller A/B (draft $OLD_DRAFT) $(uptime)"
for r in 1 2 3; do case_line old "$OLD" "$OLD_DRAFT"; case_line new "$NEW" "$OLD_DRAFT"; done
echo "== draft file A/B (build/bin/chimera) $(uptime)"
for r in 1 2 3; do case_line new "$NEW" "$OLD_DRAFT"; case_line new "$NEW" models/draft.gguf; done
echo "== both $(uptime)"
for r in 1 2; do case_line old "$OLD" "$OLD_DRAFT"; case_line new "$NEW" models/draft.gguf; done
echo "== end $(uptime)"
