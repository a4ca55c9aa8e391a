// Admin pages: hypervisor usage, every project's instances, flavors (create, delete).
import { h } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, button, table, dialog, confirm, field, guard } from '../ui.js';
import { serverColumns, liveServers } from './instances.js';

async function hypervisors(main) {
  const list = (await api.get('compute', '/os-hypervisors/detail')).hypervisors;
  const used = (a, b) => `${a ?? '?'} / ${b ?? '?'}`;
  main.append(header(t('Hypervisors')), table([
    { title: t('Host'), get: (x) => x.hypervisor_hostname }, { title: t('Type'), get: (x) => x.hypervisor_type },
    { title: t('Status'), get: (x) => `${x.status} / ${x.state}` },
    { title: t('vCPUs'), get: (x) => used(x.vcpus_used, x.vcpus) }, { title: t('RAM'), get: (x) => used(x.memory_mb_used, x.memory_mb) + ' MB' },
    { title: t('Disk'), get: (x) => used(x.local_gb_used, x.local_gb) + ' GB' }, { title: t('Running VMs'), get: (x) => String(x.running_vms ?? '') },
  ], list).el);
}

async function allInstances(main) {
  const tbl = table(serverColumns(new Map(), () => live.refresh(), [{ title: t('Project'), get: (s) => s.tenant_id }]), [], { key: (s) => s.id, pending: true });
  tbl.el.id = 'all-instances';
  main.append(header(t('All Instances')), tbl.el);
  const live = liveServers('?all_tenants=1', (s) => tbl.update(s), 5000);
  return () => live.stop();
}

async function flavors(main) {
  const tbl = table([
    { title: t('Name'), get: (f) => f.name }, { title: t('vCPUs'), get: (f) => String(f.vcpus) }, { title: t('RAM'), get: (f) => `${f.ram} MB` },
    { title: t('Disk'), get: (f) => `${f.disk} GB` }, { title: t('Public'), get: (f) => (f['os-flavor-access:is_public'] ? '✓' : '') },
    { title: t('Actions'), get: (f) => button(t('Delete'), async () => {
      if (await confirm(`${t('Delete')}: ${f.name}`, t('Delete'), true)) await guard(async () => { await api.call('compute', 'DELETE', `/flavors/${f.id}`); load(); });
    }, 'danger') },
  ], []);
  tbl.el.id = 'flavors';
  async function load() { await guard(async () => tbl.update((await api.get('compute', '/flavors/detail?is_public=None')).flavors)); }
  const create = async () => {
    const f = { name: h('input', { maxlength: 255 }), vcpus: h('input', { type: 'number', min: 1, value: 1 }), ram: h('input', { type: 'number', min: 1, value: 256 }), disk: h('input', { type: 'number', min: 0, value: 1 }) };
    const ok = await dialog(t('Create Flavor'), h('div', null, field(t('Name'), f.name), field(t('vCPUs'), f.vcpus), field(t('RAM') + ' (MB)', f.ram), field(t('Disk') + ' (GB)', f.disk)),
      [{ label: t('Cancel') }, { label: t('Create'), primary: true, run: async () => {
        await api.call('compute', 'POST', '/flavors', { flavor: { name: f.name.value.trim(), vcpus: +f.vcpus.value, ram: +f.ram.value, disk: +f.disk.value } }); return true;
      } }]);
    if (ok) load();
  };
  main.append(header(t('Flavors'), button(t('Create Flavor'), create, 'primary')), tbl.el);
  await load();
}

export async function render(main, { page }) {
  if (page.path === 'admin/hypervisors') return hypervisors(main);
  if (page.path === 'admin/instances') return allInstances(main);
  return flavors(main);
}
