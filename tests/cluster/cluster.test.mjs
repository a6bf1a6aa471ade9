// Cluster test: three `metharme serve` replicas of stories260k behind HAProxy with the shipped
// deploy/haproxy/haproxy.cfg, scraped by a real Prometheus with the shipped configuration, and
// SillyTavern-shaped multi-turn chats (Kobold text completion and OpenAI chat completion, both
// streamed). Checks KV-cache affinity, drain on SIGTERM, SIGKILL, restart, and that Prometheus
// counts the tokens the clients received. Exit 77 (skip) only when haproxy or prometheus is
// missing (tools/deps.sh installs both). Bounded: the whole run is killed after 170 s.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as L from './lib.mjs';

const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const BIN = process.env.METHARME_BIN || path.join(REPO, 'build/metharme');
const MODEL = path.join(REPO, 'models/stories260k');

for (const p of ['haproxy', 'prometheus']) {
  if (!L.which(p)) {
    console.log(`SKIP: ${p} is not installed (tools/deps.sh installs it)`);
    process.exit(77);
  }
}
setTimeout(() => {
  console.error('FAIL: the cluster test ran over 170 s');
  process.exit(1);
}, 170000).unref();

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'metharme-cluster-'));
const say = (...a) => console.log(`[${(process.uptime()).toFixed(1)}s]`, ...a);

// ---- the cluster -------------------------------------------------------------------------------
const replicas = [];
for (const name of ['r1', 'r2', 'r3']) replicas.push({ name, port: await L.freePort(), proc: null });

async function startReplica(r) {
  r.proc = L.start(r.name, BIN, ['serve', '-m', MODEL, '--port', String(r.port), '-t', '1', '--parallel', '4',
    '--queue', '8', '--drain-timeout', '20'], work);
  await L.waitFor(`${r.name} ready`, async () => (await fetch(`http://127.0.0.1:${r.port}/health`)).ok);
}
const byName = (n) => replicas.find((r) => r.name === n);
const direct = (r) => `http://127.0.0.1:${r.port}`;

await Promise.all(replicas.map(startReplica));
const lbPort = await L.freePort();
const lb = `http://127.0.0.1:${lbPort}`;
L.start('haproxy', 'haproxy', ['-db', '-f', path.join(REPO, 'deploy/haproxy/haproxy.cfg')], work, {
  METHARME_LB_BIND: `127.0.0.1:${lbPort}`,
  METHARME_R1: `127.0.0.1:${replicas[0].port}`,
  METHARME_R2: `127.0.0.1:${replicas[1].port}`,
  METHARME_R3: `127.0.0.1:${replicas[2].port}`,
});
await L.waitFor('haproxy', async () => (await fetch(`${lb}/api/v1/model`)).ok);

// Prometheus: the shipped files, with this test's targets and a 1 s scrape interval.
const promDir = path.join(work, 'prometheus');
fs.mkdirSync(promDir);
const promSrc = path.join(REPO, 'deploy/prometheus');
fs.writeFileSync(path.join(promDir, 'prometheus.yml'),
  fs.readFileSync(path.join(promSrc, 'prometheus.yml'), 'utf8').replace(/(scrape|evaluation)_interval: \d+s/g, '$1_interval: 1s'));
fs.copyFileSync(path.join(promSrc, 'metharme-rules.yml'), path.join(promDir, 'metharme-rules.yml'));
fs.writeFileSync(path.join(promDir, 'metharme-targets.json'),
  JSON.stringify([{ targets: replicas.map((r) => `127.0.0.1:${r.port}`), labels: { service: 'metharme' } }]));
const promPort = await L.freePort();
const prom = `http://127.0.0.1:${promPort}`;
L.start('prometheus', 'prometheus', [`--config.file=${promDir}/prometheus.yml`, `--storage.tsdb.path=${promDir}/data`,
  `--web.listen-address=127.0.0.1:${promPort}`], work);
await L.waitFor('prometheus ready', async () => (await fetch(`${prom}/-/ready`)).ok);
say('cluster up: replicas', replicas.map((r) => r.port).join(','), 'haproxy', lbPort, 'prometheus', promPort);

// ---- chats -------------------------------------------------------------------------------------
const chats = [];
for (let i = 0; i < 6; ++i) chats.push(L.newChat(i, i % 2 ? 'openai' : 'kobold'));

// One turn of every chat at once. hook(res, chat) sees each response head as it arrives.
async function round(which, maxTokens, hook = () => {}) {
  const sent = which.map((c) => ({ chat: c, req: L.turnRequest(c, maxTokens) }));
  const results = await Promise.all(sent.map((s) => L.send(lb, s.req, (h) => hook(h, s.chat))));
  return sent.map((s, k) => ({ ...s, res: results[k] }));
}
function keep(results) {
  for (const { chat, req, res } of results) if (res.ok) L.recordTurn(chat, req.user, res);
}
function assertAllOk(results, what) {
  const bad = results.filter((x) => !x.res.ok);
  assert.equal(bad.length, 0, `${what}: ${bad.map((x) => `chat ${x.chat.i} via ${x.res.replica}: ${x.res.error}`).join('; ')}`);
}

// Two quiet rounds: on the second turn each chat stays on its replica and reuses its prefix. (Few
// turns before (a): the prompts still fit without dropping old turns, so no KV is shifted and a
// fresh replica computes the same tokens bit for bit.)
for (let t = 0; t < 2; ++t) {
  const rs = await round(chats, 24);
  assertAllOk(rs, `warm-up round ${t}`);
  keep(rs);
  if (t === 0) continue;
  for (const { chat, res } of rs) {
    assert.equal(res.replica, chat.replicas[chat.replicas.length - 2], `chat ${chat.i} moved replica on turn ${t}`);
    assert.ok(res.reused >= 0.8 * res.prompt, `chat ${chat.i} turn ${t}: ${res.reused} of ${res.prompt} prompt tokens reused`);
  }
}
say('affinity: every chat kept its replica;', 'chats per replica:',
  JSON.stringify(Object.fromEntries(replicas.map((r) => [r.name, chats.filter((c) => c.replicas.at(-1) === r.name).length]))));

// KoboldAI Lite's polling: /api/extra/generate/check by genkey reaches the replica that ran the
// request (HAProxy's stick table), although the check has no prompt to hash.
{
  for (let k = 0; k < 4; ++k) {
    const genkey = `KCPP${1000 + k}`;
    const prompt = L.newChat(20 + k, 'kobold').card + 'Once upon a time';
    const r = await fetch(`${lb}/api/v1/generate`, {
      method: 'POST', body: JSON.stringify({ prompt, max_length: 12, top_k: 1, genkey }),
    });
    assert.equal(r.status, 200);
    const text = (await r.json()).results[0].text;
    const c = await fetch(`${lb}/api/extra/generate/check`, { method: 'POST', body: JSON.stringify({ genkey }) });
    assert.equal(c.headers.get('x-metharme-replica'), r.headers.get('x-metharme-replica'), `genkey ${genkey}`);
    assert.equal((await c.json()).results[0].text, text, `genkey ${genkey}: /check text`);
  }
  say('genkey: /check reached the replica of its request, 4 of 4');
}

// A full replica sheds work: 20 requests of one conversation at once (one hash key) exceed its 4
// slots + 8 queue places; it answers the rest 503 at once and HAProxy retries them elsewhere.
{
  const c = L.newChat(30, 'kobold');
  const rs = await Promise.all(Array.from({ length: 20 }, () => L.send(lb, L.turnRequest(c, 48))));
  rs.forEach((x, k) => assert.ok(x.ok, `burst request ${k}: ${x.error}`));
  const by = {};
  for (const x of rs) by[x.replica] = (by[x.replica] ?? 0) + 1;
  assert.ok(Object.keys(by).length >= 2, `the burst all went to one replica: ${JSON.stringify(by)}`);
  let refused = 0;
  for (const r of replicas) {
    const text = await (await fetch(`${direct(r)}/metrics`)).text();
    const m = /^metharme_http_requests_total\{route="\/api\/extra\/generate\/stream",status="503"\} (\S+)$/m.exec(text);
    refused += m ? Number(m[1]) : 0;
  }
  assert.ok(refused >= 1, 'no replica answered 503');
  say(`full replica: 20 requests of one chat, ${refused} refused with 503 and retried; served by ${JSON.stringify(by)}`);
}

// ---- (a) SIGTERM one replica under load ----------------------------------------------------------
{
  let target = null;
  const live = new Map(); // chat -> response head, for streams open on the target when it got SIGTERM
  const inflight = [];
  const extra = [];
  const rs = round(chats, 100, (h, chat) => {
    if (!target && h.replica) {
      target = byName(h.replica);
      target.proc.child.kill('SIGTERM');
      say(`(a) SIGTERM ${target.name} while its first stream starts`);
      // New requests once it drains (its /health says 503): the balancer must place them elsewhere.
      extra.push((async () => {
        // On a quiet machine the drain may finish (and the replica exit) before the first poll.
        const gone = () => target.proc.child.exitCode !== null || target.proc.child.signalCode !== null;
        await L.waitFor('the drain to begin', async () => gone() || (await fetch(`${direct(target)}/health`)).status === 503, 5000);
        const sent = [];
        for (let i = 0; i < 3; ++i) sent.push(L.send(lb, L.turnRequest(L.newChat(10 + i, i % 2 ? 'openai' : 'kobold'), 16)));
        return Promise.all(sent);
      })());
    }
    if (target && h.replica === target.name) live.set(chat, h);
  });
  const results = await rs;
  for (const x of results) if (live.has(x.chat)) inflight.push(x);
  assertAllOk(results, '(a) streams during the drain');
  const extras = (await Promise.all(extra)).flat();
  for (const e of extras) {
    assert.ok(e.ok, `(a) a request sent during the drain failed: ${e.error}`);
    assert.notEqual(e.replica, target.name, '(a) the draining replica took a new request');
  }
  assert.ok(inflight.length >= 1, '(a) no stream was running on the drained replica');
  const ex = await target.proc.exited;
  assert.deepEqual(ex, { code: 0, signal: null }, `(a) ${target.name} exit: ${JSON.stringify(ex)}\n${target.proc.log()}`);
  // Its streams ended with the text a healthy replica gives for the same request.
  const healthy = replicas.find((r) => r !== target);
  for (const x of inflight) {
    const again = await L.send(direct(healthy), x.req);
    assert.ok(again.ok, again.error);
    assert.equal(x.res.text, again.text, `(a) chat ${x.chat.i}: the drained stream differs from ${healthy.name}'s`);
  }
  keep(results);
  say(`(a) ${inflight.length} stream(s) finished on ${target.name} during its drain, exit 0; ${extras.length} new requests went elsewhere`);
  await startReplica(target);
  await L.sleep(1500); // two health checks to rise
}

// ---- (b) SIGKILL one replica under load ----------------------------------------------------------
let killed = null;
{
  const rs = await round(chats, 100, (h) => {
    if (!killed && h.replica) {
      killed = byName(h.replica);
      killed.proc.child.kill('SIGKILL');
      say(`(b) SIGKILL ${killed.name}`);
    }
  });
  for (const x of rs)
    if (!x.res.ok) assert.equal(x.res.replica, killed.name, `(b) chat ${x.chat.i} failed on ${x.res.replica}: ${x.res.error}`);
  const failed = rs.filter((x) => !x.res.ok).map((x) => x.chat.i);
  keep(rs);
  await killed.proc.exited;
  // The next turn of every chat, the killed replica's included, succeeds elsewhere.
  const next = await round(chats, 24);
  assertAllOk(next, '(b) the turn after the kill');
  for (const x of next) assert.notEqual(x.res.replica, killed.name);
  keep(next);
  say(`(b) failed only on ${killed.name}: chats [${failed}]; next turns all served by the others`);
}

// ---- (c) restart it: it gets work once ready ------------------------------------------------------
{
  await startReplica(killed);
  await L.sleep(1500);
  const rs = await round(chats, 24);
  assertAllOk(rs, '(c) after the restart');
  keep(rs);
  const back = rs.filter((x) => x.res.replica === killed.name).length;
  assert.ok(back >= 1, `(c) ${killed.name} got no work after its restart`);
  say(`(c) ${killed.name} is back and served ${back} turn(s)`);
}

// ---- Prometheus counts what the clients received --------------------------------------------------
{
  const direct_sum = async () => {
    let s = 0;
    for (const r of replicas) {
      const text = await (await fetch(`${direct(r)}/metrics`)).text();
      s += Number(/^metharme_generation_tokens_total (\S+)$/m.exec(text)[1]);
    }
    return s;
  };
  const promSum = async () => {
    const v = await L.promQuery(prom, 'sum(metharme_generation_tokens_total)');
    return v.length ? Number(v[0].value[1]) : -1;
  };
  // Prometheus's first scrape of every replica may not have happened yet on a quick run.
  let up = [];
  await L.waitFor('Prometheus to scrape all three replicas', async () => (up = await L.promQuery(prom, 'up{job="metharme"}')).length === 3, 20000)
    .catch(() => {});
  let before = await direct_sum();
  await L.waitFor('Prometheus to catch up with the replicas', async () => (await promSum()) === before, 20000);
  // OpenAI chats report the tokens they were sent (usage.completion_tokens).
  const openai = chats.filter((c) => c.api === 'openai');
  const rs = await round(openai, 24);
  assertAllOk(rs, 'counted round');
  keep(rs);
  const received = rs.reduce((s, x) => s + x.res.tokens, 0);
  assert.ok(received > 0);
  let seen = -1;
  await L.waitFor('Prometheus to count the last round', async () => (seen = await promSum()) === before + received, 20000)
    .catch(() => assert.equal(seen, before + received, 'Prometheus generated tokens vs clients'));
  assert.equal(up.length, 3);
  say(`prometheus: sum(metharme_generation_tokens_total) grew by ${received}, the tokens the clients received`);
}

// ---- nginx with the shipped deploy/nginx/metharme.conf (addresses rewritten: nginx has no
// environment variables): each chat's next turn stays on one replica and reuses its prefix.
if (L.which('nginx')) {
  const ngDir = path.join(work, 'nginx');
  fs.mkdirSync(ngDir);
  const ngPort = await L.freePort();
  let conf = fs.readFileSync(path.join(REPO, 'deploy/nginx/metharme.conf'), 'utf8');
  replicas.forEach((r, k) => (conf = conf.replace(`127.0.0.1:${5001 + k}`, `127.0.0.1:${r.port}`)));
  conf = conf.replace('listen 8080;', `listen 127.0.0.1:${ngPort};`);
  fs.writeFileSync(path.join(ngDir, 'metharme.conf'), conf);
  fs.writeFileSync(path.join(ngDir, 'nginx.conf'), `pid ${ngDir}/nginx.pid;\nerror_log ${ngDir}/error.log;\n` +
    `daemon off;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path ${ngDir}/b;\n  proxy_temp_path ${ngDir}/p;\n` +
    `  fastcgi_temp_path ${ngDir}/f;\n  uwsgi_temp_path ${ngDir}/u;\n  scgi_temp_path ${ngDir}/s;\n` +
    `  include ${ngDir}/metharme.conf;\n}\n`);
  const ng = L.start('nginx', 'nginx', ['-e', `${ngDir}/error.log`, '-c', `${ngDir}/nginx.conf`], work);
  const ngBase = `http://127.0.0.1:${ngPort}`;
  await L.waitFor('nginx', async () => (await fetch(`${ngBase}/api/v1/model`)).ok);
  let before = null;
  for (let t = 0; t < 2; ++t) {
    const sent = chats.map((c) => ({ chat: c, req: L.turnRequest(c, 16) }));
    const rs = await Promise.all(sent.map((s) => L.send(ngBase, s.req)));
    rs.forEach((res, k) => assert.ok(res.ok, `nginx: chat ${k}: ${res.error}`));
    sent.forEach((s, k) => L.recordTurn(s.chat, s.req.user, rs[k]));
    if (before) {
      // nginx places the replicas on its hash ring by address, and the test's ports are random, so
      // one replica may get more chats than its 4 KV slots (--parallel 4); there a chat's prefix
      // can be evicted by design. Every chat must keep its replica; those on a replica with no more
      // chats than slots must reuse their prefix.
      const load = {};
      rs.forEach((res) => (load[res.replica] = (load[res.replica] || 0) + 1));
      let checked = 0;
      rs.forEach((res, k) => {
        assert.equal(res.replica, before[k], `nginx: chat ${k} moved`);
        if (load[res.replica] > 4) return;
        ++checked;
        assert.ok(res.reused >= 0.8 * res.prompt, `nginx: chat ${k}: ${res.reused} of ${res.prompt} reused`);
      });
      say(`nginx: chats per replica ${JSON.stringify(load)}; prefix reuse checked on ${checked} of ${rs.length}`);
    }
    before = rs.map((x) => x.replica);
  }
  ng.child.kill('SIGTERM');
  await ng.exited;
  say('nginx: every chat kept its replica and reused its prefix where it had a KV slot');
} else {
  say('nginx is not installed: its part is skipped (tools/deps.sh installs it)');
}

for (const r of replicas) {
  r.proc.child.kill('SIGTERM');
  assert.deepEqual(await r.proc.exited, { code: 0, signal: null });
}
fs.rmSync(work, { recursive: true, force: true });
say('PASS');
process.exit(0);
