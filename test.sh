#!/usr/bin/env bash
# Builds metharme and runs every test through ctest (installs missing Debian packages first).
#   ./test.sh [CTEST ARGS]              Release build in build/
#   ./test.sh --sanitize [CTEST ARGS]   AddressSanitizer + UBSan build (clang, -O1) in build-asan/:
#                                       the first error a sanitizer finds fails the test that hit
#                                       it. The same tree holds the libFuzzer targets (tools/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")"
./tools/deps.sh
if [[ "${1:-}" == "--sanitize" ]]; then
  shift
  ./tools/sanitize_build.sh build-asan
  export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=0
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  cd build-asan
  # Tests labelled sanitize_skip take too long under the sanitizers (see README, "Sanitizers").
  ctest --output-on-failure -j "$(nproc)" -LE sanitize_skip "$@"
  exit
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
cd build
ctest --output-on-failure -j "$(nproc)" "$@"
