// The chat page of `metharme serve`: streams replies from /v1/chat/completions (the server
// renders the Metharme prompt), keeps settings and the conversation in localStorage.
'use strict';
(() => {
  const STORE = 'metharme.chat.v1';
  const NUMBERS = ['temperature', 'top_p', 'top_k', 'min_p', 'typical', 'tfs', 'top_a', 'rep_pen',
    'rep_pen_range', 'max_tokens', 'seed'];
  const $ = (id) => document.getElementById(id);
  let state = load();
  let controller = null;

  function load() {
    try {
      const s = JSON.parse(localStorage.getItem(STORE));
      if (s && typeof s === 'object') return { system: '', settings: {}, messages: [], apiKey: '', ...s };
    } catch (e) { /* a broken entry starts a fresh chat */ }
    return { system: '', settings: {}, messages: [], apiKey: '' };
  }
  function save() { localStorage.setItem(STORE, JSON.stringify(state)); }

  function setStatus(text, error) {
    $('status').textContent = text;
    $('status').classList.toggle('error', !!error);
  }

  function addMessage(role, text) {
    const div = document.createElement('div');
    div.className = 'msg ' + role;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = role === 'user' ? 'You' : role === 'assistant' ? 'Model' : role;
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;
    div.append(who, body);
    $('messages').append(div);
    $('messages').scrollTop = $('messages').scrollHeight;
    return div;
  }
  function setText(div, text) {
    div.querySelector('.text').textContent = text;
    $('messages').scrollTop = $('messages').scrollHeight;
  }
  function render() {
    $('messages').replaceChildren();
    for (const m of state.messages) addMessage(m.role, m.content);
  }
  function busy(on) {
    $('send').disabled = on;
    $('stop').disabled = !on;
  }

  function headers() {
    const h = { 'Content-Type': 'application/json' };
    if (state.apiKey) h.Authorization = 'Bearer ' + state.apiKey;
    return h;
  }

  async function probe() {
    try {
      const [model, version, ctx] = await Promise.all(['/api/v1/model', '/api/extra/version',
        '/api/extra/true_max_context_length'].map((u) => fetch(u).then((r) => r.json())));
      $('key-row').hidden = !version.protected;
      if (model.result === 'ReadOnly') {
        setStatus('loading the model…');
        setTimeout(probe, 1000);
        return;
      }
      setStatus(model.result.replace(/^koboldcpp\//, '') + ' · context ' + ctx.value + ' tokens');
    } catch (e) {
      setStatus('server unreachable: ' + e.message, true);
      setTimeout(probe, 3000);
    }
  }

  function requestBody() {
    const messages = [];
    if (state.system.trim()) messages.push({ role: 'system', content: state.system });
    for (const m of state.messages) messages.push({ role: m.role, content: m.content });
    const body = { messages, stream: true };
    for (const f of NUMBERS) {
      const v = Number($(f).value);
      if ($(f).value === '' || !Number.isFinite(v)) continue;
      if (f === 'seed') { if (v >= 0) body.seed = v; continue; }
      body[f] = v;
    }
    return body;
  }

  // Reads an SSE body, calling onData with each event's data.
  async function readEvents(res, onData) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of event.split('\n')) if (line.startsWith('data: ')) onData(line.slice(6));
      }
    }
  }

  async function generate() {
    const div = addMessage('assistant', '');
    div.classList.add('streaming');
    controller = new AbortController();
    busy(true);
    let reply = '';
    let failed = false;
    // One paint per frame: a small model streams a thousand tokens a second, and a layout per
    // token would freeze the page (and its Stop button).
    let frame = 0;
    const paint = () => { frame = 0; setText(div, reply); };
    try {
      const res = await fetch('/v1/chat/completions', {
        method: 'POST', headers: headers(), body: JSON.stringify(requestBody()), signal: controller.signal,
      });
      if (!res.ok) {
        const j = await res.json().catch(() => null);
        throw new Error((j && ((j.error && j.error.message) || (j.detail && j.detail.msg))) || res.statusText);
      }
      await readEvents(res, (data) => {
        if (data === '[DONE]') return;
        const d = JSON.parse(data).choices?.[0]?.delta?.content;
        if (d) {
          reply += d;
          if (!frame) frame = requestAnimationFrame(paint);
        }
      });
    } catch (e) {
      if (e.name !== 'AbortError') {
        failed = true;
        div.classList.add('error');
        setText(div, 'Error: ' + e.message);
      }
    } finally {
      if (frame) cancelAnimationFrame(frame);
      if (!failed) setText(div, reply);
      controller = null;
      div.classList.remove('streaming');
      busy(false);
      if (reply && !failed) {
        state.messages.push({ role: 'assistant', content: reply });
        save();
      } else if (!failed) {
        div.remove();
      }
    }
  }

  function send() {
    const text = $('input').value.trim();
    if (!text || controller) return;
    $('input').value = '';
    state.messages.push({ role: 'user', content: text });
    save();
    addMessage('user', text);
    generate();
  }

  // Settings: restore, then save on every change.
  $('system').value = state.system;
  $('system').addEventListener('input', () => { state.system = $('system').value; save(); });
  for (const f of NUMBERS) {
    if (state.settings[f] !== undefined) $(f).value = state.settings[f];
    $(f).addEventListener('change', () => { state.settings[f] = $(f).value; save(); });
  }
  $('api_key').value = state.apiKey;
  $('api_key').addEventListener('change', () => { state.apiKey = $('api_key').value; save(); });
  $('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
  $('input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); send(); }
  });
  $('stop').addEventListener('click', () => { if (controller) controller.abort(); });
  $('clear').addEventListener('click', () => {
    if (controller) controller.abort();
    state.messages = [];
    save();
    render();
  });
  $('toggle-settings').addEventListener('click', () => {
    const s = $('settings');
    s.hidden = !s.hidden;
    $('toggle-settings').setAttribute('aria-expanded', String(!s.hidden));
  });
  render();
  busy(false);
  probe();
})();
