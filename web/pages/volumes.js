// Volume pages over Cinder's v3 API: volumes (create blank or from an image, extend,
// edit, snapshot, delete), snapshots, and volume types for admins.
import { h, bytes } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import * as live from '../live.js';
import { header, button, table, dialog, confirm, toast, field, status, guard } from '../ui.js';

const vol = (method, path, body) => api.call('block-storage', method, path, body, { 'OpenStack-API-Version': 'volume 3.60' });
const select = (attrs, options) => h('select', attrs, options.map(([v, label]) => h('option', { value: v }, label)));
/** Statuses that are on their way somewhere: the list looks again while one is shown. */
const BUSY = /ing$/;

async function form(title, fields, run, id, label = t('Create')) {
  return (await dialog(title, h('div', { class: 'form', id }, fields), [
    { label: t('Cancel') },
    { label, primary: true, id: `${id}-go`, run: async () => { await run(); return true; } },
  ])) === true;
}

function deleteButton(what, name, run, after) {
  return button(t('Delete'), async () => {
    if (await confirm(`${t('Delete')} ${what}: ${name}`, t('Delete'), true)) {
      await guard(async () => { await run(); toast(`${t('Deleted')}: ${name}`); after(); });
    }
  }, 'danger');
}

/**
 * Re-lists on the volume service's change events (live.js); while the stream is down,
 * every few seconds while something is creating, extending or deleting.
 */
function poller(load) {
  let timer = null, stopped = false, last = [];
  const again = (rows) => {
    last = rows;
    clearTimeout(timer);
    if (!stopped && !live.isUp() && rows.some((r) => BUSY.test(r.status))) timer = setTimeout(load, 2000);
  };
  const unwatch = live.watch(['volume'], () => { if (!stopped) load(); }, 300);
  const unstatus = live.onStatus((up) => { if (!up) again(last); });
  return { again, stop() { stopped = true; clearTimeout(timer); unwatch(); unstatus(); } };
}

async function createVolume(done) {
  const [types, images] = await Promise.all([
    vol('GET', '/types').then((r) => r.volume_types).catch(() => []),
    api.has('image') ? api.get('image', '/v2/images?limit=200').then((r) => r.images.filter((i) => i.status === 'active' && i.disk_format === 'raw')).catch(() => []) : [],
  ]);
  const name = h('input', { maxlength: 255, name: 'name' });
  const desc = h('input', { maxlength: 255, name: 'description' });
  const size = h('input', { type: 'number', min: 1, max: 16384, value: 1, name: 'size' });
  const source = select({ name: 'source' }, [['', t('No source, empty volume')], ...images.map((i) => [i.id, `${t('Image')}: ${i.name || i.id} (${bytes(i.size)})`])]);
  const type = select({ name: 'type' }, types.map((x) => [x.name, x.name]));
  const ok = await form(t('Create Volume'), [field(t('Name'), name), field(t('Description'), desc), field(t('Volume source'), source, t('Raw images only')),
    field(t('Size (GiB)'), size), field(t('Type'), type)], () => {
    const v = { name: name.value.trim(), size: Math.max(1, parseInt(size.value, 10) || 1) };
    if (desc.value.trim()) v.description = desc.value.trim();
    if (source.value) v.imageRef = source.value;
    if (type.value) v.volume_type = type.value;
    return vol('POST', '/volumes', { volume: v });
  }, 'volume-form');
  if (ok) { toast(`${t('Create Volume')}: ${name.value}`); done(); }
}

async function extend(v, done) {
  const size = h('input', { type: 'number', min: v.size + 1, max: 16384, value: v.size + 1, name: 'new_size' });
  if (await form(t('Extend Volume'), [h('p', null, `${v.name || v.id}: ${v.size} GiB`), field(t('New size (GiB)'), size)],
    () => vol('POST', `/volumes/${v.id}/action`, { 'os-extend': { new_size: parseInt(size.value, 10) } }), 'extend-form', t('Extend'))) done();
}

async function edit(v, done) {
  const name = h('input', { maxlength: 255, name: 'name', value: v.name || '' });
  const desc = h('input', { maxlength: 255, name: 'description', value: v.description || '' });
  if (await form(t('Edit Volume'), [field(t('Name'), name), field(t('Description'), desc)],
    () => vol('PUT', `/volumes/${v.id}`, { volume: { name: name.value.trim(), description: desc.value } }), 'edit-form', t('Save'))) done();
}

async function snapshot(v, done) {
  const name = h('input', { maxlength: 255, name: 'name', value: `${v.name || 'volume'}-snapshot` });
  if (await form(t('Create Snapshot'), [field(t('Snapshot name'), name)],
    () => vol('POST', '/snapshots', { snapshot: { volume_id: v.id, name: name.value.trim(), force: true } }), 'snapshot-form')) {
    toast(`${t('Create Snapshot')}: ${name.value}`);
    done();
  }
}

function volumeMenu(v, after) {
  const items = h('div', { class: 'menu-items' });
  const menu = h('details', { class: 'menu' }, h('summary', { 'aria-label': `${t('Actions')}: ${v.name || v.id}` }, t('Actions')), items);
  const ready = v.status === 'available';
  const entries = [
    ['edit', t('Edit Volume'), () => edit(v, after), true],
    ['extend', t('Extend Volume'), () => extend(v, after), ready],
    ['snapshot', t('Create Snapshot'), () => snapshot(v, after), ready || v.status === 'in-use'],
    ['delete', t('Delete'), async () => {
      if (await confirm(`${t('Delete')}: ${v.name || v.id}`, t('Delete'), true)) await guard(async () => { await vol('DELETE', `/volumes/${v.id}`); after(); });
    }, !BUSY.test(v.status) && v.status !== 'in-use'],
  ];
  menu.addEventListener('toggle', () => {
    if (!menu.open || items.firstChild) return;
    items.append(...entries.filter((e) => e[3]).map(([id, label, run]) => h('button', { type: 'button', 'data-action': id, class: id === 'delete' ? 'danger' : '',
      onclick: () => { menu.open = false; guard(run); } }, label)));
  });
  return menu;
}

async function volumes(main) {
  let poll;
  const tbl = table([
    { title: t('Name'), get: (v) => v.name || v.id.slice(0, 8) }, { title: t('Description'), get: (v) => v.description || '' },
    { title: t('Size'), get: (v) => `${v.size} GiB` }, { title: t('Status'), get: (v) => status(v.status) },
    { title: t('Type'), get: (v) => v.volume_type || '' },
    { title: t('Attached to'), get: (v) => (v.attachments || []).map((a) => `${a.server_id.slice(0, 8)} ${a.device || ''}`.trim()).join(', ') },
    { title: t('Bootable'), get: (v) => (v.bootable === 'true' ? t('Yes') : t('No')) },
    { title: t('Actions'), get: (v) => volumeMenu(v, load) },
  ], [], { key: (v) => v.id });
  tbl.el.id = 'volumes';
  async function load() {
    await guard(async () => {
      const list = (await vol('GET', '/volumes/detail?limit=1000')).volumes;
      tbl.update(list);
      poll.again(list);
    });
  }
  poll = poller(load);
  main.append(header(t('Volumes'), button(t('Create Volume'), () => createVolume(load), 'primary create-volume')), tbl.el);
  await load();
  return () => poll.stop();
}

async function snapshots(main) {
  let poll;
  const names = new Map();
  const tbl = table([
    { title: t('Name'), get: (s) => s.name || s.id.slice(0, 8) }, { title: t('Description'), get: (s) => s.description || '' },
    { title: t('Size'), get: (s) => `${s.size} GiB` }, { title: t('Status'), get: (s) => status(s.status) },
    { title: t('Volume'), get: (s) => names.get(s.volume_id) || s.volume_id },
    { title: t('Actions'), get: (s) => h('div', { class: 'row-buttons' },
      button(t('Create Volume'), () => guard(async () => {
        await vol('POST', '/volumes', { volume: { name: `${s.name || 'snapshot'}-volume`, size: s.size, snapshot_id: s.id } });
        toast(`${t('Create Volume')}: ${s.name}`);
      }), 'volume-from-snapshot'),
      deleteButton(t('Snapshot'), s.name || s.id, () => vol('DELETE', `/snapshots/${s.id}`), load)) },
  ], [], { key: (s) => s.id });
  tbl.el.id = 'snapshots';
  async function load() {
    await guard(async () => {
      const [list, vs] = await Promise.all([vol('GET', '/snapshots/detail?limit=1000').then((r) => r.snapshots), vol('GET', '/volumes?limit=1000').then((r) => r.volumes)]);
      for (const v of vs) names.set(v.id, v.name || v.id);
      tbl.update(list);
      poll.again(list);
    });
  }
  poll = poller(load);
  main.append(header(t('Volume Snapshots')), tbl.el);
  await load();
  return () => poll.stop();
}

async function types(main) {
  const tbl = table([
    { title: t('Name'), get: (x) => x.name }, { title: t('Description'), get: (x) => x.description || '' },
    { title: t('Public'), get: (x) => (x['os-volume-type-access:is_public'] ? t('Yes') : t('No')) },
    { title: t('Extra specs'), get: (x) => Object.entries(x.extra_specs || {}).map(([k, v]) => `${k}=${v}`).join(', ') },
    { title: t('Actions'), get: (x) => (x.name === '__DEFAULT__' ? '' : deleteButton(t('Volume type'), x.name, () => vol('DELETE', `/types/${x.id}`), load)) },
  ], [], { key: (x) => x.id });
  tbl.el.id = 'volume-types';
  async function load() { await guard(async () => tbl.update((await vol('GET', '/types?is_public=None')).volume_types)); }
  const create = async () => {
    const name = h('input', { maxlength: 255, name: 'name' });
    const desc = h('input', { maxlength: 255, name: 'description' });
    const pub = h('input', { type: 'checkbox', name: 'public', checked: true });
    if (await form(t('Create Volume Type'), [field(t('Name'), name), field(t('Description'), desc), h('label', { class: 'check' }, pub, t('Public'))],
      () => vol('POST', '/types', { volume_type: { name: name.value.trim(), description: desc.value, 'os-volume-type-access:is_public': pub.checked } }), 'type-form')) load();
  };
  main.append(header(t('Volume Types'), button(t('Create Volume Type'), create, 'primary create-type')), tbl.el);
  await load();
}

export async function render(main, { page }) {
  if (page.path === 'volumes/snapshots') return snapshots(main);
  if (page.path === 'admin/volume-types') return types(main);
  return volumes(main);
}
