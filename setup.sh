#!/usr/bin/env bash
# Installs what metharme needs on Debian 12, builds it (Release), and tells a short story with the
# bundled stories260K model.
set -euo pipefail
cd "$(dirname "$0")"
./tools/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
echo
echo "== metharme generate -m models/stories260k --temp 0 -n 200 =="
./build/metharme generate -m models/stories260k --temp 0 -n 200
