// Server groups: list, create (policy), delete.
import { h } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, button, table, dialog, confirm, field, guard } from '../ui.js';

export async function render(main) {
  const tbl = table([
    { title: t('Name'), get: (g) => g.name }, { title: t('Policy'), get: (g) => g.policy || (g.policies || []).join(', ') },
    { title: t('Members'), get: (g) => String((g.members || []).length) },
    { title: t('Actions'), get: (g) => button(t('Delete'), async () => {
      if (await confirm(`${t('Delete')}: ${g.name}`, t('Delete'), true)) await guard(async () => { await api.call('compute', 'DELETE', `/os-server-groups/${g.id}`); load(); });
    }, 'danger') },
  ], [], { key: (g) => g.id });
  tbl.el.id = 'server-groups';
  async function load() { await guard(async () => tbl.update((await api.get('compute', '/os-server-groups')).server_groups)); }
  const create = async () => {
    const name = h('input', { id: 'group-name', maxlength: 255 });
    const policy = h('select', { id: 'group-policy' }, ['anti-affinity', 'affinity', 'soft-anti-affinity', 'soft-affinity'].map((p) => h('option', { value: p }, p)));
    const ok = await dialog(t('Create Server Group'), h('div', null, field(t('Name'), name), field(t('Policy'), policy)),
      [{ label: t('Cancel') }, { label: t('Create'), primary: true, id: 'group-go', run: async () => {
        await api.call('compute', 'POST', '/os-server-groups', { server_group: { name: name.value.trim(), policy: policy.value } }); return true;
      } }]);
    if (ok) load();
  };
  main.append(header(t('Server Groups'), button(t('Create Server Group'), create, 'primary')), tbl.el);
  await load();
}
