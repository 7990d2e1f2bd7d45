// The IACE dashboard: one vanilla module over the REST API and the live event stream.
// The access token lives in this module's memory only; the refresh token is an HttpOnly cookie
// the browser sends to /api/v1/auth/refresh alone (requests carry X-IACE-Web for CSRF safety).
// Every value from the server is rendered with textContent, never parsed as HTML.

const WEB = { 'X-IACE-Web': '1' };
const ROLES = { viewer: 1, agent: 2, admin: 3 };
let token = null;
let me = null;
let refreshTimer = null;
let live = null; // the open live stream of the Live page
let leavePage = () => {};

const $main = document.getElementById('main');
const $status = document.getElementById('status');

// ---- DOM helpers -------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}
function say(text, isError = false) {
  $status.textContent = text || '';
  $status.classList.toggle('error', isError);
}
function can(min) { return me && ROLES[me.role] >= ROLES[min]; }
function fmtTime(t) { return t ? new Date(t).toLocaleString() : ''; }
let uid = 0;
function field(labelText, input) {
  const id = input.id || `f${++uid}`;
  input.id = id;
  return h('div', {}, h('label', { for: id }, labelText), input);
}

// ---- API ---------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) { super(body?.message || `HTTP ${status}`); this.status = status; this.code = body?.code; }
}
async function api(method, path, body, retry = true) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  if (res.status === 401 && retry && token && await refresh()) return api(method, path, body, false);
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}
function adopt(tokens) {
  token = tokens.access_token;
  clearTimeout(refreshTimer);
  // Renewed a little before it expires; a failed renewal shows the login form.
  refreshTimer = setTimeout(() => refresh().then(ok => ok || showLogin()), Math.max(5, tokens.expires_in - 30) * 1000);
}
async function refresh() {
  const res = await fetch('/api/v1/auth/refresh', { method: 'POST', headers: WEB, credentials: 'same-origin' });
  if (!res.ok) { token = null; return false; }
  adopt(await res.json());
  return true;
}

// ---- Login -------------------------------------------------------------------------------
function showLogin(message) {
  leavePage();
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'login panel', onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    const res = await fetch('/api/v1/auth/login', { method: 'POST', credentials: 'same-origin', headers: { ...WEB, 'Content-Type': 'application/json' }, body: JSON.stringify({ email: email.value, password: password.value }) });
    const data = await res.json().catch(() => null);
    if (!res.ok) { error.textContent = data?.message || 'Login failed'; return; }
    adopt(data);
    await start();
  } }, h('h1', {}, 'Sign in'), field('Email', email), field('Password', password), h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Sign in')), error);
  $main.replaceChildren(form);
  email.focus();
}

async function start() {
  me = await api('GET', '/api/v1/me');
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  document.getElementById('who').textContent = `${me.email} (${me.role})`;
  if (!location.hash || location.hash === '#/' || location.hash === '#') location.hash = '#/live';
  else route();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', '/api/v1/auth/logout'); } catch (_) { /* the session may be gone already */ }
  token = null; me = null;
  clearTimeout(refreshTimer);
  showLogin('Signed out.');
});

// ---- Router ------------------------------------------------------------------------------
const pages = [
  [/^#\/live$/, livePage],
  [/^#\/calls$/, callsPage],
  [/^#\/calls\/([0-9a-f-]{36})$/, callPage],
  [/^#\/overview$/, overviewPage],
  [/^#\/agents$/, agentsPage],
  [/^#\/knowledge$/, knowledgePage],
];
function route() {
  if (!token) return;
  leavePage();
  leavePage = () => {};
  say('');
  $main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  const hash = location.hash || '#/live';
  for (const a of document.querySelectorAll('#nav a')) {
    if (hash.startsWith(a.getAttribute('href'))) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  for (const [re, page] of pages) {
    const m = hash.match(re);
    if (m) {
      page(...m.slice(1)).catch(e => say(e.message, true));
      $main.focus();
      return;
    }
  }
  $main.replaceChildren(h('h1', {}, 'Not found'));
}
window.addEventListener('hashchange', route);

// ---- Charts ------------------------------------------------------------------------------
// A sentiment track (-1..1) as an inline SVG line.
function sentimentChart(scores, label) {
  const w = 200, hgt = 60;
  const svg = s('svg', { viewBox: `0 0 ${w} ${hgt}`, class: 'chart', role: 'img', 'aria-label': label, 'data-points': scores.length });
  svg.append(s('line', { x1: 0, y1: hgt / 2, x2: w, y2: hgt / 2, class: 'axis' }));
  if (scores.length) {
    const step = scores.length > 1 ? w / (scores.length - 1) : 0;
    const pts = scores.map((v, i) => `${(i * step).toFixed(1)},${(hgt / 2 - v * (hgt / 2 - 4)).toFixed(1)}`);
    if (pts.length === 1) pts.push(`${w},${pts[0].split(',')[1]}`);
    svg.append(s('polyline', { points: pts.join(' '), class: 'line' }));
  }
  const title = s('title'); title.textContent = `${label}: ${scores.map(v => v.toFixed(2)).join(', ') || 'no scores yet'}`;
  svg.prepend(title);
  return svg;
}
function barChart(values, label) {
  const w = 240, hgt = 60, max = Math.max(1, ...values);
  const svg = s('svg', { viewBox: `0 0 ${w} ${hgt}`, class: 'chart', role: 'img', 'aria-label': label });
  const bw = values.length ? w / values.length : w;
  values.forEach((v, i) => {
    const bh = (v / max) * (hgt - 4);
    svg.append(s('rect', { x: (i * bw + 0.5).toFixed(1), y: (hgt - bh).toFixed(1), width: Math.max(0.5, bw - 1).toFixed(1), height: bh.toFixed(1), class: 'bar' }));
  });
  return svg;
}

// ---- Live --------------------------------------------------------------------------------
async function livePage() {
  const calls = new Map(); // call_id -> {call, lines, scores, stage, latencies}
  let selected = null;
  const list = h('tbody');
  const detail = h('section', { class: 'panel', 'aria-labelledby': 'live-detail-h' }, h('h2', { id: 'live-detail-h' }, 'Select a call'));
  $main.replaceChildren(h('h1', {}, 'Live calls'), h('div', { class: 'split' },
    h('section', { class: 'panel', 'aria-labelledby': 'live-list-h' }, h('h2', { id: 'live-list-h' }, 'Now'),
      h('table', { id: 'live-calls' }, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Caller'), h('th', { scope: 'col' }, 'Stage'), h('th', { scope: 'col' }, ''))), list)),
    detail));

  const entry = (id) => {
    if (!calls.has(id)) calls.set(id, { call: { id }, lines: [], scores: [], stage: '', latencies: [] });
    return calls.get(id);
  };
  const renderList = () => {
    list.replaceChildren(...[...calls.values()].filter(c => !c.ended).map(c => h('tr', { 'data-call-id': c.call.id, class: c.call.id === selected ? 'selected' : null },
      h('td', {}, c.call.from || '…', h('br'), h('span', { class: 'muted' }, `to ${c.call.to || ''}`)),
      h('td', {}, h('span', { class: 'stage' }, c.stage || c.call.status || '')),
      h('td', {}, h('button', { type: 'button', onclick: () => select(c.call.id), 'aria-pressed': c.call.id === selected ? 'true' : 'false' }, 'Open')))));
    if (!list.children.length) list.append(h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No live calls.')));
  };
  // The selected call's panel is built once per selection (so focus and typed input survive)
  // and its parts are updated as events arrive.
  let parts = null;
  const buildDetail = () => {
    const c = calls.get(selected);
    parts = null;
    if (!c) { detail.replaceChildren(h('h2', { id: 'live-detail-h' }, 'Select a call')); return; }
    const transfer = h('input', { type: 'tel', id: 'transfer-to', placeholder: '+15551230000', name: 'transfer_to' });
    const actions = can('agent') ? h('div', { class: 'row-actions' },
      h('button', { type: 'button', class: 'danger', id: 'hangup', onclick: async () => {
        try { await api('POST', `/api/v1/calls/${c.call.id}/hangup`); say('Hang-up sent.'); } catch (e) { say(e.message, true); }
      } }, 'Hang up'),
      h('label', { for: 'transfer-to' }, 'Transfer to'), transfer,
      h('button', { type: 'button', id: 'transfer', onclick: async () => {
        try { await api('POST', `/api/v1/calls/${c.call.id}/transfer`, { to: transfer.value.trim() }); say('Transfer sent.'); } catch (e) { say(e.message, true); }
      } }, 'Transfer')) : null;
    parts = {
      title: h('h2', { id: 'live-detail-h' }),
      stage: h('span', { class: 'stage', id: 'live-stage' }),
      actions,
      lines: h('ol', { class: 'transcript', id: 'live-transcript', 'aria-live': 'polite' }),
      chart: h('div'),
      latencies: h('p', { id: 'live-latencies' }),
    };
    detail.replaceChildren(parts.title, h('p', {}, 'Stage: ', parts.stage), actions,
      h('h2', {}, 'Transcript'), parts.lines, h('h2', {}, 'Sentiment'), parts.chart,
      h('h2', {}, 'Turn latencies'), parts.latencies,
      h('p', {}, h('a', { href: `#/calls/${c.call.id}` }, 'Open the call page')));
    updateDetail();
  };
  const updateDetail = () => {
    const c = calls.get(selected);
    if (!c || !parts) return;
    parts.title.textContent = `Call from ${c.call.from || '…'}`;
    parts.stage.textContent = c.ended ? `ended (${c.outcome || ''})` : (c.stage || 'waiting');
    if (parts.actions && c.ended) parts.actions.hidden = true;
    while (parts.lines.children.length < c.lines.length) {
      const l = c.lines[parts.lines.children.length];
      parts.lines.append(h('li', {}, h('span', { class: `speaker ${l.speaker}` }, l.speaker), l.text));
    }
    parts.lines.scrollTop = parts.lines.scrollHeight;
    parts.chart.replaceChildren(sentimentChart(c.scores, 'Caller sentiment'));
    parts.latencies.textContent = c.latencies.length ? c.latencies.map(ms => `${ms} ms`).join(', ') : 'none yet';
  };
  const select = async (id) => {
    selected = id;
    renderList(); buildDetail();
    const c = calls.get(id);
    if (c && !c.loaded) {
      c.loaded = true;
      // What was said before this page opened.
      try {
        const d = await api('GET', `/api/v1/calls/${id}`);
        Object.assign(c.call, d);
        if (!c.lines.length) c.lines = d.utterances.map(u => ({ speaker: u.speaker, text: u.text }));
        if (!c.scores.length) c.scores = d.utterances.filter(u => u.sentiment_score !== null).map(u => u.sentiment_score);
        if (!c.latencies.length) c.latencies = d.utterances.filter(u => u.latency_ms !== null).map(u => u.latency_ms);
      } catch (_) { /* not recorded yet: the live events will fill it */ }
      if (selected === id) buildDetail();
    }
  };
  const apply = (ev) => {
    const c = entry(ev.call_id);
    switch (ev.type) {
      case 'call_started': Object.assign(c.call, { from: ev.from, to: ev.to, direction: ev.direction, status: 'ringing' }); break;
      case 'call_ended': c.ended = true; c.outcome = ev.outcome; break;
      case 'transcript': c.lines.push({ speaker: ev.speaker, text: ev.text }); break;
      case 'sentiment': c.scores.push(ev.score); break;
      case 'stage': c.stage = ev.stage; break;
      case 'turn_latency': c.latencies.push(ev.latency_ms); break;
      default: return;
    }
    renderList();
    if (ev.call_id === selected) updateDetail();
  };

  let closed = false;
  let source = null;
  const connect = async () => {
    if (closed) return;
    try {
      const { ticket } = await api('POST', '/api/v1/live/ticket');
      source = new EventSource(`/api/v1/live?ticket=${encodeURIComponent(ticket)}`);
      source.addEventListener('snapshot', (m) => {
        for (const call of JSON.parse(m.data).calls) Object.assign(entry(call.id).call, call);
        renderList();
        say('Live.');
      });
      source.onmessage = (m) => apply(JSON.parse(m.data));
      // A ticket is single-use: reconnect with a new one rather than let EventSource retry.
      source.onerror = () => { source.close(); if (!closed) { say('Live stream interrupted; reconnecting…'); setTimeout(connect, 2000); } };
    } catch (e) {
      say(e.message, true);
      setTimeout(connect, 5000);
    }
  };
  leavePage = () => { closed = true; if (source) source.close(); };
  renderList();
  await connect();
}

// ---- Calls -------------------------------------------------------------------------------
async function callsPage() {
  const agents = await api('GET', '/api/v1/agents').catch(() => ({ data: [] }));
  const f = {
    from: h('input', { type: 'datetime-local', name: 'from' }),
    to: h('input', { type: 'datetime-local', name: 'to' }),
    agent_id: h('select', { name: 'agent_id' }, h('option', { value: '' }, 'Any'), (agents.data || []).map(a => h('option', { value: a.id }, a.name))),
    outcome: h('select', { name: 'outcome' }, ['', 'resolved', 'escalated', 'abandoned', 'failed', 'no_answer', 'transferred'].map(o => h('option', { value: o }, o || 'Any'))),
    direction: h('select', { name: 'direction' }, ['', 'inbound', 'outbound'].map(o => h('option', { value: o }, o || 'Any'))),
    number: h('input', { type: 'tel', name: 'number', placeholder: '+1555…' }),
  };
  const body = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Next page');
  let cursor = null;
  const load = async (reset) => {
    const q = new URLSearchParams({ limit: '25' });
    for (const [k, el] of Object.entries(f)) {
      if (!el.value) continue;
      q.set(k, (k === 'from' || k === 'to') ? new Date(el.value).toISOString() : el.value.trim());
    }
    if (!reset && cursor) q.set('cursor', cursor);
    const page = await api('GET', `/api/v1/calls?${q}`);
    if (reset) body.replaceChildren();
    for (const c of page.data) {
      body.append(h('tr', { 'data-call-id': c.id },
        h('td', {}, h('a', { href: `#/calls/${c.id}` }, fmtTime(c.started_at))),
        h('td', {}, c.direction), h('td', {}, c.from), h('td', {}, c.to), h('td', {}, c.status), h('td', {}, c.outcome || ''),
        h('td', {}, c.duration_ms ? `${Math.round(c.duration_ms / 1000)} s` : ''),
        h('td', {}, c.sentiment_avg === null ? '' : c.sentiment_avg.toFixed(2))));
    }
    if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No calls match.')));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener('click', () => load(false).catch(e => say(e.message, true)));
  const form = h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); load(true).catch(err => say(err.message, true)); } },
    field('From', f.from), field('To', f.to), field('Agent', f.agent_id), field('Outcome', f.outcome), field('Direction', f.direction), field('Number', f.number),
    h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Filter')));
  $main.replaceChildren(h('h1', {}, 'Calls'), form,
    h('table', { id: 'calls' }, h('thead', {}, h('tr', {}, ['Started', 'Direction', 'From', 'To', 'Status', 'Outcome', 'Duration', 'Sentiment'].map(t => h('th', { scope: 'col' }, t)))), body),
    h('p', {}, more));
  await load(true);
}

async function callPage(id) {
  const [c, summary, jobs] = await Promise.all([
    api('GET', `/api/v1/calls/${id}`),
    api('GET', `/api/v1/calls/${id}/summary`).catch(() => null),
    api('GET', `/api/v1/calls/${id}/jobs`).catch(() => ({ data: [] })),
  ]);
  const scores = c.utterances.filter(u => u.sentiment_score !== null).map(u => u.sentiment_score);
  $main.replaceChildren(
    h('h1', {}, `Call from ${c.from} to ${c.to}`),
    h('p', {}, `${c.direction} · ${c.status}${c.outcome ? ` · ${c.outcome}` : ''} · started ${fmtTime(c.started_at)}${c.duration_ms ? ` · ${Math.round(c.duration_ms / 1000)} s` : ''}`),
    h('h2', {}, 'Summary'), h('p', { id: 'call-summary' }, summary?.summary || 'No summary yet.'),
    h('h2', {}, 'Transcript'),
    h('table', { id: 'call-transcript' }, h('thead', {}, h('tr', {}, ['At', 'Speaker', 'Text', 'Sentiment', 'Turn latency'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, c.utterances.map(u => h('tr', {},
        h('td', {}, `${(u.started_ms / 1000).toFixed(1)} s`), h('td', {}, h('span', { class: `speaker ${u.speaker}` }, u.speaker)),
        h('td', {}, u.text, u.interrupted ? h('span', { class: 'muted' }, ' (interrupted)') : null),
        h('td', {}, u.sentiment_score === null ? '' : u.sentiment_score.toFixed(2)),
        h('td', {}, u.latency_ms === null ? '' : `${u.latency_ms} ms`))))),
    h('h2', {}, 'Sentiment'), sentimentChart(scores, 'Caller sentiment over the call'),
    h('h2', {}, 'Events'),
    h('ol', { id: 'call-events' }, c.events.map(e => h('li', {}, h('time', { datetime: e.occurred_at }, fmtTime(e.occurred_at)), ' ', e.event_type))),
    h('h2', {}, 'Post-call jobs'),
    h('table', { id: 'call-jobs' }, h('thead', {}, h('tr', {}, ['Kind', 'Status', 'Attempts', 'Last error'].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, jobs.data.map(j => h('tr', {}, h('td', {}, j.kind), h('td', {}, j.status), h('td', {}, `${j.attempts}/${j.max_attempts}`), h('td', {}, j.last_error || ''))))),
    h('p', {}, h('a', { href: '#/calls' }, 'Back to calls')));
}

// ---- Overview ----------------------------------------------------------------------------
async function overviewPage() {
  const toLocal = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const now = new Date();
  const from = h('input', { type: 'datetime-local', value: toLocal(new Date(now - 24 * 3600e3)) });
  const to = h('input', { type: 'datetime-local', value: toLocal(now) });
  const out = h('div', { id: 'overview' });
  const pct = (v) => (v === null || v === undefined) ? '–' : `${(v * 100).toFixed(1)} %`;
  const load = async () => {
    const q = new URLSearchParams({ from: new Date(from.value).toISOString(), to: new Date(to.value).toISOString() });
    try {
      const o = await api('GET', `/api/v1/stats/overview?${q}`);
      out.replaceChildren(h('div', { class: 'figures' },
        h('div', { class: 'figure' }, 'Calls', h('strong', {}, o.total_calls)),
        h('div', { class: 'figure' }, 'Resolved', h('strong', {}, pct(o.resolution_rate))),
        h('div', { class: 'figure' }, 'Escalated', h('strong', {}, pct(o.escalation_rate))),
        h('div', { class: 'figure' }, 'Average sentiment', h('strong', {}, o.avg_sentiment === null ? '–' : o.avg_sentiment.toFixed(2))),
        h('div', { class: 'figure' }, 'p95 turn latency', h('strong', {}, o.p95_turn_latency_ms === null ? '–' : `${o.p95_turn_latency_ms} ms`))),
        h('h2', {}, 'Calls per hour'), barChart(o.calls_per_hour.map(b => b.calls), 'Calls per hour'));
    } catch (e) {
      out.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.status === 404
        ? 'Overview statistics are not available on this server (GET /api/v1/stats/overview answered 404).'
        : e.message));
    }
  };
  $main.replaceChildren(h('h1', {}, 'Overview'),
    h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); load(); } }, field('From', from), field('To', to), h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Show'))),
    out);
  await load();
}

// ---- Agents ------------------------------------------------------------------------------
async function agentsPage() {
  const [agents, numbers] = await Promise.all([api('GET', '/api/v1/agents'), api('GET', '/api/v1/numbers')]);
  const editor = h('section', { id: 'agent-editor' });
  const edit = (a) => {
    const v = a || { name: '', system_prompt: '', greeting: '', voice_id: '', language: 'en', escalation_threshold: -0.5, escalation_number: '', phone_numbers: [] };
    const i = {
      name: h('input', { name: 'name', value: v.name, required: true }),
      system_prompt: h('textarea', { name: 'system_prompt' }),
      greeting: h('input', { name: 'greeting', value: v.greeting, required: true }),
      voice_id: h('input', { name: 'voice_id', value: v.voice_id, required: true }),
      language: h('input', { name: 'language', value: v.language }),
      escalation_threshold: h('input', { name: 'escalation_threshold', type: 'number', step: '0.05', min: '-1', max: '1', value: v.escalation_threshold }),
      escalation_number: h('input', { name: 'escalation_number', type: 'tel', value: v.escalation_number || '' }),
    };
    i.system_prompt.value = v.system_prompt;
    const boxes = (numbers.data || []).map(n => {
      const num = String(n);
      const box = h('input', { type: 'checkbox', name: 'phone_numbers', value: num, checked: v.phone_numbers.includes(num) });
      return h('div', {}, box, ' ', h('label', { for: box.id = `num-${num.replace('+', '')}` }, num));
    });
    const error = h('p', { class: 'error', role: 'alert' });
    editor.replaceChildren(h('form', { class: 'panel', onsubmit: async (e) => {
      e.preventDefault();
      const body = {
        name: i.name.value, system_prompt: i.system_prompt.value, greeting: i.greeting.value, voice_id: i.voice_id.value,
        language: i.language.value || 'en', escalation_threshold: Number(i.escalation_threshold.value),
        escalation_number: i.escalation_number.value.trim() || null,
        phone_numbers: [...editor.querySelectorAll('input[name=phone_numbers]:checked')].map(b => b.value),
      };
      try {
        if (a) await api('PUT', `/api/v1/agents/${a.id}`, body); else await api('POST', '/api/v1/agents', body);
        say(a ? 'Agent saved.' : 'Agent created.');
        await agentsPage();
      } catch (err) { error.textContent = err.message; }
    } }, h('h2', {}, a ? `Edit ${a.name}` : 'New agent'),
      field('Name', i.name), field('System prompt', i.system_prompt), field('Greeting', i.greeting), field('Voice', i.voice_id),
      field('Language', i.language), field('Escalation threshold (sentiment)', i.escalation_threshold), field('Escalation number', i.escalation_number),
      h('fieldset', {}, h('legend', {}, 'Phone numbers'), boxes.length ? boxes : h('p', { class: 'muted' }, 'The organization owns no numbers yet.')),
      h('p', {}, h('button', { type: 'submit', class: 'primary' }, a ? 'Save' : 'Create'), ' ', h('button', { type: 'button', onclick: () => editor.replaceChildren() }, 'Cancel')),
      error));
    i.name.focus();
  };
  $main.replaceChildren(h('h1', {}, 'Agents'),
    can('admin') ? h('p', {}, h('button', { type: 'button', id: 'new-agent', class: 'primary', onclick: () => edit(null) }, 'New agent')) : null,
    h('table', { id: 'agents' }, h('thead', {}, h('tr', {}, ['Name', 'Numbers', 'Language', 'Voice', ''].map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, agents.data.map(a => h('tr', { 'data-agent-id': a.id }, h('td', {}, a.name), h('td', {}, a.phone_numbers.join(', ')), h('td', {}, a.language), h('td', {}, a.voice_id),
        h('td', {}, can('admin') ? h('button', { type: 'button', onclick: () => edit(a) }, `Edit ${a.name}`) : null))))),
    editor);
}

// ---- Knowledge ---------------------------------------------------------------------------
async function knowledgePage() {
  const body = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'More');
  let cursor = null;
  const row = (p) => h('tr', { 'data-pattern-id': p.id },
    h('td', {}, p.problem), h('td', {}, p.resolution), h('td', {}, p.confirmed ? 'yes' : 'no'),
    h('td', {}, `${p.success_count}/${p.failure_count}`), h('td', {}, p.similarity === undefined ? '' : p.similarity.toFixed(2)),
    h('td', {}, can('agent') ? h('button', { type: 'button', onclick: () => editPattern(p) }, 'Edit') : null, ' ',
      can('admin') ? h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!confirm('Delete this pattern?')) return;
        try { await api('DELETE', `/api/v1/patterns/${p.id}`); say('Pattern deleted.'); await list(true); } catch (e) { say(e.message, true); }
      } }, 'Delete') : null));
  const list = async (reset) => {
    const q = new URLSearchParams({ limit: '25' });
    if (!reset && cursor) q.set('cursor', cursor);
    const page = await api('GET', `/api/v1/patterns?${q}`);
    if (reset) body.replaceChildren();
    body.append(...page.data.map(row));
    if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No patterns yet.')));
    cursor = page.next_cursor; more.hidden = !cursor;
  };
  more.addEventListener('click', () => list(false).catch(e => say(e.message, true)));
  const editor = h('section');
  const editPattern = (p) => {
    const problem = h('textarea', { name: 'problem' }); problem.value = p.problem;
    const resolution = h('textarea', { name: 'resolution' }); resolution.value = p.resolution;
    editor.replaceChildren(h('form', { class: 'panel', onsubmit: async (e) => {
      e.preventDefault();
      try { await api('PATCH', `/api/v1/patterns/${p.id}`, { problem: problem.value, resolution: resolution.value }); say('Pattern saved.'); editor.replaceChildren(); await list(true); } catch (err) { say(err.message, true); }
    } }, h('h2', {}, 'Edit pattern'), field('Problem', problem), field('Resolution', resolution), h('button', { type: 'submit', class: 'primary' }, 'Save')));
    problem.focus();
  };
  const q = h('input', { type: 'search', name: 'q' });
  const search = h('form', { class: 'filters', role: 'search', onsubmit: async (e) => {
    e.preventDefault();
    if (!q.value.trim()) { await list(true); return; }
    try { const r = await api('GET', `/api/v1/patterns/search?${new URLSearchParams({ q: q.value })}`); body.replaceChildren(...r.data.map(row)); more.hidden = true; } catch (err) { say(err.message, true); }
  } }, field('Search patterns', q), h('div', {}, h('button', { type: 'submit' }, 'Search')));
  const pairs = h('textarea', { name: 'pairs', placeholder: 'One per line: problem | resolution' });
  const importForm = can('agent') ? h('form', { class: 'panel', onsubmit: async (e) => {
    e.preventDefault();
    const list_ = pairs.value.split('\n').map(l => l.split('|')).filter(p => p.length === 2 && p[0].trim() && p[1].trim()).map(([problem, resolution]) => ({ problem: problem.trim(), resolution: resolution.trim() }));
    try { const r = await api('POST', '/api/v1/patterns/import', { pairs: list_ }); say(`Imported: ${r.inserted} new, ${r.reinforced} reinforced.`); pairs.value = ''; await list(true); } catch (err) { say(err.message, true); }
  } }, h('h2', {}, 'Import patterns'), field('Pairs', pairs), h('button', { type: 'submit' }, 'Import')) : null;
  const number = h('input', { type: 'tel', name: 'caller', placeholder: '+15551230000' });
  const memory = h('div', { id: 'memory' });
  const memoryForm = h('form', { class: 'filters', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const m = await api('GET', `/api/v1/callers/${encodeURIComponent(number.value.trim())}/memory`);
      memory.replaceChildren(h('p', {}, m.summary), h('ul', {}, m.facts.map(f => h('li', {}, f))), h('p', { class: 'muted' }, `as of ${fmtTime(m.created_at)}`));
    } catch (err) { memory.replaceChildren(h('p', { class: err.status === 404 ? 'muted' : 'error' }, err.status === 404 ? 'No memory of this caller.' : err.message)); }
  } }, field('Caller number', number), h('div', {}, h('button', { type: 'submit' }, 'Look up')));
  $main.replaceChildren(h('h1', {}, 'Knowledge'), search,
    h('table', { id: 'patterns' }, h('thead', {}, h('tr', {}, ['Problem', 'Resolution', 'Confirmed', 'Worked/failed', 'Similarity', ''].map(t => h('th', { scope: 'col' }, t)))), body),
    h('p', {}, more), editor, importForm,
    h('h2', {}, 'Caller memory'), memoryForm, memory);
  await list(true);
}

// ---- Start -------------------------------------------------------------------------------
(async () => {
  try {
    if (await refresh()) await start(); else showLogin();
  } catch (e) { showLogin(e.message); }
})();
