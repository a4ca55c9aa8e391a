// API Access: the catalog, and clouds.yaml / openrc for the signed-in user (no password).
import { h, download } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, button, table } from '../ui.js';

const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

export async function render(main) {
  const s = api.current();
  const auth = `${location.origin}/identity/v3`;
  const yaml = [
    'clouds:', '  yunhe:', '    auth:', `      auth_url: ${JSON.stringify(auth)}`,
    `      username: ${JSON.stringify(s.user.name)}`, `      user_domain_name: ${JSON.stringify(s.user.domain || s.domain || 'Default')}`,
    `      project_name: ${JSON.stringify(s.project?.name || '')}`, `      project_domain_name: ${JSON.stringify(s.domain || 'Default')}`,
    '    identity_api_version: 3', '    interface: public', '',
  ].join('\n');
  const rc = [
    '#!/usr/bin/env bash', `# openrc for ${s.user.name} on ${location.host}: asks for the password.`,
    `export OS_AUTH_URL=${q(auth)}`, 'export OS_IDENTITY_API_VERSION=3', `export OS_USERNAME=${q(s.user.name)}`,
    `export OS_USER_DOMAIN_NAME=${q(s.user.domain || s.domain || 'Default')}`, `export OS_PROJECT_NAME=${q(s.project?.name || '')}`,
    `export OS_PROJECT_DOMAIN_NAME=${q(s.domain || 'Default')}`, 'export OS_INTERFACE=public',
    'read -sr -p "Password for $OS_USERNAME: " OS_PASSWORD && echo', 'export OS_PASSWORD', '',
  ].join('\n');
  const rows = Object.entries(s.endpoints).map(([type, path]) => ({ type, url: location.origin + path }));
  main.append(header(t('API Access'),
    button(t('Download clouds.yaml'), () => download('clouds.yaml', yaml, 'application/x-yaml'), 'dl-clouds'),
    button(t('Download OpenRC file'), () => download(`${s.project?.name || 'yunhe'}-openrc.sh`, rc, 'application/x-sh'), 'dl-openrc')),
  table([{ title: t('Service'), get: (r) => r.type }, { title: t('Endpoint'), get: (r) => r.url }], rows, { filter: false }).el);
}
