// Times llama.cpp (through node-llama-cpp's prebuilt CPU binaries) the way `metharme bench`
// times us: one warm-up token, then per depth and repetition a pp run (N prompt tokens in batches
// of 512) and a tg run (M greedy single-token steps), both after DEPTH tokens already in the
// context (llama-bench's -d): the depth prefix is evaluated once per depth, and after each run
// the run's tokens are erased (eraseContextTokenRanges), so the next run starts at DEPTH again.
// Usage: node llamacpp_bench.mjs MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS REPETITIONS [DEPTHS]
//   DEPTHS: comma list, default 0. KV cache type: env LLAMA_KV_TYPE (f16 default, q8_0, q4_0).
// Prints one JSON line. Run from the folder where node-llama-cpp is installed (NODE_PATH works too).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, threadsArg, ppArg, tgArg, repsArg] = process.argv.slice(2);
const threads = Number(threadsArg), pp = Number(ppArg), tg = Number(tgArg), reps = Number(repsArg ?? 3);
const depths = (process.argv[7] ?? "0").split(",").map(Number);
const kvType = process.env.LLAMA_KV_TYPE;  // node-llama-cpp 3.x: createContext({experimentalKvCacheKeyType, ...})
if (!modelPath || !(threads > 0)) {
  console.error("usage: node llamacpp_bench.mjs MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS [REPETITIONS]");
  process.exit(2);
}

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// Deterministic token ids (xorshift), avoiding the special ids 0..2.
let state = 0x9e3779b9;
const nextId = (vocab) => {
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return 3 + (state % (vocab - 3));
};

const llama = await getLlama({gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.warn});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const context = await model.createContext({
  contextSize: Math.max(...depths) + Math.max(pp, tg) + 8,
  batchSize: 512,
  sequences: 1,
  threads: {ideal: threads, min: threads},
  flashAttention: false,
  ...(kvType ? {experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType} : {}),
});
const seq = context.getSequence();
const vocab = model.fileInfo.metadata?.llama?.vocab_size ?? 32000;
const prompt = Array.from({length: pp}, () => nextId(vocab));
const first = nextId(vocab);

await seq.evaluateWithoutGeneratingNewTokens([first]);  // warm-up
await seq.clearHistory();

const eraseFrom = async (n) => {
  if (seq.nextTokenIndex > n) await seq.eraseContextTokenRanges([{start: n, end: seq.nextTokenIndex}]);
};
const byDepth = [];
for (const depth of depths) {
  await seq.clearHistory();
  if (depth > 0) await seq.evaluateWithoutGeneratingNewTokens(Array.from({length: depth}, () => nextId(vocab)));
  const ppRuns = [], tgRuns = [];
  for (let r = 0; r < reps && pp > 0; ++r) {
    const t0 = process.hrtime.bigint();
    await seq.evaluateWithoutGeneratingNewTokens(prompt);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    ppRuns.push(pp / s);
    await eraseFrom(depth);
  }
  for (let r = 0; r < reps && tg > 0; ++r) {
    let n = 0;
    const t0 = process.hrtime.bigint();
    for await (const token of seq.evaluate([first], {temperature: 0})) {
      void token;
      if (++n >= tg) break;
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    tgRuns.push(tg / s);
    await eraseFrom(depth);
  }
  byDepth.push({
    depth,
    pp: pp > 0 ? {tokens: pp, tok_s: median(ppRuns), runs: ppRuns} : undefined,
    tg: tg > 0 ? {tokens: tg, tok_s: median(tgRuns), runs: tgRuns} : undefined,
  });
}

const sys = llama.systemInfo;
console.log(JSON.stringify({
  engine: "llama.cpp via node-llama-cpp",
  llama_cpp_release: llama.llamaCppRelease,
  system_info: sys,
  model: modelPath,
  model_bytes: model.size,
  threads,
  kv_type: kvType ?? "f16",
  pp: byDepth[0].pp,
  tg: byDepth[0].tg,
  depths: byDepth,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
