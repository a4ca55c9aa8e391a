// Admin pages: hypervisor usage, every project's instances, flavors (create, delete, project
// access, extra specs), every project's images, quota defaults and system information.
import { h, clear, bytes } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, button, table, dialog, confirm, toast, field, guard } from '../ui.js';
import { serverColumns, liveServers } from './instances.js';

const yes = (v) => (v ? t('Yes') : t('No'));
const select = (attrs, options) => h('select', attrs, options.map(([v, label]) => h('option', { value: v }, label)));

/** A dialog of fields with Cancel and a primary button (id `${id}-go`); true when run() succeeded. */
async function form(title, fields, run, id, label = t('Create')) {
  return (await dialog(title, h('div', { class: 'form', id }, fields), [
    { label: t('Cancel') },
    { label, primary: true, id: `${id}-go`, run: async () => { await run(); return true; } },
  ])) === true;
}

/** Every project, id -> name (for owner columns and project pickers); empty when refused. */
async function projectNames() {
  try {
    return new Map(((await api.call('identity', 'GET', '/v3/projects')).projects || []).map((p) => [p.id, p.name]));
  } catch (e) {
    if (api.aborted(e)) throw e;
    return new Map();
  }
}

// ---------------------------------------------------------------- hypervisors, instances

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

// ---------------------------------------------------------------- flavors

const nova = (method, path, body) => api.call('compute', method, path, body);

/**
 * Nova cannot change a flavor's is_public: as Horizon does, the flavor is made again with
 * the same ID, name, sizes and extra specs (servers keep their own copy of their flavor).
 */
async function remake(f, isPublic) {
  const specs = (await nova('GET', `/flavors/${f.id}/os-extra_specs`)).extra_specs || {};
  await nova('DELETE', `/flavors/${f.id}`);
  const body = { name: f.name, id: f.id, vcpus: f.vcpus, ram: f.ram, disk: f.disk, 'OS-FLV-EXT-DATA:ephemeral': f['OS-FLV-EXT-DATA:ephemeral'] || 0,
    swap: f.swap || 0, rxtx_factor: f.rxtx_factor || 1, 'os-flavor-access:is_public': isPublic };
  if (f.description) body.description = f.description;
  await nova('POST', '/flavors', { flavor: body });
  if (Object.keys(specs).length) await nova('POST', `/flavors/${f.id}/os-extra_specs`, { extra_specs: specs });
}

async function flavorAccess(f, done) {
  const names = await projectNames();
  const isPublic = f['os-flavor-access:is_public'];
  const current = isPublic ? [] : ((await nova('GET', `/flavors/${f.id}/os-flavor-access`)).flavor_access || []).map((a) => a.tenant_id);
  const pub = h('input', { type: 'checkbox', name: 'public', checked: isPublic });
  const boxes = [...names].sort((a, b) => a[1].localeCompare(b[1])).map(([id, name]) =>
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'project', value: id, 'data-name': name, checked: current.includes(id) }), name));
  const list = h('fieldset', { class: 'choices', disabled: isPublic }, h('legend', null, t('Projects with access')), boxes);
  pub.addEventListener('change', () => { list.disabled = pub.checked; });
  const ok = await form(`${t('Flavor access')}: ${f.name}`, [
    h('label', { class: 'check' }, pub, t('Public (every project)')),
    h('p', { class: 'hint' }, t('Changing public or private makes the flavor again with the same ID.')), list,
  ], async () => {
    let had = current;
    if (pub.checked !== isPublic) { await remake(f, pub.checked); had = []; }
    if (pub.checked) return;
    const want = boxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
    for (const p of want.filter((x) => !had.includes(x))) await nova('POST', `/flavors/${f.id}/action`, { addTenantAccess: { tenant: p } });
    for (const p of had.filter((x) => !want.includes(x))) await nova('POST', `/flavors/${f.id}/action`, { removeTenantAccess: { tenant: p } });
  }, 'flavor-access', t('Save'));
  if (ok) { toast(`${t('Saved')}: ${f.name}`); done(); }
}

async function flavorSpecs(f) {
  const tbody = h('tbody');
  const tbl = h('table', { id: 'flavor-specs-table' }, h('thead', null, h('tr', null, [t('Key'), t('Value'), t('Actions')].map((c) => h('th', { scope: 'col' }, c)))), tbody);
  const key = h('input', { name: 'key', maxlength: 255, required: true });
  const value = h('input', { name: 'value', maxlength: 255 });
  const load = async () => {
    const specs = (await nova('GET', `/flavors/${f.id}/os-extra_specs`)).extra_specs || {};
    const rows = Object.entries(specs).sort().map(([k, v]) => h('tr', null, h('td', { 'data-label': t('Key') }, k), h('td', { 'data-label': t('Value') }, v),
      h('td', { 'data-label': t('Actions') }, button(t('Unset'), () => guard(async () => { await nova('DELETE', `/flavors/${f.id}/os-extra_specs/${encodeURIComponent(k)}`); await load(); }), 'danger unset'))));
    tbody.replaceChildren(...(rows.length ? rows : [h('tr', null, h('td', { colspan: 3, class: 'empty' }, t('Nothing here yet.')))]));
  };
  const set = h('form', { class: 'inline-form', id: 'flavor-specs', onsubmit: (e) => {
    e.preventDefault();
    const k = key.value.trim();
    if (!k) return;
    guard(async () => { await nova('POST', `/flavors/${f.id}/os-extra_specs`, { extra_specs: { [k]: value.value } }); key.value = ''; value.value = ''; await load(); });
  } }, field(t('Key'), key), field(t('Value'), value), h('button', { type: 'submit', id: 'flavor-specs-go' }, t('Set')));
  await load();
  await dialog(`${t('Extra specs')}: ${f.name}`, h('div', null, tbl, set));
}

async function flavors(main) {
  const tbl = table([
    { title: t('Name'), get: (f) => f.name }, { title: t('ID'), get: (f) => f.id }, { title: t('vCPUs'), get: (f) => String(f.vcpus) },
    { title: t('RAM'), get: (f) => `${f.ram} MB` }, { title: t('Disk'), get: (f) => `${f.disk} GB` },
    { title: t('Public'), get: (f) => yes(f['os-flavor-access:is_public']) },
    { title: t('Actions'), get: (f) => h('div', { class: 'row-actions' },
      button(t('Access'), () => guard(() => flavorAccess(f, load)), 'flavor-access'),
      button(t('Extra specs'), () => guard(() => flavorSpecs(f)), 'flavor-specs'),
      button(t('Delete'), async () => {
        if (await confirm(`${t('Delete')}: ${f.name}`, t('Delete'), true)) await guard(async () => { await nova('DELETE', `/flavors/${f.id}`); toast(`${t('Deleted')}: ${f.name}`); load(); });
      }, 'danger')) },
  ], [], { key: (f) => f.id, pending: true });
  tbl.el.id = 'flavors';
  async function load() { await guard(async () => tbl.update((await api.get('compute', '/flavors/detail?is_public=None')).flavors)); }
  const create = async () => {
    const f = { name: h('input', { maxlength: 255, name: 'name', required: true }), vcpus: h('input', { type: 'number', name: 'vcpus', min: 1, value: 1 }),
      ram: h('input', { type: 'number', name: 'ram', min: 1, value: 256 }), disk: h('input', { type: 'number', name: 'disk', min: 0, value: 1 }),
      pub: h('input', { type: 'checkbox', name: 'public', checked: true }) };
    const ok = await form(t('Create Flavor'), [field(t('Name'), f.name), field(t('vCPUs'), f.vcpus), field(t('RAM') + ' (MB)', f.ram), field(t('Disk') + ' (GB)', f.disk),
      h('label', { class: 'check' }, f.pub, t('Public (every project)'))], async () => {
      await nova('POST', '/flavors', { flavor: { name: f.name.value.trim(), vcpus: +f.vcpus.value, ram: +f.ram.value, disk: +f.disk.value, 'os-flavor-access:is_public': f.pub.checked } });
    }, 'flavor-form');
    if (ok) load();
  };
  main.append(header(t('Flavors'), button(t('Create Flavor'), create, 'primary create-flavor')), tbl.el);
  await load();
}

// ---------------------------------------------------------------- images

async function images(main) {
  let owners = new Map();
  const tbl = table([
    { title: t('Name'), get: (i) => i.name || i.id }, { title: t('Owner'), get: (i) => owners.get(i.owner) || i.owner || '' },
    { title: t('Visibility'), get: (i) => i.visibility }, { title: t('Protected'), get: (i) => yes(i.protected) },
    { title: t('Status'), get: (i) => i.status }, { title: t('Size'), get: (i) => bytes(i.size) },
    { title: t('Actions'), get: (i) => h('div', { class: 'row-actions' },
      button(t('Edit'), () => guard(() => editImage(i, load)), 'image-edit'),
      button(t('Delete'), async () => {
        if (await confirm(`${t('Delete')}: ${i.name || i.id}`, t('Delete'), true)) {
          await guard(async () => { await api.call('image', 'DELETE', `/v2/images/${i.id}`); toast(`${t('Deleted')}: ${i.name || i.id}`); load(); });
        }
      }, 'danger')) },
  ], [], { key: (i) => i.id, pending: true });
  tbl.el.id = 'admin-images';
  async function load() {
    await guard(async () => {
      const all = [];
      // Glance pages its answer: follow `next` (a path under the image service) to the end.
      for (let path = '/v2/images?limit=200'; path && all.length < 10000;) {
        const r = await api.get('image', path);
        all.push(...(r.images || []));
        path = r.next ? r.next.replace(/^.*?(\/v2\/images)/, '$1') : null;
      }
      tbl.update(all);
    });
  }
  main.append(header(t('Images')), tbl.el);
  owners = await projectNames();
  await load();
}

async function editImage(i, done) {
  const vis = select({ name: 'visibility' }, ['public', 'private', 'shared', 'community'].map((v) => [v, t(v[0].toUpperCase() + v.slice(1))]));
  vis.value = i.visibility;
  const prot = h('input', { type: 'checkbox', name: 'protected', checked: !!i.protected });
  const ok = await form(`${t('Edit Image')}: ${i.name || i.id}`, [field(t('Visibility'), vis), h('label', { class: 'check' }, prot, t('Protected'))], async () => {
    const ops = [];
    if (vis.value !== i.visibility) ops.push({ op: 'replace', path: '/visibility', value: vis.value });
    if (prot.checked !== !!i.protected) ops.push({ op: 'replace', path: '/protected', value: prot.checked });
    if (ops.length) await api.call('image', 'PATCH', `/v2/images/${i.id}`, ops, { 'Content-Type': 'application/openstack-images-v2.1-json-patch' });
  }, 'image-form', t('Save'));
  if (ok) { toast(`${t('Saved')}: ${i.name || i.id}`); done(); }
}

// ---------------------------------------------------------------- quota defaults

/** The quota class "default" of each service in the catalog (Neutron's: read only). */
async function defaults(main) {
  main.append(header(t('Defaults')));
  const sources = [
    { id: 'compute', title: t('Compute'), svc: 'compute', path: '/os-quota-class-sets/default', key: 'quota_class_set' },
    { id: 'volume', title: t('Volumes'), svc: 'block-storage', path: '/os-quota-class-sets/default', key: 'quota_class_set' },
    { id: 'network', title: t('Network'), svc: 'network', path: `/v2.0/quotas/${api.current().project?.id}/default`, key: 'quota', readOnly: true },
  ].filter((s) => api.has(s.svc));
  for (const s of sources) {
    const box = h('section', { class: 'quota-defaults', id: `defaults-${s.id}`, 'aria-labelledby': `defaults-${s.id}-title` });
    main.append(box);
    const draw = async () => {
      const q = (await api.get(s.svc, s.path))[s.key] || {};
      const rows = Object.entries(q).filter(([k, v]) => k !== 'id' && typeof v === 'number').sort();
      const edit = s.readOnly ? null : button(t('Update Defaults'), () => guard(async () => {
        const inputs = rows.map(([k, v]) => [k, h('input', { type: 'number', name: k, min: -1, value: v })]);
        const ok = await form(`${t('Update Defaults')}: ${s.title}`, inputs.map(([k, i]) => field(k, i)), async () => {
          const body = {};
          for (const [k, i] of inputs) if (+i.value !== q[k]) body[k] = +i.value;
          if (Object.keys(body).length) await api.call(s.svc, 'PUT', s.path, { [s.key]: body });
        }, `defaults-${s.id}-form`, t('Save'));
        if (ok) { toast(`${t('Saved')}: ${s.title}`); await draw(); }
      }), `edit-defaults`);
      clear(box).append(h('div', { class: 'section-head' }, h('h2', { id: `defaults-${s.id}-title` }, s.title), edit),
        s.readOnly ? h('p', { class: 'hint' }, t('Set in the server configuration.')) : null,
        table([{ title: t('Quota'), get: ([k]) => k }, { title: t('Limit'), get: ([, v]) => (v < 0 ? t('Unlimited') : String(v)) }], rows, { filter: false }).el);
    };
    await guard(draw);
  }
}

// ---------------------------------------------------------------- system information

async function system(main) {
  const keystone = (path) => api.get('identity', path);
  const section = (id, title, el) => h('section', { id, 'aria-labelledby': `${id}-title` }, h('h2', { id: `${id}-title` }, title), el);
  main.append(header(t('System Information')));
  const [svcs, eps] = await Promise.all([keystone('/v3/services'), keystone('/v3/endpoints')]);
  const byId = new Map(svcs.services.map((s) => [s.id, s]));
  main.append(section('sys-services', t('Services'), table([
    { title: t('Name'), get: (s) => s.name }, { title: t('Service'), get: (s) => s.type },
    { title: t('Enabled'), get: (s) => yes(s.enabled !== false) }, { title: t('Description'), get: (s) => s.description || '' },
  ], svcs.services, { filter: false }).el));
  main.append(section('sys-endpoints', t('Endpoints'), table([
    { title: t('Service'), get: (e) => byId.get(e.service_id)?.name || e.service_id }, { title: t('Region'), get: (e) => e.region_id || e.region || '' },
    { title: t('Interface'), get: (e) => e.interface }, { title: t('URL'), get: (e) => e.url },
  ], eps.endpoints, { filter: false }).el));
  const svcCols = [
    { title: t('Service'), get: (s) => s.binary }, { title: t('Host'), get: (s) => s.host }, { title: t('Zone'), get: (s) => s.zone || '' },
    { title: t('Status'), get: (s) => s.status }, { title: t('State'), get: (s) => s.state }, { title: t('Updated'), get: (s) => s.updated_at || '' },
  ];
  if (api.has('compute')) {
    const r = await guard(() => api.get('compute', '/os-services'));
    if (r) main.append(section('sys-compute', t('Compute Services'), table(svcCols, r.services, { filter: false }).el));
  }
  if (api.has('block-storage')) {
    const r = await guard(() => api.get('block-storage', '/os-services'));
    if (r) main.append(section('sys-volume', t('Block Storage Services'), table(svcCols, r.services, { filter: false }).el));
  }
  if (api.has('network')) {
    // Neutron's agents, when the server has any (yunhe's own data plane has none to list).
    let agents = null;
    try { agents = (await api.get('network', '/v2.0/agents')).agents; } catch (e) { if (api.aborted(e)) throw e; }
    if (agents?.length) {
      main.append(section('sys-agents', t('Network Agents'), table([
        { title: t('Type'), get: (a) => a.agent_type }, { title: t('Name'), get: (a) => a.binary }, { title: t('Host'), get: (a) => a.host },
        { title: t('Status'), get: (a) => yes(a.admin_state_up) }, { title: t('State'), get: (a) => (a.alive ? t('Up') : t('Down')) },
      ], agents, { filter: false }).el));
    }
  }
}

export async function render(main, { page }) {
  switch (page.path) {
    case 'admin/hypervisors': return hypervisors(main);
    case 'admin/instances': return allInstances(main);
    case 'admin/images': return images(main);
    case 'admin/defaults': return defaults(main);
    case 'admin/system': return system(main);
    default: return flavors(main);
  }
}
