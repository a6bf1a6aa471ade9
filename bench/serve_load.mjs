#!/usr/bin/env node
// Aggregate generation throughput of `metharme serve` with N concurrent streams.
//   node bench/serve_load.mjs --model DIR [--streams 1,4,8] [--tokens 64] [--repeat 3] [--threads T] [--bin build/metharme]
//   node bench/serve_load.mjs --url http://127.0.0.1:5001 [...]     (a server that is already running)
//   --json: one JSON line per round and stream count instead of the table (bench/compare_serve.sh)
// Each stream is a streaming /v1/completions request for exactly --tokens tokens (EOS bypassed)
// after a short distinct prompt. Reported per N: aggregate tokens/s (all tokens / wall time from
// the first request to the last token), mean time to first token, mean per-stream decode rate.
// The stream counts run in rounds (1, 4, 8, 1, 4, 8, ...) --repeat times, and each row is the
// round with the median aggregate rate, so a slow spell of a shared machine does not land on one
// stream count only; prompts differ per round so no round reuses another's KV cache.
import { spawn } from 'node:child_process';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
  return acc;
}, []));
const streams = (args.streams || '1,4,8').split(',').map(Number);
const tokens = Number(args.tokens || 64);
const repeat = Math.max(1, Number(args.repeat || 3));
const PROMPTS = ['Once upon a time', 'The ship sailed', 'In the morning', 'A letter arrived', 'The old man said',
  'Under the bridge', 'She opened the door', 'Rain fell on'];

async function startServer() {
  const bin = args.bin || 'build/metharme';
  const extra = ['--parallel', String(Math.max(...streams)), '--ctx', String(args.ctx || 512)];
  if (args.threads) extra.push('-t', args.threads);
  const child = spawn(bin, ['serve', '-m', args.model, '--port', '0', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const port = await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => {
      log += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(log);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`server exited (${code}):\n${log}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  while (!(await fetch(url + '/health').then((r) => r.ok).catch(() => false))) await new Promise((r) => setTimeout(r, 200));
  return { url, log: () => log, stop: () => new Promise((r) => { child.on('exit', r); child.kill('SIGTERM'); }) };
}

// One streaming request; returns {first, end, count} (ms timestamps, completion tokens).
async function stream(url, prompt, n) {
  const t0 = performance.now();
  const res = await fetch(url + '/v1/completions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: n, temperature: 0.7, bypass_eos: true, stream: true,
      stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '', first = null, count = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const data = buf.slice(0, i).replace(/^data: /, '');
      buf = buf.slice(i + 2);
      if (data === '[DONE]') continue;
      const j = JSON.parse(data);
      if (j.usage) count = j.usage.completion_tokens;
      else if (first === null && j.choices[0].text) first = performance.now();
    }
  }
  return { start: t0, first: first ?? performance.now(), end: performance.now(), count };
}

function printTable(byN) {
  const rows = streams.map((n) => {
    const rs = [...byN.get(n)].sort((a, b) => a.agg - b.agg);
    return { ...rs[Math.floor((rs.length - 1) / 2)], lo: rs[0].agg, hi: rs[rs.length - 1].agg };
  });
  const base = rows[0].agg;
  console.log(`${repeat} round(s); each row is the median round (aggregate range over rounds in brackets)`);
  console.log('| streams | tokens | wall s | aggregate tok/s | vs 1 stream | mean TTFT s | mean per-stream tok/s |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows)
    console.log(`| ${r.n} | ${r.total} | ${r.wall.toFixed(2)} | ${r.agg.toFixed(2)} [${r.lo.toFixed(1)}-${r.hi.toFixed(1)}] | ` +
      `${(r.agg / base).toFixed(2)}x | ${r.ttft.toFixed(2)} | ${r.per.toFixed(2)} |`);
}

const srv = args.url ? { url: args.url, stop: async () => {} } : await startServer();
try {
  await stream(srv.url, 'Warm up', 8);
  const byN = new Map(streams.map((n) => [n, []]));
  for (let round = 0; round < repeat; ++round) {
    for (const n of streams) {
      const t0 = performance.now();
      const runs = await Promise.all(Array.from({ length: n },
        (_, i) => stream(srv.url, `${round + 1}. ${PROMPTS[i % PROMPTS.length]}`, tokens)));
      const wall = (Math.max(...runs.map((r) => r.end)) - t0) / 1000;
      const total = runs.reduce((s, r) => s + r.count, 0);
      const ttft = runs.reduce((s, r) => s + (r.first - r.start), 0) / n / 1000;
      const per = runs.reduce((s, r) => s + (r.count - 1) / Math.max((r.end - r.first) / 1000, 1e-9), 0) / n;
      byN.get(n).push({ n, total, wall, agg: total / wall, ttft, per });
      if (args.json) console.log(JSON.stringify({ engine: 'metharme', n, total, wall, agg: total / wall, ttft, per }));
    }
  }
  if (!args.json) printTable(byN);
} finally {
  await srv.stop();
}
