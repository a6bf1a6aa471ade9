// Two files: the default (auto, Q4_1) export, and the Q4_K_M export (last test).
// llama.cpp (node-llama-cpp 3.21.1, prebuilt CPU build) loads the GGUF that `metharme convert
// --to gguf` writes from the GPTQ fixture, tokenizes like metharme, and its next-token
// distributions match the GPTQ source's reference logits (which metharme reproduces to 1e-4,
// tests/gptq_test.cpp) within the stated tolerances. Skips, with a message, when node-llama-cpp
// is not installed (tests/gguf_node/run.sh --install installs it).
import {test} from "node:test";
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";

const BIN = process.env.METHARME_BIN;
const SHARED = process.env.METHARME_SHARED;
let nlc = null;
try {
  nlc = await import("node-llama-cpp");
} catch {
  console.log("SKIP: node-llama-cpp is not installed (run tests/gguf_node/run.sh --install)");
}

// float32 .npy (little-endian, C order) -> Float32Array
function readNpy(path) {
  const b = readFileSync(path);
  const headerLen = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + headerLen).toString("latin1");
  assert.match(header, /'descr': '<f4'/);
  const off = 10 + headerLen;
  return new Float32Array(b.buffer.slice(b.byteOffset + off, b.byteOffset + b.length));
}

const logSoftmax = (x) => {
  let m = -Infinity;
  for (const v of x) m = Math.max(m, v);
  let s = 0;
  for (const v of x) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return Array.from(x, (v) => v - lse);
};

// llama.cpp's CPU build with `gguf` in a 256-token context; close() frees them.
async function openLlama(gguf) {
  const llama = await nlc.getLlama({gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error});
  const model = await llama.loadModel({modelPath: gguf, gpuLayers: 0});
  const context = await model.createContext({contextSize: 256, batchSize: 256, threads: 2});
  const close = async () => {
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  };
  return {model, seq: context.getSequence(), close};
}

const fullDist = {temperature: 1, topK: 0, topP: 1, minP: 0};  // llama.cpp's unfiltered distribution

// Perplexity of `gguf` on the first 3000 characters of tinyshakespeare by both engines, gptq
// protocol (one BOS, windows of 64, mean NLL per window), two windows: {ours, theirs, window NLLs}.
async function bothPerplexities(dir, gguf, model, seq) {
  const textPath = join(dir, "text.txt");
  writeFileSync(textPath, readFileSync(join(SHARED, "data/tinyshakespeare.txt"), "utf8").slice(0, 3000));
  const ours = JSON.parse(execFileSync(BIN, ["perplexity", "-m", gguf, "--dataset", "text", "--data", textPath,
    "--seqlen", "64", "--limit", "2", "--q4-act", "f32", "--json", "--no-progress"], {encoding: "utf8"})).results[0];
  const stream = [model.tokens.bos, ...model.tokenize(readFileSync(textPath, "utf8"))];
  const windowNll = [];
  for (let w = 0; w < 2; ++w) {
    await seq.clearHistory();
    const win = stream.slice(64 * w, 64 * w + 64);
    const res = await seq.controlledEvaluate(win.map((t) => [t, {generateNext: {probabilities: true, options: fullDist}}]));
    let nll = 0;
    for (let t = 0; t + 1 < win.length; ++t) nll -= Math.log(res[t].next.probabilities.get(win[t + 1]));
    windowNll.push(nll / (win.length - 1));
  }
  const theirs = Math.exp(windowNll.reduce((a, b) => a + b, 0) / windowNll.length);
  return {ours: ours.ppl, theirs, oursNll: ours.window_nll, theirsNll: windowNll};
}

test("llama.cpp runs metharme's GGUF export of a GPTQ checkpoint", {skip: !nlc || !BIN || !SHARED}, async () => {
  const dir = mkdtempSync(join(tmpdir(), "metharme-gguf-"));
  try {
    const src = join(SHARED, "fixtures/gptq/gptq-4bit-g32");
    const gguf = join(dir, "m.gguf");
    execFileSync(BIN, ["convert", "-m", src, "--to", "gguf", "-o", gguf, "-q"]);
    const golden = JSON.parse(readFileSync(join(src, "golden_logits.json"), "utf8")).prompts[0];
    const ids = golden.input_ids;

    const {model, seq, close} = await openLlama(gguf);

    // Tokenization: llama.cpp's SentencePiece-style tokenizer on our vocabulary keys gives the
    // ids metharme gives (no BOS on either side).
    for (const text of ["Hello world", " leading space and\nnewline", "Émoji 🦙 and 日本語 text", golden.prompt]) {
      const ours = execFileSync(BIN, ["tokenize", "-m", gguf, "--no-bos", text], {encoding: "utf8"})
        .trim().split(/\s+/).filter((s) => s.length).map(Number);
      assert.deepEqual(Array.from(model.tokenize(text)), ours, `tokens of ${JSON.stringify(text)}`);
    }

    const input = ids.map((t) => [t, {generateNext: {probabilities: true, options: fullDist}}]);
    const out = await seq.controlledEvaluate(input);
    // Log-probability of each next token vs the reference model's.
    let maxDiff = 0, sumDiff = 0;
    for (let t = 0; t + 1 < ids.length; ++t) {
      const p = out[t].next.probabilities.get(ids[t + 1]);
      const d = Math.abs(Math.log(p) - golden.next_token_logprob[t]);
      maxDiff = Math.max(maxDiff, d);
      sumDiff += d;
    }
    // Full distribution at the last position vs the reference logits.
    const ref = logSoftmax(readNpy(join(src, golden.last_logits_file)));
    const probs = out[ids.length - 1].next.probabilities;
    let kl = 0, covered = 0;
    for (let v = 0; v < ref.length; ++v) {
      const q = probs.get(v) ?? 0;
      covered += q;
      kl += Math.exp(ref[v]) * (ref[v] - Math.log(Math.max(q, 1e-30)));
    }
    // metharme perplexity of the GGUF (gptq protocol: one BOS, windows of 64, mean NLL per window)
    // equals llama.cpp's on the same windows of the same text.
    const ppl = await bothPerplexities(dir, gguf, model, seq);
    console.log(`perplexity of the GGUF: metharme ${ppl.ours.toFixed(2)}, llama.cpp ${ppl.theirs.toFixed(2)} ` +
                `(window NLL ${ppl.oursNll.map((x) => x.toFixed(5))} vs ${ppl.theirsNll.map((x) => x.toFixed(5))})`);
    assert.ok(Math.abs(Math.log(ppl.theirs / ppl.ours)) < 5e-3, `perplexity ${ppl.ours} vs ${ppl.theirs}`);

    console.log(`llama.cpp vs GPTQ reference: next-token log-prob |diff| max ${maxDiff.toFixed(4)} ` +
                `mean ${(sumDiff / (ids.length - 1)).toFixed(4)}, last-position KL ${kl.toExponential(3)} nats`);
    assert.ok(covered > 0.999, `probabilities cover ${covered}`);
    assert.ok(maxDiff < 0.1, `max log-prob difference ${maxDiff}`);
    assert.ok(kl < 1e-3, `KL ${kl}`);
    await close();
  } finally {
    rmSync(dir, {recursive: true, force: true});
  }
});

// `convert --type q4_k_m` (llama.cpp's Q4_K_M mix: Q4_K, Q6_K for output and some attn_v) of the
// same GPTQ fixture: llama.cpp loads it, and metharme's perplexity of the file (Q4_K on the int4
// kernels, Q6_K on the int8-code kernels, exact fp32 mode) equals llama.cpp's on the same windows.
test("llama.cpp runs metharme's Q4_K_M export, same perplexity", {skip: !nlc || !BIN || !SHARED}, async () => {
  const dir = mkdtempSync(join(tmpdir(), "metharme-gguf-"));
  try {
    const gguf = join(dir, "m.gguf");
    const conv = execFileSync(BIN, ["convert", "-m", join(SHARED, "fixtures/gptq/gptq-4bit-g32"), "--to", "gguf",
      "--type", "q4_k_m", "-o", gguf], {encoding: "utf8"});
    assert.match(conv, /Q4_K/);
    assert.match(conv, /Q6_K/);
    const {model, seq, close} = await openLlama(gguf);
    const ppl = await bothPerplexities(dir, gguf, model, seq);
    console.log(`Q4_K_M perplexity: metharme ${ppl.ours.toFixed(2)}, llama.cpp ${ppl.theirs.toFixed(2)}`);
    assert.ok(Math.abs(Math.log(ppl.theirs / ppl.ours)) < 5e-3, `perplexity ${ppl.ours} vs ${ppl.theirs}`);
    await close();
  } finally {
    rmSync(dir, {recursive: true, force: true});
  }
});
