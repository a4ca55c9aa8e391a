// Images: list, detail (properties, visibility), upload with a progress bar, delete,
// launch from image.
import { h, bytes, age } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import * as live from '../live.js';
import { header, button, table, dialog, confirm, toast, field, status, guard } from '../ui.js';
import { launchWizard } from './launch.js';

const CORE = new Set(['id', 'name', 'status', 'visibility', 'protected', 'os_hidden', 'checksum', 'os_hash_algo', 'os_hash_value', 'owner', 'size', 'virtual_size', 'min_ram', 'min_disk', 'created_at', 'updated_at', 'tags', 'self', 'file', 'schema', 'disk_format', 'container_format', 'direct_url', 'locations', 'stores']);

async function showImage(img, refresh) {
  const vis = h('select', { id: 'image-visibility' }, ['private', 'shared', 'community', 'public'].map((v) => h('option', { value: v, selected: v === img.visibility }, t(v[0].toUpperCase() + v.slice(1)))));
  const props = Object.entries(img).filter(([k]) => !CORE.has(k));
  const body = h('div', null,
    h('dl', { class: 'props' }, [[t('ID'), img.id], [t('Status'), img.status], [t('Disk format'), img.disk_format], [t('Container format'), img.container_format],
      [t('Size'), bytes(img.size)], [t('Owner'), img.owner], [t('Min disk (GB)'), img.min_disk], [t('Min RAM (MB)'), img.min_ram], [t('Created'), img.created_at]]
      .map(([k, v]) => [h('dt', null, k), h('dd', null, v == null ? '' : String(v))])),
    field(t('Visibility'), vis),
    h('h3', null, t('Properties')),
    h('dl', { class: 'props', id: 'image-props' }, props.map(([k, v]) => [h('dt', null, k), h('dd', null, typeof v === 'string' ? v : JSON.stringify(v))])));
  const v = await dialog(img.name || img.id, body, [
    { label: t('Close') },
    { label: t('Launch from image'), value: 'launch' },
    { label: t('Confirm'), primary: true, run: async () => {
      if (vis.value !== img.visibility) {
        await api.call('image', 'PATCH', `/v2/images/${img.id}`, JSON.stringify([{ op: 'replace', path: '/visibility', value: vis.value }]),
          { 'Content-Type': 'application/openstack-images-v2.1-json-patch' });
        toast(t('Saved'));
      }
      return 'saved';
    } },
  ]);
  if (v === 'launch') launchWizard({ image: img.id });
  if (v === 'saved') refresh();
}

async function uploadDialog(refresh) {
  const name = h('input', { id: 'upload-name', maxlength: 255, required: true });
  const file = h('input', { id: 'upload-file', type: 'file' });
  const disk = h('select', { id: 'upload-disk' }, ['raw', 'qcow2', 'aki', 'ari', 'ami', 'iso', 'vmdk', 'vhd', 'vhdx', 'vdi'].map((f) => h('option', { value: f }, f)));
  const container = h('select', { id: 'upload-container' }, ['bare', 'aki', 'ari', 'ami', 'ovf', 'ova', 'docker'].map((f) => h('option', { value: f }, f)));
  const vis = h('select', { id: 'upload-visibility' }, ['private', 'shared', 'community', 'public'].map((v) => h('option', { value: v }, v)));
  const props = h('textarea', { id: 'upload-props', rows: 3, placeholder: 'kernel_id=…\nos_distro=debian' });
  const bar = h('progress', { id: 'upload-progress', max: 100, value: 0 });
  const pct = h('span', { id: 'upload-pct', role: 'status' });
  disk.addEventListener('change', () => { if (['aki', 'ari', 'ami'].includes(disk.value)) container.value = disk.value; });
  const run = async () => {
    const f = file.files[0];
    if (!name.value.trim() || !f) throw new Error(`${t('Name')} / ${t('File')}?`);
    const body = { name: name.value.trim(), disk_format: disk.value, container_format: container.value, visibility: vis.value };
    for (const line of props.value.split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) body[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    const img = await api.call('image', 'POST', '/v2/images', body);
    await api.upload('image', `/v2/images/${img.id}/file`, f, (done, total) => {
      const p = Math.floor((done / total) * 100);
      bar.value = p;
      pct.textContent = t('Uploaded {pct}%', { pct: p });
      bar.dataset.max = String(Math.max(p, Number(bar.dataset.max || 0)));
    });
    bar.value = 100;
    pct.textContent = t('Uploaded {pct}%', { pct: 100 });
    return true;
  };
  const ok = await dialog(t('Upload Image'), h('div', null, field(t('Name'), name), field(t('File'), file), field(t('Disk format'), disk),
    field(t('Container format'), container), field(t('Visibility'), vis), field(t('Properties'), props), bar, pct),
  [{ label: t('Cancel') }, { label: t('Upload'), run, primary: true, id: 'upload-go' }]);
  if (ok) { toast(`${t('Upload')}: ${name.value}`); refresh(); }
}

export async function render(main) {
  const tbl = table([
    { title: t('Name'), get: (i) => h('a', { href: '#', class: 'name', onclick: (e) => { e.preventDefault(); showImage(i, load); } }, i.name || i.id) },
    { title: t('Status'), get: (i) => status(i.status) },
    { title: t('Visibility'), get: (i) => i.visibility },
    { title: t('Disk format'), get: (i) => i.disk_format || '' },
    { title: t('Size'), get: (i) => bytes(i.size) },
    { title: t('Age'), get: (i) => age(i.created_at) },
    { title: t('Actions'), get: (i) => h('span', { class: 'row-buttons' },
      button(t('Launch'), () => launchWizard({ image: i.id })),
      button(t('Delete'), async () => {
        if (await confirm(`${t('Delete')}: ${i.name}`, t('Delete'), true)) await guard(async () => { await api.call('image', 'DELETE', `/v2/images/${i.id}`); load(); });
      }, 'danger')) },
  ], [], { key: (i) => i.id });
  tbl.el.id = 'images';
  async function load() { await guard(async () => tbl.update((await api.get('image', '/v2/images?limit=1000')).images)); }
  main.append(header(t('Images'), button(t('Upload Image'), () => uploadDialog(load), 'primary upload')), tbl.el);
  // The image service's change events (an upload turning active, another tab's delete) list again.
  const unwatch = live.watch(['image'], () => load(), 300);
  await load();
  return unwatch;
}
