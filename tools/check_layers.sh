#!/usr/bin/env bash
# Checks the layering of src/: each layer includes only the layers below it or beside it,
# and only kernels/ touches intrinsics. Prints every violation; exits 1 if any.
set -uo pipefail
cd "$(dirname "$0")/../src"

declare -A ALLOWED=(
  [util]=""
  [kernels]="util"
  [ops]="kernels util"
  [formats]="util"
  [tokenizer]="formats util"
  [grammar]="util"
  [sampling]="grammar util"
  [gpu]="ops kernels util"
  [model]="gpu ops kernels formats util"
  [chat]="model ops kernels formats tokenizer grammar sampling util"
  [eval]="model ops kernels formats tokenizer util"
  [quant]="model ops kernels formats tokenizer util"
  [serve]="chat model ops kernels formats tokenizer grammar sampling util"
  [cli]="serve chat eval quant model gpu ops kernels formats tokenizer grammar sampling util"
)

bad=0
for dir in */; do
  layer=${dir%/}
  if [[ -z "${ALLOWED[$layer]+x}" ]]; then
    echo "src/$layer: unknown layer (add it to tools/check_layers.sh and DEVELOPERS notes in README)"
    bad=1
    continue
  fi
  allowed=" $layer ${ALLOWED[$layer]} "
  while IFS= read -r line; do
    file=${line%%:*}
    inc=$(sed -E 's/.*#include "([^/"]+)\/.*/\1/' <<<"$line")
    if [[ "$allowed" != *" $inc "* ]]; then
      echo "src/$file: includes $inc/ (layer $layer may use: ${ALLOWED[$layer]:-nothing})"
      bad=1
    fi
  done < <(grep -HnE '^#include "[^/"]+/' "$layer"/*.{h,cpp,cu} 2>/dev/null | sed -E 's/^([^:]+):[0-9]+:/\1:/')
  if [[ "$layer" != kernels ]]; then
    if grep -lE '#include <(immintrin|x86intrin|emmintrin|xmmintrin|smmintrin|nmmintrin|arm_neon)\.h>|__m256|__m512|_mm256_|_mm512_' \
        "$layer"/*.{h,cpp} 2>/dev/null; then
      echo "  ^ intrinsics outside src/kernels/"
      bad=1
    fi
  fi
done
exit $bad
