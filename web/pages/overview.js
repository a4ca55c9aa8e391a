// Overview: Horizon's limit summary, one ring per compute limit (/limits).
import { h, svg } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header } from '../ui.js';

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

export async function render(main) {
  const [a, keypairs, nq, vq] = await Promise.all([
    api.get('compute', '/limits').then((r) => r.limits.absolute),
    // Nova's limits give no key pairs used: count them.
    api.get('compute', '/os-keypairs').then((r) => r.keypairs.length).catch(() => 0),
    networkLimits(),
    volumeLimits(),
  ]);
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
}
