// Times llama.cpp on a GPU (node-llama-cpp's prebuilt Vulkan or CUDA binaries) the way
// `metharme bench -d DEPTH` times us: a warm-up token, then per repetition a context of DEPTH
// tokens (untimed), a pp run of N prompt tokens after it, and a tg run of M greedy single-token
// steps after it; medians. Every layer and the output head on the GPU (gpuLayers "max").
// Usage: node llamacpp_gpu_bench.mjs MODEL.gguf vulkan|cuda PROMPT_TOKENS GEN_TOKENS DEPTH [REPETITIONS]
// Prints one JSON line. Run from the folder where node-llama-cpp is installed.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, gpu, ppArg, tgArg, depthArg, repsArg] = process.argv.slice(2);
const pp = Number(ppArg), tg = Number(tgArg), depth = Number(depthArg ?? 0), reps = Number(repsArg ?? 3);
if (!modelPath || !["vulkan", "cuda"].includes(gpu)) {
  console.error("usage: node llamacpp_gpu_bench.mjs MODEL.gguf vulkan|cuda PROMPT_TOKENS GEN_TOKENS DEPTH [REPETITIONS]");
  process.exit(2);
}
const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
let state = 0x9e3779b9;  // deterministic token ids (xorshift), avoiding the special ids 0..2
const nextId = (vocab) => {
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return 3 + (state % (vocab - 3));
};

const llama = await getLlama({gpu, build: "never", logLevel: LlamaLogLevel.warn});
const model = await llama.loadModel({modelPath, gpuLayers: "max"});
const context = await model.createContext({
  contextSize: depth + Math.max(pp, tg) + 8,
  batchSize: 512,
  sequences: 1,
  flashAttention: false,
});
const seq = context.getSequence();
const vocab = model.fileInfo.metadata?.llama?.vocab_size ?? 32000;
const ctxTokens = Array.from({length: depth}, () => nextId(vocab));
const prompt = Array.from({length: pp}, () => nextId(vocab));
const first = nextId(vocab);
const fill = async () => {
  await seq.clearHistory();
  if (depth > 0) await seq.evaluateWithoutGeneratingNewTokens(ctxTokens);
};

await seq.evaluateWithoutGeneratingNewTokens([first]);  // warm-up
const ppRuns = [], tgRuns = [];
for (let r = 0; r < reps && pp > 0; ++r) {
  await fill();
  const t0 = process.hrtime.bigint();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  ppRuns.push(pp / (Number(process.hrtime.bigint() - t0) / 1e9));
}
for (let r = 0; r < reps && tg > 0; ++r) {
  await fill();
  let n = 0;
  const t0 = process.hrtime.bigint();
  for await (const token of seq.evaluate([first], {temperature: 0})) {
    void token;
    if (++n >= tg) break;
  }
  tgRuns.push(tg / (Number(process.hrtime.bigint() - t0) / 1e9));
}
console.log(JSON.stringify({
  engine: `llama.cpp ${gpu} via node-llama-cpp`,
  llama_cpp_release: llama.llamaCppRelease,
  gpu: llama.gpu,
  model: modelPath,
  model_bytes: model.size,
  depth,
  pp: pp > 0 ? {tokens: pp, tok_s: median(ppRuns), runs: ppRuns} : undefined,
  tg: tg > 0 ? {tokens: tg, tok_s: median(tgRuns), runs: tgRuns} : undefined,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
