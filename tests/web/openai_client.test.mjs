// The official `openai` npm client against `metharme serve` (non-streaming and streaming).
import test from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer, fixture } from './server.mjs';

const KEY = 'sk-metharme-test';

test('openai client', async (t) => {
  const srv = await startServer(['-m', fixture('models/llama-rand-h256'), '--api-key', KEY, '--ctx', '1024']);
  const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: KEY, maxRetries: 0 });
  const post = (path, body) => fetch(srv.url + path, {
    method: 'POST', headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  }).then((r) => r.json());
  try {
    await t.test('models.list names the model', async () => {
      const page = await client.models.list();
      assert.deepEqual(page.data.map((m) => m.id), ['llama-rand-h256']);
      const m = await client.models.retrieve('llama-rand-h256');
      assert.equal(m.object, 'model');
    });

    await t.test('completions: streaming gives the same text as non-streaming, true token counts', async () => {
      const params = { model: 'llama-rand-h256', prompt: 'Once upon a time', max_tokens: 24, temperature: 0.7, seed: 11 };
      const c = await client.completions.create(params);
      assert.equal(c.object, 'text_completion');
      const text = c.choices[0].text;
      assert.ok(text.length > 0);
      const count = await post('/api/extra/tokencount', { prompt: params.prompt });
      assert.equal(c.usage.prompt_tokens, count.value);
      assert.equal(c.usage.completion_tokens, 24);
      assert.equal(c.usage.total_tokens, count.value + 24);
      const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
      let streamed = '';
      let finish = null;
      let usage = null;
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
        if (!chunk.choices.length) continue;
        streamed += chunk.choices[0].text;
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      assert.equal(streamed, text);
      assert.equal(finish, 'length');
      assert.deepEqual(usage, c.usage);
    });

    await t.test('chat completions in the Metharme format, streaming and not', async () => {
      const params = {
        model: 'llama-rand-h256',
        messages: [{ role: 'system', content: 'You are a pirate.' }, { role: 'user', content: 'Hello!' }],
        max_tokens: 20, temperature: 0.7, seed: 3,
      };
      const c = await client.chat.completions.create(params);
      assert.equal(c.object, 'chat.completion');
      assert.equal(c.choices[0].message.role, 'assistant');
      const text = c.choices[0].message.content;
      const count = await post('/api/extra/tokencount', { prompt: '<|system|>You are a pirate.<|user|>Hello!<|model|>' });
      assert.equal(c.usage.prompt_tokens, count.value);
      const stream = await client.chat.completions.create({ ...params, stream: true });
      let streamed = '';
      let role = null;
      for await (const chunk of stream) {
        role = chunk.choices[0].delta.role ?? role;
        streamed += chunk.choices[0].delta.content ?? '';
      }
      assert.equal(role, 'assistant');
      assert.equal(streamed, text);
    });

    await t.test('errors come back as the client\'s error classes', async () => {
      const bad = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'wrong', maxRetries: 0 });
      await assert.rejects(bad.completions.create({ model: 'x', prompt: 'hi', max_tokens: 2 }),
        (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
      // A prompt longer than the context is cut at its front, as KoboldCpp does; only a context
      // with no room for any prompt is refused.
      const long = await client.completions.create({ model: 'x', prompt: 'hi '.repeat(900), max_tokens: 200 });
      assert.equal(long.usage.prompt_tokens, 1024 - 200);
      assert.ok(long.prompt_tokens_cut > 0);
      await assert.rejects(client.completions.create({ model: 'x', prompt: 'hi', max_tokens: 200, num_ctx: 4 }),
        (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
      await assert.rejects(client.chat.completions.create({ model: 'x', messages: [{ role: 'wizard', content: 'x' }] }),
        (e) => e instanceof OpenAI.BadRequestError && /role/.test(e.message));
    });

    await t.test('abandoning a stream frees the server at once', async () => {
      const stream = await client.completions.create({
        model: 'x', prompt: 'Tell me a story', max_tokens: 900, bypass_eos: true, stream: true,
      });
      let n = 0;
      for await (const chunk of stream) {
        if (chunk.choices.length && ++n >= 3) break;  // leaving the loop aborts the request
      }
      let perf;
      for (let i = 0; i < 100; ++i) {
        perf = await fetch(srv.url + '/api/extra/perf').then((r) => r.json());
        if (perf.running === 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(perf.running, 0);
      assert.ok(perf.last_token_count < 900, `generated ${perf.last_token_count}`);
      const c = await client.completions.create({ model: 'x', prompt: 'Hi', max_tokens: 3 });
      assert.equal(c.usage.completion_tokens, 3);
    });
  } finally {
    await srv.stop();
  }
});
