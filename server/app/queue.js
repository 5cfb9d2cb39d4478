// The offline queue. A fix is written here, in IndexedDB, before any attempt to send it,
// and leaves only when the server has answered `created` or `duplicate` for its
// client_id; a fix the server refuses is moved aside with the reason, to be shown.
// The queue outlives the page, the app and a restart of the phone. Sending is in
// batches of at most 1,000 (the API's limit), one sender at a time across tabs, with
// backoff while the network or the server is away.

import { ApiError, SessionEnded, exclusive } from './api.js';

const DB = 'patrol';
const OUTBOX = 'outbox';
const REJECTED = 'rejected';
const MAX_BATCH = 1000;
const MAX_BACKOFF_MS = 60_000;

let opening = null;

function open() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => {
        const db = req.result;
        db.createObjectStore(OUTBOX, { keyPath: 'client_id' }).createIndex('owner', 'owner');
        db.createObjectStore(REJECTED, { keyPath: 'client_id' }).createIndex('owner', 'owner');
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error('the queue database is held by an older version of the app'));
    });
    opening.catch(() => {
      opening = null;
    });
  }
  return opening;
}

/** Runs `fn(stores)` in one transaction; resolves with its result once the transaction is durable. */
async function inTransaction(names, mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(names, mode, { durability: 'strict' });
    let result;
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error('queue transaction aborted'));
    const stores = Object.fromEntries(names.map((n) => [n, tx.objectStore(n)]));
    Promise.resolve(fn(stores)).then((r) => {
      result = r;
    }, reject);
  });
}

function requested(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Keeps a fix for `owner` ('member:<id>' or 'kiosk:<id>'); resolves once it is on disk. */
export async function enqueue(owner, fix) {
  await inTransaction([OUTBOX], 'readwrite', (s) => {
    s[OUTBOX].put({ client_id: fix.client_id, owner, fix, queued_at: new Date().toISOString() });
  });
  changed();
  kick();
}

/** How many fixes of `owner` wait, how many were refused, and how many wait for others. */
export async function counts(owner) {
  return inTransaction([OUTBOX, REJECTED], 'readonly', async (s) => {
    const [mine, all, rejected] = await Promise.all([
      requested(s[OUTBOX].index('owner').count(owner)),
      requested(s[OUTBOX].count()),
      requested(s[REJECTED].index('owner').count(owner)),
    ]);
    return { waiting: mine, others: all - mine, rejected };
  });
}

/** Whether the fix with this client_id still waits to be sent. */
export async function has(clientId) {
  const n = await inTransaction([OUTBOX], 'readonly', (s) => requested(s[OUTBOX].count(clientId)));
  return n > 0;
}

/** The refused fixes of `owner`, newest first. */
export async function rejectedOf(owner) {
  const items = await inTransaction([REJECTED], 'readonly', (s) => requested(s[REJECTED].index('owner').getAll(owner)));
  return items.sort((a, b) => (a.client_id < b.client_id ? 1 : -1));
}

/** Forgets the refused fixes of `owner` (the member has read them). */
export async function clearRejected(owner) {
  const keys = await inTransaction([REJECTED], 'readonly', (s) => requested(s[REJECTED].index('owner').getAllKeys(owner)));
  await inTransaction([REJECTED], 'readwrite', (s) => keys.forEach((k) => s[REJECTED].delete(k)));
  changed();
}

/** The oldest fixes of `owner`, at most `n`. */
async function oldest(owner, n) {
  return inTransaction([OUTBOX], 'readonly', (s) => requested(s[OUTBOX].index('owner').getAll(owner, n)));
}

/** Applies a batch's answers: created and duplicate leave, rejected go aside. */
async function settle(owner, sent, results) {
  const byId = new Map(sent.map((item) => [item.client_id, item]));
  await inTransaction([OUTBOX, REJECTED], 'readwrite', (s) => {
    for (const r of results) {
      const item = r.client_id && byId.get(r.client_id);
      if (!item) continue;
      if (r.status === 'created' || r.status === 'duplicate') {
        s[OUTBOX].delete(item.client_id);
      } else if (r.status === 'rejected') {
        s[OUTBOX].delete(item.client_id);
        s[REJECTED].put({ client_id: item.client_id, owner, fix: item.fix, error: r.error || {}, at: new Date().toISOString() });
      }
    }
  });
}

// The sender: who owns the queue now and how their batches go out.
let target = null; // { owner, send(fixes) -> BatchResult }
let timer = null;
let backoff = 0;
let running = false;
let again = false;
const listeners = new Set();
let lastError = null;

/** Sets whose fixes are sent and how (null: nobody is logged in; the queue waits). */
export function setTarget(t) {
  target = t;
  backoff = 0;
  changed();
  kick();
}

/** Calls `fn({waiting, others, rejected, error})` whenever the queue changes. */
export function onChange(fn) {
  listeners.add(fn);
}

async function changed() {
  if (!target) {
    const c = await counts('').catch(() => ({ waiting: 0, others: 0, rejected: 0 }));
    listeners.forEach((fn) => fn({ waiting: 0, others: c.others, rejected: 0, error: lastError }));
    return;
  }
  const c = await counts(target.owner).catch(() => null);
  if (c) listeners.forEach((fn) => fn({ ...c, error: lastError }));
}

/** Sends now (or soon, if a send is running). */
export function kick() {
  clearTimeout(timer);
  timer = setTimeout(run, 0);
}

function later() {
  backoff = backoff ? Math.min(backoff * 2, MAX_BACKOFF_MS) : 1000;
  clearTimeout(timer);
  timer = setTimeout(run, backoff + Math.random() * 250);
}

async function run() {
  if (!target) return;
  if (running) {
    again = true;
    return;
  }
  running = true;
  const current = target;
  try {
    await exclusive(`patrol-send-${current.owner}`, async () => {
      let size = MAX_BATCH;
      for (;;) {
        if (target !== current) return;
        const batch = await oldest(current.owner, size);
        if (batch.length === 0) return;
        let answer;
        try {
          answer = await current.send(batch.map((item) => item.fix));
        } catch (err) {
          // A body over the server's limit: halve the batch and try again.
          if (err instanceof ApiError && err.status === 413 && size > 1) {
            size = Math.max(1, Math.floor(size / 2));
            continue;
          }
          throw err;
        }
        await settle(current.owner, batch, answer.results || []);
        lastError = null;
        backoff = 0;
        changed();
      }
    });
  } catch (err) {
    lastError = err;
    changed();
    // A refused login keeps the queue and waits for the next login; anything else
    // (no network, a server away) is tried again later.
    if (!(err instanceof SessionEnded)) later();
  } finally {
    running = false;
    if (again) {
      again = false;
      if (backoff === 0) kick();
    }
  }
}

window.addEventListener('online', () => {
  backoff = 0;
  kick();
});
// A phone that came back from the background or from a tunnel: try again.
setInterval(() => {
  if (target && !running && backoff === 0) kick();
}, 15_000);
