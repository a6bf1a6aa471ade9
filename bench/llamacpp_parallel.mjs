#!/usr/bin/env node
// Aggregate generation throughput of llama.cpp serving N parallel sequences, measured the way
// bench/serve_load.mjs measures `metharme serve`: N sequences of one context each get a short
// distinct prompt and generate exactly --tokens tokens (end-of-generation tokens do not stop them),
// sampling at temperature 0.7; aggregate tokens/s = all tokens / wall time from the first prompt
// to the last token. llama.cpp is driven through node-llama-cpp (3.21.1), whose context holds
// several sequences and decodes the pending tokens of all of them in one llama_decode batch per
// step (its "maximumParallelism" batching), as llama-server does with --parallel N.
//   node llamacpp_parallel.mjs --model X.gguf [--streams 1,4,8] [--tokens 64] [--threads 2] [--repeat 3]
//                              [--nlc DIR] [--json]
// --nlc: the folder whose node_modules holds node-llama-cpp (default: resolved from this file's
// folder). --json prints one JSON line per round and stream count instead of the table.
import {readFileSync} from "node:fs";
import {join} from "node:path";
import {pathToFileURL} from "node:url";

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : "true"]);
  return acc;
}, []));
if (!args.model) {
  console.error("usage: node llamacpp_parallel.mjs --model X.gguf [--streams 1,4,8] [--tokens 64] [--threads 2] [--repeat 3] [--nlc DIR] [--json]");
  process.exit(2);
}
async function loadNodeLlamaCpp(dir) {
  if (!dir) return import("node-llama-cpp");
  const pkg = join(dir, "node_modules", "node-llama-cpp");
  const main = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).main || "index.js";
  return import(pathToFileURL(join(pkg, main)).href);
}
const {getLlama, LlamaLogLevel} = await loadNodeLlamaCpp(args.nlc);
const streams = (args.streams || "1,4,8").split(",").map(Number);
const tokens = Number(args.tokens || 64);
const repeat = Math.max(1, Number(args.repeat || 3));
const threads = Number(args.threads || 2);
if (!streams.every((n) => n >= 1 && n <= 64) || !(tokens >= 1) || !(threads >= 1)) {
  console.error("llamacpp_parallel: --streams takes counts 1..64, --tokens and --threads positive numbers");
  process.exit(2);
}
// The prompts of serve_load.mjs, so both engines evaluate the same text.
const PROMPTS = ["Once upon a time", "The ship sailed", "In the morning", "A letter arrived", "The old man said",
  "Under the bridge", "She opened the door", "Rain fell on"];

const llama = await getLlama({gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.warn});
const model = await llama.loadModel({modelPath: args.model, gpuLayers: 0});
const maxN = Math.max(...streams);
const context = await model.createContext({
  contextSize: 64 + tokens + 16,  // per sequence: prompt + generated tokens
  sequences: maxN,
  batchSize: 512,
  threads: {ideal: threads, min: threads},
  flashAttention: false,
  batching: {itemPrioritizationStrategy: "maximumParallelism"},
});
const seqs = Array.from({length: maxN}, () => context.getSequence());

// One sequence: its prompt, then n sampled tokens. Returns ms timestamps and the token count.
async function stream(seq, prompt, n) {
  const start = performance.now();
  let first = null, count = 0;
  const toks = model.tokenize(prompt);
  for await (const token of seq.evaluate(toks, {temperature: 0.7, yieldEogToken: true})) {
    void token;
    if (first === null) first = performance.now();
    if (++count >= n) break;
  }
  return {start, first: first ?? performance.now(), end: performance.now(), count};
}

await stream(seqs[0], "Warm up", 8);
await seqs[0].clearHistory();
const byN = new Map(streams.map((n) => [n, []]));
for (let round = 0; round < repeat; ++round) {
  for (const n of streams) {
    const t0 = performance.now();
    const runs = await Promise.all(seqs.slice(0, n).map((s, i) => stream(s, `${round + 1}. ${PROMPTS[i % PROMPTS.length]}`, tokens)));
    const wall = (Math.max(...runs.map((r) => r.end)) - t0) / 1000;
    const total = runs.reduce((s, r) => s + r.count, 0);
    const ttft = runs.reduce((s, r) => s + (r.first - r.start), 0) / n / 1000;
    const per = runs.reduce((s, r) => s + (r.count - 1) / Math.max((r.end - r.first) / 1000, 1e-9), 0) / n;
    const row = {engine: "llama.cpp", n, total, wall, agg: total / wall, ttft, per};
    byN.get(n).push(row);
    if (args.json) console.log(JSON.stringify(row));
    for (const s of seqs.slice(0, n)) await s.clearHistory();
  }
}
if (!args.json) {
  const rows = streams.map((n) => {
    const rs = [...byN.get(n)].sort((a, b) => a.agg - b.agg);
    return {...rs[Math.floor((rs.length - 1) / 2)], lo: rs[0].agg, hi: rs[rs.length - 1].agg};
  });
  console.log(`llama.cpp ${llama.llamaCppRelease.release} (node-llama-cpp), ${threads} thread(s); ${repeat} round(s), median round`);
  console.log("| streams | tokens | wall s | aggregate tok/s | vs 1 stream | mean TTFT s | mean per-stream tok/s |");
  console.log("|---|---|---|---|---|---|---|");
  for (const r of rows)
    console.log(`| ${r.n} | ${r.total} | ${r.wall.toFixed(2)} | ${r.agg.toFixed(2)} [${r.lo.toFixed(1)}-${r.hi.toFixed(1)}] | ` +
      `${(r.agg / rows[0].agg).toFixed(2)}x | ${r.ttft.toFixed(2)} | ${r.per.toFixed(2)} |`);
}
await context.dispose();
await model.dispose();
await llama.dispose();
