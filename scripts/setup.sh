#!/usr/bin/env bash
# Installs everything chimera needs on a fresh Debian 12 machine. This is the one place where
# dependencies are recorded: Debian packages for C++, PyPI packages (in .venv) for Python tools.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ccache
  clang libclang-rt-14-dev          # sanitizer and libFuzzer builds
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libpcre2-dev libcpp-httplib-dev
  python3 python3-venv python3-pip
  chromium chromium-driver           # browser tests of the chat page (tests/python/test_webui_browser.py)
  bible-kjv                         # KJV text for the fixture tokenizers (python/make_*fixtures.py)
)

need_install=0
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" = 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${DEBIAN_PACKAGES[@]}" >/dev/null
fi

# Python tools (converter, round-trip tests against the gguf package). torch/transformers are only
# needed to regenerate fixtures: python/requirements-fixtures.txt, never in CI.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r python/requirements.txt
