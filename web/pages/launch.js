// The Launch Instance wizard: details, source image, flavor (with quota and fit hints
// from /limits), networks, ports and security groups (when the network API exists), key
// pair (with inline create and import), user-data, server group and metadata.
import { h, clear, b64, download, bytes } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { dialog, field, toast } from '../ui.js';

/** Creates a key pair (server-generated when no public key is given); downloads a new private key. */
export async function createKeypair(name, publicKey) {
  const body = { keypair: { name } };
  if (publicKey) body.keypair.public_key = publicKey;
  // Key generation by Nova ends at microversion 2.92.
  const r = await api.call('compute', 'POST', '/os-keypairs', body, { 'OpenStack-API-Version': 'compute 2.10' });
  if (r.keypair.private_key) {
    download(`${name}.pem`, r.keypair.private_key, 'application/x-pem-file');
    toast(t('Private key downloaded'));
  }
  return r.keypair;
}

export async function launchWizard({ image, done } = {}) {
  const pid = encodeURIComponent(api.current()?.project?.id || '');
  const hasNet = api.has('network');
  const [images, flavors, limits, keypairs, groups, networks, ports, secGroups] = await Promise.all([
    api.get('image', '/v2/images?limit=200').then((r) => r.images.filter((i) => i.status === 'active')),
    api.get('compute', '/flavors/detail').then((r) => r.flavors),
    api.get('compute', '/limits').then((r) => r.limits.absolute).catch(() => ({})),
    api.get('compute', '/os-keypairs').then((r) => r.keypairs.map((k) => k.keypair)),
    api.get('compute', '/os-server-groups').then((r) => r.server_groups).catch(() => []),
    hasNet ? api.get('network', '/v2.0/networks').then((r) => r.networks).catch(() => []) : Promise.resolve(null),
    // The project's ports no device holds: each one chosen becomes a NIC as it is.
    hasNet ? api.get('network', `/v2.0/ports?device_id=&project_id=${pid}`)
      .then((r) => r.ports.filter((p) => !p.device_id && !p.device_owner)).catch(() => []) : Promise.resolve(null),
    hasNet ? api.get('network', `/v2.0/security-groups?project_id=${pid}`).then((r) => r.security_groups).catch(() => []) : Promise.resolve(null),
  ]);

  const name = h('input', { name: 'name', required: true, maxlength: 255 });
  const description = h('input', { name: 'description', maxlength: 255 });
  const count = h('input', { name: 'count', type: 'number', min: 1, max: 100, value: 1 });

  const imageSel = h('div', { class: 'choices', role: 'radiogroup', 'aria-label': t('Choose an image') },
    images.map((i) => h('label', { class: 'choice' }, h('input', { type: 'radio', name: 'image', value: i.id, checked: i.id === image, onchange: hints }),
      h('span', null, i.name || i.id), h('small', null, `${i.disk_format || ''} ${bytes(i.size)}`))));

  const flavorBox = h('div', { class: 'choices', role: 'radiogroup', 'aria-label': t('Choose a flavor') });
  const left = (max, used) => (max == null || max < 0 ? Infinity : max - (used || 0));
  function hints() {
    const img = images.find((i) => i.id === imageSel.querySelector('input:checked')?.value);
    const n = Math.max(1, parseInt(count.value, 10) || 1);
    const checked = flavorBox.querySelector('input:checked')?.value;
    clear(flavorBox).append(...flavors.map((f) => {
      let hint = t('Fits'), ok = true;
      if (f.vcpus * n > left(limits.maxTotalCores, limits.totalCoresUsed) || f.ram * n > left(limits.maxTotalRAMSize, limits.totalRAMUsed)
        || n > left(limits.maxTotalInstances, limits.totalInstancesUsed)) { hint = t('Exceeds quota'); ok = false; }
      if (img && ((img.min_disk || 0) > f.disk && f.disk > 0 || (img.min_ram || 0) > f.ram)) { hint = t('Too small for the image'); ok = false; }
      return h('label', { class: `choice ${ok ? '' : 'no-fit'}` },
        h('input', { type: 'radio', name: 'flavor', value: f.id, disabled: !ok, checked: f.id === checked }),
        h('span', null, f.name), h('small', null, `${f.vcpus} vCPU · ${f.ram} MB · ${f.disk} GB — ${hint}`));
    }));
  }
  count.addEventListener('input', hints);
  hints();

  const netSel = networks ? h('select', { multiple: true, name: 'networks', onchange: groupsState }, networks.map((n) => h('option', { value: n.id }, n.name || n.id))) : null;

  // Ports: checkboxes, each with its network and fixed IPs.
  const netName = new Map((networks || []).map((n) => [n.id, n.name || n.id]));
  const portBox = ports ? h('fieldset', { class: 'choices', id: 'launch-ports' }, h('legend', null, t('Ports not attached to a server')),
    ports.length ? ports.map((p) => h('label', { class: 'choice' },
      h('input', { type: 'checkbox', name: 'port', value: p.id, onchange: groupsState }),
      h('span', null, p.name || p.id),
      h('small', null, `${netName.get(p.network_id) || p.network_id} · ${(p.fixed_ips || []).map((f) => f.ip_address).join(', ') || '—'}`)))
      : h('p', { class: 'hint' }, t('No free ports in this project.'))) : null;

  // Security groups: `default` preselected; a name shared by two of the project's
  // groups is sent as the id (Nova refuses an ambiguous name).
  const sgCount = new Map();
  for (const g of secGroups || []) sgCount.set(g.name, (sgCount.get(g.name) || 0) + 1);
  const sgHint = h('p', { class: 'hint', id: 'launch-sg-hint', role: 'status' });
  const sgBox = secGroups ? h('fieldset', { class: 'choices', id: 'launch-sgs', 'aria-describedby': 'launch-sg-hint' }, h('legend', null, t('Security Groups')),
    secGroups.map((g) => h('label', { class: 'choice' },
      h('input', { type: 'checkbox', name: 'security_group', value: sgCount.get(g.name) > 1 ? g.id : g.name, checked: g.name === 'default' }),
      h('span', null, g.name), h('small', null, g.description || g.id)))) : null;
  // Nova applies the groups to the ports it makes on the chosen networks; a chosen
  // port keeps its own groups, and with no network nothing takes them.
  function groupsState() {
    if (!sgBox) return;
    const nets = netSel ? netSel.selectedOptions.length : 0;
    sgBox.disabled = nets === 0;
    sgHint.textContent = nets ? t('The groups apply to the ports made on the chosen networks; a chosen port keeps its own groups.')
      : t('Choose a network first: the groups apply to the ports made on the chosen networks (a chosen port keeps its own groups).');
  }
  groupsState();

  const keySel = h('select', { name: 'key' }, h('option', { value: '' }, t('None')), keypairs.map((k) => h('option', { value: k.name }, k.name)));
  const keyName = h('input', { placeholder: t('Name'), maxlength: 255, 'aria-label': t('Key pair') + ' ' + t('Name') });
  const keyPub = h('textarea', { rows: 3, placeholder: 'ssh-ed25519 AAAA…', 'aria-label': t('Public key') });
  const keyMsg = h('small', { role: 'status' });
  const addKey = async (pub) => {
    try {
      const k = await createKeypair(keyName.value.trim(), pub);
      keySel.append(h('option', { value: k.name, selected: true }, k.name));
      keySel.value = k.name;
      keyMsg.textContent = `${k.name}: ${k.fingerprint}`;
    } catch (e) { keyMsg.textContent = e.message; }
  };

  const userData = h('textarea', { name: 'user_data', rows: 6, placeholder: '#cloud-config' });
  const groupSel = h('select', { name: 'group' }, h('option', { value: '' }, t('None')), groups.map((g) => h('option', { value: g.id }, `${g.name} (${g.policy || (g.policies || []).join(',')})`)));
  const metaRows = h('div', { class: 'meta-rows' });
  const addMeta = () => metaRows.append(h('div', { class: 'meta-row' }, h('input', { placeholder: t('Key'), maxlength: 255, 'aria-label': t('Key') }), h('input', { placeholder: t('Value'), maxlength: 255, 'aria-label': t('Value') })));
  addMeta();

  const steps = [
    { label: t('Details'), body: [field(t('Instance name'), name), field(t('Description'), description), field(t('Count'), count)] },
    { label: t('Source'), body: [imageSel] },
    { label: t('Flavor'), body: [flavorBox] },
    ...(netSel ? [{ label: t('Network'), body: [field(t('Network'), netSel, t('One NIC per network chosen; none chosen (and no port) means no NIC.'))] }] : []),
    ...(portBox ? [{ label: t('Ports'), body: [portBox, h('p', { class: 'hint' }, t('Each chosen port becomes a NIC, after the chosen networks.'))] }] : []),
    ...(sgBox ? [{ label: t('Security Groups'), body: [sgBox, sgHint] }] : []),
    { label: t('Key pair'), body: [field(t('Key pair'), keySel),
      h('div', { class: 'inline-key' }, keyName, h('button', { type: 'button', id: 'key-create', onclick: () => addKey(null) }, t('Create')),
        keyPub, h('button', { type: 'button', id: 'key-import', onclick: () => addKey(keyPub.value.trim()) }, t('Import')), keyMsg)] },
    { label: t('Configuration'), body: [field(t('User data'), userData)] },
    { label: t('Server group'), body: [field(t('Server group'), groupSel)] },
    { label: t('Metadata'), body: [metaRows, h('button', { type: 'button', onclick: addMeta }, t('Add'))] },
  ];
  const sections = steps.map((s, i) => h('section', { class: 'step', 'data-step': i, hidden: i !== 0 }, h('h3', null, s.label), s.body));
  const stepBar = h('ol', { class: 'steps' });
  let at = 0;
  const show = (i) => {
    at = Math.max(0, Math.min(steps.length - 1, i));
    sections.forEach((s, j) => { s.hidden = j !== at; });
    [...stepBar.children].forEach((li, j) => li.firstChild.setAttribute('aria-current', j === at ? 'step' : 'false'));
  };
  steps.forEach((s, i) => stepBar.append(h('li', null, h('button', { type: 'button', onclick: () => show(i) }, s.label))));
  const nav = h('div', { class: 'wizard-nav' }, h('button', { type: 'button', onclick: () => show(at - 1) }, t('Back')), h('button', { type: 'button', id: 'wizard-next', onclick: () => show(at + 1) }, t('Next')));
  const content = h('div', { class: 'wizard', id: 'launch-wizard' }, stepBar, sections, nav);
  show(0);

  const launch = async () => {
    const imageRef = imageSel.querySelector('input:checked')?.value;
    const flavorRef = flavorBox.querySelector('input:checked')?.value;
    if (!name.value.trim()) { show(0); throw new Error(`${t('Instance name')}?`); }
    if (!imageRef) { show(1); throw new Error(t('Choose an image')); }
    if (!flavorRef) { show(2); throw new Error(t('Choose a flavor')); }
    const n = Math.max(1, parseInt(count.value, 10) || 1);
    const server = { name: name.value.trim(), imageRef, flavorRef, min_count: n, max_count: n };
    if (description.value.trim()) server.description = description.value.trim();
    // The networks chosen, one NIC each, then the ports chosen; none chosen means
    // no NIC (Nova's `auto` refuses when the project has no network, or several).
    const chosen = netSel ? [...netSel.selectedOptions].map((o) => ({ uuid: o.value })) : [];
    const chosenPorts = portBox ? [...portBox.querySelectorAll('input[name=port]:checked')].map((i) => ({ port: i.value })) : [];
    server.networks = chosen.length || chosenPorts.length ? [...chosen, ...chosenPorts] : 'none';
    if (sgBox && !sgBox.disabled) {
      const sgs = [...sgBox.querySelectorAll('input[name=security_group]:checked')].map((i) => ({ name: i.value }));
      if (sgs.length) server.security_groups = sgs;
    }
    if (keySel.value) server.key_name = keySel.value;
    if (userData.value) server.user_data = b64(userData.value);
    const metadata = {};
    for (const row of metaRows.children) {
      const [k, v] = row.querySelectorAll('input');
      if (k.value.trim()) metadata[k.value.trim()] = v.value;
    }
    if (Object.keys(metadata).length) server.metadata = metadata;
    const body = { server };
    if (groupSel.value) body['os:scheduler_hints'] = { group: groupSel.value };
    await api.call('compute', 'POST', '/servers', body);
    return true;
  };
  const ok = await dialog(t('Launch Instance'), content, [{ label: t('Cancel') }, { label: t('Launch'), run: launch, primary: true, id: 'wizard-launch' }]);
  if (ok) { toast(`${t('Launch')}: ${name.value}`); if (done) done(); }
}
