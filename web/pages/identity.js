// Identity pages for admins: projects, users, roles (with their assignments).
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, table } from '../ui.js';

const yes = (v) => (v ? '✓' : '');

export async function render(main, { page }) {
  const id = (path) => api.call('identity', 'GET', path);
  if (page.path === 'identity/projects') {
    const r = await id('/v3/projects');
    main.append(header(t('Projects')), table([{ title: t('Name'), get: (p) => p.name }, { title: t('ID'), get: (p) => p.id },
      { title: t('Domain ID'), get: (p) => p.domain_id }, { title: t('Enabled'), get: (p) => yes(p.enabled) }, { title: t('Description'), get: (p) => p.description || '' }], r.projects).el);
  } else if (page.path === 'identity/users') {
    const r = await id('/v3/users');
    main.append(header(t('Users')), table([{ title: t('Name'), get: (u) => u.name }, { title: t('ID'), get: (u) => u.id },
      { title: t('Domain ID'), get: (u) => u.domain_id }, { title: t('Enabled'), get: (u) => yes(u.enabled) }], r.users).el);
  } else {
    const [roles, asg] = await Promise.all([id('/v3/roles'), id('/v3/role_assignments?include_names=true')]);
    main.append(header(t('Roles')), table([{ title: t('Name'), get: (r) => r.name }, { title: t('ID'), get: (r) => r.id }], roles.roles).el,
      header(t('Role assignments')), table([
        { title: t('Roles'), get: (a) => a.role?.name || a.role?.id },
        { title: t('Users'), get: (a) => a.user?.name || a.group?.name || a.user?.id || a.group?.id || '' },
        { title: t('Project'), get: (a) => a.scope?.project?.name || (a.scope?.system ? 'system' : a.scope?.domain?.name || '') },
      ], asg.role_assignments).el);
  }
}
