// The session (a Keystone token kept in sessionStorage, never in a URL) and a small
// fetch wrapper that finds each service through the token's catalog.

const KEY = 'yunhe.session';
let session = null;
const listeners = new Set();

export function onSession(fn) { listeners.add(fn); }
function changed(reason) { for (const fn of listeners) fn(session, reason); }

export function current() {
  if (!session) {
    try { session = JSON.parse(sessionStorage.getItem(KEY) || 'null'); } catch { session = null; }
  }
  return session;
}

function save(s, reason) {
  session = s;
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
  changed(reason);
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** The same-origin path of each service in the catalog, by type. */
function endpoints(catalog) {
  const out = {};
  for (const svc of catalog || []) {
    const ep = (svc.endpoints || []).find((e) => e.interface === 'public') || (svc.endpoints || [])[0];
    if (!ep) continue;
    try { out[svc.type] = new URL(ep.url, location.href).pathname.replace(/\/$/, ''); } catch { /* skip */ }
  }
  return out;
}

function fromToken(id, body, extra) {
  const t = body.token;
  return {
    id,
    expires: t.expires_at,
    user: { id: t.user.id, name: t.user.name, domain: t.user.domain?.name },
    project: t.project ? { id: t.project.id, name: t.project.name } : null,
    roles: (t.roles || []).map((r) => r.name),
    endpoints: endpoints(t.catalog),
    ...extra,
  };
}

async function issue(auth) {
  const r = await fetch('/identity/v3/auth/tokens', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ auth }),
  });
  if (!r.ok) throw new ApiError(r.status, await errorText(r));
  return { id: r.headers.get('X-Subject-Token'), body: await r.json() };
}

/** Password sign-in; scoped to the user's first project (or the one named). */
export async function signIn(domain, user, password) {
  const identity = { methods: ['password'], password: { user: { name: user, domain: { name: domain }, password } } };
  let { id, body } = await issue({ identity });
  if (!body.token.project) {
    const projects = await rawGet('/identity/v3/auth/projects', id);
    const first = (projects.projects || [])[0];
    if (first) {
      const scoped = await issue({ identity: { methods: ['token'], token: { id } }, scope: { project: { id: first.id } } });
      await revoke(id);
      ({ id, body } = scoped);
    }
  }
  save(fromToken(id, body, { domain }));
}

/** Rescopes the session's token to another project. */
export async function switchProject(projectId) {
  const s = current();
  const { id, body } = await issue({ identity: { methods: ['token'], token: { id: s.id } }, scope: { project: { id: projectId } } });
  // The token it replaces is revoked: a switch leaves one live token, as a sign-in does.
  await revoke(s.id);
  save(fromToken(id, body, { domain: s.domain }));
}

async function revoke(id) {
  try {
    await fetch('/identity/v3/auth/tokens', { method: 'DELETE', headers: { 'X-Auth-Token': id, 'X-Subject-Token': id } });
  } catch { /* signed out locally anyway */ }
}

/** Revokes the token (DELETE /identity/v3/auth/tokens) and forgets the session. */
export async function signOut() {
  const s = current();
  if (s) await revoke(s.id);
  save(null, 'signout');
}

// Who was signed in when the session expired: the sign-in form asks for their password only.
let expiredUser = null;

/** Forgets an expired session without a request. */
export function expire() {
  const s = current();
  if (s) expiredUser = { name: s.user.name, domain: s.user.domain || s.domain || 'Default' };
  save(null, 'expired');
}

/** The user whose session expired last ({name, domain}), or null. */
export function lastUser() { return expiredUser; }

export function isAdmin() { return (current()?.roles || []).includes('admin'); }
export function has(service) { return !!current()?.endpoints?.[service]; }

async function errorText(r) {
  const text = await r.text();
  try {
    const j = JSON.parse(text);
    const v = Object.values(j)[0];
    if (v && typeof v === 'object') return v.message || v.title || text;
    return j.message || text;
  } catch {
    return text || r.statusText;
  }
}

async function rawGet(path, token) {
  const r = await fetch(path, { headers: { 'X-Auth-Token': token } });
  if (!r.ok) throw new ApiError(r.status, await errorText(r));
  return r.json();
}

const VERSIONS = { compute: 'compute 2.79' };

// The page on screen: its GET requests are aborted when the user leaves it (app.js).
let pageSignal = null;

/** Binds the GET requests made from now on to SIGNAL (the shell's, one per page shown). */
export function pageScope(signal) { pageSignal = signal; }

/** Whether an error is an aborted request (the page was left): not worth a notice. */
export const aborted = (e) => e?.name === 'AbortError';

/**
 * call('compute', 'GET', '/servers/detail'): JSON (or null) from a service. A 401 ends
 * the session (the shell then asks to sign in again). A GET is aborted when its page is
 * left (or by opts.signal); changes (POST, PUT, DELETE) run to their end.
 */
export async function call(service, method, path, body, headers = {}, opts = {}) {
  const s = current();
  if (!s) throw new ApiError(401, 'not signed in');
  const base = s.endpoints[service];
  if (!base) throw new ApiError(404, `no ${service} service`);
  const signal = opts.signal || (method === 'GET' ? pageSignal : null) || undefined;
  if (signal?.aborted) throw new DOMException('the page was left', 'AbortError');
  const h = { 'X-Auth-Token': s.id };
  if (VERSIONS[service]) h['OpenStack-API-Version'] = VERSIONS[service];
  Object.assign(h, headers);
  if (body !== undefined && !h['Content-Type']) h['Content-Type'] = 'application/json';
  const r = await fetch(base + path, { method, headers: h, signal, body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)) });
  if (r.status === 401) { expire(); throw new ApiError(401, 'session expired'); }
  if (!r.ok) throw new ApiError(r.status, await errorText(r));
  if (r.status === 204) return null;
  const text = await r.text();
  if (!text) return null;
  const t0 = performance.now();
  const json = JSON.parse(text);
  // Big answers (1,000 servers) leave their parse time for tests/browser's breakdown.
  if (text.length > 100000) performance.measure(`yunhe:parse ${path.split('?')[0]} ${text.length} B`, { start: t0 });
  return json;
}

export const get = (svc, path, opts) => call(svc, 'GET', path, undefined, {}, opts);

/** PUT of a file with progress (XMLHttpRequest: fetch has no upload progress). */
export function upload(service, path, file, onProgress) {
  const s = current();
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open('PUT', s.endpoints[service] + path);
    x.setRequestHeader('X-Auth-Token', s.id);
    x.setRequestHeader('Content-Type', 'application/octet-stream');
    x.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    x.onload = () => (x.status < 300 ? resolve() : reject(new ApiError(x.status, x.responseText || x.statusText)));
    x.onerror = () => reject(new ApiError(0, 'network error'));
    x.send(file);
  });
}
