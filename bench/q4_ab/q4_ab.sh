#!/bin/sh
# Compares two versions of src/kernels/q4_avx2.cpp in one process (see q4_ab.cpp); with
# Q4_AB_ISA=avx512 in the environment, two versions of src/kernels/q4_avx512.cpp.
#   bench/q4_ab/q4_ab.sh OLD.cpp NEW.cpp [N K M ITERS]...
# e.g. git show HEAD~1:src/kernels/q4_avx2.cpp > /tmp/old.cpp
#      bench/q4_ab/q4_ab.sh /tmp/old.cpp src/kernels/q4_avx2.cpp 2048 5632 8 100
# Exit status 1 when the two disagree by more than 1e-4 relative.
set -e
[ $# -ge 2 ] || { echo "usage: $0 A.cpp B.cpp [N K M ITERS]" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
a=$(realpath "$1"); b=$(realpath "$2"); shift 2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags="-mavx2 -mfma -mf16c -mbmi2"
[ "${Q4_AB_ISA:-avx2}" = avx512 ] && flags="$flags -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -DQ4_AB_AVX512"
# shellcheck disable=SC2086
c++ -std=c++20 -O3 -Wall -Wextra -Werror $flags -I"$root/src" \
  -DVA="\"$a\"" -DVB="\"$b\"" "$root/bench/q4_ab/q4_ab.cpp" -o "$out/q4_ab"
"$out/q4_ab" "$@"
