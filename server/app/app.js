// The phone app: log in once, see today's duty, go on and off duty, arrive and depart,
// send an SOS, and have every fix reach the server exactly once however the network
// comes and goes. Kiosk devices run kiosk.js instead.

import * as api from './api.js';
import * as queue from './queue.js';
import * as duty from './duty.js';
import * as kiosk from './kiosk.js';
import { drawPost } from './map.js';
import { language, t, toggle, translate } from './i18n.js';
import { $, dayOf, el, fill, fmtClock, fmtDayTime, fmtTime, setZone, store, stored } from './util.js';

const CONFIG = 'patrol.config';
const SHIFTS = 'patrol.shifts'; // {member_id, at, items}: /me/shifts as last read
const DUTY = 'patrol.duty'; // {member_id, since}: on duty on this device
const SOS = 'patrol.sos'; // {member_id, since, first}: an SOS being sent

export const config = { timezone: 'Asia/Shanghai', max_accuracy_m: 50, tile_url: null, version: '' };

const state = {
  shifts: [],
  coverage: null, // /me/coverage item of the running shift
  lastAction: null, // {kind, client_id, at}
  sosFirst: null, // client_id of the SOS's first fix
  hiddenAt: null,
  logoutArmed: false,
};

let tracker = null;
let beacon = null;

/** 'member:<id>' for the logged-in member: whose queued fixes are sent. */
function owner() {
  const m = api.member();
  return m ? `member:${m.id}` : null;
}

// Views -------------------------------------------------------------------------------

const VIEWS = ['login', 'today', 'sos', 'settings', 'background', 'kiosk-setup', 'kiosk'];

export function show(view) {
  document.body.dataset.view = view;
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  const tabs = !['login', 'kiosk', 'sos'].includes(view);
  $('tabs').hidden = !tabs;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.view === view);
  if (view === 'today') renderToday();
  if (view === 'settings') renderSettings();
  if (view === 'background') renderKeys();
  window.scrollTo(0, 0);
}

function banner(text) {
  const b = $('banner');
  b.textContent = text || '';
  b.hidden = !text;
}

function showLogin(note = '') {
  show('login');
  $('login-note').textContent = note;
}

// Boot ----------------------------------------------------------------------------------

async function loadConfig() {
  Object.assign(config, stored(CONFIG, {}));
  try {
    const res = await fetch('/app/config.json');
    if (res.ok) {
      Object.assign(config, await res.json());
      store(CONFIG, config);
    }
  } catch {
    // Offline: the kept copy serves.
  }
  setZone(config.timezone);
}

function registerWorker() {
  if (!('serviceWorker' in navigator)) return;
  navigator.serviceWorker.register('/app/sw.js', { scope: '/app/' }).catch(() => {});
  // A new binary's files took over: reload once to run them, unless someone is typing.
  // The first worker taking a page it did not serve is no update.
  const updating = Boolean(navigator.serviceWorker.controller);
  let reloading = false;
  navigator.serviceWorker.addEventListener('controllerchange', () => {
    if (!updating || reloading) return;
    const typing = document.activeElement && ['INPUT', 'SELECT', 'TEXTAREA'].includes(document.activeElement.tagName);
    if (typing) return;
    reloading = true;
    window.location.reload();
  });
}

function updateNetwork() {
  const online = navigator.onLine;
  $('net').dataset.state = online ? 'online' : 'offline';
  $('net').textContent = online ? '' : t('net.offline');
}

// Counted for the tests: the page must break no rule of its Content-Security-Policy.
document.addEventListener('securitypolicyviolation', () => {
  document.body.dataset.policyViolations = String(Number(document.body.dataset.policyViolations || 0) + 1);
});

async function boot() {
  translate();
  registerWorker();
  await loadConfig();
  updateNetwork();
  window.addEventListener('online', updateNetwork);
  window.addEventListener('offline', updateNetwork);
  queue.onChange(renderQueue);
  api.whenSessionEnds(sessionEnded);
  wire();
  if (kiosk.registered()) kiosk.start({ show, config });
  else if (api.loggedIn()) startMember();
  else {
    queue.setTarget(null);
    showLogin();
  }
  document.body.dataset.readyMs = String(Math.round(performance.now()));
  document.body.dataset.ready = 'true';
}

// Login --------------------------------------------------------------------------------

async function onLogin(e) {
  e.preventDefault();
  const form = e.target;
  $('login-error').textContent = '';
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const previous = stored(SHIFTS);
    await api.login(form.username.value.trim(), form.password.value);
    form.password.value = '';
    const m = api.member();
    // Another member's duty state on a shared phone is not this member's.
    if (previous && previous.member_id !== m.id) store(SHIFTS, null);
    for (const key of [DUTY, SOS]) {
      const s = stored(key);
      if (s && s.member_id !== m.id) store(key, null);
    }
    startMember();
  } catch (err) {
    $('login-error').textContent = loginProblem(err);
  } finally {
    button.disabled = false;
  }
}

function loginProblem(err) {
  if (err.status === 0) return t('login.offline');
  if (err.status === 401) return t('login.wrong');
  if (err.status === 429) return t('login.throttled');
  return err.message;
}

async function sessionEnded() {
  stopDutyLoops();
  queue.setTarget(null);
  const c = await queue.counts('').catch(() => ({ others: 0 }));
  showLogin(c.others ? t('login.ended_kept', { n: c.others }) : t('login.ended'));
}

function startMember() {
  const m = api.member();
  queue.setTarget({ owner: owner(), send: (fixes) => api.post('/checkins', { checkins: fixes }) });
  const cached = stored(SHIFTS);
  state.shifts = cached && cached.member_id === m.id ? cached.items : [];
  show('today');
  if (stored(DUTY)) startTracking();
  if (stored(SOS)) startBeacon();
  loadShifts();
  loadCoverage();
}

// Shifts and coverage -------------------------------------------------------------------

async function loadShifts() {
  const m = api.member();
  if (!m) return;
  const from = new Date(Date.now() - 12 * 3600_000).toISOString();
  const to = new Date(Date.now() + 36 * 3600_000).toISOString();
  try {
    const answer = await api.get(`/me/shifts?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
    state.shifts = answer.items;
    store(SHIFTS, { member_id: m.id, at: new Date().toISOString(), items: answer.items });
    renderToday();
    if (!state.coverage) loadCoverage();
  } catch {
    // Offline or a passing failure: the kept roster serves until the next try.
  }
}

async function loadCoverage() {
  const running = runningShift();
  if (!running || !api.member()) {
    state.coverage = null;
    return;
  }
  try {
    const answer = await api.get(`/me/coverage?from=${encodeURIComponent(running.starts_at)}`);
    state.coverage = answer.items.find((i) => i.shift_id === running.shift_id) || null;
    renderToday();
  } catch {
    // Shown again at the next try.
  }
}

/** The shift running now (the one ending first, if several). */
function runningShift(now = Date.now()) {
  return state.shifts
    .filter((s) => new Date(s.starts_at) <= now && now < new Date(s.ends_at))
    .sort((a, b) => new Date(a.ends_at) - new Date(b.ends_at))[0] || null;
}

function nextShift(now = Date.now()) {
  return state.shifts
    .filter((s) => new Date(s.starts_at) > now)
    .sort((a, b) => new Date(a.starts_at) - new Date(b.starts_at))[0] || null;
}

/** The shift and post a fix taken now is about. */
function context() {
  const s = runningShift();
  return s ? { shift_id: s.shift_id, post_id: s.post.id } : {};
}

// Rendering ----------------------------------------------------------------------------

function kindName(kind) {
  return t(`kind.${kind}`);
}

function span(s) {
  const lang = language();
  const start = new Date(s.starts_at);
  const end = new Date(s.ends_at);
  const sameDay = dayOf(start) === dayOf(Date.now());
  const from = sameDay ? fmtTime(start, lang) : fmtDayTime(start, lang);
  return `${from}–${fmtTime(end, lang)}`;
}

function shiftCard(s, title) {
  const names = s.colleagues.map((c) => c.display_name);
  return [
    el('p', { class: 'label' }, title),
    el('h2', {}, el('span', { class: 'code' }, s.post.code), ' ', s.post.name),
    el('p', { class: 'meta' }, `${kindName(s.post.kind)} · ${span(s)}`),
    el('p', { class: 'colleagues' }, names.length ? t('today.with', { names: names.join('、') }) : t('today.alone')),
    s.note ? el('p', { class: 'note' }, s.note) : null,
  ];
}

function renderToday() {
  if ($('view-today').hidden) return;
  const running = runningShift();
  const next = nextShift();
  const onDuty = stored(DUTY);
  const lang = language();

  if (running) fill($('shift-card'), shiftCard(running, t('today.now')));
  else fill($('shift-card'), el('p', { class: 'label' }, t('today.now')), el('h2', {}, t('today.no_shift')));
  $('next-card').hidden = !next;
  if (next) fill($('next-card'), shiftCard(next, t('today.next')));

  fill($('duty-state'), onDuty
    ? el('span', { class: 'on' }, t('duty.on_since', { time: fmtTime(onDuty.since, lang) }))
    : el('span', { class: 'off' }, t('duty.off')));
  document.querySelector('[data-action=on_duty]').disabled = Boolean(onDuty);
  document.querySelector('[data-action=off_duty]').disabled = !onDuty;
  $('background-note').hidden = !onDuty;

  renderProgress(running);
  drawPost($('post-map'), running ? running.post : next ? next.post : null, {
    uncovered: state.coverage && state.coverage.route ? state.coverage.route.uncovered : null,
    me: duty.lastPosition(),
  });
  renderSos();
  renderRejected();
}

function pct(x) {
  return `${Math.round(x * 1000) / 10}%`;
}

function renderProgress(running) {
  const c = state.coverage;
  const box = $('progress');
  if (!running || !c) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const lang = language();
  const until = t('progress.until', { time: fmtTime(c.evaluated_until, lang) });
  if (c.route) {
    const need = running.post.required_coverage;
    fill(box,
      el('p', { class: 'label' }, t('progress.title')),
      el('p', { class: 'figure' }, t('progress.route', { covered: pct(c.route.covered_fraction), need: pct(need) })),
      el('p', { class: 'meta' }, `${t('progress.metres', { covered: Math.round(c.route.covered_m), length: Math.round(c.route.length_m) })} · ${until}`),
      el('p', { class: `status status-${c.status}` }, t(`status.${c.status}`)));
  } else if (c.presence) {
    const p = c.presence;
    fill(box,
      el('p', { class: 'label' }, t('progress.title')),
      el('p', { class: 'figure' }, t('progress.presence', { present: pct(p.present_fraction), staffed: pct(p.staffed_fraction) })),
      el('p', { class: 'meta' }, `${p.late_min === null || p.late_min === undefined ? t('progress.not_staffed') : t('progress.late', { min: Math.round(p.late_min) })} · ${until}`),
      el('p', { class: `status status-${c.status}` }, t(`status.${c.status}`)));
  }
}

function renderPosition(pos, problem) {
  const line = $('position');
  const lang = language();
  line.className = 'position';
  if (problem && (!pos || Date.now() - pos.at > 60_000)) {
    line.textContent = t(`position.${problem}`);
    line.classList.add('bad');
  } else if (!pos) {
    line.textContent = t('position.waiting');
  } else if (pos.accuracy > config.max_accuracy_m) {
    line.textContent = t('position.inaccurate', { m: Math.round(pos.accuracy), max: config.max_accuracy_m });
    line.classList.add('bad');
  } else {
    line.textContent = t('position.ok', { m: Math.round(pos.accuracy), time: fmtClock(pos.at, lang) });
  }
  if (!$('view-today').hidden) {
    const running = runningShift() || nextShift();
    drawPost($('post-map'), running ? running.post : null, {
      uncovered: state.coverage && state.coverage.route ? state.coverage.route.uncovered : null,
      me: pos,
    });
  }
}

async function renderQueue(c) {
  $('queue-count').textContent = String(c.waiting);
  $('queue-badge').classList.toggle('has', c.waiting > 0);
  // The last action: sent once it left the queue.
  const a = state.lastAction;
  if (a && !a.sent) {
    const waiting = await queue.has(a.client_id);
    const rejected = !waiting && (await queue.rejectedOf(owner() || '')).some((r) => r.client_id === a.client_id);
    if (!waiting) a.sent = !rejected;
    $('action-result').textContent = t(rejected ? 'action.refused' : waiting ? 'action.queued' : 'action.sent', {
      what: t(`action.${a.kind}`), time: fmtClock(a.at, language()),
    });
  }
  if (state.sosFirst) renderSos();
  if (c.rejected !== state.rejectedCount) {
    state.rejectedCount = c.rejected;
    renderRejected();
  }
}

async function renderRejected() {
  const o = owner();
  const box = $('rejected');
  const items = o ? await queue.rejectedOf(o).catch(() => []) : [];
  box.hidden = items.length === 0;
  if (!items.length) return;
  const lang = language();
  fill(box,
    el('p', { class: 'label bad' }, t('rejected.title', { n: items.length })),
    el('ul', { class: 'list' }, items.slice(0, 20).map((r) => el('li', {},
      `${t(`action.${r.fix.kind}`)} ${fmtDayTime(r.fix.recorded_at, lang)}: ${r.error.message || r.error.code || ''}`))),
    el('button', { type: 'button', class: 'link', dataset: { action: 'rejected_clear' } }, t('rejected.clear')));
}

// Duty -----------------------------------------------------------------------------------

async function act(kind) {
  const o = owner();
  if (!o) return;
  const lang = language();
  const result = $('action-result');
  result.textContent = t('action.locating');
  for (const b of document.querySelectorAll('.actions button')) b.disabled = true;
  try {
    let pos;
    try {
      pos = await duty.current(10_000);
    } catch (err) {
      result.textContent = t('action.no_position', { why: t(`position.${err.message}`) });
      return;
    }
    const fix = duty.fixOf(pos, kind, context());
    state.lastAction = { kind, client_id: fix.client_id, at: fix.recorded_at, sent: false };
    await duty.keep(o, fix);
    result.textContent = t('action.queued', { what: t(`action.${kind}`), time: fmtClock(fix.recorded_at, lang) });
    if (kind === 'on_duty') {
      store(DUTY, { member_id: api.member().id, since: fix.recorded_at });
      startTracking(pos);
    } else if (kind === 'off_duty') {
      store(DUTY, null);
      stopTracking();
    }
  } finally {
    for (const b of document.querySelectorAll('.actions button')) b.disabled = false;
    renderToday();
  }
}

function startTracking(first) {
  const o = owner();
  if (!o) return;
  if (!tracker) tracker = new duty.Tracker((pos) => duty.keep(owner(), duty.fixOf(pos, 'ping', context())));
  // The on-duty fix stands for this moment; the first ping comes an interval later.
  if (first) tracker.sent = first;
  tracker.start();
}

function stopTracking() {
  if (tracker) tracker.stop();
}

function startBeacon() {
  if (!beacon) {
    beacon = new duty.Beacon(async (pos) => {
      const fix = duty.fixOf(pos, 'sos', context());
      if (!state.sosFirst) {
        state.sosFirst = fix.client_id;
        const s = stored(SOS);
        if (s) store(SOS, { ...s, first: fix.client_id });
      }
      state.sosLast = fix.recorded_at;
      await duty.keep(owner(), fix);
      renderSos();
    });
  }
  const s = stored(SOS);
  state.sosFirst = s && s.first ? s.first : state.sosFirst;
  beacon.start();
  renderSos();
}

function stopDutyLoops() {
  stopTracking();
  if (beacon) beacon.stop();
}

async function renderSos() {
  const s = stored(SOS);
  $('sos-panel').hidden = !s;
  document.querySelector('[data-action=sos]').hidden = Boolean(s);
  if (!s) return;
  const lang = language();
  let text;
  if (!state.sosFirst) text = t('sos.locating');
  else if (await queue.has(state.sosFirst)) text = t('sos.queued', { time: fmtClock(s.since, lang) });
  else text = t('sos.sent', { time: fmtClock(s.since, lang), last: state.sosLast ? fmtClock(state.sosLast, lang) : '' });
  $('sos-status').textContent = text;
}

function sosConfirm() {
  store(SOS, { member_id: api.member().id, since: new Date().toISOString(), first: null });
  state.sosFirst = null;
  state.sosLast = null;
  show('today');
  startBeacon();
}

function sosCancel() {
  if (beacon) beacon.stop();
  store(SOS, null);
  state.sosFirst = null;
  $('action-result').textContent = t('sos.cancelled');
  renderSos();
}

// Settings ---------------------------------------------------------------------------------

function renderSettings() {
  const m = api.member();
  if (!m) return;
  $('me-name').textContent = m.display_name;
  $('me-role').textContent = `${m.username} · ${t(`role.${m.role}`)}`;
  const s = duty.trackingSettings();
  const form = $('tracking-form');
  form.interval.value = s.interval;
  form.distance.value = s.distance;
  $('kiosk-setup-button').hidden = !['kiosk_officer', 'commander', 'admin'].includes(m.role);
  state.logoutArmed = false;
  $('logout-note').textContent = '';
}

function onTracking(e) {
  e.preventDefault();
  const form = e.target;
  const ok = duty.saveTracking(Number(form.interval.value), Number(form.distance.value));
  $('tracking-result').textContent = ok ? t('settings.saved') : t('settings.bounds');
}

async function onPin(e) {
  e.preventDefault();
  const form = e.target;
  const out = $('pin-result');
  out.textContent = '';
  try {
    await api.request('PUT', '/me/pin', { pin: form.pin.value, password: form.password.value });
    form.pin.value = '';
    form.password.value = '';
    out.textContent = t('pin.saved');
  } catch (err) {
    out.textContent = err.status === 0 ? t('common.offline') : err.message;
  }
}

async function onLogout() {
  const o = owner();
  const c = o ? await queue.counts(o) : { waiting: 0 };
  if (c.waiting > 0 && !state.logoutArmed) {
    queue.kick();
    state.logoutArmed = true;
    $('logout-note').textContent = t('logout.queued', { n: c.waiting });
    return;
  }
  stopDutyLoops();
  store(DUTY, null);
  store(SOS, null);
  store(SHIFTS, null);
  queue.setTarget(null);
  await api.logout();
  state.shifts = [];
  state.coverage = null;
  state.lastAction = null;
  showLogin(c.waiting > 0 ? t('login.ended_kept', { n: c.waiting }) : '');
}

// Background reporting ------------------------------------------------------------------------

async function renderKeys() {
  const m = api.member();
  if (!m) return;
  const list = $('key-list');
  try {
    const page = await api.get(`/members/${m.id}/device-keys?active=true`);
    fill(list, page.items.length ? page.items.map((k) => el('li', {},
      el('span', {}, `${k.label || t('background.unnamed')} · ${fmtDayTime(k.created_at, language())}`),
      el('button', { type: 'button', class: 'link', dataset: { action: 'key_revoke', id: k.id } }, t('background.revoke')))) : el('li', { class: 'note' }, t('background.none')));
  } catch (err) {
    fill(list, el('li', { class: 'note' }, err.status === 0 ? t('common.offline') : err.message));
  }
}

async function createKey() {
  const m = api.member();
  $('key-error').textContent = '';
  try {
    const issued = await api.post(`/members/${m.id}/device-keys`, { label: t('background.label') });
    const { interval, distance } = duty.trackingSettings();
    const base = `${window.location.origin}/osmand`;
    // Traccar Client reads its server URL from the code's address and its settings from
    // the query; OsmAnd takes a URL template.
    const traccar = `${base}?id=${encodeURIComponent(issued.key)}&interval=${interval}&distance=${distance}&accuracy=highest`;
    const osmand = `${base}?id=${encodeURIComponent(issued.key)}&lat={0}&lon={1}&timestamp={2}&accuracy={3}&altitude={4}`;
    const { default: qrcode } = await import('./vendor/qrcode.mjs');
    const qr = qrcode(0, 'M');
    qr.addData(traccar);
    qr.make();
    $('key-qr').src = qr.createDataURL(6, 12);
    $('key-qr').alt = traccar;
    $('key-traccar').textContent = traccar;
    $('key-osmand').textContent = osmand;
    $('key-result').hidden = false;
    renderKeys();
  } catch (err) {
    $('key-error').textContent = err.status === 0 ? t('common.offline') : err.message;
  }
}

async function revokeKey(id) {
  const m = api.member();
  try {
    await api.request('DELETE', `/members/${m.id}/device-keys/${id}`);
  } catch (err) {
    $('key-error').textContent = err.status === 0 ? t('common.offline') : err.message;
  }
  renderKeys();
}

// Wiring ------------------------------------------------------------------------------------

function wire() {
  $('login-form').addEventListener('submit', onLogin);
  $('tracking-form').addEventListener('submit', onTracking);
  $('pin-form').addEventListener('submit', onPin);
  document.addEventListener('click', (e) => {
    const target = e.target.closest('[data-action]');
    if (!target || target.disabled) return;
    const action = target.dataset.action;
    switch (action) {
      case 'on_duty':
      case 'off_duty':
      case 'arrive':
      case 'depart':
        act(action);
        break;
      case 'sos':
        show('sos');
        break;
      case 'sos_confirm':
        sosConfirm();
        break;
      case 'sos_back':
        show('today');
        break;
      case 'sos_cancel':
        sosCancel();
        break;
      case 'lang':
        toggle();
        if (!$('view-today').hidden) renderToday();
        if (!$('view-settings').hidden) renderSettings();
        break;
      case 'logout':
        onLogout();
        break;
      case 'show_background':
        show('background');
        break;
      case 'key_create':
        createKey();
        break;
      case 'key_revoke':
        revokeKey(target.dataset.id);
        break;
      case 'rejected_clear':
        queue.clearRejected(owner()).then(renderRejected);
        break;
      case 'kiosk_setup':
        kiosk.setup({ show, config });
        break;
      default:
        break;
    }
  });
  for (const a of document.querySelectorAll('#tabs a')) {
    a.addEventListener('click', (e) => {
      e.preventDefault();
      show(a.dataset.view);
    });
  }
  duty.onPosition(renderPosition);
  document.addEventListener('visibilitychange', () => {
    if (kiosk.registered()) return;
    if (document.hidden) {
      state.hiddenAt = Date.now();
      return;
    }
    const away = state.hiddenAt ? Date.now() - state.hiddenAt : 0;
    state.hiddenAt = null;
    if (stored(DUTY) && away > 30_000) banner(t('background.was_away', { min: Math.max(1, Math.round(away / 60_000)) }));
    queue.kick();
    loadShifts();
    loadCoverage();
  });
  $('banner').addEventListener('click', () => banner(''));
  setInterval(() => {
    if (!api.loggedIn() || kiosk.registered()) return;
    loadCoverage();
  }, 60_000);
  setInterval(() => {
    if (!api.loggedIn() || kiosk.registered()) return;
    loadShifts();
  }, 5 * 60_000);
  // The clock moves: a shift starts or ends with nobody touching the phone.
  setInterval(() => {
    if (!$('view-today').hidden) renderToday();
  }, 30_000);
}

boot();
