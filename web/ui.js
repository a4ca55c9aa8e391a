// Shared widgets: tables, dialogs, confirmations, notices, form fields.
import { h, clear } from './dom.js';
import { t } from './i18n.js';

/** A page heading with buttons on the right. */
export function header(title, ...actions) {
  return h('div', { class: 'page-head' }, h('h1', { id: 'page-title', tabindex: '-1' }, title), h('div', { class: 'actions' }, actions));
}

export function button(label, onclick, cls = '') {
  return h('button', { type: 'button', class: cls, onclick }, label);
}

/**
 * table(cols, rows, {filter: true, key: row => id, empty}): a table whose rows are
 * filtered by a text box (matching every column's text). cols: [{title, get(row)}].
 * Returns {el, update(rows)}: update re-renders in place (live status).
 */
export function table(cols, rows, opts = {}) {
  const body = h('tbody');
  const filter = opts.filter === false ? null : h('input', { type: 'search', class: 'filter', placeholder: t('Filter'), 'aria-label': t('Filter'), 'data-filter': '' });
  const count = h('span', { class: 'count' });
  let data = rows;
  let gen = 0;
  // The first rows appear at once, the rest follow a few hundred per frame: a table of
  // 1,000 servers is on screen before it is all laid out. A newer render cancels an older.
  const render = () => {
    const my = ++gen;
    const q = (filter?.value || '').trim().toLowerCase();
    let i = 0, n = 0;
    clear(body);
    const step = (budget) => {
      if (my !== gen) return;
      const frag = document.createDocumentFragment();
      const end = Math.min(data.length, i + budget);
      for (; i < end; i++) {
        const row = data[i];
        const cells = cols.map((c) => {
          const v = c.get(row);
          return v instanceof Node ? v : h('span', null, v == null ? '' : String(v));
        });
        if (q && !cells.some((c) => c.textContent.toLowerCase().includes(q))) continue;
        frag.append(h('tr', opts.key ? { 'data-id': opts.key(row) } : null, cells.map((c, j) => h('td', { 'data-label': cols[j].title }, c))));
        n++;
      }
      body.append(frag);
      if (i < data.length) { requestAnimationFrame(() => step(250)); return; }
      if (!n) body.append(h('tr', null, h('td', { colspan: cols.length, class: 'empty' }, opts.empty || t('Nothing here yet.'))));
      count.textContent = `${n} / ${data.length}`;
      body.dataset.complete = String(my);
      // When the last row was laid out, in ms since navigation start (tests/browser reads it).
      body.dataset.completeAt = String(Math.round(performance.now()));
    };
    delete body.dataset.complete;
    step(100);
  };
  filter?.addEventListener('input', render);
  render();
  const el = h('div', { class: 'table-wrap' },
    filter ? h('div', { class: 'table-tools' }, filter, count) : null,
    h('table', null, h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, c.title)))), body));
  return { el, update(r) { data = r; render(); } };
}

/**
 * dialog(title, content, buttons): a modal <dialog>. buttons: [{label, value, primary}].
 * Resolves with the value of the button pressed (undefined on Escape). A button with
 * `run` keeps the dialog open until run() resolves (errors are shown in the dialog).
 */
export function dialog(title, content, buttons = [{ label: t('Close') }]) {
  return new Promise((resolve) => {
    const err = h('p', { class: 'error', role: 'alert' });
    const dlg = h('dialog', { 'aria-labelledby': 'dlg-title' });
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    const btns = buttons.map((b) => h('button', {
      type: 'button', id: b.id, class: b.primary ? 'primary' : b.danger ? 'danger' : '',
      onclick: async (e) => {
        if (!b.run) return done(b.value);
        e.target.disabled = true;
        err.textContent = '';
        try { done(await b.run()); } catch (x) { err.textContent = x.message; e.target.disabled = false; }
      },
    }, b.label));
    dlg.append(h('h2', { id: 'dlg-title' }, title), h('div', { class: 'dlg-body' }, content), err, h('div', { class: 'dlg-buttons' }, btns));
    dlg.addEventListener('cancel', () => { dlg.remove(); resolve(undefined); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** Asks before an action; resolves true when confirmed. */
export async function confirm(text, label = t('Confirm'), danger = false) {
  return (await dialog(t('Are you sure?'), h('p', null, text), [
    { label: t('Cancel'), value: false },
    { label, value: true, primary: !danger, danger, id: 'confirm-ok' },
  ])) === true;
}

/** A short notice in the corner. */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  const el = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', null, hint) : null);
}

/** A status word with a colour class. */
export function status(s) {
  const v = String(s || '').toUpperCase();
  const cls = ['ACTIVE', 'AVAILABLE'].includes(v) ? 'ok' : v.includes('ERROR') ? 'bad' : ['SHUTOFF', 'PAUSED', 'SUSPENDED', 'SHELVED', 'SHELVED_OFFLOADED', 'DELETED'].includes(v) ? 'off' : 'busy';
  return h('span', { class: `status ${cls}`, 'data-status': v }, t(s ? String(s) : '') || '');
}

/** Runs fn, shows failures as notices. */
export async function guard(fn) {
  try { return await fn(); } catch (e) { toast(e.message, 'error'); return undefined; }
}

/** Tabs: [{id, label, render(el)}]; returns the element. */
export function tabs(list) {
  const panel = h('div', { class: 'tab-panel', role: 'tabpanel' });
  const bar = h('div', { class: 'tabs', role: 'tablist' });
  let stop = null;
  const open = (tab, btn) => {
    for (const b of bar.children) b.setAttribute('aria-selected', b === btn ? 'true' : 'false');
    if (stop) stop();
    clear(panel);
    stop = tab.render(panel) || null;
  };
  for (const tab of list) {
    const b = h('button', { type: 'button', role: 'tab', 'data-tab': tab.id, onclick: () => open(tab, b) }, tab.label);
    bar.append(b);
  }
  queueMicrotask(() => open(list[0], bar.children[0]));
  const el = h('div', null, bar, panel);
  el.stop = () => { if (stop) stop(); };
  return el;
}
