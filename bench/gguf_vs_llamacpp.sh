#!/usr/bin/env bash
# Issue 17's target: metharme vs llama.cpp on the SAME GGUF files, in the same run.
#   files:     random models of the shape written by `metharme synth --gguf q4_0` (Q4_0, output Q6_K)
#              and `--gguf q4_k_m` (llama-quantize's Q4_K_M mix: Q4_K, output and half of
#              attn_v / ffn_down Q6_K)
#   metharme:  `metharme bench -m FILE.gguf`
#   llama.cpp: the CPU build in the npm package node-llama-cpp (pinned 3.21.1), through
#              bench/llamacpp_bench.mjs, on the same FILE.gguf
# Both time a warm-up token, then pp (prompt tokens in one batch) and tg (greedy single-token
# steps), medians of -r runs; engines alternate per file so they meet the same machine state.
# Targets (7B, 2 threads): metharme >= 1.3x llama.cpp's tg128 and >= 2x its pp512 on each file.
#
# Usage: bench/gguf_vs_llamacpp.sh [--shape 7b|1b|tiny] [--threads "2"] [--types "q4_0 q4_k_m"]
#                                  [-p 512] [-n 128] [-r 3] [--work DIR] [--build DIR] [--nlc DIR]
#                                  [--synth-args "ARGS"]
#   --work   where the GGUF files are kept between runs (default ${TMPDIR:-/tmp}/metharme-gguf-bench;
#            7B: Q4_0 3.8 GB, Q4_K_M 4.1 GB)
#   --synth-args  extra `metharme synth` options (e.g. "--intermediate 768" for the tiny shape, whose
#            704 is no whole number of Q4_K super-blocks); they name the files, so runs do not mix
#   --nlc    a folder whose node_modules already holds node-llama-cpp 3.21.1 (e.g. tests/gguf_node
#            after its --install); default: install it with npm into a temporary folder
# Prints a markdown table and writes the raw JSON lines to WORK/gguf-results-*.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SHAPE=7b
THREADS=2
TYPES="q4_0 q4_k_m"
PP=512
TG=128
REPS=3
WORK=${TMPDIR:-/tmp}/metharme-gguf-bench
BUILD=build
NLC_DIR=
SYNTH_ARGS=
while (($#)); do
  case $1 in
    --shape) SHAPE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    -p) PP=$2; shift 2 ;;
    -n) TG=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --nlc) NLC_DIR=$2; shift 2 ;;
    --synth-args) SYNTH_ARGS=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

METHARME=$REPO/$BUILD/metharme
TOKENIZER=${METHARME_TOKENIZER:-$REPO/../shared/fixtures/tokenizer/llama/tokenizer.model}
[[ -x $METHARME ]] || { echo "no $METHARME: build first (cmake -S . -B build -G Ninja && ninja -C build metharme)" >&2; exit 1; }
[[ -f $TOKENIZER ]] || { echo "no LLaMA tokenizer at $TOKENIZER (set METHARME_TOKENIZER)" >&2; exit 1; }
command -v node >/dev/null || { echo "node is needed (apt-get install nodejs npm)" >&2; exit 1; }

# ---- node-llama-cpp ---------------------------------------------------------------------------------
source "$REPO/bench/nlc_setup.sh"
nlc_setup "$NLC_DIR"
cp "$REPO/bench/llamacpp_bench.mjs" "$NLC/"

# ---- files --------------------------------------------------------------------------------------------
mkdir -p "$WORK"
NAME=$SHAPE$(echo "$SYNTH_ARGS" | tr -c 'A-Za-z0-9\n' '_' | sed 's/^_*/_/;s/_$//')
[[ -z $SYNTH_ARGS ]] && NAME=$SHAPE
for q in $TYPES; do
  f=$WORK/$NAME-$q.gguf
  # shellcheck disable=SC2086  # SYNTH_ARGS is a list of options
  [[ -f $f ]] || "$METHARME" synth -o "$f" --shape "$SHAPE" $SYNTH_ARGS --gguf "$q" --seed 1 --tokenizer "$TOKENIZER"
done

# ---- runs ---------------------------------------------------------------------------------------------
RESULTS=$WORK/gguf-results-$(date +%Y%m%d-%H%M%S).jsonl
echo "== results go to $RESULTS" >&2
tag() {  # adds engine/shape/quant to the JSON line on stdin
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);j.engine=process.argv[1];j.shape=process.argv[2];j.quant=process.argv[3];console.log(JSON.stringify(j))})' "$@"
}
for t in $THREADS; do
  for q in $TYPES; do
    f=$WORK/$NAME-$q.gguf
    echo "== $SHAPE $q, $t thread(s): metharme" >&2
    "$METHARME" bench -m "$f" -p "$PP" -n "$TG" -r "$REPS" -t "$t" --json | tag metharme "$NAME" "$q" >>"$RESULTS"
    echo "== $SHAPE $q, $t thread(s): llama.cpp" >&2
    (cd "$NLC" && node llamacpp_bench.mjs "$f" "$t" "$PP" "$TG" "$REPS") | tag llama.cpp "$NAME" "$q" >>"$RESULTS"
  done
done

# ---- table --------------------------------------------------------------------------------------------
echo
echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GiB RAM; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
node - "$RESULTS" <<'EOF'
const fs = require("fs");
const rows = fs.readFileSync(process.argv[2], "utf8").trim().split("\n").map((l) => JSON.parse(l));
const target = {tg: 1.3, pp: 2.0};
console.log("| file | threads | test | metharme t/s | llama.cpp t/s | ratio | target |");
console.log("|---|---|---|---|---|---|---|");
const keys = [...new Set(rows.map((r) => `${r.shape}/${r.quant}/${r.threads}`))];
for (const key of keys) {
  const [shape, quant, threads] = key.split("/");
  const pick = (e) => rows.find((r) => r.engine === e && r.shape === shape && r.quant === quant && String(r.threads) === threads);
  const m = pick("metharme"), l = pick("llama.cpp");
  for (const test of ["tg", "pp"]) {
    if (!m?.[test] || !l?.[test]) continue;
    const ratio = m[test].tok_s / l[test].tok_s;
    console.log(`| ${shape} ${quant} | ${threads} | ${test}${m[test].tokens} | ${m[test].tok_s.toFixed(2)} | ` +
                `${l[test].tok_s.toFixed(2)} | ${ratio.toFixed(2)}x | ${target[test]}x ${ratio >= target[test] ? "met" : "not met"} |`);
  }
}
const m = rows.find((r) => r.engine === "metharme"), l = rows.find((r) => r.system_info);
if (m) console.log(`\nmetharme: ${m.isa}, format ${m.format ?? "-"}`);
if (l) console.log(`llama.cpp: ${l.llama_cpp_release.repo} ${l.llama_cpp_release.release} (node-llama-cpp prebuilt), ${l.system_info.trim()}`);
EOF
