// A thin client of the operator API: cookie session + X-CSRF-Token header on
// changes. A lost session is reported to one handler (the login form in place)
// instead of to every caller.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  get authLost() {
    return this.status === 401 ||
      (this.status === 403 && /csrf/i.test(this.message));
  }
}

let csrf = localStorage.getItem('vc.csrf');
let onAuthLost = () => {};

export function setAuthLostHandler(f) {
  onAuthLost = f;
}

export function hasCsrf() {
  return !!csrf;
}

/** For requests that cannot carry the header (the talk WebSocket). */
export function csrfToken() {
  return csrf;
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  let r;
  try {
    r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'network', String(e));
  }
  if (r.status === 204) return null;
  let data = null;
  try {
    data = await r.json();
  } catch {
    data = null;
  }
  if (!r.ok) {
    const e = (data && data.error) || {};
    const err = new ApiError(r.status, e.code || `http_${r.status}`, e.message || r.statusText);
    if (err.authLost && !path.endsWith('/login')) onAuthLost(err);
    throw err;
  }
  return data;
}

export async function login(username, password) {
  // A node busy checking other passwords (a whole shift logging in at once)
  // answers 503 `busy` at once; try again shortly rather than fail.
  let data;
  for (let tries = 1; ; tries++) {
    try {
      data = await api('POST', '/api/v1/login', { username, password });
      break;
    } catch (e) {
      if (!(e instanceof ApiError) || e.code !== 'busy' || tries >= 10) throw e;
      await new Promise((r) => setTimeout(r, 1000 + Math.random() * 500));
    }
  }
  csrf = data.csrf_token;
  localStorage.setItem('vc.csrf', csrf);
  return data.operator;
}

export async function logout() {
  try {
    await api('POST', '/api/v1/logout');
  } finally {
    csrf = null;
    localStorage.removeItem('vc.csrf');
  }
}

export function forgetSession() {
  csrf = null;
  localStorage.removeItem('vc.csrf');
}
