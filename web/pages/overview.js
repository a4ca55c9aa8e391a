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

export async function render(main) {
  const [a, keypairs] = await Promise.all([
    api.get('compute', '/limits').then((r) => r.limits.absolute),
    // Nova's limits give no key pairs used: count them.
    api.get('compute', '/os-keypairs').then((r) => r.keypairs.length).catch(() => 0),
  ]);
  main.append(header(t('Overview')), h('h2', null, t('Limit summary')),
    h('div', { class: 'rings', id: 'limits' },
      ring(t('Instances'), a.totalInstancesUsed, a.maxTotalInstances),
      ring(t('Cores'), a.totalCoresUsed, a.maxTotalCores),
      ring(t('RAM'), a.totalRAMUsed, a.maxTotalRAMSize, ' MB'),
      ring(t('Server groups'), a.totalServerGroupsUsed ?? 0, a.maxServerGroups),
      ring(t('Key pairs'), a.totalKeyPairsUsed ?? keypairs, a.maxTotalKeypairs)));
}
