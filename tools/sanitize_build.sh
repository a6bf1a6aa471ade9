#!/usr/bin/env bash
# Configures and builds the sanitizer tree: clang, AddressSanitizer + UBSan (any report aborts),
# libFuzzer coverage on every object, -O1 (the Sanitize build type). One tree serves both the
# sanitized test suite (./test.sh --sanitize) and the fuzz targets (tools/fuzz.sh).
#   tools/sanitize_build.sh BUILD_DIR [TARGET...]     (no target: everything)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:?build folder}
shift
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Sanitize -DMETHARME_FUZZ=ON \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON >/dev/null
if (($#)); then
  cmake --build "$BUILD" --target "$@"
else
  cmake --build "$BUILD"
fi
