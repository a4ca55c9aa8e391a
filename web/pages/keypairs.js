// Key pairs: create (the private key is downloaded once), import, delete.
import { h } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, button, table, dialog, confirm, field, guard } from '../ui.js';
import { createKeypair } from './launch.js';

export async function render(main) {
  const tbl = table([
    { title: t('Name'), get: (k) => k.name }, { title: t('Type'), get: (k) => k.type || 'ssh' },
    { title: t('Fingerprint'), get: (k) => k.fingerprint },
    { title: t('Actions'), get: (k) => button(t('Delete'), async () => {
      if (await confirm(`${t('Delete')}: ${k.name}`, t('Delete'), true)) await guard(async () => { await api.call('compute', 'DELETE', `/os-keypairs/${encodeURIComponent(k.name)}`); load(); });
    }, 'danger') },
  ], [], { key: (k) => k.name });
  tbl.el.id = 'keypairs';
  async function load() { await guard(async () => tbl.update((await api.get('compute', '/os-keypairs')).keypairs.map((k) => k.keypair))); }
  const create = async (imp) => {
    const name = h('input', { id: 'keypair-name', maxlength: 255 });
    const pub = h('textarea', { id: 'keypair-public', rows: 4, placeholder: 'ssh-ed25519 AAAA…' });
    const ok = await dialog(imp ? t('Import Key Pair') : t('Create Key Pair'), h('div', null, field(t('Name'), name), imp ? field(t('Public key'), pub) : null),
      [{ label: t('Cancel') }, { label: imp ? t('Import') : t('Create'), primary: true, id: 'keypair-go', run: async () => { await createKeypair(name.value.trim(), imp ? pub.value.trim() : null); return true; } }]);
    if (ok) load();
  };
  main.append(header(t('Key Pairs'), button(t('Create Key Pair'), () => create(false), 'primary create-key'), button(t('Import Key Pair'), () => create(true), 'import-key')), tbl.el);
  await load();
}
