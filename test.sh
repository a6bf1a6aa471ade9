#!/usr/bin/env bash
# Builds metharme and runs every test through ctest (installs missing Debian packages first).
set -euo pipefail
cd "$(dirname "$0")"
./tools/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
cd build
ctest --output-on-failure -j "$(nproc)" "$@"
