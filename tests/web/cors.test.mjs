// CORS in a real browser: a page on another loopback origin calls `metharme serve --cors ORIGIN`
// with the extra headers browser clients send (openai-js's x-stainless-*, OpenRouter-style
// HTTP-Referer and X-Title, Cache-Control), which makes Chromium send a preflight first. The
// allowed origin gets through and can read the exposed headers; any other origin is blocked.
import test from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { chromium } from 'playwright-core';
import { startServer, fixture } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
const KEY = 'sk-cors-test';

// A blank page on its own port: the origin the API calls come from.
function startPageServer() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>client</title><p>client page');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// Runs in the page: one cross-origin POST with arbitrary headers; never throws.
async function callApi([url, key, body]) {
  try {
    const r = await fetch(url, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        Authorization: 'Bearer ' + key,
        'X-Stainless-Lang': 'js',
        'X-Stainless-OS': 'Linux',
        'X-Stainless-Runtime': 'browser:chrome',
        'X-Stainless-Package-Version': '5.23.2',
        'HTTP-Referer': 'https://example.org/app',
        'X-Title': 'metharme cors test',
        'Cache-Control': 'no-cache',
      },
      body: JSON.stringify(body),
    });
    return { status: r.status, cut: r.headers.get('X-Prompt-Tokens-Cut'), body: await r.json() };
  } catch (e) {
    return { error: String(e) };
  }
}

test('cors preflight with arbitrary headers', async (t) => {
  const pages = await startPageServer();
  const port = pages.address().port;
  const allowed = `http://127.0.0.1:${port}`;
  const srv = await startServer(['-m', fixture('models/stories260k'), '--ctx', '512', '--api-key', KEY,
    '--cors', allowed]);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  try {
    const page = await browser.newPage();
    const preflights = [];
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    cdp.on('Network.requestWillBeSent', (e) => { if (e.request.method === 'OPTIONS') preflights.push(e.request.url); });

    await t.test('the allowed origin passes preflight and reads the exposed headers', async () => {
      await page.goto(allowed + '/');
      const long = 'The fox ran to the river. '.repeat(120);
      const r = await page.evaluate(callApi, [srv.url + '/v1/completions', KEY,
        { prompt: long, max_tokens: 8, temperature: 0 }]);
      assert.equal(r.error, undefined, r.error);
      assert.equal(r.status, 200);
      assert.equal(r.body.object, 'text_completion');
      assert.equal(r.body.usage.prompt_tokens, 512 - 8);
      assert.ok(Number(r.cut) > 0, `X-Prompt-Tokens-Cut: ${r.cut}`);
      assert.equal(Number(r.cut), r.body.prompt_tokens_cut);
      const chat = await page.evaluate(callApi, [srv.url + '/v1/chat/completions', KEY,
        { messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4 }]);
      assert.equal(chat.status, 200, JSON.stringify(chat));
      assert.equal(chat.body.choices[0].message.role, 'assistant');
      const kobold = await page.evaluate(callApi, [srv.url + '/api/v1/generate', KEY,
        { prompt: 'Once upon a time', max_length: 4, max_context_length: 8192 }]);
      assert.equal(kobold.status, 200, JSON.stringify(kobold));
      assert.equal(typeof kobold.body.results[0].text, 'string');
      assert.ok(preflights.length >= 1, 'Chromium sent no preflight');
    });

    await t.test('another origin is blocked by the browser', async () => {
      const other = `http://localhost:${port}`;
      await page.goto(other + '/');
      const r = await page.evaluate(callApi, [srv.url + '/v1/completions', KEY, { prompt: 'Hi', max_tokens: 2 }]);
      assert.match(r.error ?? '', /TypeError/);
    });
  } finally {
    await browser.close();
    await srv.stop();
    pages.close();
  }
});
