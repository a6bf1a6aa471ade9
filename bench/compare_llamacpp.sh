#!/usr/bin/env bash
# metharme vs llama.cpp on the same machine, in the same run, on random models of the same shape:
#   metharme:  `metharme bench` on a GPTQ 4-bit g128 folder written by `metharme synth`
#   llama.cpp: the CPU build shipped in the npm package node-llama-cpp (pinned 3.21.1; it carries
#              one CPU backend per x86 level and picks one at run time), driven through its API by
#              bench/llamacpp_bench.mjs, on GGUF Q4_0 and Q8_0 files written by `metharme synth --gguf`.
# Both time a warm-up token, then pp (prompt tokens in one batch) and tg (greedy single-token
# steps) after DEPTH tokens already in the cache (llama-bench's -d; node-llama-cpp evaluates the
# depth prefix first and erases each run's tokens after it), and report medians per depth.
# --depths "0 1024 2048 4096" adds depth rows; --kv q8 sets metharme's KV cache type (llama.cpp
# keeps its default f16 cache unless --llama-kv q8_0 is given: its quantized V cache needs flash
# attention, which this bench leaves off). node-llama-cpp is installed into a temporary
# folder with npm and removed at exit; nothing of it is committed.
#
# Usage: bench/compare_llamacpp.sh [--shapes "1b 7b"] [--threads "1 2"] [-p 512] [-n 128] [-r 3]
#                                  [--depths "0"] [--kv f32|f16|q8|q4] [--llama-kv f16|q8_0]
#                                  [--quants "q4_0 q8_0"] [--work DIR] [--build DIR] [--nlc DIR]
#   --work   where the random models are kept between runs (default ${TMPDIR:-/tmp}/metharme-compare;
#            7B needs about 15 GB: GPTQ 3.9 GB, Q4_0 3.8 GB, Q8_0 7.2 GB)
#   --build  the CMake build folder holding bin `metharme` (default ./build)
#   --nlc    a folder whose node_modules already holds node-llama-cpp 3.21.1 (default: npm install)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SHAPES="1b 7b"
THREADS="1 2"
PP=512
TG=128
REPS=3
DEPTHS="0"
KV=f32
LLAMA_KV=
WORK=${TMPDIR:-/tmp}/metharme-compare
BUILD=build
NLC_DIR=
QUANTS="q4_0 q8_0"
while (($#)); do
  case $1 in
    --shapes) SHAPES=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -p) PP=$2; shift 2 ;;
    -n) TG=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    --depths) DEPTHS=$2; shift 2 ;;
    --kv) KV=$2; shift 2 ;;
    --llama-kv) LLAMA_KV=$2; shift 2 ;;
    --quants) QUANTS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --nlc) NLC_DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

METHARME=$REPO/$BUILD/metharme
TOKENIZER=${METHARME_TOKENIZER:-$REPO/../shared/fixtures/tokenizer/llama/tokenizer.model}
[[ -x $METHARME ]] || { echo "no $METHARME: build first (cmake -S . -B build -G Ninja && ninja -C build metharme)" >&2; exit 1; }
[[ -f $TOKENIZER ]] || { echo "no LLaMA tokenizer at $TOKENIZER (set METHARME_TOKENIZER)" >&2; exit 1; }
command -v node >/dev/null || { echo "node is needed (apt-get install nodejs npm)" >&2; exit 1; }

# ---- node-llama-cpp in a temporary folder --------------------------------------------------------
source "$REPO/bench/nlc_setup.sh"
nlc_setup "$NLC_DIR"
cp "$REPO/bench/llamacpp_bench.mjs" "$NLC/"

# ---- models ---------------------------------------------------------------------------------------
mkdir -p "$WORK"
for s in $SHAPES; do
  [[ -f $WORK/$s-gptq/model.safetensors ]] ||
    "$METHARME" synth -o "$WORK/$s-gptq" --shape "$s" --bits 4 --group-size 128 --seed 1 --tokenizer "$TOKENIZER"
  for q in $QUANTS; do
    [[ -f $WORK/$s-$q.gguf ]] || "$METHARME" synth -o "$WORK/$s-$q.gguf" --shape "$s" --gguf $q --seed 1 --tokenizer "$TOKENIZER"
  done
done

# ---- runs (engines interleaved per shape and thread count, so they meet the same conditions) ------
RESULTS=$WORK/results-$(date +%Y%m%d-%H%M%S).jsonl
echo "== results go to $RESULTS" >&2
for s in $SHAPES; do
  for t in $THREADS; do
    echo "== $s, $t thread(s): metharme" >&2
    "$METHARME" bench -m "$WORK/$s-gptq" -p "$PP" -n "$TG" -r "$REPS" -t "$t" -d "${DEPTHS// /,}" --kv-type "$KV" --json |
      node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);j.engine="metharme";j.shape=process.argv[1];console.log(JSON.stringify(j))})' "$s" >>"$RESULTS"
    for q in $QUANTS; do
      echo "== $s, $t thread(s): llama.cpp $q" >&2
      (cd "$NLC" && LLAMA_KV_TYPE=$LLAMA_KV node llamacpp_bench.mjs "$WORK/$s-$q.gguf" "$t" "$PP" "$TG" "$REPS" "${DEPTHS// /,}") |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);j.shape=process.argv[1];j.quant=process.argv[2];console.log(JSON.stringify(j))})' "$s" "$q" >>"$RESULTS"
    done
  done
done

# ---- table ----------------------------------------------------------------------------------------
echo
echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GiB RAM; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
node - "$RESULTS" <<'EOF'
const fs = require("fs");
const rows = fs.readFileSync(process.argv[2], "utf8").trim().split("\n").map((l) => JSON.parse(l));
const f = (v) => (v === undefined ? "-" : v.toFixed(2));
console.log("| shape | threads | test | metharme GPTQ g128 t/s | llama.cpp Q4_0 t/s | ratio | llama.cpp Q8_0 t/s | ratio | metharme weights GB/s (of probe) | metharme attention share |");
console.log("|---|---|---|---|---|---|---|---|---|---|");
const keys = [...new Set(rows.map((r) => r.shape + "/" + r.threads))];
for (const key of keys) {
  const [shape, threads] = key.split("/");
  const pick = (pred) => rows.find((r) => r.shape === shape && String(r.threads) === threads && pred(r));
  const m = pick((r) => r.engine === "metharme");
  const q4 = pick((r) => r.quant === "q4_0");
  const q8 = pick((r) => r.quant === "q8_0");
  const at = (r, d) => (r?.depths ?? [r]).find((x) => x && (x.depth ?? 0) === d);
  for (const md of m?.depths ?? []) {
    const d = md.depth;
    for (const test of ["pp", "tg"]) {
      if (!md[test]) continue;
      const a = md[test].tok_s, b = at(q4, d)?.[test]?.tok_s, c = at(q8, d)?.[test]?.tok_s;
      const bw = test === "tg" && d === 0 && m.tg.bandwidth_fraction !== undefined
        ? `${m.tg.weights_gbps.toFixed(2)} (${(100 * m.tg.bandwidth_fraction).toFixed(0)}% of ${m.read_bandwidth_gbps.toFixed(2)})` : "";
      const name = `${test}${md[test].tokens}` + (d ? ` @ d${d}` : "");
      console.log(`| ${shape} | ${threads} | ${name} | ${f(a)} | ${f(b)} | ${b ? (a / b).toFixed(2) + "x" : "-"} | ${f(c)} | ${c ? (a / c).toFixed(2) + "x" : "-"} | ${bw} | ${(100 * md[test].attention_share).toFixed(1)}% |`);
    }
  }
}
const m = rows.find((r) => r.engine === "metharme"), l = rows.find((r) => r.system_info);
if (m) console.log(`\nmetharme: KV ${m.kv_type}, ${m.isa}, int4 activations ${m.q4_act.decode} (decode) / ${m.q4_act.prefill} (prefill), peak RSS / (weights + KV): ` +
  rows.filter((r) => r.engine === "metharme").map((r) => `${r.shape} t${r.threads} ${r.rss_over_weights_kv.toFixed(3)}`).join(", "));
if (l) console.log(`llama.cpp: KV ${l.kv_type}, ${l.llama_cpp_release.repo} ${l.llama_cpp_release.release} (node-llama-cpp prebuilt), ${l.system_info.trim()}`);
EOF
