// Helpers of the cluster test: processes on free loopback ports, SillyTavern-shaped chat turns
// (Kobold text completion and OpenAI chat completion, both streamed), and Prometheus queries.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PATH = `${process.env.PATH}:/usr/sbin:/sbin`;

export function which(prog) {
  try {
    return execFileSync('sh', ['-c', `command -v ${prog}`], { env: { ...process.env, PATH } }).toString().trim();
  } catch {
    return null;
  }
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const children = new Set();
// Every process started here is killed when the test ends, whatever the way it ends.
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

// Starts a program with its output in logDir/name.log; `exited` resolves to {code, signal}.
export function start(name, cmd, args, logDir, env = {}) {
  const log = fs.openSync(path.join(logDir, `${name}.log`), 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', log, log], env: { ...process.env, PATH, ...env } });
  fs.closeSync(log);
  children.add(child);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, exited, log: () => fs.readFileSync(path.join(logDir, `${name}.log`), 'utf8') };
}

export async function waitFor(what, fn, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

export async function getJson(url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(10000) });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

// ---- chats -------------------------------------------------------------------------------------

const NAMES = ['Lily', 'Tom', 'Sue', 'Ben', 'Mia', 'Max', 'Zoe', 'Sam'];
const PLACES = ['the park', 'the river', 'a big farm', 'the beach', 'a dark forest', 'a little town', 'the zoo', 'a garden'];
const USER_LINES = [
  'What do you want to do today?',
  'Can we go outside and play?',
  'Why are you so happy?',
  'Tell me about your friend.',
  'What did you find there?',
  'Do you like the big tree?',
  'What happened next?',
];

// A chat of SillyTavern's shape: a character card first (the part every turn repeats, well over
// the 256 bytes the balancer keys on), then the turns; the client drops the oldest turns to keep
// the prompt inside the context, as SillyTavern does.
export function newChat(i, api) {
  const name = NAMES[i % NAMES.length];
  const place = PLACES[(i * 3) % PLACES.length];
  const card =
    `[Character: ${name}; a kind child who lives near ${place} (chat ${i}). ${name} loves to play, ` +
    `to share toys and to ask about the sky, the birds and the trees. ${name} has a small red ball, ` +
    `a friendly dog and a mom who tells good stories at night. ${name} speaks in short, happy sentences ` +
    `and always wants to go on an adventure with a friend.]\n`;
  return { i, api, name, card, turns: [], replicas: [] };
}

const PROMPT_BUDGET = 720; // characters of history kept (about 340 tokens of stories260k)

function keptTurns(chat, user) {
  const kept = [];
  let size = chat.card.length + user.length + 16;
  for (let t = chat.turns.length - 1; t >= 0; --t) {
    const n = chat.turns[t].user.length + chat.turns[t].reply.length + 16;
    if (size + n > PROMPT_BUDGET) break;
    size += n;
    kept.unshift(chat.turns[t]);
  }
  return kept;
}

export function nextUser(chat) {
  return USER_LINES[(chat.i + chat.turns.length) % USER_LINES.length];
}

// The request body of the chat's next turn.
export function turnRequest(chat, maxTokens) {
  const user = nextUser(chat);
  const kept = keptTurns(chat, user);
  if (chat.api === 'kobold') {
    const lines = kept.map((t) => `User: ${t.user}\n${chat.name}: ${t.reply}`);
    const prompt = chat.card + [...lines, `User: ${user}`, `${chat.name}:`].join('\n');
    return {
      path: '/api/extra/generate/stream',
      body: {
        prompt, max_context_length: 512, max_length: maxTokens, rep_pen: 1.1, rep_pen_range: 320,
        rep_pen_slope: 1, temperature: 0.7, tfs: 1, top_a: 0, top_k: 1, top_p: 0.9, min_p: 0, typical: 1,
        sampler_order: [6, 0, 1, 3, 4, 2, 5], use_default_badwordsids: false, stop_sequence: ['\nUser:'],
        trim_stop: true, mirostat: 0, grammar: '', sampler_seed: -1, singleline: false, streaming: true,
      },
      user,
    };
  }
  const messages = [{ role: 'system', content: chat.card }];
  for (const t of kept) messages.push({ role: 'user', content: t.user }, { role: 'assistant', content: t.reply });
  messages.push({ role: 'user', content: user });
  return {
    path: '/v1/chat/completions',
    body: {
      model: 'stories260k', messages, max_tokens: maxTokens, temperature: 0, top_p: 1, frequency_penalty: 0,
      presence_penalty: 0, stream: true, stream_options: { include_usage: true },
    },
    user,
  };
}

// Sends one request and reads its SSE stream to the end. Never throws: the result says what
// happened. onHeaders runs when the response head arrives (the request has a slot by then).
// ttft: milliseconds from sending to the first event that carries text.
export async function send(base, req, onHeaders = () => {}, timeoutMs = 60000) {
  const out = { ok: false, text: '', replica: null, reused: 0, prompt: 0, tokens: null, status: 0, error: null, ttft: null };
  const t0 = performance.now();
  try {
    const r = await fetch(base + req.path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(req.body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    out.status = r.status;
    out.replica = r.headers.get('x-metharme-replica');
    out.reused = Number(r.headers.get('x-metharme-prompt-tokens-reused') ?? 0);
    out.prompt = Number(r.headers.get('x-metharme-prompt-tokens') ?? 0);
    onHeaders(out);
    let body = '';
    const dec = new TextDecoder();
    for await (const piece of r.body) {
      body += dec.decode(piece, { stream: true });
      if (out.ttft === null && /"(token|content)":"[^"]/.test(body)) out.ttft = performance.now() - t0;
    }
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${body.slice(0, 300)}`);
    let finished = false;
    for (const block of body.split('\n\n')) {
      const line = block.split('\n').find((l) => l.startsWith('data: '));
      if (!line || line === 'data: [DONE]') continue;
      const d = JSON.parse(line.slice(6));
      if ('token' in d) {
        out.text += d.token;
        if (d.finish_reason !== 'null') finished = true;
      } else if (d.usage) {
        out.tokens = d.usage.completion_tokens;
      } else if (d.choices?.[0]) {
        out.text += d.choices[0].delta?.content ?? '';
        if (d.choices[0].finish_reason) finished = true;
      }
    }
    if (!finished) throw new Error('the stream ended without a finish_reason');
    out.ok = true;
  } catch (e) {
    out.error = String(e.message ?? e);
  }
  return out;
}

export function recordTurn(chat, user, res) {
  chat.turns.push({ user, reply: res.text.trim() });
  chat.replicas.push(res.replica);
}

export async function promQuery(promBase, expr) {
  const j = await getJson(`${promBase}/api/v1/query?query=${encodeURIComponent(expr)}`);
  if (j.status !== 'success') throw new Error(`query ${expr}: ${JSON.stringify(j)}`);
  return j.data.result;
}
