// Kiosk mode: one shared tablet or phone at a kiosk or checkpoint. A kiosk officer or a
// commander registers the device for its post; from then on the device holds only its
// kiosk token (no one's login), shows the post, who is signed on and who is rostered,
// and hands duty over: the leaving officer signs off, the next signs on with their
// username and PIN or password. While someone is signed on, the device sends its
// position for them; the server counts it only while they are signed on.

import * as api from './api.js';
import * as queue from './queue.js';
import * as duty from './duty.js';
import { language, t } from './i18n.js';
import { $, el, fill, fmtClock, fmtDayTime, fmtTime, store, stored } from './util.js';

const KIOSK = 'patrol.kiosk'; // {id, token, name, post_id}
const BOARD = 'patrol.kiosk.board'; // GET /kiosk as last read

let view = null; // {show, config}
let board = null;
let tracker = null;
let refreshTimer = null;

/** Whether this device is a registered kiosk. */
export function registered() {
  const k = stored(KIOSK);
  return Boolean(k && k.token);
}

function device() {
  return stored(KIOSK);
}

function owner() {
  const k = device();
  return k ? `kiosk:${k.id}` : null;
}

/** Shows the form that registers this device for a post of the logged-in member. */
export async function setup(ctx) {
  view = ctx;
  ctx.show('kiosk-setup');
  const form = $('kiosk-setup-form');
  const select = form.post_id;
  $('kiosk-setup-error').textContent = '';
  const m = api.member();
  const posts = new Map();
  const cached = stored('patrol.shifts');
  for (const s of (cached && cached.items) || []) {
    if (s.post.kind === 'kiosk' || s.post.kind === 'checkpoint') posts.set(s.post.id, s.post);
  }
  if (m && (m.role === 'commander' || m.role === 'admin')) {
    for (const kind of ['kiosk', 'checkpoint']) {
      try {
        const page = await api.get(`/posts?kind=${kind}&limit=1000`);
        page.items.forEach((p) => posts.set(p.id, p));
      } catch {
        // Offline: the posts of the member's own shifts remain.
      }
    }
  }
  const sorted = [...posts.values()].sort((a, b) => a.code.localeCompare(b.code));
  fill(select, sorted.map((p) => el('option', { value: p.id }, `${p.code} ${p.name}`)));
  if (!sorted.length) $('kiosk-setup-error').textContent = t('kiosk.no_posts');
  if (!form.name.value) form.name.value = t('kiosk.default_name');
}

async function onSetup(e) {
  e.preventDefault();
  const form = e.target;
  $('kiosk-setup-error').textContent = '';
  try {
    const created = await api.post('/kiosks', { post_id: form.post_id.value, name: form.name.value.trim() });
    store(KIOSK, { id: created.id, token: created.token, name: created.name, post_id: created.post_id });
    // The device is the post's now, not this member's.
    await api.logout();
    store('patrol.shifts', null);
    store('patrol.duty', null);
    start(view);
  } catch (err) {
    $('kiosk-setup-error').textContent = err.status === 0 ? t('common.offline') : err.message;
  }
}

/** Runs the device as a kiosk. */
export function start(ctx) {
  view = ctx;
  const k = device();
  queue.setTarget({
    owner: owner(),
    send: (fixes) => api.kiosk('POST', '/kiosk/checkins', k.token, { checkins: fixes }),
  });
  board = stored(BOARD);
  ctx.show('kiosk');
  render();
  load();
  clearInterval(refreshTimer);
  refreshTimer = setInterval(load, 30_000);
  duty.watch();
  duty.onPosition(renderPosition);
  if (!tracker) {
    tracker = new duty.Tracker((pos) => {
      for (const p of (board && board.signed_on) || []) {
        const fix = duty.fixOf(pos, 'ping', { post_id: board.post.id });
        queue.enqueue(owner(), { ...fix, member_id: p.member_id });
      }
    });
  }
  tracker.start();
}

async function load() {
  const k = device();
  if (!k) return;
  try {
    board = await api.kiosk('GET', '/kiosk', k.token);
    store(BOARD, board);
    render();
  } catch (err) {
    if (err.status === 401) {
      // Revoked: the device is nobody's kiosk any more.
      leave(t('kiosk.revoked'));
    }
  }
}

function leave(note) {
  clearInterval(refreshTimer);
  if (tracker) tracker.stop();
  store(KIOSK, null);
  store(BOARD, null);
  queue.setTarget(null);
  view.show('login');
  $('login-note').textContent = note || '';
}

function render() {
  const lang = language();
  const k = device();
  if (!board) {
    fill($('kiosk-post'), el('h2', {}, k ? k.name : ''), el('p', { class: 'note' }, t('kiosk.loading')));
    return;
  }
  const p = board.post;
  fill($('kiosk-post'),
    el('p', { class: 'label' }, `${t('kiosk.device')} · ${board.kiosk.name}`),
    el('h2', {}, el('span', { class: 'code' }, p.code), ' ', p.name),
    el('p', { class: 'meta' }, t(`kind.${p.kind}`)));
  fill($('kiosk-on'), board.signed_on.length
    ? board.signed_on.map((s) => el('li', {},
      el('span', {}, `${s.display_name} · ${t('kiosk.since', { time: fmtTime(s.since, lang) })}`),
      el('button', { type: 'button', class: 'stop', dataset: { action: 'kiosk_sign_off', id: s.sign_on_id } }, t('kiosk.sign_off'))))
    : el('li', { class: 'note' }, t('kiosk.nobody')));
  fill($('kiosk-rostered'), board.rostered_now.length
    ? board.rostered_now.map((r) => el('li', {}, `${r.display_name} · ${fmtTime(r.starts_at, lang)}–${fmtTime(r.ends_at, lang)}${r.signed_on ? ` · ${t('kiosk.present')}` : ''}`))
    : el('li', { class: 'note' }, t('kiosk.none_rostered')));
  fill($('kiosk-next'), board.next.length
    ? board.next.map((r) => el('li', {}, `${r.display_name} · ${fmtDayTime(r.starts_at, lang)}–${fmtTime(r.ends_at, lang)}`))
    : el('li', { class: 'note' }, t('kiosk.none_next')));
}

function renderPosition(pos, problem) {
  if ($('view-kiosk').hidden) return;
  const line = $('kiosk-position');
  if (!pos) {
    line.textContent = problem ? t(`position.${problem}`) : t('position.waiting');
    return;
  }
  line.textContent = t('position.ok', { m: Math.round(pos.accuracy), time: fmtClock(pos.at, language()) });
}

/** The device's position for a sign-on or sign-off fix, if it has one. */
async function position() {
  try {
    const pos = await duty.current(30_000, 10_000);
    const fix = duty.fixOf(pos, 'ping');
    return { client_id: fix.client_id, recorded_at: fix.recorded_at, lat: fix.lat, lon: fix.lon, accuracy_m: fix.accuracy_m };
  } catch {
    return undefined;
  }
}

async function onSignOn(e) {
  e.preventDefault();
  const form = e.target;
  const k = device();
  $('kiosk-error').textContent = '';
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const body = { username: form.username.value.trim() };
    if (form.method.value === 'pin') body.pin = form.secret.value;
    else body.password = form.secret.value;
    const pos = await position();
    if (pos) body.position = pos;
    await api.kiosk('POST', '/kiosk/sign-on', k.token, body);
    form.username.value = '';
    form.secret.value = '';
    await load();
  } catch (err) {
    $('kiosk-error').textContent = problem(err);
  } finally {
    button.disabled = false;
  }
}

function problem(err) {
  if (err.status === 0) return t('kiosk.offline');
  if (err.status === 401) return t('kiosk.wrong');
  if (err.status === 429) return t('login.throttled');
  if (err.status === 403) return t('kiosk.not_rostered');
  if (err.status === 409) return t('kiosk.already');
  return err.message;
}

async function signOff(id) {
  const k = device();
  $('kiosk-error').textContent = '';
  try {
    const body = { sign_on_id: id };
    const pos = await position();
    if (pos) body.position = pos;
    await api.kiosk('POST', '/kiosk/sign-off', k.token, body);
    await load();
  } catch (err) {
    $('kiosk-error').textContent = problem(err);
  }
}

/** Leaving kiosk mode takes a commander's or the registering officer's login. */
function askExit() {
  const form = el('form', { class: 'card', id: 'kiosk-exit-form' },
    el('p', { class: 'note' }, t('kiosk.exit_note')),
    el('label', {}, el('span', {}, t('login.username')), el('input', { name: 'username', autocomplete: 'off', required: true })),
    el('label', {}, el('span', {}, t('login.password')), el('input', { name: 'password', type: 'password', autocomplete: 'off', required: true })),
    el('button', { type: 'submit', class: 'big stop' }, t('kiosk.exit')),
    el('p', { class: 'error', role: 'alert' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const k = device();
    try {
      await api.login(form.username.value.trim(), form.password.value);
      await api.request('DELETE', `/kiosks/${k.id}`);
      await api.logout();
      form.remove();
      leave(t('kiosk.exited'));
    } catch (err) {
      await api.logout().catch(() => {});
      form.querySelector('.error').textContent = err.status === 401 ? t('login.wrong') : problem(err);
    }
  });
  const old = $('kiosk-exit-form');
  if (old) old.remove();
  $('view-kiosk').append(form);
  form.username.focus();
}

$('kiosk-setup-form').addEventListener('submit', onSetup);
$('kiosk-sign-on').addEventListener('submit', onSignOn);
document.addEventListener('click', (e) => {
  const target = e.target.closest('[data-action]');
  if (!target) return;
  if (target.dataset.action === 'kiosk_sign_off') signOff(target.dataset.id);
  if (target.dataset.action === 'kiosk_exit') askExit();
});
