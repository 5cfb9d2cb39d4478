// The API client: tokens held in memory only (a reload means logging in again), the
// access token refreshed before it expires, one retry after a refresh on a 401.

const BASE = '/api/v1';

/** An API error: the problem+json document of a failed request. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

const session = {
  access: null,
  refresh: null,
  member: null,
  timer: null,
  refreshing: null,
};

let onSessionEnd = () => {};

/** Called with a reason when the login ends by itself (refresh refused, revoked). */
export function whenSessionEnds(fn) {
  onSessionEnd = fn;
}

/** The logged-in member, or null. */
export function member() {
  return session.member;
}

/** The current access token, or null (the event stream sends it itself). */
export function accessToken() {
  return session.access;
}

async function problemOf(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

function adopt(tokens) {
  session.access = tokens.access_token;
  session.refresh = tokens.refresh_token;
  session.member = tokens.member;
  clearTimeout(session.timer);
  // Refresh when four fifths of the lifetime have passed (at least 10 s before expiry).
  const lifetime = Math.max(1, Number(tokens.expires_in) || 60);
  const after = Math.max(1, Math.min(lifetime * 0.8, lifetime - 10));
  session.timer = setTimeout(() => {
    refresh().catch(() => {});
  }, after * 1000);
}

function forget() {
  clearTimeout(session.timer);
  session.access = null;
  session.refresh = null;
  session.member = null;
  session.timer = null;
  session.refreshing = null;
}

/** Logs in; resolves to the member. */
export async function login(username, password) {
  const res = await fetch(`${BASE}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  adopt(await res.json());
  return session.member;
}

/** Exchanges the refresh token for new tokens; one exchange at a time. */
export function refresh() {
  if (!session.refresh) return Promise.reject(new ApiError(401, { detail: 'not logged in' }));
  if (!session.refreshing) {
    const token = session.refresh;
    session.refreshing = (async () => {
      try {
        const res = await fetch(`${BASE}/auth/refresh`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ refresh_token: token }),
        });
        if (!res.ok) {
          const problem = await problemOf(res);
          if (res.status === 401) {
            forget();
            onSessionEnd('Your login has ended; please log in again.');
          }
          throw new ApiError(res.status, problem);
        }
        adopt(await res.json());
      } finally {
        session.refreshing = null;
      }
    })();
  }
  return session.refreshing;
}

/** Ends the login on the server (best effort) and forgets the tokens. */
export async function logout() {
  const token = session.access;
  forget();
  if (token) {
    try {
      await fetch(`${BASE}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    } catch {
      // The tokens are gone from this page either way.
    }
  }
}

/** A request with the bearer token; after a 401, refreshes once and retries. */
export async function request(method, path, body, { accept } = {}) {
  const send = () => {
    const headers = { authorization: `Bearer ${session.access}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (accept) headers.accept = accept;
    return fetch(`${BASE}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  };
  if (!session.access) throw new ApiError(401, { detail: 'not logged in' });
  let res = await send();
  if (res.status === 401 && session.refresh) {
    await refresh();
    res = await send();
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

/** Every item of a paginated list (`{items, next_cursor}`). */
export async function all(path) {
  const items = [];
  let cursor = null;
  const sep = path.includes('?') ? '&' : '?';
  do {
    const page = await get(`${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** The file name a Content-Disposition header gives, or a fallback. */
export function filenameOf(res, fallback) {
  const cd = res.headers.get('content-disposition') || '';
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
  return m ? decodeURIComponent(m[1]) : fallback;
}
