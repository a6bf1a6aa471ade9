// The chat page at / in headless Chromium: settings, streaming chat, stop, the conversation kept
// in the browser. The reply on the page must equal the API's reply to the same request.
import test from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startServer, fixture } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

test('chat page', async (t) => {
  // A long context, so the reply that 'stop' interrupts lasts seconds even at this model's ~1000
  // tokens/s: the test must not race the generation.
  const srv = await startServer(['-m', fixture('models/llama-rand-h256'), '--ctx', '16384']);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(srv.url + '/');
    await page.waitForFunction(() => document.querySelector('#status').textContent.includes('context 16384'));
    assert.match(await page.textContent('#status'), /llama-rand-h256/);

    let sent = null;
    page.on('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) sent = r.postData(); });
    const lastReply = () => page.locator('.msg.assistant .text').last().textContent();
    const waitIdle = () => page.waitForFunction(() => !document.querySelector('.msg.assistant.streaming')
      && !document.querySelector('#send').disabled);

    await t.test('a streamed reply equals the API\'s reply to the same request', async () => {
      await page.fill('#system', 'You are a ship\'s cat.');
      await page.fill('#temperature', '0.8');
      await page.fill('#seed', '5');
      await page.fill('#max_tokens', '16');
      await page.dispatchEvent('#seed', 'change');
      await page.dispatchEvent('#max_tokens', 'change');
      await page.fill('#input', 'Hello there <b>cat</b>');
      await page.press('#input', 'Enter');
      await page.waitForSelector('.msg.assistant');
      await waitIdle();
      const reply = await lastReply();
      assert.ok(reply.length > 0);
      const body = JSON.parse(sent);
      assert.deepEqual(body.messages, [
        { role: 'system', content: 'You are a ship\'s cat.' },
        { role: 'user', content: 'Hello there <b>cat</b>' },
      ]);
      assert.equal(body.stream, true);
      assert.equal(body.seed, 5);
      const api = await fetch(srv.url + '/v1/chat/completions', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...body, stream: false }),
      }).then((r) => r.json());
      assert.equal(reply, api.choices[0].message.content);
      // Text is shown as text, never as markup.
      assert.equal(await page.locator('.msg.user b').count(), 0);
      assert.equal(await page.locator('.msg.user .text').textContent(), 'Hello there <b>cat</b>');
    });

    await t.test('the conversation and settings survive a reload', async () => {
      const before = await page.locator('.msg .text').allTextContents();
      await page.reload();
      await page.waitForSelector('.msg.assistant');
      assert.deepEqual(await page.locator('.msg .text').allTextContents(), before);
      assert.equal(await page.inputValue('#system'), 'You are a ship\'s cat.');
      assert.equal(await page.inputValue('#seed'), '5');
    });

    await t.test('stop ends a long reply at once and frees the server', async () => {
      await page.fill('#max_tokens', '16000');
      await page.fill('#seed', '-1');
      await page.fill('#input', 'Tell me a long story.');
      await page.click('#send');
      await page.waitForFunction(() => {
        const m = [...document.querySelectorAll('.msg.assistant')].pop();
        return m && m.classList.contains('streaming') && m.querySelector('.text').textContent.length > 20;
      });
      assert.equal(await page.isEnabled('#stop'), true);
      await page.click('#stop');
      await waitIdle();
      const kept = await lastReply();
      assert.ok(kept.length > 20);
      let perf;
      for (let i = 0; i < 100; ++i) {
        perf = await fetch(srv.url + '/api/extra/perf').then((r) => r.json());
        if (perf.running === 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(perf.running, 0);
      assert.ok(perf.last_token_count < 16000);
      assert.equal(await page.locator('.msg').count(), 4);
      assert.equal(await page.isEnabled('#send'), true);
    });

    await t.test('new chat clears the conversation', async () => {
      await page.click('#clear');
      assert.equal(await page.locator('.msg').count(), 0);
      await page.reload();
      await page.waitForFunction(() => document.querySelector('#status').textContent.includes('context'));
      assert.equal(await page.locator('.msg').count(), 0);
      assert.equal(await page.inputValue('#system'), 'You are a ship\'s cat.');
    });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await srv.stop();
  }
});
