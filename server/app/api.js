// The API client of the app. The login lasts a shift and more: the tokens are kept on
// the device, so that closing the app or restarting the phone does not log out. The
// refresh token is single-use and rotated on every refresh, so refreshes are taken one
// at a time across every open tab of the app (a Web Lock), and a tab that waited adopts
// the tokens another tab just stored instead of spending a consumed token.

import { stored, store } from './util.js';

const BASE = '/api/v1';
const SESSION = 'patrol.session';

/** An API error: the problem+json document of a failed request (status 0: no network). */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** The login ended (refresh refused): a new login is needed; nothing queued is lost. */
export class SessionEnded extends ApiError {}

let onSessionEnd = () => {};

/** Called when the login ends by itself (refresh refused, sessions ended remotely). */
export function whenSessionEnds(fn) {
  onSessionEnd = fn;
}

/** The kept session: {access, expires_at, refresh, member}, or null. */
function session() {
  return stored(SESSION);
}

/** The logged-in member as last known, or null. */
export function member() {
  const s = session();
  return s ? s.member : null;
}

/** Whether a login is kept on this device. */
export function loggedIn() {
  return Boolean(session() && session().refresh);
}

async function problemOf(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

/** fetch that reports a lost network as ApiError status 0. */
async function send(url, init) {
  try {
    return await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, { detail: String(err && err.message ? err.message : err) });
  }
}

function adopt(tokens) {
  store(SESSION, {
    access: tokens.access_token,
    // Renew a little early: a fix batch must not race the expiry.
    expires_at: Date.now() + Math.max(1, Number(tokens.expires_in) - 20) * 1000,
    refresh: tokens.refresh_token,
    member: tokens.member,
  });
}

/** Runs `fn` holding the named lock across tabs, where the browser has Web Locks. */
export function exclusive(name, fn) {
  if (navigator.locks && navigator.locks.request) return navigator.locks.request(name, fn);
  return fn();
}

/** Logs in with a username and password; resolves to the member. */
export async function login(username, password) {
  const res = await send(`${BASE}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  adopt(await res.json());
  return member();
}

/** Exchanges the refresh token for new tokens. */
export async function refresh(spent) {
  return exclusive('patrol-refresh', async () => {
    const s = session();
    if (!s || !s.refresh) throw new SessionEnded(401, { detail: 'not logged in' });
    // Another tab refreshed while this one waited: its tokens are good.
    if (spent && s.access !== spent && s.expires_at > Date.now()) return;
    const res = await send(`${BASE}/auth/refresh`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: s.refresh }),
    });
    if (res.status === 401) {
      const problem = await problemOf(res);
      forget();
      onSessionEnd();
      throw new SessionEnded(401, problem);
    }
    if (!res.ok) throw new ApiError(res.status, await problemOf(res));
    adopt(await res.json());
  });
}

/** Forgets the login on this device. */
export function forget() {
  store(SESSION, null);
}

/** Ends the login on the server, then forgets it here (even with no network). */
export async function logout() {
  const s = session();
  forget();
  if (s && s.access) {
    try {
      await fetch(`${BASE}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${s.access}` } });
    } catch {
      // Gone from the device either way; the refresh token expires on the server.
    }
  }
}

/** An access token that is not about to expire, refreshing first when needed. */
async function accessToken() {
  let s = session();
  if (!s) throw new SessionEnded(401, { detail: 'not logged in' });
  if (!s.access || s.expires_at <= Date.now()) {
    await refresh(s.access);
    s = session();
  }
  return s.access;
}

/** A request as the member; after a 401, refreshes once and sends again. */
export async function request(method, path, body) {
  const go = (token) => {
    const headers = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    return send(`${BASE}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  };
  const token = await accessToken();
  let res = await go(token);
  if (res.status === 401) {
    await refresh(token);
    res = await go(session().access);
    if (res.status === 401) {
      forget();
      onSessionEnd();
      throw new SessionEnded(401, await problemOf(res));
    }
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  return res;
}

/** GET returning JSON. */
export async function get(path) {
  return (await request('GET', path)).json();
}

/** POST returning JSON. */
export async function post(path, body) {
  return (await request('POST', path, body)).json();
}

/** A request as the kiosk device (its token, `Authorization: Kiosk …`). */
export async function kiosk(method, path, token, body) {
  const headers = { authorization: `Kiosk ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await send(`${BASE}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  return res.status === 204 ? null : res.json();
}
