// Identity pages over Keystone's v3 API. For admins: projects (create, edit, enable or
// disable, delete, members), users (create, edit, enable or disable, password, delete),
// groups (create, delete, members), roles (create, delete) and role assignments (grant,
// revoke). For everyone: the signed-in user's application credentials.
import { h, download } from '../dom.js';
import { t } from '../i18n.js';
import * as api from '../api.js';
import { header, button, table, dialog, confirm, toast, field, guard } from '../ui.js';

const ks = (method, path, body) => api.call('identity', method, path, body);
const list = async (path, key) => (await api.get('identity', path))[key] || [];
const yes = (v) => (v ? t('Yes') : t('No'));
const select = (attrs, options) => h('select', attrs, options.map(([v, label]) => h('option', { value: v }, label)));
const byName = (a, b) => String(a.name).localeCompare(String(b.name));

/** A dialog of fields with Cancel and a primary button (id `${id}-go`); true when run() succeeded. */
async function form(title, fields, run, id, label = t('Create')) {
  return (await dialog(title, h('div', { class: 'form', id }, fields), [
    { label: t('Cancel') },
    { label, primary: true, id: `${id}-go`, run: async () => { await run(); return true; } },
  ])) === true;
}

function delButton(what, name, run, after) {
  return button(t('Delete'), async () => {
    if (await confirm(`${t('Delete')} ${what}: ${name}`, t('Delete'), true)) {
      await guard(async () => { await run(); toast(`${t('Deleted')}: ${name}`); after(); });
    }
  }, 'danger');
}

/** Enables or disables a project or user (PATCH enabled). */
function toggleButton(kind, x, after) {
  return button(x.enabled ? t('Disable') : t('Enable'), () => guard(async () => {
    await ks('PATCH', `/v3/${kind}s/${x.id}`, { [kind]: { enabled: !x.enabled } });
    toast(`${x.enabled ? t('Disabled') : t('Enabled')}: ${x.name}`);
    after();
  }), x.enabled ? 'toggle disable' : 'toggle enable');
}

const actions = (...b) => h('div', { class: 'row-actions' }, b);

// ---------------------------------------------------------------- projects

/** The role assignments on a project, with a grant form and revoke buttons. */
async function members(p) {
  const [users, groups, roles] = await Promise.all([list('/v3/users', 'users'), list('/v3/groups', 'groups'), list('/v3/roles', 'roles')]);
  const tbl = table([
    { title: t('User or group'), get: (a) => (a.user ? a.user.name || a.user.id : `${a.group?.name || a.group?.id} (${t('Group')})`) },
    { title: t('Role'), get: (a) => a.role?.name || a.role?.id },
    { title: t('Actions'), get: (a) => button(t('Revoke'), () => guard(async () => {
      const actor = a.user ? `users/${a.user.id}` : `groups/${a.group.id}`;
      await ks('DELETE', `/v3/projects/${p.id}/${actor}/roles/${a.role.id}`);
      await load();
    }), 'danger revoke') },
  ], [], { filter: false, pending: true });
  tbl.el.id = 'project-members';
  const load = async () => tbl.update((await list(`/v3/role_assignments?scope.project.id=${encodeURIComponent(p.id)}&include_names=true`, 'role_assignments'))
    .filter((a) => !a.scope?.['OS-INHERIT:inherited_to']));
  const actor = select({ name: 'actor' }, [...users.sort(byName).map((u) => [`users/${u.id}`, u.name]), ...groups.sort(byName).map((g) => [`groups/${g.id}`, `${g.name} (${t('Group')})`])]);
  const role = select({ name: 'role' }, roles.sort(byName).map((r) => [r.id, r.name]));
  const grant = h('form', { class: 'inline-form', id: 'member-form', onsubmit: (e) => {
    e.preventDefault();
    guard(async () => { await ks('PUT', `/v3/projects/${p.id}/${actor.value}/roles/${role.value}`); await load(); });
  } }, field(t('User or group'), actor), field(t('Role'), role), h('button', { type: 'submit', id: 'member-form-go' }, t('Grant')));
  await load();
  await dialog(`${t('Manage Members')}: ${p.name}`, h('div', null, tbl.el, grant));
}

function projectFields(p = {}) {
  const f = {
    name: h('input', { maxlength: 64, name: 'name', required: true, value: p.name || '' }),
    description: h('textarea', { name: 'description', rows: 2 }),
    enabled: h('input', { type: 'checkbox', name: 'enabled', checked: p.enabled !== false }),
  };
  f.description.value = p.description || '';
  return { f, els: [field(t('Name'), f.name), field(t('Description'), f.description), h('label', { class: 'check' }, f.enabled, t('Enabled'))],
    body: () => ({ name: f.name.value.trim(), description: f.description.value, enabled: f.enabled.checked }) };
}

async function projects(main) {
  const tbl = table([
    { title: t('Name'), get: (p) => p.name }, { title: t('ID'), get: (p) => p.id }, { title: t('Domain ID'), get: (p) => p.domain_id },
    { title: t('Enabled'), get: (p) => yes(p.enabled) }, { title: t('Description'), get: (p) => p.description || '' },
    { title: t('Actions'), get: (p) => actions(
      button(t('Manage Members'), () => guard(() => members(p)), 'members'),
      button(t('Edit'), () => guard(async () => {
        const pf = projectFields(p);
        if (await form(`${t('Edit Project')}: ${p.name}`, pf.els, () => ks('PATCH', `/v3/projects/${p.id}`, { project: pf.body() }), 'project-form', t('Save'))) load();
      }), 'edit'),
      toggleButton('project', p, load),
      delButton(t('Project'), p.name, () => ks('DELETE', `/v3/projects/${p.id}`), load)) },
  ], [], { key: (p) => p.id, pending: true });
  tbl.el.id = 'projects';
  const load = () => guard(async () => tbl.update(await list('/v3/projects', 'projects')));
  const create = async () => {
    const pf = projectFields();
    if (await form(t('Create Project'), pf.els, () => ks('POST', '/v3/projects', { project: pf.body() }), 'project-form')) load();
  };
  main.append(header(t('Projects'), button(t('Create Project'), create, 'primary create-project')), tbl.el);
  await load();
}

// ---------------------------------------------------------------- users

async function users(main) {
  let names = new Map();
  const tbl = table([
    { title: t('Name'), get: (u) => u.name }, { title: t('ID'), get: (u) => u.id }, { title: t('Email'), get: (u) => u.email || '' },
    { title: t('Primary project'), get: (u) => names.get(u.default_project_id) || u.default_project_id || '' },
    { title: t('Domain ID'), get: (u) => u.domain_id }, { title: t('Enabled'), get: (u) => yes(u.enabled) },
    { title: t('Actions'), get: (u) => actions(
      button(t('Edit'), () => guard(() => editUser(u, names, load)), 'edit'),
      button(t('Change Password'), () => guard(async () => {
        const pw = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true });
        const again = h('input', { type: 'password', name: 'confirm', autocomplete: 'new-password', required: true });
        if (await form(`${t('Change Password')}: ${u.name}`, [field(t('Password'), pw), field(t('Confirm Password'), again)], async () => {
          if (!pw.value || pw.value !== again.value) throw new Error(t('The passwords do not match.'));
          await ks('PATCH', `/v3/users/${u.id}`, { user: { password: pw.value } });
        }, 'password-form', t('Save'))) toast(`${t('Saved')}: ${u.name}`);
      }), 'password'),
      toggleButton('user', u, load),
      delButton(t('User'), u.name, () => ks('DELETE', `/v3/users/${u.id}`), load)) },
  ], [], { key: (u) => u.id, pending: true });
  tbl.el.id = 'users';
  const load = () => guard(async () => tbl.update(await list('/v3/users', 'users')));
  const create = () => guard(async () => {
    const roles = await list('/v3/roles', 'roles');
    const f = {
      name: h('input', { maxlength: 255, name: 'name', required: true, autocomplete: 'off' }),
      email: h('input', { type: 'email', name: 'email', maxlength: 255 }),
      password: h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true }),
      confirm: h('input', { type: 'password', name: 'confirm', autocomplete: 'new-password', required: true }),
      project: select({ name: 'project' }, [['', t('None')], ...[...names].sort((a, b) => a[1].localeCompare(b[1]))]),
      role: select({ name: 'role' }, roles.sort(byName).map((r) => [r.id, r.name])),
      enabled: h('input', { type: 'checkbox', name: 'enabled', checked: true }),
    };
    const member = roles.find((r) => r.name === 'member');
    if (member) f.role.value = member.id;
    const ok = await form(t('Create User'), [field(t('User name'), f.name), field(t('Email'), f.email), field(t('Password'), f.password),
      field(t('Confirm Password'), f.confirm), field(t('Primary project'), f.project), field(t('Role'), f.role, t('Granted on the primary project')),
      h('label', { class: 'check' }, f.enabled, t('Enabled'))], async () => {
      if (f.password.value !== f.confirm.value) throw new Error(t('The passwords do not match.'));
      const user = { name: f.name.value.trim(), password: f.password.value, enabled: f.enabled.checked };
      if (f.email.value.trim()) user.email = f.email.value.trim();
      if (f.project.value) user.default_project_id = f.project.value;
      const made = (await ks('POST', '/v3/users', { user })).user;
      if (f.project.value && f.role.value) await ks('PUT', `/v3/projects/${f.project.value}/users/${made.id}/roles/${f.role.value}`);
    }, 'user-form');
    if (ok) load();
  });
  main.append(header(t('Users'), button(t('Create User'), create, 'primary create-user')), tbl.el);
  names = new Map((await guard(() => list('/v3/projects', 'projects')) || []).map((p) => [p.id, p.name]));
  await load();
}

async function editUser(u, names, done) {
  const f = {
    name: h('input', { maxlength: 255, name: 'name', required: true, value: u.name }),
    email: h('input', { type: 'email', name: 'email', maxlength: 255, value: u.email || '' }),
    description: h('textarea', { name: 'description', rows: 2 }),
    project: select({ name: 'project' }, [['', t('None')], ...[...names].sort((a, b) => a[1].localeCompare(b[1]))]),
  };
  f.description.value = u.description || '';
  f.project.value = u.default_project_id || '';
  if (await form(`${t('Edit User')}: ${u.name}`, [field(t('User name'), f.name), field(t('Email'), f.email), field(t('Description'), f.description), field(t('Primary project'), f.project)],
    () => ks('PATCH', `/v3/users/${u.id}`, { user: { name: f.name.value.trim(), email: f.email.value.trim() || null, description: f.description.value, default_project_id: f.project.value || null } }),
    'user-form', t('Save'))) done();
}

// ---------------------------------------------------------------- groups

async function groupMembers(g) {
  const all = (await list('/v3/users', 'users')).sort(byName);
  const tbl = table([
    { title: t('User name'), get: (u) => u.name }, { title: t('ID'), get: (u) => u.id },
    { title: t('Actions'), get: (u) => button(t('Remove'), () => guard(async () => { await ks('DELETE', `/v3/groups/${g.id}/users/${u.id}`); await load(); }), 'danger remove') },
  ], [], { filter: false, pending: true });
  tbl.el.id = 'group-members';
  const load = async () => tbl.update(await list(`/v3/groups/${g.id}/users`, 'users'));
  const user = select({ name: 'user' }, all.map((u) => [u.id, u.name]));
  const add = h('form', { class: 'inline-form', id: 'group-member-form', onsubmit: (e) => {
    e.preventDefault();
    guard(async () => { await ks('PUT', `/v3/groups/${g.id}/users/${user.value}`); await load(); });
  } }, field(t('User name'), user), h('button', { type: 'submit', id: 'group-member-form-go' }, t('Add')));
  await load();
  await dialog(`${t('Manage Members')}: ${g.name}`, h('div', null, tbl.el, add));
}

async function groups(main) {
  const tbl = table([
    { title: t('Name'), get: (g) => g.name }, { title: t('ID'), get: (g) => g.id }, { title: t('Description'), get: (g) => g.description || '' },
    { title: t('Actions'), get: (g) => actions(
      button(t('Manage Members'), () => guard(() => groupMembers(g)), 'members'),
      delButton(t('Group'), g.name, () => ks('DELETE', `/v3/groups/${g.id}`), load)) },
  ], [], { key: (g) => g.id, pending: true });
  tbl.el.id = 'groups';
  const load = () => guard(async () => tbl.update(await list('/v3/groups', 'groups')));
  const create = async () => {
    const name = h('input', { maxlength: 64, name: 'name', required: true });
    const description = h('textarea', { name: 'description', rows: 2 });
    if (await form(t('Create Group'), [field(t('Name'), name), field(t('Description'), description)],
      () => ks('POST', '/v3/groups', { group: { name: name.value.trim(), description: description.value } }), 'group-form')) load();
  };
  main.append(header(t('Groups'), button(t('Create Group'), create, 'primary create-group')), tbl.el);
  await load();
}

// ---------------------------------------------------------------- roles, assignments

async function roles(main) {
  const tbl = table([
    { title: t('Name'), get: (r) => r.name }, { title: t('ID'), get: (r) => r.id },
    { title: t('Actions'), get: (r) => delButton(t('Role'), r.name, () => ks('DELETE', `/v3/roles/${r.id}`), load) },
  ], [], { key: (r) => r.id, pending: true });
  tbl.el.id = 'roles';
  const load = () => guard(async () => tbl.update(await list('/v3/roles', 'roles')));
  const create = async () => {
    const name = h('input', { maxlength: 255, name: 'name', required: true });
    if (await form(t('Create Role'), [field(t('Name'), name)], () => ks('POST', '/v3/roles', { role: { name: name.value.trim() } }), 'role-form')) load();
  };
  main.append(header(t('Roles'), button(t('Create Role'), create, 'primary create-role')), tbl.el);
  await load();
}

const scopeName = (a) => a.scope?.project?.name || a.scope?.project?.id || (a.scope?.system ? t('System') : a.scope?.domain?.name || a.scope?.domain?.id || '');

async function assignments(main) {
  const tbl = table([
    { title: t('Role'), get: (a) => a.role?.name || a.role?.id },
    { title: t('User or group'), get: (a) => (a.user ? a.user.name || a.user.id : `${a.group?.name || a.group?.id || ''} (${t('Group')})`) },
    { title: t('Scope'), get: (a) => scopeName(a) + (a.scope?.['OS-INHERIT:inherited_to'] ? ` (${t('inherited')})` : '') },
    { title: t('Actions'), get: (a) => (a.scope?.project && !a.scope['OS-INHERIT:inherited_to'] && !a.links?.membership ? button(t('Revoke'), async () => {
      if (!(await confirm(`${t('Revoke')}: ${a.role?.name} / ${a.user?.name || a.group?.name} / ${scopeName(a)}`, t('Revoke'), true))) return;
      await guard(async () => {
        const actor = a.user ? `users/${a.user.id}` : `groups/${a.group.id}`;
        await ks('DELETE', `/v3/projects/${a.scope.project.id}/${actor}/roles/${a.role.id}`);
        load();
      });
    }, 'danger revoke') : '') },
  ], [], { pending: true });
  tbl.el.id = 'role-assignments';
  const load = () => guard(async () => tbl.update(await list('/v3/role_assignments?include_names=true', 'role_assignments')));
  const grant = () => guard(async () => {
    const [us, gs, ps, rs] = await Promise.all([list('/v3/users', 'users'), list('/v3/groups', 'groups'), list('/v3/projects', 'projects'), list('/v3/roles', 'roles')]);
    const actor = select({ name: 'actor' }, [...us.sort(byName).map((u) => [`users/${u.id}`, u.name]), ...gs.sort(byName).map((g) => [`groups/${g.id}`, `${g.name} (${t('Group')})`])]);
    const project = select({ name: 'project' }, ps.sort(byName).map((p) => [p.id, p.name]));
    const role = select({ name: 'role' }, rs.sort(byName).map((r) => [r.id, r.name]));
    if (await form(t('Grant Role'), [field(t('User or group'), actor), field(t('Project'), project), field(t('Role'), role)],
      () => ks('PUT', `/v3/projects/${project.value}/${actor.value}/roles/${role.value}`), 'grant-form', t('Grant'))) load();
  });
  main.append(header(t('Role Assignments'), button(t('Grant Role'), grant, 'primary grant-role')), tbl.el);
  await load();
}

// ---------------------------------------------------------------- application credentials

const q = (s) => JSON.stringify(String(s));

/** A clouds.yaml that signs in with the application credential (its secret included). */
function appCredYaml(c) {
  return [
    'clouds:', '  yunhe:', '    auth_type: v3applicationcredential', '    auth:', `      auth_url: ${q(`${location.origin}/identity/v3`)}`,
    `      application_credential_id: ${q(c.id)}`, `      application_credential_secret: ${q(c.secret)}`,
    '    identity_api_version: 3', '    interface: public', '',
  ].join('\n');
}

async function appCreds(main) {
  const me = api.current().user;
  const base = `/v3/users/${me.id}/application_credentials`;
  const tbl = table([
    { title: t('Name'), get: (c) => c.name }, { title: t('ID'), get: (c) => c.id }, { title: t('Description'), get: (c) => c.description || '' },
    { title: t('Project'), get: (c) => (c.project_id === api.current().project?.id ? api.current().project.name : c.project_id) },
    { title: t('Roles'), get: (c) => (c.roles || []).map((r) => r.name || r.id).join(', ') },
    { title: t('Expires'), get: (c) => c.expires_at || t('Never') }, { title: t('Unrestricted'), get: (c) => yes(c.unrestricted) },
    { title: t('Actions'), get: (c) => delButton(t('Application Credential'), c.name, () => ks('DELETE', `${base}/${c.id}`), load) },
  ], [], { key: (c) => c.id, pending: true });
  tbl.el.id = 'app-creds';
  const load = () => guard(async () => tbl.update(await list(base, 'application_credentials')));
  const create = async () => {
    const f = {
      name: h('input', { maxlength: 255, name: 'name', required: true }),
      description: h('textarea', { name: 'description', rows: 2 }),
      secret: h('input', { name: 'secret', type: 'password', autocomplete: 'new-password' }),
      expires: h('input', { name: 'expires', type: 'datetime-local' }),
      unrestricted: h('input', { type: 'checkbox', name: 'unrestricted' }),
    };
    const roleBoxes = (api.current().roles || []).map((r) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'role', value: r, checked: true }), r));
    let made = null;
    const ok = await form(t('Create Application Credential'), [field(t('Name'), f.name), field(t('Description'), f.description),
      field(t('Secret'), f.secret, t('Leave empty to have one generated.')), field(t('Expiration'), f.expires, t('Never, when empty.')),
      h('fieldset', { class: 'choices' }, h('legend', null, t('Roles')), roleBoxes),
      h('label', { class: 'check' }, f.unrestricted, t('Unrestricted (may create more credentials and trusts)'))], async () => {
      const c = { name: f.name.value.trim(), description: f.description.value, unrestricted: f.unrestricted.checked,
        roles: roleBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => ({ name: i.value })) };
      if (f.secret.value) c.secret = f.secret.value;
      if (f.expires.value) {
        const when = new Date(f.expires.value);
        if (Number.isNaN(when.getTime())) throw new Error(t('Expiration'));
        c.expires_at = when.toISOString().replace(/Z$/, '');
      }
      made = (await ks('POST', base, { application_credential: c })).application_credential;
    }, 'appcred-form');
    if (!ok || !made) return;
    load();
    await dialog(t('Your application credential'), h('div', { id: 'appcred-secret' },
      h('p', null, t('The secret is shown this once: keep it now.')),
      h('dl', { class: 'kv' }, h('dt', null, t('ID')), h('dd', null, h('code', { class: 'appcred-id' }, made.id)),
        h('dt', null, t('Secret')), h('dd', null, h('code', { class: 'appcred-secret' }, made.secret))),
      button(t('Download clouds.yaml'), () => download('clouds.yaml', appCredYaml(made), 'application/x-yaml'), 'dl-appcred')));
  };
  main.append(header(t('Application Credentials'), button(t('Create Application Credential'), create, 'primary create-appcred')), tbl.el);
  await load();
}

export async function render(main, { page }) {
  switch (page.path) {
    case 'identity/projects': return projects(main);
    case 'identity/users': return users(main);
    case 'identity/groups': return groups(main);
    case 'identity/role-assignments': return assignments(main);
    case 'identity/application-credentials': return appCreds(main);
    default: return roles(main);
  }
}
