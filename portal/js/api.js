// The portal's calls to the Otobot API, on this origin only. The session is
// an HttpOnly cookie the page cannot read; every call also sends the
// session's CSRF token, which the page keeps in memory only.

const session = { user: null, csrf: null };
let onExpired = () => {};

// Whether this browser signed in and has not signed out since: without it,
// a visit goes straight to the sign-in page without asking the server (the
// cookie itself is out of the page's reach).
const HINT = 'otobot.signedIn';
function hint(on) {
  try {
    if (on) localStorage.setItem(HINT, '1');
    else localStorage.removeItem(HINT);
  } catch {
    // Storage disabled: the server is asked every time.
  }
}
function hinted() {
  try {
    return localStorage.getItem(HINT) === '1';
  } catch {
    return true;
  }
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function currentUser() {
  return session.user;
}

/** Called when the server says the session is over (401). */
export function whenExpired(handler) {
  onExpired = handler;
}

async function request(method, path, body, { expectSession = true } = {}) {
  const headers = { accept: 'application/json' };
  if (session.csrf) headers['x-csrf-token'] = session.csrf;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error',
    });
  } catch {
    throw new ApiError(0, 'network', '');
  }
  let data = null;
  if (response.status !== 204) {
    data = await response.json().catch(() => null);
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data?.code, data?.error,
      Number(response.headers.get('retry-after')) || undefined);
    if (response.status === 401 && expectSession && session.user) {
      session.user = null;
      session.csrf = null;
      hint(false);
      onExpired();
    }
    throw error;
  }
  return data;
}

/** The current session, if the browser has a live one. */
export async function resume() {
  if (!hinted()) return null;
  try {
    const data = await request('GET', '/api/portal/session', undefined, { expectSession: false });
    session.user = data.user;
    session.csrf = data.csrfToken;
    return data.user;
  } catch (error) {
    if (error.status === 401) {
      hint(false);
      return null;
    }
    throw error;
  }
}

export async function login(email, password) {
  const data = await request('POST', '/api/portal/login', { email, password }, { expectSession: false });
  session.user = data.user;
  session.csrf = data.csrfToken;
  hint(true);
  return data.user;
}

export async function logout() {
  try {
    await request('POST', '/api/portal/logout', undefined, { expectSession: false });
  } finally {
    session.user = null;
    session.csrf = null;
    hint(false);
  }
}

const enc = encodeURIComponent;

export const services = () => request('GET', '/api/tooljet/services').then((d) => d.services);
export const connections = () => request('GET', '/api/tooljet/connections').then((d) => d.connections);
export const saveApiKey = (service, apiKey, label) =>
  request('POST', `/api/tooljet/connections/${enc(service)}/api-key`, label ? { apiKey, label } : { apiKey });
export const disconnect = (id) => request('DELETE', `/api/tooljet/connections/${enc(id)}`);

/**
 * Starts the OAuth flow; resolves to the URL the browser must open (the
 * provider's authorization page, or Otobot's own start URL that leads there).
 */
export async function authorize(service, label) {
  const redirectAfter = new URL('/portal/#/connections', window.location.origin).href;
  const body = label ? { label, redirectAfter } : { redirectAfter };
  const data = await request('POST', `/api/tooljet/connections/${enc(service)}/authorize`, body);
  return data.startUrl || data.authorizationUrl;
}

export function history({ before, kind }) {
  const query = new URLSearchParams({ limit: '25', kind });
  if (before) query.set('before', String(before));
  return request('GET', `/api/tooljet/access-history?${query}`);
}

export const users = () => request('GET', '/api/tooljet/users').then((d) => d.users);
export const createUser = (email, password, role) => request('POST', '/api/tooljet/users', { email, password, role });
export const deactivateUser = (id) => request('DELETE', `/api/tooljet/users/${enc(id)}`);

// Grants (api/src/routes/grants.rs): own, or (an admin) the whole client's;
// a created grant's answer carries its token (`grant`), shown once.
export const grants = (scope = 'own') =>
  request('GET', `/api/tooljet/grants${scope === 'client' ? '?scope=client' : ''}`).then((d) => d.grants);
export const createGrant = (workflow, services, expiresAt) =>
  request('POST', '/api/tooljet/grants', { workflow, services, expiresAt });
export const revokeGrant = (id) => request('DELETE', `/api/tooljet/grants/${enc(id)}`);
