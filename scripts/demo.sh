#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and generate text with the embedded default
# model (a small Granite-4.0-H-style hybrid trained on the King James Bible, models/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build/bin/chimera run -m models/default.gguf -p "And God said" -n 64 --temp 0.7 --seed 7 --repeat-penalty 1.1
