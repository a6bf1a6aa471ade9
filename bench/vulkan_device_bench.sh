#!/usr/bin/env bash
# GPU offload speed on a machine with a real GPU: metharme's Vulkan backend against llama.cpp's
# Vulkan and CUDA backends on the same 7B shape, tg128 and pp512 at depth 0 and 2048.
#   metharme:  builds with -DMETHARME_VULKAN=ON into build-vulkan, writes a random 7B GPTQ 4-bit
#              g128 folder with `metharme synth`, runs `metharme bench -ngl all -d D`.
#   llama.cpp: node-llama-cpp's prebuilt Vulkan and CUDA binaries (npm, pinned; skipped if npm or
#              the package is not available), on a Q4_0 GGUF of the same shape, all layers on the GPU,
#              through bench/llamacpp_gpu_bench.mjs.
# Needs: the Vulkan loader and the GPU's Vulkan driver (NVIDIA's driver ships one; Mesa's RADV or
# ANV for AMD and Intel), libvulkan-dev and glslc to build (tools/deps.sh), about 12 GB of disk.
# The decode bandwidth fraction needs the card's memory bandwidth: --card-gbps (e.g. 2039 for an
# H100 PCIe, 3350 for an H100 SXM, 4800 for an H200).
#
# Usage: bench/vulkan_device_bench.sh [--shape 7b] [-r 3] [--card-gbps G] [--device I] [--work DIR]
#                                     [--skip-llamacpp] [--build DIR (default build-vulkan)]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SHAPE=7b
REPS=3
CARD_GBPS=""
DEVICE=0
WORK=${TMPDIR:-/tmp}/metharme-vulkan-bench
SKIP_LLAMACPP=0
BUILD=build-vulkan
NLC_VERSION=3.21.1
while (($#)); do
  case $1 in
    --shape) SHAPE=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    --card-gbps) CARD_GBPS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --skip-llamacpp) SKIP_LLAMACPP=1; shift ;;
    --build) BUILD=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

echo "== machine: $(nproc) CPUs; GPUs:" >&2
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true

# ---- build ------------------------------------------------------------------------------------------
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMETHARME_VULKAN=ON >/dev/null
cmake --build "$BUILD" --target metharme -j"$(nproc)"
METHARME=$REPO/$BUILD/metharme
"$METHARME" info --gpu
TOKENIZER=${METHARME_TOKENIZER:-$REPO/../shared/fixtures/tokenizer/llama/tokenizer.model}
[[ -f $TOKENIZER ]] || { echo "no LLaMA tokenizer at $TOKENIZER (set METHARME_TOKENIZER)" >&2; exit 1; }

# ---- models -----------------------------------------------------------------------------------------
mkdir -p "$WORK"
[[ -f $WORK/$SHAPE-gptq/model.safetensors ]] ||
  "$METHARME" synth -o "$WORK/$SHAPE-gptq" --shape "$SHAPE" --bits 4 --group-size 128 --seed 1 --tokenizer "$TOKENIZER"
[[ -f $WORK/$SHAPE-q4_0.gguf ]] ||
  "$METHARME" synth -o "$WORK/$SHAPE-q4_0.gguf" --shape "$SHAPE" --gguf q4_0 --seed 1 --tokenizer "$TOKENIZER"

RESULTS=$WORK/results-$(date +%Y%m%d-%H%M%S).jsonl
echo "== results go to $RESULTS" >&2
tag() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);j.run=process.argv[1];console.log(JSON.stringify(j))})' "$1"; }

# ---- metharme ---------------------------------------------------------------------------------------
for d in 0 2048; do
  echo "== metharme Vulkan, depth $d" >&2
  "$METHARME" bench -m "$WORK/$SHAPE-gptq" -p 512 -n 128 -r "$REPS" -d "$d" -ngl all --gpu-device "$DEVICE" \
    --no-probe --json | tag "metharme vulkan" >>"$RESULTS"
done

# ---- llama.cpp (node-llama-cpp prebuilt GPU binaries) -------------------------------------------------
if ((SKIP_LLAMACPP == 0)) && command -v npm >/dev/null; then
  NLC=$(mktemp -d "${TMPDIR:-/tmp}/metharme-nlc-XXXXXX")
  trap 'rm -rf "$NLC"' EXIT
  for gpu in vulkan cuda; do
    if (cd "$NLC" && npm install --silent --no-audit --no-fund --ignore-scripts \
          "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64-$gpu@$NLC_VERSION" >/dev/null 2>&1); then
      cp "$REPO/bench/llamacpp_gpu_bench.mjs" "$NLC/"
      for d in 0 2048; do
        echo "== llama.cpp $gpu, depth $d" >&2
        (cd "$NLC" && node llamacpp_gpu_bench.mjs "$WORK/$SHAPE-q4_0.gguf" "$gpu" 512 128 "$d" "$REPS") |
          tag "llama.cpp $gpu" >>"$RESULTS" || echo "llama.cpp $gpu failed" >&2
      done
    else
      echo "== llama.cpp $gpu: @node-llama-cpp/linux-x64-$gpu@$NLC_VERSION not installable here; skipped" >&2
    fi
  done
fi

# ---- table ------------------------------------------------------------------------------------------
node - "$RESULTS" "$CARD_GBPS" <<'JS'
const fs = require("fs");
const rows = fs.readFileSync(process.argv[2], "utf8").trim().split("\n").map((l) => JSON.parse(l));
const card = Number(process.argv[3] || 0);
console.log("| engine | depth | pp512 t/s | tg128 t/s | decode GB/s (fraction of card) |");
console.log("|---|---|---|---|---|");
for (const r of rows) {
  const bw = r.bytes_per_token && r.tg ? (r.bytes_per_token * r.tg.tok_s) / 1e9 : undefined;
  const frac = bw && card ? ` (${((100 * bw) / card).toFixed(0)}% of ${card})` : "";
  console.log(`| ${r.run} | ${r.depth} | ${r.pp?.tok_s.toFixed(1) ?? "-"} | ${r.tg?.tok_s.toFixed(1) ?? "-"} | ${bw ? bw.toFixed(0) + frac : "-"} |`);
}
const m = rows.find((r) => r.gpu && typeof r.gpu === "string" && r.run.startsWith("metharme"));
if (m) console.log(`\nmetharme: ${m.gpu}`);
JS
