// Overview: Horizon's limit summary, one ring per compute limit (/limits).
import { h, svg, clear } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, table, field, guard } from '../ui.js';

function ring(label, used, max, unit = '') {
  const r = 40, c = 2 * Math.PI * r;
  const frac = max > 0 ? Math.min(1, used / max) : 0;
  const cls = frac >= 0.9 ? 'hot' : frac >= 0.7 ? 'warm' : 'cool';
  const text = max < 0 ? `${used}${unit} / ∞` : t('Used {used} of {max}', { used: `${used}${unit}`, max: `${max}${unit}` });
  return h('figure', { class: 'ring' },
    svg('svg', { viewBox: '0 0 100 100', role: 'img', 'aria-label': `${label}: ${text}` },
      svg('circle', { cx: 50, cy: 50, r, class: 'track' }),
      svg('circle', { cx: 50, cy: 50, r, class: `bar ${cls}`, 'stroke-dasharray': `${c * frac} ${c}`, transform: 'rotate(-90 50 50)' }),
      svg('text', { x: 50, y: 55, 'text-anchor': 'middle' }, max > 0 ? `${Math.round(frac * 100)}%` : '—')),
    h('figcaption', null, h('strong', null, label), h('span', null, text)));
}

/** Neutron's quota details (used and limit per resource), or null without the network API. */
async function networkLimits() {
  if (!api.has('network')) return null;
  const pid = api.current().project?.id;
  try { return (await api.call('network', 'GET', `/v2.0/quotas/${pid}/details`)).quota; } catch { return null; }
}

async function volumeLimits() {
  if (!api.has('block-storage')) return null;
  try { return (await api.call('block-storage', 'GET', '/limits')).limits.absolute; } catch { return null; }
}

const DAY = 86400000;
const iso = (ms) => new Date(ms).toISOString().slice(0, 19);
const usageOf = (pid, from, to, detailed) => api.get('compute', `/os-simple-tenant-usage/${pid}?start=${iso(from)}&end=${iso(to)}${detailed ? '&detailed=1' : ''}`)
  .then((r) => r.tenant_usage || {});

/** vCPU-hours and RAM GB-hours a day for the last 14 days, as bars (one request a day). */
async function usageChart() {
  const pid = api.current().project?.id;
  const today = new Date(); today.setUTCHours(0, 0, 0, 0);
  const days = Array.from({ length: 14 }, (_, i) => today.getTime() - (13 - i) * DAY);
  const data = await Promise.all(days.map((d) => usageOf(pid, d, Math.min(d + DAY, Date.now())).catch(() => ({}))));
  const cpu = data.map((u) => u.total_vcpus_usage || 0);
  const ram = data.map((u) => (u.total_memory_mb_usage || 0) / 1024);
  const max = Math.max(1, ...cpu, ...ram);
  const W = 620, H = 180, pad = 30, bw = (W - pad) / days.length;
  const g = svg('g');
  days.forEach((d, i) => {
    const x = pad + i * bw;
    const hc = (cpu[i] / max) * (H - 40), hr = (ram[i] / max) * (H - 40);
    g.append(svg('rect', { x: x + 2, y: H - 20 - hc, width: bw / 2 - 3, height: hc, class: 'bar-cpu' }, svg('title', null, `${new Date(d).toISOString().slice(0, 10)}: ${cpu[i].toFixed(1)} vCPU·h`)),
      svg('rect', { x: x + bw / 2, y: H - 20 - hr, width: bw / 2 - 3, height: hr, class: 'bar-ram' }, svg('title', null, `${new Date(d).toISOString().slice(0, 10)}: ${ram[i].toFixed(1)} GB·h`)));
    if (i % 2 === 0) g.append(svg('text', { x: x + bw / 2, y: H - 5, 'text-anchor': 'middle', class: 'axis' }, new Date(d).toISOString().slice(5, 10)));
  });
  g.append(svg('text', { x: 2, y: 14, class: 'axis' }, max.toFixed(1)), svg('line', { x1: pad, y1: H - 20, x2: W, y2: H - 20, class: 'axis-line' }));
  const total = cpu.reduce((a, b) => a + b, 0);
  return h('figure', { class: 'usage-chart' },
    svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', id: 'usage-chart', 'aria-label': t('Usage over the last 14 days: {n} vCPU-hours', { n: total.toFixed(1) }) }, g),
    h('figcaption', null, h('span', { class: 'key-cpu' }, t('vCPU-hours')), ' ', h('span', { class: 'key-ram' }, t('RAM GB-hours')), ` · ${t('Last 14 days')}`));
}

/** Horizon's usage summary: a period (start, end) and each instance's use within it. */
function usageSummary() {
  const pid = api.current().project?.id;
  const now = new Date();
  const start = h('input', { type: 'date', id: 'usage-start', value: `${now.toISOString().slice(0, 8)}01` });
  const end = h('input', { type: 'date', id: 'usage-end', value: now.toISOString().slice(0, 10) });
  const totals = h('p', { id: 'usage-totals', role: 'status' });
  const tbl = table([
    { title: t('Instance'), get: (u) => u.name }, { title: t('vCPUs'), get: (u) => String(u.vcpus) },
    { title: t('Disk'), get: (u) => `${u.local_gb} GB` }, { title: t('RAM'), get: (u) => `${u.memory_mb} MB` },
    { title: t('Hours'), get: (u) => (u.hours || 0).toFixed(2) }, { title: t('Status'), get: (u) => u.state },
  ], [], { filter: false, empty: t('No usage in this period.') });
  tbl.el.id = 'usage';
  const load = () => guard(async () => {
    const from = Date.parse(`${start.value}T00:00:00Z`), to = Math.min(Date.parse(`${end.value}T00:00:00Z`) + DAY, Date.now());
    if (!(from < to)) throw new Error(t('The start must be before the end.'));
    const u = await usageOf(pid, from, to, true);
    totals.textContent = t('{cpu} vCPU-hours, {ram} GB-hours of RAM, {disk} GB-hours of disk', {
      cpu: (u.total_vcpus_usage || 0).toFixed(2), ram: ((u.total_memory_mb_usage || 0) / 1024).toFixed(2), disk: (u.total_local_gb_usage || 0).toFixed(2) });
    tbl.update(u.server_usages || []);
  });
  const form = h('form', { class: 'usage-form', onsubmit: (e) => { e.preventDefault(); load(); } },
    field(t('From'), start), field(t('To'), end), h('button', { type: 'submit', id: 'usage-go' }, t('Submit')));
  load();
  return h('div', null, form, totals, tbl.el);
}

/**
 * The page's GET requests go out with the shell's page signal (api.pageScope): leaving the
 * page aborts those still out, and SIGNAL tells this code to start no more.
 */
export async function render(main, { signal } = {}) {
  const [a, keypairs, nq, vq] = await Promise.all([
    api.get('compute', '/limits').then((r) => r.limits.absolute),
    // Nova's limits give no key pairs used: count them.
    api.get('compute', '/os-keypairs').then((r) => r.keypairs.length).catch(() => 0),
    networkLimits(),
    volumeLimits(),
  ]);
  if (signal?.aborted) return;
  const q = (k) => nq[k] || { used: 0, limit: -1 };
  main.append(header(t('Overview')), h('h2', null, t('Limit summary')),
    h('div', { class: 'rings', id: 'limits' },
      ring(t('Instances'), a.totalInstancesUsed, a.maxTotalInstances),
      ring(t('Cores'), a.totalCoresUsed, a.maxTotalCores),
      ring(t('RAM'), a.totalRAMUsed, a.maxTotalRAMSize, ' MB'),
      ring(t('Server groups'), a.totalServerGroupsUsed ?? 0, a.maxServerGroups),
      ring(t('Key pairs'), a.totalKeyPairsUsed ?? keypairs, a.maxTotalKeypairs)),
    ...(nq ? [h('h2', null, t('Network')), h('div', { class: 'rings', id: 'network-limits' },
      ring(t('Networks'), q('network').used, q('network').limit), ring(t('Subnets'), q('subnet').used, q('subnet').limit),
      ring(t('Ports'), q('port').used, q('port').limit), ring(t('Routers'), q('router').used, q('router').limit),
      ring(t('Floating IPs'), q('floatingip').used, q('floatingip').limit), ring(t('Security Groups'), q('security_group').used, q('security_group').limit))] : []),
    ...(vq ? [h('h2', null, t('Volumes')), h('div', { class: 'rings', id: 'volume-limits' },
      ring(t('Volumes'), vq.totalVolumesUsed, vq.maxTotalVolumes), ring(t('Volume Snapshots'), vq.totalSnapshotsUsed, vq.maxTotalSnapshots),
      ring(t('Volume storage'), vq.totalGigabytesUsed, vq.maxTotalVolumeGigabytes, ' GiB'))] : []));
  const chartBox = h('div', { id: 'usage-over-time' });
  main.append(h('h2', null, t('Usage')), chartBox, usageSummary());
  usageChart().then((c) => { if (!signal?.aborted) clear(chartBox).append(c); }).catch(() => {});
}
