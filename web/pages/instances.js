// Instances: the table with live status (the server's change events, live.js; polling
// /servers/detail?changes-since only while they are down), the row
// actions, the Launch Instance wizard and the instance detail with its serial console.
import { h, clear, age } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, button, table, dialog, confirm, toast, field, status, guard, tabs } from '../ui.js';
import { launchWizard } from './launch.js';
import { Terminal } from '../term.js';
import * as live from '../live.js';

const POWER = ['NOSTATE', 'RUNNING', '', 'PAUSED', 'SHUTDOWN', '', 'CRASHED', 'SUSPENDED'];
const ANY_UP = ['ACTIVE', 'SHUTOFF', 'PAUSED', 'SUSPENDED', 'ERROR'];

const act = (body) => (s) => api.call('compute', 'POST', `/servers/${s.id}/action`, body);

async function pickFlavor(s) {
  const flavors = (await api.get('compute', '/flavors/detail')).flavors;
  const sel = h('select', null, flavors.map((f) => h('option', { value: f.id }, `${f.name} (${f.vcpus} vCPU, ${f.ram} MB, ${f.disk} GB)`)));
  const v = await dialog(t('Resize'), field(t('Flavor'), sel), [{ label: t('Cancel') }, { label: t('Resize'), value: sel.value, primary: true }]);
  if (v) await act({ resize: { flavorRef: sel.value } })(s);
  return !!v;
}

async function pickImage(s) {
  const images = (await api.get('image', '/v2/images?limit=200')).images;
  const sel = h('select', null, images.map((i) => h('option', { value: i.id }, i.name || i.id)));
  const v = await dialog(t('Rebuild'), field(t('Image'), sel), [{ label: t('Cancel') }, { label: t('Rebuild'), value: 1, danger: true }]);
  if (v) await act({ rebuild: { imageRef: sel.value } })(s);
  return !!v;
}

async function ask(title, label, initial, run) {
  const input = h('input', { value: initial || '', maxlength: 255 });
  const v = await dialog(title, field(label, input), [{ label: t('Cancel') }, { label: t('Confirm'), value: 1, primary: true }]);
  if (v && input.value.trim()) { await run(input.value.trim()); return true; }
  return false;
}

/** Every Nova action, shown when the server's state allows it. `ask` actions have their own dialog. */
export const ACTIONS = [
  { id: 'start', label: 'Start', when: (s) => s.status === 'SHUTOFF', run: act({ 'os-start': null }) },
  { id: 'stop', label: 'Stop', when: (s) => ['ACTIVE', 'ERROR'].includes(s.status), run: act({ 'os-stop': null }) },
  { id: 'reboot', label: 'Reboot', when: (s) => s.status === 'ACTIVE', run: act({ reboot: { type: 'SOFT' } }) },
  { id: 'hard-reboot', label: 'Hard reboot', when: (s) => ANY_UP.includes(s.status), run: act({ reboot: { type: 'HARD' } }) },
  { id: 'pause', label: 'Pause', when: (s) => s.status === 'ACTIVE', run: act({ pause: null }) },
  { id: 'unpause', label: 'Unpause', when: (s) => s.status === 'PAUSED', run: act({ unpause: null }) },
  { id: 'suspend', label: 'Suspend', when: (s) => s.status === 'ACTIVE', run: act({ suspend: null }) },
  { id: 'resume', label: 'Resume', when: (s) => s.status === 'SUSPENDED', run: act({ resume: null }) },
  { id: 'lock', label: 'Lock', when: (s) => !s.locked, run: act({ lock: null }) },
  { id: 'unlock', label: 'Unlock', when: (s) => s.locked, run: act({ unlock: null }) },
  { id: 'rescue', label: 'Rescue', when: (s) => ['ACTIVE', 'SHUTOFF', 'ERROR'].includes(s.status), run: act({ rescue: null }) },
  { id: 'unrescue', label: 'Unrescue', when: (s) => s.status === 'RESCUE', run: act({ unrescue: null }) },
  { id: 'shelve', label: 'Shelve', when: (s) => ['ACTIVE', 'SHUTOFF', 'PAUSED', 'SUSPENDED'].includes(s.status), run: act({ shelve: null }) },
  { id: 'shelve-offload', label: 'Shelve offload', when: (s) => s.status === 'SHELVED', run: act({ shelveOffload: null }) },
  { id: 'unshelve', label: 'Unshelve', when: (s) => ['SHELVED', 'SHELVED_OFFLOADED'].includes(s.status), run: act({ unshelve: null }) },
  { id: 'resize', label: 'Resize', when: (s) => ['ACTIVE', 'SHUTOFF'].includes(s.status), ask: pickFlavor },
  { id: 'confirm-resize', label: 'Confirm resize', when: (s) => s.status === 'VERIFY_RESIZE', run: act({ confirmResize: null }) },
  { id: 'revert-resize', label: 'Revert resize', when: (s) => s.status === 'VERIFY_RESIZE', run: act({ revertResize: null }) },
  { id: 'rebuild', label: 'Rebuild', when: (s) => ['ACTIVE', 'SHUTOFF', 'ERROR'].includes(s.status), ask: pickImage },
  { id: 'snapshot', label: 'Create snapshot', when: (s) => ['ACTIVE', 'SHUTOFF', 'PAUSED', 'SUSPENDED'].includes(s.status),
    ask: (s) => ask(t('Create snapshot'), t('Snapshot name'), `${s.name}-snapshot`, (name) => act({ createImage: { name } })(s)) },
  { id: 'rename', label: 'Rename', when: () => true,
    ask: (s) => ask(t('Rename'), t('New name'), s.name, (name) => api.call('compute', 'PUT', `/servers/${s.id}`, { server: { name } })) },
  { id: 'restore', label: 'Restore', when: (s) => s.status === 'SOFT_DELETED', run: act({ restore: null }) },
  { id: 'force-delete', label: 'Force delete', when: (s) => s.status === 'SOFT_DELETED', run: act({ forceDelete: null }), danger: true },
  { id: 'delete', label: 'Delete', when: (s) => s.status !== 'SOFT_DELETED', run: (s) => api.call('compute', 'DELETE', `/servers/${s.id}`), danger: true },
];

/** Runs an action after a confirmation; `after` refreshes the view. */
async function runAction(a, s, after) {
  await guard(async () => {
    let done;
    if (a.ask) done = await a.ask(s);
    else if (await confirm(`${t(a.label)}: ${s.name}`, t(a.label), a.danger)) { await a.run(s); done = true; }
    if (done) { toast(`${t(a.label)}: ${s.name}`); after(); }
  });
}

export function actionMenu(s, after) {
  // The items are made when the menu first opens: a table of 1,000 servers stays light.
  const items = h('div', { class: 'menu-items' });
  const menu = h('details', { class: 'menu' }, h('summary', { 'aria-label': `${t('Actions')}: ${s.name}` }, t('Actions')), items);
  menu.addEventListener('toggle', () => {
    if (!menu.open || items.firstChild) return;
    items.append(...ACTIONS.filter((a) => a.when(s)).map((a) => h('button', { type: 'button', class: a.danger ? 'danger' : '', 'data-action': a.id,
      onclick: () => { menu.open = false; runAction(a, s, after); } }, t(a.label))));
  });
  return menu;
}

function addresses(s) {
  return Object.entries(s.addresses || {}).map(([net, list]) => `${net}: ${list.map((a) => a.addr).join(', ')}`).join('; ');
}

// Image names by id, kept a minute per token: the table's image column and the detail
// page ask once, not on every visit.
let imageCache = { token: null, at: 0, names: null };

async function imageNames(into = new Map()) {
  const token = api.current()?.id;
  if (imageCache.token !== token || Date.now() - imageCache.at > 60000) {
    const names = new Map();
    try {
      for (const i of (await api.get('image', '/v2/images?limit=1000')).images) names.set(i.id, i.name || i.id);
      imageCache = { token, at: Date.now(), names };
    } catch (e) {
      if (api.aborted(e)) throw e;
      return into; // names are a nicety
    }
  }
  for (const [k, v] of imageCache.names) into.set(k, v);
  return into;
}

export function serverColumns(names, after, extra = []) {
  return [
    { title: t('Name'), get: (s) => h('a', { href: `#/instances/${s.id}`, class: 'name' }, s.name), text: (s) => s.name },
    ...extra,
    { title: t('Image'), get: (s) => (s.image && s.image.id ? names.get(s.image.id) || s.image.id : '') },
    { title: t('Addresses'), get: addresses },
    { title: t('Flavor'), get: (s) => s.flavor?.original_name || s.flavor?.id || '' },
    { title: t('Key pair'), get: (s) => s.key_name || '' },
    { title: t('Status'), get: (s) => status(s.status), text: (s) => `${s.status} ${t(s.status || '')}` },
    { title: t('Task'), get: (s) => s['OS-EXT-STS:task_state'] || '' },
    { title: t('Power state'), get: (s) => POWER[s['OS-EXT-STS:power_state']] || '' },
    { title: t('Age'), get: (s) => age(s.created) },
    { title: t('Actions'), get: (s) => actionMenu(s, after), text: () => '' },
  ];
}

const newestFirst = (a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0);

/**
 * The server list, kept current. The first look fetches a small page (on screen at once),
 * then the rest in pages of 1,000 (limit/marker; at most 10,000 servers). After that it
 * follows the server's change events (live.js): each changed server's row is fetched
 * again (a 404: gone), a burst of more than BURST refetches the list. Only while the
 * stream is down does it poll the servers changed since the last look (deleted ones
 * included), every PERIOD ms, backing off to 30 s while nothing changes (and not at all
 * in a hidden tab). onChange(servers, more): the list, newest first; MORE while pages are
 * still coming. One request at a time: refresh() during a request asks again after it,
 * so no older answer lands after a newer one. stop() aborts the request in flight.
 */
export function liveServers(query, onChange, period = 3000, { first = 50 } = {}) {
  const servers = new Map();
  const PAGE = 1000, MAX = 10000, BURST = 100, SLOWEST = 30000;
  const sep = query ? '&' : '?';
  const allProjects = /all_tenants/.test(query);
  let since = null, timer = null, stopped = false, running = false, again = false, wait = period, relist = false;
  const dirty = new Set();
  const ctl = new AbortController();
  const list = (q) => api.get('compute', `/servers/detail${query}${sep}${q}`, { signal: ctl.signal });
  const emit = (more) => onChange([...servers.values()].sort(newestFirst), more);
  const mine = (s) => allProjects || s.tenant_id === api.current()?.project?.id;
  const firstLook = async () => {
    let limit = first, marker = null;
    const fresh = new Map();
    for (;;) {
      performance.mark('yunhe:servers-request');
      const r = await list(`limit=${limit}${marker ? `&marker=${encodeURIComponent(marker)}` : ''}`);
      performance.measure(`yunhe:servers limit=${limit}`, 'yunhe:servers-request');
      for (const s of r.servers) { fresh.set(s.id, s); servers.set(s.id, s); }
      const more = r.servers.length === limit && fresh.size < MAX && (r.servers_links || []).some((l) => l.rel === 'next');
      if (!more) for (const id of [...servers.keys()]) if (!fresh.has(id)) servers.delete(id);
      emit(more);
      if (!more) return;
      marker = r.servers[r.servers.length - 1].id;
      limit = PAGE;
    }
  };
  // The rows the stream named, fetched again, six at a time.
  const refetchRows = async () => {
    const ids = [...dirty];
    dirty.clear();
    let changed = false;
    for (let i = 0; i < ids.length; i += 6) {
      await Promise.all(ids.slice(i, i + 6).map(async (id) => {
        try {
          const s = (await api.get('compute', `/servers/${id}`, { signal: ctl.signal })).server;
          if (s.status === 'DELETED' || !mine(s)) changed = servers.delete(id) || changed;
          else { servers.set(id, s); changed = true; }
        } catch (e) {
          if (e.status === 404) changed = servers.delete(id) || changed;
          else throw e;
        }
      }));
    }
    return changed;
  };
  const tick = async () => {
    if (stopped) return;
    if (running) { again = true; return; }
    running = true;
    clearTimeout(timer);
    const started = new Date(Date.now() - 2000).toISOString().replace(/\.\d+Z$/, 'Z');
    let changed = false;
    try {
      if (!since || relist) {
        relist = false;
        dirty.clear();
        await firstLook();
        since = started;
      } else if (live.isUp()) {
        if (dirty.size) changed = await refetchRows();
        if (changed) emit(false);
      } else if (!document.hidden) {
        const list2 = (await list(`changes-since=${encodeURIComponent(since)}`)).servers;
        for (const s of list2) {
          if (s.status === 'DELETED') servers.delete(s.id);
          else servers.set(s.id, s);
        }
        changed = list2.length > 0;
        if (changed) emit(false);
        since = started;
      }
    } catch (e) {
      if (e.status === 401 || api.aborted(e)) { running = false; return; }
    }
    running = false;
    if (stopped) return;
    if (again) { again = false; tick(); return; }
    schedule(changed);
  };
  // Polls only while the stream is down, backing off while nothing changes.
  const schedule = (changed) => {
    clearTimeout(timer);
    if (stopped || live.isUp()) return;
    wait = changed ? period : Math.min(SLOWEST, Math.round(wait * 1.5));
    timer = setTimeout(tick, wait);
  };
  const unwatch = live.watch(['server'], (events) => {
    for (const e of events) {
      if (e.reset) relist = true;
      else if (allProjects || e.project_id === api.current()?.project?.id) dirty.add(e.id);
    }
    if (dirty.size > BURST) relist = true;
    if (relist || dirty.size) tick();
  });
  // The stream went down: poll from the last look (at once); back up: stop polling.
  const unstatus = live.onStatus((up) => {
    if (!since) return;
    if (up) clearTimeout(timer);
    else { wait = period; tick(); }
  });
  tick();
  return {
    stop() { stopped = true; clearTimeout(timer); unwatch(); unstatus(); ctl.abort(); },
    refresh() { if (live.isUp()) relist = true; tick(); },
  };
}

async function list(main) {
  performance.mark('yunhe:instances');
  let feed;
  const names = new Map();
  const namesReady = imageNames(names).catch(() => names);
  const tbl = table(serverColumns(names, () => feed.refresh()), [], { key: (s) => s.id, pending: true });
  tbl.el.id = 'instances';
  main.append(header(t('Instances'),
    button(t('Launch Instance'), () => launchWizard({ done: () => feed.refresh() }), 'primary launch')), tbl.el);
  let shown = false;
  feed = liveServers('', async (servers, more) => {
    await namesReady;
    tbl.update(servers);
    // Milliseconds since navigation start: the first rows on screen (ready), every
    // server's row in the table (loaded). tests/browser reads them.
    if (!shown) { shown = true; main.dataset.ready = String(Math.round(performance.now())); performance.measure('yunhe:first rows', 'yunhe:instances'); }
    if (!more && !main.dataset.loaded) { main.dataset.loaded = String(Math.round(performance.now())); performance.measure('yunhe:all rows', 'yunhe:instances'); }
  });
  return () => feed.stop();
}

function overview(s, names) {
  const rows = [
    [t('Name'), s.name], [t('ID'), s.id], [t('Status'), s.status], [t('Task'), s['OS-EXT-STS:task_state'] || ''],
    [t('Power state'), POWER[s['OS-EXT-STS:power_state']] || ''], [t('Image'), names.get(s.image?.id) || s.image?.id || ''],
    [t('Flavor'), s.flavor?.original_name || ''], [t('Key pair'), s.key_name || ''], [t('Addresses'), addresses(s)],
    [t('Created'), s.created], [t('Description'), s.description || ''],
  ];
  return h('div', null, h('dl', { class: 'props' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
    h('h3', null, t('Metadata')), h('dl', { class: 'props', id: 'metadata' }, Object.entries(s.metadata || {}).map(([k, v]) => [h('dt', null, k), h('dd', null, v)])));
}

function consoleLog(el, id) {
  const pre = h('pre', { class: 'log', id: 'console-log' });
  el.append(pre);
  let timer;
  let stopped = false;
  const ctl = new AbortController();
  const load = async () => {
    try {
      // A read, though a POST: aborted when the tab or the page is left.
      const r = await api.call('compute', 'POST', `/servers/${id}/action`, { 'os-getConsoleOutput': { length: 200 } }, {}, { signal: ctl.signal });
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = r.output;
      if (stick) pre.scrollTop = pre.scrollHeight;
    } catch (e) { if (api.aborted(e)) return; pre.textContent = e.message; }
    // Stopped while the request was out: no next one.
    if (!stopped) timer = setTimeout(load, 3000);
  };
  load();
  return () => { stopped = true; clearTimeout(timer); ctl.abort(); };
}

function actionLog(el, id) {
  guard(async () => {
    const r = await api.get('compute', `/servers/${id}/os-instance-actions`);
    el.append(table([
      { title: t('Actions'), get: (a) => a.action }, { title: t('Request'), get: (a) => a.request_id },
      { title: t('Time'), get: (a) => a.start_time }, { title: t('Status'), get: (a) => a.message || '' },
    ], r.instanceActions, { filter: false }).el);
  });
}

function interfaces(el, s) {
  el.append(table([{ title: t('Network'), get: (r) => r[0] }, { title: t('Addresses'), get: (r) => r[1].map((a) => a.addr).join(', ') }],
    Object.entries(s.addresses || {}), { filter: false }).el);
}

/** The serial console: Nova hands out a one-time websocket URL; bytes flow both ways. */
function serialConsole(el, id) {
  const term = new Terminal(t('Console'));
  const state = h('span', { class: 'conn', id: 'console-state' }, t('Disconnected'));
  el.append(h('p', null, state, ' · ', h('small', null, t('Type here; keys go to the guest.'))), term.el);
  let ws = null, closed = false;
  (async () => {
    try {
      const r = await api.call('compute', 'POST', `/servers/${id}/remote-consoles`, { remote_console: { protocol: 'serial', type: 'serial' } });
      if (closed) return;
      ws = new WebSocket(r.remote_console.url, ['binary']);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => { state.textContent = t('Connected'); state.dataset.connected = '1'; term.el.focus(); ws.send(new TextEncoder().encode('\r')); };
      ws.onmessage = (m) => term.write(typeof m.data === 'string' ? m.data : new Uint8Array(m.data));
      ws.onclose = () => { state.textContent = t('Disconnected'); delete state.dataset.connected; };
      term.onData = (s) => { if (ws.readyState === 1) ws.send(new TextEncoder().encode(s)); };
    } catch (e) { state.textContent = e.message; }
  })();
  return () => { closed = true; if (ws) ws.close(); };
}

async function detail(main, id) {
  const names = await imageNames();
  let s = (await api.get('compute', `/servers/${id}`)).server;
  const title = h('h1', { id: 'page-title' }, s.name);
  const st = h('span', { id: 'server-status' }, status(s.status));
  const menuBox = h('span');
  // The menu is made again only when what it depends on changed: an open menu stays open.
  const menuKey = (x) => [x.name, x.status, x['OS-EXT-STS:task_state'], x.locked].join('|');
  let shown = menuKey(s);
  const refresh = async () => {
    try { s = (await api.get('compute', `/servers/${id}`)).server; } catch (e) { if (e.status === 404) { location.hash = '#/instances'; } return; }
    if (menuKey(s) === shown) return;
    shown = menuKey(s);
    title.textContent = s.name;
    clear(st).append(status(s.status));
    clear(menuBox).append(actionMenu(s, refresh));
  };
  menuBox.append(actionMenu(s, refresh));
  // Its change events refetch it; only while the stream is down, a look every 3 s.
  const unwatch = live.watch(['server'], (events) => { if (events.some((e) => e.reset || e.id === id)) refresh(); });
  let timer = null;
  const poll = () => {
    clearTimeout(timer);
    if (!live.isUp()) timer = setTimeout(async () => { if (!document.hidden) await refresh(); poll(); }, 3000);
  };
  const unstatus = live.onStatus(poll);  // its GETs are aborted with the page
  const tb = tabs([
    { id: 'overview', label: t('Overview'), render: (el) => { el.append(overview(s, names)); } },
    { id: 'interfaces', label: t('Interfaces'), render: (el) => interfaces(el, s) },
    { id: 'log', label: t('Console log'), render: (el) => consoleLog(el, id) },
    { id: 'console', label: t('Console'), render: (el) => serialConsole(el, id) },
    { id: 'actions', label: t('Action log'), render: (el) => actionLog(el, id) },
  ]);
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/instances' }, t('Instances')), ' / '),
    h('div', { class: 'page-head' }, title, h('div', { class: 'actions' }, st, menuBox)), tb);
  return () => { unwatch(); unstatus(); clearTimeout(timer); tb.stop(); };
}

export async function render(main, { rest }) {
  return rest ? detail(main, rest) : list(main);
}
