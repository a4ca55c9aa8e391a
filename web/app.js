// The shell: sign-in, navigation, project switcher, language, dark mode, keyboard, and
// the hash router that loads each page's module on first use.
import { h, clear } from './dom.js';
import { t, languages, language, setLanguage } from './i18n.js';
import * as api from './api.js';
import './live.js';
import { toast } from './ui.js';

/**
 * Every page. `service` hides a page until the catalog has that service type (the
 * network and volume pages join this list when their APIs land); `admin` pages are
 * shown to, and opened for, admins only (the APIs refuse members anyway).
 */
export const PAGES = [
  { path: 'overview', group: 'Compute', title: 'Overview', service: 'compute', key: 'o', load: () => import('./pages/overview.js') },
  { path: 'instances', group: 'Compute', title: 'Instances', service: 'compute', key: 'i', load: () => import('./pages/instances.js') },
  { path: 'images', group: 'Compute', title: 'Images', service: 'image', key: 'm', load: () => import('./pages/images.js') },
  { path: 'keypairs', group: 'Compute', title: 'Key Pairs', service: 'compute', key: 'k', load: () => import('./pages/keypairs.js') },
  { path: 'server-groups', group: 'Compute', title: 'Server Groups', service: 'compute', key: 's', load: () => import('./pages/servergroups.js') },
  { path: 'api-access', group: 'Compute', title: 'API Access', key: 'a', load: () => import('./pages/apiaccess.js') },
  { path: 'network/topology', group: 'Network', title: 'Network Topology', service: 'network', key: 't', load: () => import('./pages/network.js') },
  { path: 'network/networks', group: 'Network', title: 'Networks', service: 'network', key: 'n', load: () => import('./pages/network.js') },
  { path: 'network/ports', group: 'Network', title: 'Ports', service: 'network', load: () => import('./pages/network.js') },
  { path: 'network/routers', group: 'Network', title: 'Routers', service: 'network', key: 'r', load: () => import('./pages/network.js') },
  { path: 'network/security-groups', group: 'Network', title: 'Security Groups', service: 'network', load: () => import('./pages/network.js') },
  { path: 'network/floating-ips', group: 'Network', title: 'Floating IPs', service: 'network', key: 'f', load: () => import('./pages/network.js') },
  { path: 'volumes', group: 'Volumes', title: 'Volumes', service: 'block-storage', key: 'v', load: () => import('./pages/volumes.js') },
  { path: 'volumes/snapshots', group: 'Volumes', title: 'Volume Snapshots', service: 'block-storage', load: () => import('./pages/volumes.js') },
  { path: 'admin/hypervisors', group: 'Admin', title: 'Hypervisors', service: 'compute', admin: true, load: () => import('./pages/admin.js') },
  { path: 'admin/instances', group: 'Admin', title: 'All Instances', service: 'compute', admin: true, load: () => import('./pages/admin.js') },
  { path: 'admin/flavors', group: 'Admin', title: 'Flavors', service: 'compute', admin: true, load: () => import('./pages/admin.js') },
  { path: 'admin/images', group: 'Admin', title: 'All Images', service: 'image', admin: true, load: () => import('./pages/admin.js') },
  { path: 'admin/volume-types', group: 'Admin', title: 'Volume Types', service: 'block-storage', admin: true, load: () => import('./pages/volumes.js') },
  { path: 'admin/defaults', group: 'Admin', title: 'Defaults', service: 'compute', admin: true, load: () => import('./pages/admin.js') },
  { path: 'admin/system', group: 'Admin', title: 'System Information', admin: true, load: () => import('./pages/admin.js') },
  { path: 'identity/projects', group: 'Identity', title: 'Projects', admin: true, load: () => import('./pages/identity.js') },
  { path: 'identity/users', group: 'Identity', title: 'Users', admin: true, load: () => import('./pages/identity.js') },
  { path: 'identity/groups', group: 'Identity', title: 'Groups', admin: true, load: () => import('./pages/identity.js') },
  { path: 'identity/roles', group: 'Identity', title: 'Roles', admin: true, load: () => import('./pages/identity.js') },
  { path: 'identity/role-assignments', group: 'Identity', title: 'Role Assignments', admin: true, load: () => import('./pages/identity.js') },
  // Every user's own: a member sees this one page of the Identity group.
  { path: 'identity/application-credentials', group: 'Identity', title: 'Application Credentials', load: () => import('./pages/identity.js') },
];

const root = document.getElementById('app');
let stopPage = null;
// The page shown: its number (a newer render makes an older one's late results void) and
// the controller whose abort() cancels its outstanding GET requests when it is left.
let shownPage = 0;
let pageCtl = null;
let expiryTimer = null;

function visible(p) { return (!p.admin || api.isAdmin()) && (!p.service || api.has(p.service)); }

function route() {
  const path = location.hash.replace(/^#\/?/, '') || 'overview';
  let page = null, rest = '';
  for (const p of PAGES) {
    if (path === p.path || path.startsWith(p.path + '/')) {
      if (!page || p.path.length > page.path.length) { page = p; rest = path.slice(p.path.length + 1); }
    }
  }
  return { page: page || PAGES[0], rest };
}

function themeToggle() {
  const dark = document.documentElement.dataset.theme === 'dark';
  const b = h('button', { type: 'button', class: 'icon', 'aria-pressed': String(dark), title: t('Dark mode'), 'aria-label': t('Dark mode'),
    onclick: () => {
      const d = document.documentElement.dataset.theme !== 'dark';
      document.documentElement.dataset.theme = d ? 'dark' : 'light';
      localStorage.setItem('yunhe.theme', d ? 'dark' : 'light');
      b.setAttribute('aria-pressed', String(d));
    } }, '◐');
  return b;
}

function languageSelect() {
  const sel = h('select', { 'aria-label': t('Language'), id: 'lang', onchange: () => { setLanguage(sel.value); render(); } },
    Object.entries(languages()).map(([k, v]) => h('option', { value: k, selected: k === language() }, v)));
  return sel;
}

function signInView(message) {
  const domain = h('input', { name: 'domain', value: 'Default', autocomplete: 'organization', required: true });
  const user = h('input', { name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const err = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'signin', onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = '';
    form.querySelector('button').disabled = true;
    try {
      await api.signIn(domain.value.trim(), user.value.trim(), pass.value);
      pass.value = '';
    } catch (x) {
      err.textContent = x.status === 401 ? t('Sign in') + ': ' + x.message : x.message;
      form.querySelector('button').disabled = false;
    }
  } },
  h('h1', null, 'yunhe 云盒'),
  h('label', null, t('Domain'), domain), h('label', null, t('User name'), user), h('label', null, t('Password'), pass),
  err, h('button', { type: 'submit', class: 'primary' }, t('Sign in')),
  h('div', { class: 'signin-tools' }, languageSelect(), themeToggle()));
  clear(root).append(h('main', { id: 'main', class: 'signin-page' }, form));
  // After an expiry: the same user again, back on the page they were on (the address is kept).
  const last = message && api.lastUser();
  if (last) {
    domain.value = last.domain;
    user.value = last.name;
    form.id = 'session-expired';
    pass.focus();
  } else {
    user.focus();
  }
}

// The user's projects, asked for once per token (not again on every page).
let projects = { token: null, list: null };

async function projectSwitcher() {
  const s = api.current();
  const sel = h('select', { id: 'project', 'aria-label': t('Project') }, h('option', { value: s.project?.id || '' }, s.project?.name || '—'));
  try {
    if (projects.token !== s.id) {
      const r = await fetch('/identity/v3/auth/projects', { headers: { 'X-Auth-Token': s.id } });
      if (r.ok) projects = { token: s.id, list: (await r.json()).projects || [] };
    }
    if (projects.token === s.id) {
      clear(sel).append(...projects.list.map((p) => h('option', { value: p.id, selected: p.id === s.project?.id }, p.name)));
    }
  } catch { /* keep the current one */ }
  sel.addEventListener('change', async () => {
    try { await api.switchProject(sel.value); toast(t('Project') + ': ' + sel.selectedOptions[0].textContent); } catch (e) { toast(e.message, 'error'); }
  });
  return sel;
}

function nav(active) {
  const groups = new Map();
  for (const p of PAGES.filter(visible)) {
    if (!groups.has(p.group)) groups.set(p.group, []);
    groups.get(p.group).push(p);
  }
  return h('nav', { id: 'nav', 'aria-label': t('Navigation') },
    [...groups].map(([g, ps]) => h('div', { class: 'nav-group' }, h('h2', null, t(g)),
      h('ul', null, ps.map((p) => h('li', null, h('a', { href: `#/${p.path}`, 'aria-current': p === active ? 'page' : null, 'data-page': p.path }, t(p.title))))))));
}

/** Leaves the page shown: its polling stops and its outstanding requests are aborted. */
function leave() {
  shownPage++;
  if (stopPage) { stopPage(); stopPage = null; }
  if (pageCtl) pageCtl.abort();
  pageCtl = new AbortController();
  api.pageScope(pageCtl.signal);
  return { my: shownPage, signal: pageCtl.signal };
}

async function render() {
  performance.mark('yunhe:nav');
  const { my, signal } = leave();
  const s = api.current();
  if (!s) return signInView();
  if (Date.parse(s.expires) <= Date.now()) { api.expire(); return; }
  const { page, rest } = route();
  const main = h('main', { id: 'main', tabindex: '-1' });
  const menu = h('button', { type: 'button', class: 'icon menu-btn', 'aria-label': t('Menu'), 'aria-expanded': 'false',
    onclick: () => { const open = document.body.classList.toggle('nav-open'); menu.setAttribute('aria-expanded', String(open)); } }, '☰');
  const switcher = await projectSwitcher();
  if (my !== shownPage) return;
  const top = h('header', { class: 'top' }, h('a', { class: 'skip', href: '#main', onclick: (e) => { e.preventDefault(); main.focus(); } }, t('Skip to content')),
    menu, h('a', { class: 'brand', href: '#/overview' }, 'yunhe 云盒'), h('span', { class: 'grow' }),
    switcher, languageSelect(), themeToggle(),
    h('span', { class: 'who', title: t('Signed in as {user}', { user: s.user.name }) }, s.user.name),
    h('button', { type: 'button', id: 'signout', onclick: async () => { await api.signOut(); } }, t('Sign out')));
  clear(root).append(top, h('div', { id: 'banner', role: 'status' }), h('div', { class: 'body' }, nav(page), main));
  document.body.classList.remove('nav-open');
  document.title = `${t(page.title)} · yunhe`;
  if (page.admin && !api.isAdmin()) {
    main.append(h('h1', null, t('Not authorized')), h('p', { id: 'refused' }, t('This page is for administrators.')));
    return;
  }
  main.append(h('p', { class: 'loading' }, t('Loading…')));
  try {
    const mod = await page.load();
    if (my !== shownPage) return;
    clear(main);
    performance.mark('yunhe:page');
    const stop = (await mod.render(main, { page, rest, signal })) || null;
    // Left while it rendered: what it started stops now.
    if (my !== shownPage) { if (stop) stop(); return; }
    stopPage = stop;
  } catch (e) {
    if (my !== shownPage || api.aborted(e)) return;
    clear(main).append(h('h1', null, t('Error')), h('p', { class: 'error' }, e.message));
  }
  checkExpiry();
}

/** Five minutes before the token expires: a banner; at expiry: the sign-in form. */
function checkExpiry() {
  clearTimeout(expiryTimer);
  const s = api.current();
  if (!s) return;
  const left = Date.parse(s.expires) - Date.now();
  if (left <= 0) { api.expire(); return; }
  const banner = document.getElementById('banner');
  if (banner && left < 5 * 60 * 1000) {
    clear(banner).append(h('span', null, t('Your session expires in {min} min.', { min: Math.ceil(left / 60000) })),
      h('button', { type: 'button', onclick: async () => { await api.signOut(); } }, t('Sign in again')));
    banner.classList.add('show');
  }
  expiryTimer = setTimeout(checkExpiry, Math.min(30000, Math.max(1000, left - 5 * 60 * 1000)));
}

api.onSession((s, reason) => {
  if (!s) {
    leave();
    // A dialog open when the session ended (its request got the 401) goes, unanswered.
    for (const dlg of document.querySelectorAll('dialog')) { dlg.dispatchEvent(new Event('cancel')); dlg.close(); }
    signInView(reason === 'expired' ? t('Your session has expired. Sign in again.') : '');
    return;
  }
  render();
});

// Keyboard: "/" focuses the filter, "g" then a page's key opens it, "?" lists the keys.
let pendingG = false;
document.addEventListener('keydown', (e) => {
  const tag = (e.target.tagName || '').toLowerCase();
  if (['input', 'textarea', 'select'].includes(tag) || e.target.isContentEditable || e.target.closest?.('.term') || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === '/') { const f = document.querySelector('[data-filter]'); if (f) { e.preventDefault(); f.focus(); } return; }
  if (e.key === '?') { shortcuts(); return; }
  if (pendingG) {
    pendingG = false;
    const p = PAGES.find((x) => x.key === e.key && visible(x));
    if (p) location.hash = `#/${p.path}`;
    return;
  }
  if (e.key === 'g') pendingG = true;
});

async function shortcuts() {
  const { dialog } = await import('./ui.js');
  dialog(t('Keyboard shortcuts'), h('dl', { class: 'keys' },
    h('dt', null, '/'), h('dd', null, t('Filter')), h('dt', null, '?'), h('dd', null, t('Keyboard shortcuts')),
    PAGES.filter((p) => p.key && visible(p)).map((p) => [h('dt', null, `g ${p.key}`), h('dd', null, t(p.title))])));
}

const theme = localStorage.getItem('yunhe.theme') || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
document.documentElement.dataset.theme = theme;
// Another page (or a detail) opens at its top, not where the last one was scrolled to.
window.addEventListener('hashchange', () => { if (api.current()) { window.scrollTo(0, 0); render(); } });
render();
