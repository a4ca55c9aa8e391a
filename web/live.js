// Live updates: one stream per tab of the server's change events (GET /dashboard/events,
// text/event-stream), read with fetch() so the token travels in X-Auth-Token and never in
// a URL (EventSource cannot send headers). Events carry ids only; pages refetch what
// changed through the normal API. While the stream is down, pages fall back to polling
// (isUp() false); it reconnects with backoff and resumes with Last-Event-ID. It stops on
// sign-out, on token expiry and when the tab has been hidden for a while.
import * as api from './api.js';

const PATH = '/dashboard/events';
const HIDDEN_MS = 60000;       // a tab hidden this long lets its stream go
const MAX_BACKOFF_MS = 30000;
const MAX_FRAME = 65536;       // a frame longer than this is no frame of ours

const watchers = new Set();    // { kinds: Set, fn(events), pending: [], timer }
const statusFns = new Set();
let ctl = null, up = false, lastId = null, token = null, retries = 0, retryTimer = null, hiddenTimer = null;

function setUp(v) {
  if (up === v) return;
  up = v;
  document.documentElement.dataset.live = v ? 'up' : 'down';
  for (const fn of statusFns) { try { fn(v); } catch { /* a page's problem */ } }
}

/** Whether the stream is up (pages poll only while it is not). */
export function isUp() { return up; }

/** Calls FN(up) now and whenever the stream goes up or down; returns the unsubscribe. */
export function onStatus(fn) {
  statusFns.add(fn);
  fn(up);
  return () => statusFns.delete(fn);
}

/**
 * Calls FN(events) for events of KINDS ('server', 'image', 'volume', 'network'),
 * coalesced over DELAY ms; an event {kind: '*', reset: true} means events were lost and
 * the page should refetch all it shows. Returns the unsubscribe.
 */
export function watch(kinds, fn, delay = 100) {
  const w = { kinds: new Set(kinds), fn, delay, pending: [], timer: null };
  watchers.add(w);
  return () => { clearTimeout(w.timer); watchers.delete(w); };
}

function deliver(e) {
  for (const w of watchers) {
    if (e.kind !== '*' && !w.kinds.has(e.kind)) continue;
    w.pending.push(e);
    if (!w.timer) {
      w.timer = setTimeout(() => {
        const batch = w.pending;
        w.pending = [];
        w.timer = null;
        if (watchers.has(w)) { try { w.fn(batch); } catch { /* a page's problem */ } }
      }, w.delay);
    }
  }
}

function handle(frame) {
  let event = 'message', data = '', id = null;
  for (const line of frame.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const k = i < 0 ? line : line.slice(0, i);
    const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (k === 'event') event = v; else if (k === 'data') data += v; else if (k === 'id') id = v;
  }
  let body = {};
  try { body = data ? JSON.parse(data) : {}; } catch { return; }
  if (id && /^\d+$/.test(id)) lastId = id;
  if (event === 'hello') {
    retries = 0;
    if (!lastId) lastId = String(body.seq);
    setUp(true);
  } else if (event === 'change') {
    deliver(body);
  } else if (event === 'reset') {
    deliver({ kind: '*', reset: true });
  } else if (event === 'expired') {
    stop();
    api.expire();
  }
}

async function connect() {
  const s = api.current();
  if (!s || ctl || document.hidden || sessionStorage.getItem('yunhe.live') === 'off') return;
  clearTimeout(retryTimer);
  if (token !== s.id) { token = s.id; lastId = null; }
  const mine = new AbortController();
  ctl = mine;
  const headers = { 'X-Auth-Token': s.id, Accept: 'text/event-stream' };
  if (lastId) headers['Last-Event-ID'] = lastId;
  try {
    const r = await fetch(PATH, { headers, signal: mine.signal, cache: 'no-store' });
    if (r.status === 401) { ctl = null; setUp(false); api.expire(); return; }
    if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, '\n');
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        handle(frame);
      }
      if (buf.length > MAX_FRAME) break;
    }
  } catch { /* down: below */ }
  if (ctl !== mine) return;          // stopped (sign-out, hidden tab): no retry
  ctl = null;
  setUp(false);
  // Backoff: 1, 2, 4 … 30 s, with jitter, so a restarted server is not hit by every tab at once.
  const wait = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** retries++) * (0.75 + Math.random() / 2);
  retryTimer = setTimeout(connect, wait);
}

/** Ends the stream (and any retry); start() opens it again. */
export function stop() {
  clearTimeout(retryTimer);
  if (ctl) { const c = ctl; ctl = null; c.abort(); }
  setUp(false);
}

/** Opens the stream when signed in (once; later calls do nothing while it is open). */
export function start() { retries = 0; connect(); }

api.onSession((s) => {
  if (!s) { stop(); token = null; lastId = null; return; }
  if (token && token !== s.id) { stop(); }  // another token (project switch): another audience
  start();
});

document.addEventListener('visibilitychange', () => {
  clearTimeout(hiddenTimer);
  if (document.hidden) hiddenTimer = setTimeout(stop, HIDDEN_MS);
  else if (!ctl) start();
});

document.documentElement.dataset.live = 'down';
if (api.current()) start();
