#!/usr/bin/env bash
# Times `metharme quantize` (wall time, peak RSS) on synthetic fp16 models of real shapes:
#   bench/quantize_bench.sh 1b   [WORK]  TinyLlama-1.1B shape, 32 x 512 calibration, whole model
#   bench/quantize_bench.sh 7b-layer [WORK] LLaMA-7B shape, one decoder layer, 128 x 2048 calibration
# Both use GPTQ with --act-order --true-sequential --groupsize 128 (the Metharme-style recipe) and
# tinyshakespeare as calibration text. WORK (default /tmp/metharme-quant-bench) needs ~4 GB free.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: bench/quantize_bench.sh 1b|7b-layer [WORK]}
work=${2:-/tmp/metharme-quant-bench}
bin=./build/metharme
shared=${METHARME_SHARED:-../shared}
tok=$shared/fixtures/tokenizer/llama/tokenizer.model
calib=$shared/data/tinyshakespeare.txt
mkdir -p "$work"
case "$what" in
  1b) shape=(--shape 1b); cal=(--nsamples 32 --seqlen 512) ;;
  7b-layer) shape=(--shape 7b --layers 1); cal=(--nsamples 128 --seqlen 2048) ;;
  *) echo "unknown benchmark '$what' (1b or 7b-layer)" >&2; exit 2 ;;
esac
model=$work/synth-$what
[[ -f $model/config.json ]] || "$bin" synth "${shape[@]}" --fp16 --tokenizer "$tok" -o "$model"
echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "== wall %e s, user %U s, sys %S s, peak RSS %M KiB" \
  "$bin" quantize -m "$model" -o "$work/out-$what" --calib "$calib" "${cal[@]}" \
  --act-order --true-sequential --groupsize 128 --force
