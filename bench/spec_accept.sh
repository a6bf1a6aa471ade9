#!/usr/bin/env bash
# Speculative decoding on real text: acceptance rate and tokens per verification pass of
# `metharme generate` over the ten stories260k golden prompts, for prompt lookup and a draft
# model, greedy and sampled. Prints one markdown table row per setting (sums over the prompts).
#   bench/spec_accept.sh [BIN] [MODEL] [DRAFT] [N_TOKENS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/build/metharme}
model=${2:-$here/../shared/fixtures/models/stories260k}
draft=${3:-$model}
n=${4:-200}
prompts=("" "Once upon a time" "One day, Lily met a" "Tom and his dog" "The little bird was sad because"
  "Sara had a red ball. She" 'Mom said, "' "The sun was shining and" "Ben wanted to eat a"
  "Once upon a time, there was a big")
settings=(
  "lookup n=1..3 k=4|--lookup --lookup-ngram-min 1 --lookup-ngram-max 3 --draft-max 4"
  "lookup n=2..4 k=4|--lookup --lookup-ngram-min 2 --lookup-ngram-max 4 --draft-max 4"
  "lookup n=2..4 k=8|--lookup --lookup-ngram-min 2 --lookup-ngram-max 4 --draft-max 8"
  "draft model k=4|--draft $draft --draft-max 4"
  "draft model k=8|--draft $draft --draft-max 8"
)
echo "| drafting | sampling | passes | drafts | accepted | acceptance | tokens per pass |"
echo "|---|---|---|---|---|---|---|"
for s in "${settings[@]}"; do
  name=${s%%|*}
  flags=${s#*|}
  for samp in "greedy|--temp 0" "temp 0.8, seed 1..10|--temp 0.8"; do
    sname=${samp%%|*}
    sflags=${samp#*|}
    steps=0 drafted=0 acc=0 i=0
    for p in "${prompts[@]}"; do
      i=$((i + 1))
      # shellcheck disable=SC2086
      line=$("$bin" generate -m "$model" -p "$p" -n "$n" -t 1 --seed "$i" $sflags $flags 2>&1 >/dev/null |
        grep '^speculative: ' || true)
      read -r a b c <<<"$(sed -E 's/^speculative: ([0-9]+) verification steps, ([0-9]+) of ([0-9]+) drafts.*/\1 \2 \3/' <<<"${line:-speculative: 0 verification steps, 0 of 0 drafts}")"
      steps=$((steps + a)) acc=$((acc + b)) drafted=$((drafted + c))
    done
    awk -v n="$name" -v s="$sname" -v st="$steps" -v d="$drafted" -v a="$acc" 'BEGIN {
      printf "| %s | %s | %d | %d | %d | %.1f%% | %.2f |\n", n, s, st, d, a, d ? 100 * a / d : 0, st ? (a + st) / st : 0 }'
  done
done
