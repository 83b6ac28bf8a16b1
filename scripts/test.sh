#!/usr/bin/env bash
# Sets up, builds and runs every test:
#   1. release build (gcc) + all unit/op/invariance/parity tests (ctest)
#   2. Python round-trip tests against the gguf package (pytest)
#   3. clang ASan+UBSan build of the same tests, plus libFuzzer targets run for a bounded time
# Exits non-zero when anything fails. FUZZ_SECONDS (default 60) bounds each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}

bash scripts/setup.sh

echo "== release build and tests"
bash scripts/build.sh
(cd build && ctest --output-on-failure -j "$JOBS")

echo "== python tests (gguf package round trips)"
CHIMERA_BIN="$PWD/build/bin/chimera" .venv/bin/python -m pytest -q tests/python

echo "== sanitizer build (clang, ASan + UBSan) and tests"
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCHIMERA_SANITIZE=ON -DCHIMERA_FUZZ=ON -DCHIMERA_BENCH=OFF >/dev/null
cmake --build build-asan -j "$JOBS"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$JOBS" -E '_Slow')

echo "== fuzzing (${FUZZ_SECONDS}s per target)"
# Every harness in tests/fuzz must have been built: a missing target is a failure, not a skip.
for src in tests/fuzz/fuzz_*.cpp; do
  name=$(basename "$src" .cpp)
  f=build-asan/fuzz/$name
  if [ ! -x "$f" ]; then
    echo "fuzz target $f is missing (built from $src)" >&2
    exit 1
  fi
  corpus=tests/fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
  echo "-- $name"
  "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 "$work" 2>&1 | tail -n 12
  rm -rf "$work"
done
echo "== all tests passed"
