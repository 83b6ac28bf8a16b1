#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and run chimera on the embedded default model.
# Until the default model lands (issue 7) it inspects a committed GGUF fixture.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build/bin/chimera gguf tests/fixtures/gguf/tiny_granitehybrid.gguf
