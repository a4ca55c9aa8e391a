// Network pages over Neutron's v2.0 API: networks (with their subnets and ports), ports,
// routers (gateway, interfaces), security groups and rules, floating IPs (allocate,
// associate, release) and a topology picture drawn as SVG with DOM calls.
import { h, svg, clear } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import * as live from '../live.js';
import { header, button, table, dialog, confirm, toast, field, status, guard, tabs } from '../ui.js';

const net = (method, path, body) => api.call('network', method, `/v2.0${path}`, body);
const list = async (path, key) => (await net('GET', path))[key];

/** A dialog of fields; `build()` returns the request, `run` sends it. Resolves true when done. */
async function form(title, fields, run, id) {
  return (await dialog(title, h('div', { class: 'form', id }, fields), [
    { label: t('Cancel') },
    { label: t('Create'), primary: true, id: `${id}-go`, run: async () => { await run(); return true; } },
  ])) === true;
}

function delButton(what, name, run, after) {
  return button(t('Delete'), async () => {
    if (await confirm(`${t('Delete')} ${what}: ${name}`, t('Delete'), true)) {
      await guard(async () => { await run(); toast(`${t('Deleted')}: ${name}`); after(); });
    }
  }, 'danger');
}

const ips = (p) => (p.fixed_ips || []).map((f) => f.ip_address).join(', ');
const yes = (v) => (v ? t('Yes') : t('No'));
const select = (attrs, options) => h('select', attrs, options.map(([v, label]) => h('option', { value: v }, label)));

// ---------------------------------------------------------------- networks

function subnetFields() {
  const f = {
    name: h('input', { maxlength: 255, name: 'subnet_name' }),
    cidr: h('input', { maxlength: 64, name: 'cidr', placeholder: '192.168.10.0/24' }),
    gateway: h('input', { maxlength: 64, name: 'gateway', placeholder: t('Default: the first address') }),
    dhcp: h('input', { type: 'checkbox', name: 'dhcp', checked: true }),
  };
  const body = (networkId) => {
    const cidr = f.cidr.value.trim();
    const s = { network_id: networkId, cidr, ip_version: cidr.includes(':') ? 6 : 4, name: f.name.value.trim(), enable_dhcp: f.dhcp.checked };
    if (f.gateway.value.trim()) s.gateway_ip = f.gateway.value.trim();
    return { subnet: s };
  };
  return { f, body, els: [field(t('Subnet name'), f.name), field(t('Network address (CIDR)'), f.cidr), field(t('Gateway IP'), f.gateway), h('label', { class: 'check' }, f.dhcp, t('Enable DHCP'))] };
}

async function createNetwork(done) {
  const name = h('input', { maxlength: 255, name: 'name' });
  const shared = h('input', { type: 'checkbox', name: 'shared' });
  const external = h('input', { type: 'checkbox', name: 'external' });
  const sub = subnetFields();
  const admin = api.isAdmin() ? [h('label', { class: 'check' }, shared, t('Shared')), h('label', { class: 'check' }, external, t('External network'))] : [];
  const ok = await form(t('Create Network'), [field(t('Name'), name), admin, h('h3', null, t('Subnet (optional)')), sub.els], async () => {
    const n = { name: name.value.trim(), admin_state_up: true };
    if (shared.checked) n.shared = true;
    if (external.checked) n['router:external'] = true;
    const made = (await net('POST', '/networks', { network: n })).network;
    if (sub.f.cidr.value.trim()) {
      try { await net('POST', '/subnets', sub.body(made.id)); } catch (e) { await net('DELETE', `/networks/${made.id}`).catch(() => {}); throw e; }
    }
  }, 'network-form');
  if (ok) { toast(`${t('Create Network')}: ${name.value}`); done(); }
}

async function networks(main) {
  let subnets = new Map();
  const tbl = table([
    { title: t('Name'), get: (n) => h('a', { href: `#/network/networks/${n.id}`, class: 'name' }, n.name || n.id) },
    { title: t('Subnets'), get: (n) => (n.subnets || []).map((id) => { const s = subnets.get(id); return s ? `${s.name || ''} ${s.cidr}`.trim() : id; }).join(', ') },
    { title: t('Shared'), get: (n) => yes(n.shared) },
    { title: t('External'), get: (n) => yes(n['router:external']) },
    { title: t('Status'), get: (n) => status(n.status) },
    { title: t('Admin state'), get: (n) => (n.admin_state_up ? t('Up') : t('Down')) },
    { title: t('Actions'), get: (n) => delButton(t('Network'), n.name || n.id, () => net('DELETE', `/networks/${n.id}`), load) },
  ], [], { key: (n) => n.id });
  tbl.el.id = 'networks';
  async function load() {
    await guard(async () => {
      const [ns, ss] = await Promise.all([list('/networks', 'networks'), list('/subnets', 'subnets')]);
      subnets = new Map(ss.map((s) => [s.id, s]));
      tbl.update(ns);
    });
  }
  main.append(header(t('Networks'), button(t('Create Network'), () => createNetwork(load), 'primary create-network')), tbl.el);
  await load();
  return live.watch(['network'], () => load(), 500);  // another tab's or the CLI's changes
}

async function networkDetail(main, id) {
  const n = (await net('GET', `/networks/${id}`)).network;
  const subTbl = table([
    { title: t('Name'), get: (s) => s.name }, { title: t('Network address'), get: (s) => s.cidr },
    { title: t('IP version'), get: (s) => `IPv${s.ip_version}` }, { title: t('Gateway IP'), get: (s) => s.gateway_ip || '' },
    { title: t('DHCP'), get: (s) => yes(s.enable_dhcp) },
    { title: t('Actions'), get: (s) => delButton(t('Subnet'), s.name || s.cidr, () => net('DELETE', `/subnets/${s.id}`), loadSubs) },
  ], [], { filter: false });
  subTbl.el.id = 'subnets';
  async function loadSubs() { await guard(async () => subTbl.update(await list(`/subnets?network_id=${id}`, 'subnets'))); }
  const portTbl = portTable(loadPorts);
  async function loadPorts() { await guard(async () => portTbl.update(await list(`/ports?network_id=${id}`, 'ports'))); }
  const addSubnet = async () => {
    const sub = subnetFields();
    if (await form(t('Create Subnet'), sub.els, () => net('POST', '/subnets', sub.body(id)), 'subnet-form')) loadSubs();
  };
  const rows = [[t('Name'), n.name], [t('ID'), n.id], [t('Project'), n.project_id], [t('Status'), n.status], [t('Shared'), yes(n.shared)],
    [t('External'), yes(n['router:external'])], [t('MTU'), String(n.mtu ?? '')], [t('Description'), n.description || '']];
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/network/networks' }, t('Networks')), ' / '),
    header(n.name || n.id),
    tabs([
      { id: 'overview', label: t('Overview'), render: (el) => el.append(h('dl', { class: 'props' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]))) },
      { id: 'subnets', label: t('Subnets'), render: (el) => { el.append(h('div', { class: 'actions' }, button(t('Create Subnet'), addSubnet, 'primary create-subnet')), subTbl.el); loadSubs(); } },
      { id: 'ports', label: t('Ports'), render: (el) => { el.append(portTbl.el); loadPorts(); } },
    ]));
}

// ---------------------------------------------------------------- ports

function portTable(after, names = new Map()) {
  const tbl = table([
    { title: t('Name'), get: (p) => p.name || p.id.slice(0, 8) },
    { title: t('Network'), get: (p) => names.get(p.network_id) || p.network_id },
    { title: t('Fixed IPs'), get: ips }, { title: t('MAC address'), get: (p) => p.mac_address },
    { title: t('Attached to'), get: (p) => [p.device_owner, p.device_id && p.device_id.slice(0, 8)].filter(Boolean).join(' ') },
    { title: t('Status'), get: (p) => status(p.status) },
    { title: t('Actions'), get: (p) => (p.device_owner?.startsWith('network:') ? '' : delButton(t('Port'), p.name || p.id, () => net('DELETE', `/ports/${p.id}`), after)) },
  ], [], { key: (p) => p.id });
  return tbl;
}

async function ports(main) {
  const names = new Map();
  const tbl = portTable(() => load(), names);
  tbl.el.id = 'ports';
  async function load() {
    await guard(async () => {
      const [ps, ns] = await Promise.all([list('/ports', 'ports'), list('/networks', 'networks')]);
      for (const n of ns) names.set(n.id, n.name || n.id);
      tbl.update(ps);
    });
  }
  const create = async () => {
    const ns = await list('/networks', 'networks');
    const name = h('input', { maxlength: 255, name: 'name' });
    const netSel = select({ name: 'network' }, ns.map((n) => [n.id, n.name || n.id]));
    const ip = h('input', { maxlength: 64, name: 'ip', placeholder: t('Any') });
    if (await form(t('Create Port'), [field(t('Name'), name), field(t('Network'), netSel), field(t('Fixed IP'), ip)], () => {
      const p = { network_id: netSel.value, name: name.value.trim() };
      if (ip.value.trim()) p.fixed_ips = [{ ip_address: ip.value.trim() }];
      return net('POST', '/ports', { port: p });
    }, 'port-form')) load();
  };
  main.append(header(t('Ports'), button(t('Create Port'), create, 'primary create-port')), tbl.el);
  await load();
  return live.watch(['network'], () => load(), 500);  // another tab's or the CLI's changes
}

// ---------------------------------------------------------------- routers

async function externalNetworks() { return list('/networks?router:external=True', 'networks'); }

async function routers(main) {
  const names = new Map();
  const tbl = table([
    { title: t('Name'), get: (r) => h('a', { href: `#/network/routers/${r.id}`, class: 'name' }, r.name || r.id) },
    { title: t('External network'), get: (r) => (r.external_gateway_info ? names.get(r.external_gateway_info.network_id) || r.external_gateway_info.network_id : '') },
    { title: t('Gateway IPs'), get: (r) => (r.external_gateway_info?.external_fixed_ips || []).map((f) => f.ip_address).join(', ') },
    { title: t('Status'), get: (r) => status(r.status) },
    { title: t('Actions'), get: (r) => delButton(t('Router'), r.name || r.id, () => net('DELETE', `/routers/${r.id}`), load) },
  ], [], { key: (r) => r.id });
  tbl.el.id = 'routers';
  async function load() {
    await guard(async () => {
      const [rs, ns] = await Promise.all([list('/routers', 'routers'), list('/networks', 'networks')]);
      for (const n of ns) names.set(n.id, n.name || n.id);
      tbl.update(rs);
    });
  }
  const create = async () => {
    const ext = await externalNetworks();
    const name = h('input', { maxlength: 255, name: 'name' });
    const gw = select({ name: 'gateway' }, [['', t('None')], ...ext.map((n) => [n.id, n.name || n.id])]);
    if (await form(t('Create Router'), [field(t('Name'), name), field(t('External network'), gw)], () => {
      const r = { name: name.value.trim() };
      if (gw.value) r.external_gateway_info = { network_id: gw.value };
      return net('POST', '/routers', { router: r });
    }, 'router-form')) load();
  };
  main.append(header(t('Routers'), button(t('Create Router'), create, 'primary create-router')), tbl.el);
  await load();
  return live.watch(['network'], () => load(), 500);  // another tab's or the CLI's changes
}

async function routerDetail(main, id) {
  let r = (await net('GET', `/routers/${id}`)).router;
  const gwBox = h('div', { id: 'router-gateway' });
  const ifTbl = table([
    { title: t('Port'), get: (p) => p.id.slice(0, 8) }, { title: t('Fixed IPs'), get: ips },
    { title: t('Status'), get: (p) => status(p.status) },
    { title: t('Actions'), get: (p) => button(t('Remove'), async () => {
      if (await confirm(`${t('Remove interface')}: ${ips(p)}`, t('Remove'), true)) {
        await guard(async () => { await net('PUT', `/routers/${id}/remove_router_interface`, { port_id: p.id }); loadIfs(); });
      }
    }, 'danger') },
  ], [], { filter: false });
  ifTbl.el.id = 'router-interfaces';
  async function loadIfs() { await guard(async () => ifTbl.update(await list(`/ports?device_id=${id}&device_owner=network:router_interface`, 'ports'))); }
  async function drawGateway() {
    r = (await net('GET', `/routers/${id}`)).router;
    const g = r.external_gateway_info;
    clear(gwBox).append(g
      ? h('p', null, `${t('External network')}: ${g.network_id} · ${(g.external_fixed_ips || []).map((f) => f.ip_address).join(', ')} `,
        button(t('Clear gateway'), () => guard(async () => { await net('PUT', `/routers/${id}`, { router: { external_gateway_info: {} } }); drawGateway(); }), 'clear-gateway'))
      : h('p', null, t('No gateway'), ' ', button(t('Set gateway'), setGateway, 'set-gateway')));
  }
  async function setGateway() {
    const ext = await externalNetworks();
    const sel = select({ name: 'gateway' }, ext.map((n) => [n.id, n.name || n.id]));
    if (await form(t('Set gateway'), [field(t('External network'), sel)], () => net('PUT', `/routers/${id}`, { router: { external_gateway_info: { network_id: sel.value } } }), 'gateway-form')) drawGateway();
  }
  async function addInterface() {
    const subs = await list('/subnets', 'subnets');
    const sel = select({ name: 'subnet' }, subs.map((s) => [s.id, `${s.name || ''} ${s.cidr}`.trim()]));
    if (await form(t('Add interface'), [field(t('Subnet'), sel)], () => net('PUT', `/routers/${id}/add_router_interface`, { subnet_id: sel.value }), 'interface-form')) loadIfs();
  }
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/network/routers' }, t('Routers')), ' / '),
    header(r.name || r.id), h('h2', null, t('External gateway')), gwBox,
    h('div', { class: 'page-head' }, h('h2', null, t('Interfaces')), h('div', { class: 'actions' }, button(t('Add interface'), addInterface, 'primary add-interface'))), ifTbl.el);
  await Promise.all([drawGateway(), loadIfs()]);
}

// ---------------------------------------------------------------- security groups

async function securityGroups(main) {
  const tbl = table([
    { title: t('Name'), get: (g) => h('a', { href: `#/network/security-groups/${g.id}`, class: 'name' }, g.name) },
    { title: t('Description'), get: (g) => g.description || '' },
    { title: t('Rules'), get: (g) => String((g.security_group_rules || []).length) },
    { title: t('Actions'), get: (g) => (g.name === 'default' ? '' : delButton(t('Security group'), g.name, () => net('DELETE', `/security-groups/${g.id}`), load)) },
  ], [], { key: (g) => g.id });
  tbl.el.id = 'security-groups';
  async function load() { await guard(async () => tbl.update(await list('/security-groups', 'security_groups'))); }
  const create = async () => {
    const name = h('input', { maxlength: 255, name: 'name' });
    const desc = h('input', { maxlength: 255, name: 'description' });
    if (await form(t('Create Security Group'), [field(t('Name'), name), field(t('Description'), desc)],
      () => net('POST', '/security-groups', { security_group: { name: name.value.trim(), description: desc.value } }), 'sg-form')) load();
  };
  main.append(header(t('Security Groups'), button(t('Create Security Group'), create, 'primary create-sg')), tbl.el);
  await load();
  return live.watch(['network'], () => load(), 500);  // another tab's or the CLI's changes
}

const ports_ = (r) => (r.port_range_min == null ? t('Any') : r.port_range_min === r.port_range_max ? String(r.port_range_min) : `${r.port_range_min}-${r.port_range_max}`);

async function securityGroupDetail(main, id) {
  const g = (await net('GET', `/security-groups/${id}`)).security_group;
  const tbl = table([
    { title: t('Direction'), get: (r) => t(r.direction === 'ingress' ? 'Ingress' : 'Egress') }, { title: t('Ether type'), get: (r) => r.ethertype },
    { title: t('Protocol'), get: (r) => r.protocol || t('Any') }, { title: t('Port range'), get: ports_ },
    { title: t('Remote'), get: (r) => r.remote_ip_prefix || (r.remote_group_id ? `${t('Group')} ${r.remote_group_id.slice(0, 8)}` : t('Any')) },
    { title: t('Actions'), get: (r) => delButton(t('Rule'), `${r.direction} ${r.protocol || ''} ${ports_(r)}`, () => net('DELETE', `/security-group-rules/${r.id}`), load) },
  ], [], { filter: false });
  tbl.el.id = 'sg-rules';
  async function load() { await guard(async () => tbl.update(await list(`/security-group-rules?security_group_id=${id}`, 'security_group_rules'))); }
  const add = async () => {
    const dir = select({ name: 'direction' }, [['ingress', t('Ingress')], ['egress', t('Egress')]]);
    const eth = select({ name: 'ethertype' }, [['IPv4', 'IPv4'], ['IPv6', 'IPv6']]);
    const proto = select({ name: 'protocol' }, [['tcp', 'TCP'], ['udp', 'UDP'], ['icmp', 'ICMP'], ['', t('Any')]]);
    const from = h('input', { type: 'number', min: 1, max: 65535, name: 'port_min' });
    const to = h('input', { type: 'number', min: 1, max: 65535, name: 'port_max', placeholder: t('Same as the first') });
    const remote = h('input', { maxlength: 64, name: 'remote', placeholder: '0.0.0.0/0' });
    if (await form(t('Add Rule'), [field(t('Direction'), dir), field(t('Ether type'), eth), field(t('Protocol'), proto),
      field(t('Port (or first of a range)'), from), field(t('Last port'), to), field(t('Remote address (CIDR)'), remote)], () => {
      const r = { security_group_id: id, direction: dir.value, ethertype: eth.value };
      if (proto.value) r.protocol = proto.value;
      if (from.value && ['tcp', 'udp'].includes(proto.value)) { r.port_range_min = +from.value; r.port_range_max = +(to.value || from.value); }
      if (remote.value.trim()) r.remote_ip_prefix = remote.value.trim();
      return net('POST', '/security-group-rules', { security_group_rule: r });
    }, 'rule-form')) load();
  };
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/network/security-groups' }, t('Security Groups')), ' / '),
    header(g.name, button(t('Add Rule'), add, 'primary add-rule')), h('p', null, g.description || ''), tbl.el);
  await load();
}

// ---------------------------------------------------------------- floating IPs

async function floatingIps(main) {
  const names = new Map();
  const tbl = table([
    { title: t('IP address'), get: (f) => f.floating_ip_address },
    { title: t('Mapped fixed IP'), get: (f) => f.fixed_ip_address || '' },
    { title: t('Port'), get: (f) => (f.port_id ? f.port_id.slice(0, 8) : '') },
    { title: t('Pool'), get: (f) => names.get(f.floating_network_id) || f.floating_network_id },
    { title: t('Status'), get: (f) => status(f.status) },
    { title: t('Actions'), get: (f) => h('div', { class: 'row-buttons' },
      f.port_id
        ? button(t('Disassociate'), () => guard(async () => { await net('PUT', `/floatingips/${f.id}`, { floatingip: { port_id: null } }); toast(`${t('Disassociate')}: ${f.floating_ip_address}`); load(); }), 'disassociate')
        : button(t('Associate'), () => associate(f), 'associate'),
      delButton(t('Floating IP'), f.floating_ip_address, () => net('DELETE', `/floatingips/${f.id}`), load)) },
  ], [], { key: (f) => f.id });
  tbl.el.id = 'floating-ips';
  async function load() {
    await guard(async () => {
      const [fs, ns] = await Promise.all([list('/floatingips', 'floatingips'), list('/networks', 'networks')]);
      for (const n of ns) names.set(n.id, n.name || n.id);
      tbl.update(fs);
    });
  }
  async function associate(f) {
    const ps = (await list('/ports', 'ports')).filter((p) => !p.device_owner?.startsWith('network:') && (p.fixed_ips || []).some((x) => !x.ip_address.includes(':')));
    const sel = select({ name: 'port' }, ps.map((p) => [p.id, `${p.name || p.id.slice(0, 8)} · ${ips(p)}`]));
    const ok = await dialog(t('Associate'), field(t('Port'), sel), [{ label: t('Cancel') },
      { label: t('Associate'), primary: true, id: 'associate-go', run: async () => { await net('PUT', `/floatingips/${f.id}`, { floatingip: { port_id: sel.value } }); return true; } }]);
    if (ok) { toast(`${t('Associate')}: ${f.floating_ip_address}`); load(); }
  }
  const allocate = async () => {
    const ext = await externalNetworks();
    const sel = select({ name: 'pool' }, ext.map((n) => [n.id, n.name || n.id]));
    const ok = await dialog(t('Allocate IP'), field(t('Pool'), sel), [{ label: t('Cancel') },
      { label: t('Allocate IP'), primary: true, id: 'allocate-go', run: async () => { await net('POST', '/floatingips', { floatingip: { floating_network_id: sel.value } }); return true; } }]);
    if (ok) load();
  };
  main.append(header(t('Floating IPs'), button(t('Allocate IP'), allocate, 'primary allocate-ip')), tbl.el);
  await load();
  return live.watch(['network'], () => load(), 500);  // another tab's or the CLI's changes
}

// ---------------------------------------------------------------- topology

/**
 * Networks are vertical bars; routers and servers are boxes on their left and right,
 * joined to each network they have a port on. Everything is SVG made with DOM calls.
 */
async function topology(main) {
  const [ns, ps, rs, servers] = await Promise.all([
    list('/networks', 'networks'), list('/ports', 'ports'), list('/routers', 'routers'),
    api.has('compute') ? api.get('compute', '/servers?limit=200').then((r) => r.servers).catch(() => []) : [],
  ]);
  const W = 150, GAP = 110, top = 30, boxH = 44, rowH = 70;
  const col = new Map(ns.map((n, i) => [n.id, i]));
  const nodes = [
    ...rs.map((r) => ({ id: r.id, kind: 'router', label: r.name || r.id.slice(0, 8), href: `#/network/routers/${r.id}` })),
    ...servers.map((s) => ({ id: s.id, kind: 'server', label: s.name, href: `#/instances/${s.id}` })),
  ];
  const links = (node) => ps.filter((p) => p.device_id === node.id && col.has(p.network_id));
  const rows = Math.max(1, nodes.length);
  const width = Math.max(600, ns.length * GAP + W + 60);
  const height = top + rows * rowH + 40;
  const bars = svg('g');
  ns.forEach((n, i) => {
    const x = W + 40 + i * GAP;
    bars.append(svg('a', { href: `#/network/networks/${n.id}` },
      svg('rect', { x, y: top, width: 14, height: height - top - 10, rx: 4, class: `topo-net${n['router:external'] ? ' ext' : ''}` }),
      svg('text', { x: x + 7, y: top - 8, 'text-anchor': 'middle', class: 'topo-label' }, n.name || n.id.slice(0, 8))));
  });
  const wires = svg('g');
  const boxes = svg('g');
  nodes.forEach((node, j) => {
    const y = top + 15 + j * rowH;
    for (const p of links(node)) {
      const x = W + 40 + col.get(p.network_id) * GAP;
      wires.append(svg('line', { x1: 10 + W, y1: y + boxH / 2, x2: x + 7, y2: y + boxH / 2, class: 'topo-link' }));
      boxes.append(svg('circle', { cx: x + 7, cy: y + boxH / 2, r: 4, class: 'topo-port' }),
        svg('text', { x: x + 14, y: y + boxH / 2 - 5, class: 'topo-ip' }, ips(p)));
    }
    boxes.append(svg('a', { href: node.href },
      svg('rect', { x: 10, y, width: W, height: boxH, rx: 6, class: `topo-box ${node.kind}` }),
      svg('text', { x: 10 + W / 2, y: y + 19, 'text-anchor': 'middle', class: 'topo-kind' }, node.kind === 'router' ? t('Router') : t('Instance')),
      svg('text', { x: 10 + W / 2, y: y + 35, 'text-anchor': 'middle', class: 'topo-label' }, node.label.length > 20 ? `${node.label.slice(0, 19)}…` : node.label)));
  });
  const pic = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'group', id: 'topology', 'aria-label': t('Network topology: {n} networks, {r} routers, {s} instances', { n: ns.length, r: rs.length, s: servers.length }) },
    svg('title', null, t('Network Topology')), wires, bars, boxes);
  main.append(header(t('Network Topology')), h('div', { class: 'topo-wrap' }, pic),
    h('p', { class: 'muted' }, t('Networks are the vertical bars; routers and instances are joined to each network they have a port on.')));
}

export async function render(main, { page, rest }) {
  switch (page.path) {
    case 'network/networks': return rest ? networkDetail(main, rest) : networks(main);
    case 'network/ports': return ports(main);
    case 'network/routers': return rest ? routerDetail(main, rest) : routers(main);
    case 'network/security-groups': return rest ? securityGroupDetail(main, rest) : securityGroups(main);
    case 'network/floating-ips': return floatingIps(main);
    default: return topology(main);
  }
}
