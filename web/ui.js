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
 * table(cols, rows, {filter: true, key: row => id, empty, pending}): a table whose rows are
 * filtered by a text box (matching every column's text). cols: [{title, get(row), text(row)}]
 * (`text`, when given, is what the filter matches instead of building the cell).
 * Returns {el, update(rows)}: update re-renders in place (live status).
 *
 * A long table is windowed: only the rows in view, plus a margin, exist in the document;
 * two spacer rows stand for the rest, so the scrollbar is the full table's. Rows are made
 * once per row object and kept (an unchanged server keeps its row, an open menu, the focus).
 * `pending`: the table shows "Loading…" and is not marked complete until the first update.
 */
export function table(cols, rows, opts = {}) {
  const body = h('tbody');
  const tbl = h('table', null, h('thead', null, h('tr', { 'aria-rowindex': '1' }, cols.map((c) => h('th', { scope: 'col' }, c.title)))), body);
  const filter = opts.filter === false ? null : h('input', { type: 'search', class: 'filter', placeholder: t('Filter'), 'aria-label': t('Filter'), 'data-filter': '' });
  const count = h('span', { class: 'count' });
  const spacer = () => h('tr', { class: 'spacer', 'aria-hidden': 'true' }, h('td', { colspan: cols.length }));
  const top = spacer(), bottom = spacer();
  const keyOf = opts.key || ((r) => r);
  let data = rows || [];
  let shown = [];          // the rows that pass the filter
  const made = new Map();  // key -> {row, tr}: rows made so far
  const texts = new WeakMap();
  const rowByTr = new WeakMap();
  let rowH = 0;            // the measured mean height of a row
  let loaded = !opts.pending;
  let frame = 0, seen = false;

  const cell = (c, row) => {
    const v = c.get(row);
    return v instanceof Node ? v : h('span', null, v == null ? '' : String(v));
  };
  const textOf = (row) => {
    let s = row && typeof row === 'object' ? texts.get(row) : undefined;
    if (s === undefined) {
      s = cols.map((c) => {
        if (c.text) return c.text(row);
        const v = c.get(row);
        return v instanceof Node ? v.textContent : v;
      }).join('\n').toLowerCase();
      if (row && typeof row === 'object') texts.set(row, s);
    }
    return s;
  };
  const rowOf = (row) => {
    const k = keyOf(row);
    const m = made.get(k);
    if (m && m.row === row) return m.tr;
    const tr = h('tr', opts.key ? { 'data-id': k } : null, cols.map((c) => h('td', { 'data-label': c.title }, cell(c, row))));
    made.set(k, { row, tr });
    rowByTr.set(tr, row);
    return tr;
  };

  /** Puts shown[a..b) between the spacers, keeping the rows already there in place. */
  const place = (a, b) => {
    const want = shown.slice(a, b).map(rowOf);
    const keep = new Set(want);
    for (let n = top.nextSibling; n && n !== bottom;) {
      const next = n.nextSibling;
      if (!keep.has(n)) n.remove();
      n = next;
    }
    let at = top.nextSibling;
    want.forEach((tr, i) => {
      tr.setAttribute('aria-rowindex', String(a + i + 2));
      if (at === tr) at = at.nextSibling;
      else body.insertBefore(tr, at);
    });
  };

  /** The rows in view (by the measured row height) plus a margin each side. */
  const windowed = () => {
    const n = shown.length;
    if (!n) return;
    const margin = 20;
    const h0 = rowH || 40;
    const rect = body.getBoundingClientRect();
    const view = window.innerHeight || 900;
    let a = 0, b = Math.min(n, Math.ceil(view / h0) + margin);
    if (body.isConnected && rect.height) {
      a = Math.max(0, Math.floor(-rect.top / h0) - margin);
      b = Math.min(n, Math.max(a + 1, Math.ceil((view - rect.top) / h0) + margin));
      if (a >= n) a = Math.max(0, n - margin);
    }
    const focused = document.activeElement;
    const fi = focused && body.contains(focused) ? shown.indexOf(rowByTr.get(focused.closest('tr'))) : -1;
    // The focused row stays in the document (and its neighbours, for Tab and Shift+Tab).
    if (fi >= 0) { a = Math.min(a, Math.max(0, fi - 2)); b = Math.max(b, Math.min(n, fi + 3)); }
    place(a, b);
    // The row height, measured on what is in view; the spacers stand for the rest.
    let sum = 0, cnt = 0;
    for (let tr = top.nextSibling; tr && tr !== bottom; tr = tr.nextSibling) { sum += tr.offsetHeight; cnt++; }
    if (cnt && sum) rowH = sum / cnt;
    top.firstChild.style.height = `${Math.round(a * (rowH || h0))}px`;
    bottom.firstChild.style.height = `${Math.round((n - b) * (rowH || h0))}px`;
    top.hidden = a === 0;
    bottom.hidden = b === n;
  };

  const render = () => {
    const q = (filter?.value || '').trim().toLowerCase();
    shown = q ? data.filter((r) => textOf(r).includes(q)) : data;
    // Rows of servers gone or changed are let go.
    const keys = new Set(data.map(keyOf));
    for (const k of made.keys()) if (!keys.has(k)) made.delete(k);
    if (!loaded) {
      body.replaceChildren(h('tr', null, h('td', { colspan: cols.length, class: 'empty' }, t('Loading…'))));
      count.textContent = '';
      return;
    }
    if (!shown.length) {
      body.replaceChildren(h('tr', null, h('td', { colspan: cols.length, class: 'empty' }, opts.empty || t('Nothing here yet.'))));
    } else if (top.parentNode !== body) {
      body.replaceChildren(top, bottom);
    }
    if (shown.length) windowed();
    tbl.setAttribute('aria-rowcount', String(shown.length + 1));
    count.textContent = `${shown.length} / ${data.length}`;
    body.dataset.rows = String(shown.length);
    body.dataset.complete = '1';
    // When the rows in view were laid out, in ms since navigation start (tests/browser reads it).
    body.dataset.completeAt = String(Math.round(performance.now()));
  };

  const onScroll = () => {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      if (!tbl.isConnected) { if (seen) stopListening(); return; }
      seen = true;
      if (loaded && shown.length) windowed();
    });
  };
  const stopListening = () => {
    document.removeEventListener('scroll', onScroll, { capture: true });
    window.removeEventListener('resize', onScroll);
    io?.disconnect();
  };
  document.addEventListener('scroll', onScroll, { capture: true, passive: true });
  window.addEventListener('resize', onScroll, { passive: true });
  // A spacer coming into view (the table was just put in the page, or a jump to its end).
  const io = window.IntersectionObserver ? new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting)) onScroll(); }) : null;
  io?.observe(top);
  io?.observe(bottom);
  // Tab through the rows: the window follows the focus at once, before the next key.
  body.addEventListener('focusin', () => { if (loaded && shown.length) windowed(); });
  filter?.addEventListener('input', render);
  render();
  const el = h('div', { class: 'table-wrap' }, filter ? h('div', { class: 'table-tools' }, filter, count) : null, tbl);
  // A row fetched again unchanged (a list reloaded on a change event) keeps its object, so
  // its row stays in the document, with an open menu or the focus.
  const jsonOf = new WeakMap();
  const json = (row) => { let j = jsonOf.get(row); if (j === undefined) { j = JSON.stringify(row); jsonOf.set(row, j); } return j; };
  const same = (row) => {
    const m = opts.key && row && typeof row === 'object' ? made.get(keyOf(row)) : null;
    return m && m.row !== row && json(m.row) === json(row) ? m.row : row;
  };
  return { el, update(r) { data = (r || []).map(same); loaded = true; render(); } };
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
  // An aborted request (the page was left) and a 401 (the sign-in prompt says it) need no notice.
  try { return await fn(); } catch (e) { if (e?.name !== 'AbortError' && e?.status !== 401) toast(e.message, 'error'); return undefined; }
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
