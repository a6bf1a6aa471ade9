// Scale-out benchmark (bench/RESULTS.md, "Issue 20"): three `metharme serve` replicas behind the
// shipped HAProxy configuration, 8 SillyTavern-shaped conversations (a long character card, an
// earlier chat history, then new turns), measuring
//   1. prompt tokens evaluated per turn with KV-cache affinity and with round-robin, and TTFT;
//   2. replies lost during a rolling restart of the three replicas, one at a time;
//   3. decode speed of one replica with and without a scraper reading /metrics every second.
// Usage: node bench/cluster_bench.mjs [model folder] (default: the llama-rand-h256 fixture, whose
// 2048-token context holds SillyTavern-sized prompts). Needs haproxy; takes a few minutes.
// BENCH=affinity,roundrobin,rolling,decode picks parts; PARALLEL=N sets the slots per replica (4).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as L from '../tests/cluster/lib.mjs';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const BIN = process.env.METHARME_BIN || path.join(REPO, 'build/metharme');
const MODEL = process.argv[2] || path.join(REPO, '../shared/fixtures/models/llama-rand-h256');
const TURNS = 4, CONVS = 8, REPLY = 48;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'metharme-bench-'));
const log = (...a) => console.log(...a);

// ---- SillyTavern-shaped chats: card + example dialogue + history, trimmed to the context ----------
const WORDS = ('the quiet harbor town keeps old lanterns burning while fishermen mend their nets and ' +
  'children race along the sea wall laughing at gulls that steal bread from the market stalls').split(' ');
function prose(seed, n) {
  let s = '', x = seed * 7919 + 13;
  for (let i = 0; i < n; ++i) {
    x = (x * 1103515245 + 12345) % 2147483648;
    s += WORDS[x % WORDS.length] + (i % 13 === 12 ? '. ' : ' ');
  }
  return s.trim();
}
function chat(i) {
  const name = ['Aria', 'Bram', 'Cora', 'Dax', 'Elin', 'Finn', 'Gwen', 'Hugo'][i];
  const card = `You are ${name}, a character in an interactive story (conversation ${i}).\n` +
    `[Description: ${prose(i, 420)}]\n[Personality: ${prose(i + 50, 60)}]\n[Scenario: ${prose(i + 90, 80)}]\n` +
    `<START>\nUser: ${prose(i + 5, 20)}\n${name}: ${prose(i + 6, 40)}\n<START>\n`;
  const turns = [];
  for (let t = 0; t < 8; ++t) turns.push({ user: prose(i * 100 + t, 25), reply: prose(i * 100 + t + 50, 45) });
  return { i, name, card, turns, n: 0 };
}
const BUDGET = 7000; // characters: about 1800 tokens of the LLaMA tokenizer, + REPLY in 2048
function request(c) {
  const user = prose(c.i * 1000 + c.n, 30);
  const lines = [];
  let size = c.card.length + user.length;
  for (let t = c.turns.length - 1; t >= 0; --t) {
    const line = `User: ${c.turns[t].user}\n${c.name}: ${c.turns[t].reply}`;
    if (size + line.length > BUDGET) break;
    size += line.length + 1;
    lines.unshift(line);
  }
  const prompt = c.card + [...lines, `User: ${user}`, `${c.name}:`].join('\n');
  return { path: '/api/extra/generate/stream', user, body: { prompt, max_context_length: 2048, max_length: REPLY,
    rep_pen: 1.1, rep_pen_range: 320, temperature: 0.7, top_k: 40, top_p: 0.9, sampler_seed: 1000 + c.i * 10 + c.n,
    stop_sequence: ['\nUser:'], trim_stop: true } };
}

// TTFT: from sending to the first streamed token.
async function turn(base, c) {
  const req = request(c);
  const t0 = performance.now();
  const res = await L.send(base, req, () => {}, 900000);
  const ms = performance.now() - t0;
  if (res.ok) {
    c.turns.push({ user: req.user, reply: res.text.trim() });
    c.n++;
  }
  return { ...res, ms };
}

// ---- cluster -------------------------------------------------------------------------------------
const replicas = [];
for (const name of ['r1', 'r2', 'r3']) replicas.push({ name, port: await L.freePort() });
async function startReplica(r) {
  r.proc = L.start(r.name, BIN, ['serve', '-m', MODEL, '--port', String(r.port), '-t', '1', '--parallel', process.env.PARALLEL || '4',
    '--queue', '8', '--ctx', '2048', '--drain-timeout', '600'], work);
  await L.waitFor(`${r.name} ready`, async () => (await fetch(`http://127.0.0.1:${r.port}/health`)).ok, 120000);
  r.started = performance.now();
}
async function stopReplica(r) {
  r.proc.child.kill('SIGTERM');
  return r.proc.exited;
}
let lbProc = null;
async function startLb(policy) {
  let cfg = fs.readFileSync(path.join(REPO, 'deploy/haproxy/haproxy.cfg'), 'utf8');
  if (policy === 'roundrobin') cfg = cfg.replace(/^\s*balance hash .*$/m, '    balance roundrobin').replace(/^\s*hash-type .*$/m, '');
  const file = path.join(work, `haproxy-${policy}.cfg`);
  fs.writeFileSync(file, cfg);
  const port = await L.freePort();
  lbProc = L.start(`haproxy-${policy}`, 'haproxy', ['-db', '-f', file], work, {
    METHARME_LB_BIND: `127.0.0.1:${port}`,
    ...Object.fromEntries(replicas.map((r, k) => [`METHARME_R${k + 1}`, `127.0.0.1:${r.port}`])),
  });
  const base = `http://127.0.0.1:${port}`;
  await L.waitFor('haproxy', async () => (await fetch(`${base}/api/v1/model`)).ok);
  await L.sleep(1500);
  return base;
}

async function affinityRun(policy) {
  await Promise.all(replicas.map(startReplica));
  const base = await startLb(policy);
  const chats = Array.from({ length: CONVS }, (_, i) => chat(i));
  const rows = [];
  for (let t = 0; t < TURNS; ++t) {
    const rs = await Promise.all(chats.map((c) => turn(base, c)));
    rs.forEach((r, i) => rows.push({ turn: t, conv: i, ...r }));
  }
  lbProc.child.kill('SIGTERM');
  await Promise.all(replicas.map(stopReplica));
  log(`\n## ${policy}: prompt tokens evaluated per turn (all ${CONVS} conversations)`);
  log('turn | prompt tokens | evaluated | evaluated % | TTFT median (s) | TTFT max (s) | reply median (s) | failed');
  for (let t = 0; t < TURNS; ++t) {
    const r = rows.filter((x) => x.turn === t);
    const p = r.reduce((s, x) => s + x.prompt, 0), e = r.reduce((s, x) => s + x.prompt - x.reused, 0);
    const ms = r.map((x) => x.ms).sort((a, b) => a - b);
    const tt = r.map((x) => x.ttft ?? Infinity).sort((a, b) => a - b);
    log(`${t} | ${p} | ${e} | ${(100 * e / p).toFixed(1)} | ${(tt[tt.length >> 1] / 1000).toFixed(2)} | ` +
      `${(tt.at(-1) / 1000).toFixed(2)} | ${(ms[ms.length >> 1] / 1000).toFixed(2)} | ${r.filter((x) => !x.ok).length}`);
    log(`   per conversation (evaluated/prompt, TTFT s): ` +
      r.map((x) => `${x.prompt - x.reused}/${x.prompt} ${((x.ttft ?? NaN) / 1000).toFixed(2)} ${x.replica}`).join('; '));
  }
  return rows;
}

async function rollingRestart() {
  await Promise.all(replicas.map(startReplica));
  const base = await startLb('affinity');
  const chats = Array.from({ length: CONVS }, (_, i) => chat(i));
  let stop = false, sent = 0, lost = 0;
  const errors = [];
  const loops = chats.map(async (c) => {
    while (!stop) {
      const r = await turn(base, c);
      sent++;
      if (!r.ok) {
        lost++;
        errors.push(`${r.replica}: ${r.error}`);
      }
    }
  });
  await L.sleep(3000);
  for (const r of replicas) {
    const t0 = performance.now();
    const ex = await stopReplica(r);
    const drained = performance.now() - t0;
    await startReplica(r);
    log(`restarted ${r.name}: drain took ${(drained / 1000).toFixed(1)} s, exit ${JSON.stringify(ex)}`);
    await L.sleep(2000);
  }
  stop = true;
  await Promise.all(loops);
  lbProc.child.kill('SIGTERM');
  await Promise.all(replicas.map(stopReplica));
  log(`\n## rolling restart: ${sent} replies requested, ${lost} lost ${errors.slice(0, 5).join('; ')}`);
}

async function decodeSpeed() {
  const r = replicas[0];
  await startReplica(r);
  const base = `http://127.0.0.1:${r.port}`;
  // What one scrape costs: sequential scrapes of an idle replica, client-side time each.
  const N = 300;
  let t0 = performance.now();
  for (let i = 0; i < N; ++i) await fetch(`${base}/metrics`).then((x) => x.text());
  const scrapeMs = (performance.now() - t0) / N;
  // Decode speed (server-side: generated tokens / generation seconds of /api/extra/perf) of one
  // stream, runs alternating between no scraper and a scraper polling every second.
  const body = { prompt: 'Once upon a time', max_length: 384, bypass_eos: true, max_context_length: 2048 };
  const speeds = { off: [], on: [] };
  let scrapes = 0;
  for (let k = 0; k < 8; ++k) {
    for (const mode of k % 2 ? ['on', 'off'] : ['off', 'on']) {
      let timer = null;
      if (mode === 'on') timer = setInterval(() => fetch(`${base}/metrics`).then((x) => x.text()).then(() => scrapes++), 1000);
      await fetch(`${base}/api/v1/generate`, { method: 'POST', body: JSON.stringify(body) }).then((x) => x.json());
      if (timer) clearInterval(timer);
      const perf = await L.getJson(`${base}/api/extra/perf`);
      speeds[mode].push(perf.last_token_count / perf.last_eval);
    }
  }
  await stopReplica(r);
  const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
  log(`\n## scrape cost: ${N} sequential GET /metrics on an idle replica: ${scrapeMs.toFixed(3)} ms each`);
  log(`## decode speed, one stream of 384 tokens, 8 runs each, alternating (tokens/s); ${scrapes} scrapes during the "on" runs`);
  log(`no scrape: ${speeds.off.map((x) => x.toFixed(1)).join(', ')} (median ${med(speeds.off).toFixed(1)})`);
  log(`1 s scrape: ${speeds.on.map((x) => x.toFixed(1)).join(', ')} (median ${med(speeds.on).toFixed(1)})`);
  const pairs = speeds.on.map((x, i) => x / speeds.off[i]);
  log(`on/off ratio per pair: ${pairs.map((x) => x.toFixed(3)).join(', ')} (median ${med(pairs).toFixed(3)})`);
}

// CPU time the replica spends answering scrapes: utime + stime of the idle process (from
// /proc/PID/stat, in clock ticks of 10 ms) around 2000 scrapes, 8 at a time.
async function scrapeCpu() {
  const r = replicas[0];
  await startReplica(r);
  const base = `http://127.0.0.1:${r.port}`;
  const cpu = () => {
    const f = fs.readFileSync(`/proc/${r.proc.child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime (fields 14, 15)
  };
  await fetch(`${base}/api/v1/generate`, { method: 'POST', body: JSON.stringify({ prompt: 'Hi', max_length: 8 }) });
  await L.sleep(1000);
  const idle0 = cpu();
  await L.sleep(5000);
  const idle = cpu() - idle0;
  const N = 2000;
  const c0 = cpu(), t0 = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next++ < N) await fetch(`${base}/metrics`).then((x) => x.text());
  }));
  const secs = cpu() - c0, wall = (performance.now() - t0) / 1000;
  await stopReplica(r);
  log(`\n## scrape CPU: idle replica ${idle.toFixed(2)} CPU s in 5 s; ${N} scrapes in ${wall.toFixed(1)} s took ` +
    `${secs.toFixed(2)} CPU s = ${(1000 * secs / N).toFixed(3)} ms CPU per scrape`);
}

// Which replica each conversation's key maps to (one short request each).
async function distribution() {
  await Promise.all(replicas.map(startReplica));
  const base = await startLb('affinity');
  const chats = Array.from({ length: CONVS }, (_, i) => chat(i));
  const got = [];
  for (const c of chats) {
    const req = request(c);
    req.body.max_length = 1;
    got.push((await L.send(base, req, () => {}, 900000)).replica);
  }
  lbProc.child.kill('SIGTERM');
  await Promise.all(replicas.map(stopReplica));
  log(`conversation -> replica: ${got.join(' ')}`);
}

const what = process.env.BENCH || 'affinity,roundrobin,rolling,decode';
if (what.includes('dist')) await distribution();
if (what.includes('scrapecpu')) await scrapeCpu();
if (what.includes('affinity')) await affinityRun('affinity');
if (what.includes('roundrobin')) await affinityRun('roundrobin');
if (what.includes('rolling')) await rollingRestart();
if (what.includes('decode')) await decodeSpeed();
fs.rmSync(work, { recursive: true, force: true });
process.exit(0);
