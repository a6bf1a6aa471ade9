#!/usr/bin/env bash
# Aggregate serving throughput, metharme against llama.cpp, in the same run on random models of
# the same shape: `metharme serve` (GPTQ 4-bit g128 from `metharme synth`) driven over HTTP by
# bench/serve_load.mjs, and llama.cpp (GGUF Q4_0 from `metharme synth --gguf`, the CPU build in the
# npm package node-llama-cpp 3.21.1) serving the same number of parallel sequences in one context,
# driven by bench/llamacpp_parallel.mjs. Every stream gets a short prompt and generates exactly
# --tokens tokens at temperature 0.7. The engines alternate round by round (metharme, llama.cpp,
# metharme, ...) so a slow spell of a shared machine hits both; each figure is the median round.
#
# Usage: bench/compare_serve.sh [--shape 1b|7b|tiny] [--streams 1,4,8] [--tokens 64] [--threads 2]
#                               [--rounds 3] [--quant q4_0|q8_0] [--work DIR] [--build DIR] [--bin FILE]
#                               [--nlc DIR]
#   --work  where the random models are kept between runs (default ${TMPDIR:-/tmp}/metharme-compare,
#           shared with bench/compare_llamacpp.sh)
#   --bin   the metharme binary (default BUILD/metharme, BUILD from --build, default ./build)
#   --nlc   a folder whose node_modules holds node-llama-cpp@3.21.1 (default: install it into a
#           temporary folder with npm, removed at exit)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SHAPE=1b
STREAMS=1,4,8
TOKENS=64
THREADS=2
ROUNDS=3
QUANT=q4_0
WORK=${TMPDIR:-/tmp}/metharme-compare
BUILD=build
BIN=
NLC=
while (($#)); do
  case $1 in
    --shape) SHAPE=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --quant) QUANT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --nlc) NLC=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $SHAPE =~ ^(1b|7b|tiny)$ ]] || { echo "--shape takes 1b, 7b or tiny" >&2; exit 2; }
[[ $QUANT =~ ^(q4_0|q8_0)$ ]] || { echo "--quant takes q4_0 or q8_0" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $THREADS =~ ^[1-9][0-9]*$ && $TOKENS =~ ^[1-9][0-9]*$ ]] ||
  { echo "--rounds, --threads and --tokens take positive integers" >&2; exit 2; }

METHARME=${BIN:-$REPO/$BUILD/metharme}
TOKENIZER=${METHARME_TOKENIZER:-$REPO/../shared/fixtures/tokenizer/llama/tokenizer.model}
[[ -x $METHARME ]] || { echo "no $METHARME: build first" >&2; exit 1; }
[[ -f $TOKENIZER ]] || { echo "no LLaMA tokenizer at $TOKENIZER (set METHARME_TOKENIZER)" >&2; exit 1; }
command -v node >/dev/null || { echo "node is needed (apt-get install nodejs npm)" >&2; exit 1; }

source "$REPO/bench/nlc_setup.sh"
nlc_setup "$NLC"

mkdir -p "$WORK"
GPTQ=$WORK/$SHAPE-gptq
GGUF=$WORK/$SHAPE-$QUANT.gguf
[[ -f $GPTQ/model.safetensors ]] ||
  "$METHARME" synth -o "$GPTQ" --shape "$SHAPE" --bits 4 --group-size 128 --seed 1 --tokenizer "$TOKENIZER"
[[ -f $GGUF ]] || "$METHARME" synth -o "$GGUF" --shape "$SHAPE" --gguf "$QUANT" --seed 1 --tokenizer "$TOKENIZER"

RESULTS=$WORK/serve-$SHAPE-$(date +%Y%m%d-%H%M%S).jsonl
echo "== results go to $RESULTS" >&2
for ((r = 1; r <= ROUNDS; ++r)); do
  echo "== round $r/$ROUNDS: metharme serve" >&2
  node "$REPO/bench/serve_load.mjs" --bin "$METHARME" --model "$GPTQ" --streams "$STREAMS" --tokens "$TOKENS" \
    --threads "$THREADS" --repeat 1 --json >>"$RESULTS"
  echo "== round $r/$ROUNDS: llama.cpp $QUANT, parallel sequences" >&2
  node "$REPO/bench/llamacpp_parallel.mjs" --nlc "$NLC" --model "$GGUF" --streams "$STREAMS" --tokens "$TOKENS" \
    --threads "$THREADS" --repeat 1 --json >>"$RESULTS"
done

echo
echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Shape $SHAPE, $THREADS thread(s), $TOKENS tokens per stream, $ROUNDS round(s) per engine (median round; range in brackets)"
node - "$RESULTS" "$QUANT" <<'EOF'
const fs = require("fs");
const rows = fs.readFileSync(process.argv[2], "utf8").trim().split("\n").map((l) => JSON.parse(l));
const quant = process.argv[3].toUpperCase();
const med = (v) => { const s = [...v].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
const ns = [...new Set(rows.map((r) => r.n))].sort((a, b) => a - b);
const agg = (engine, n) => rows.filter((r) => r.engine === engine && r.n === n).map((r) => r.agg);
const cell = (v) => (v.length ? `${med(v).toFixed(2)} [${Math.min(...v).toFixed(1)}-${Math.max(...v).toFixed(1)}]` : "-");
console.log(`| streams | metharme GPTQ g128 tok/s | vs 1 stream | llama.cpp ${quant} parallel sequences tok/s | vs 1 stream | metharme / llama.cpp |`);
console.log("|---:|---:|---:|---:|---:|---:|");
const m1 = med(agg("metharme", ns[0])), l1 = med(agg("llama.cpp", ns[0]));
for (const n of ns) {
  const m = agg("metharme", n), l = agg("llama.cpp", n);
  console.log(`| ${n} | ${cell(m)} | ${(med(m) / m1).toFixed(2)}x | ${cell(l)} | ${(med(l) / l1).toFixed(2)}x | ` +
    `${(med(m) / med(l)).toFixed(2)}x |`);
}
EOF
