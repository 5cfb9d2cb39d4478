// The console's entry point: configuration, login and logout, the three views behind
// #board, #map and #compliance, and the live feed that keeps the board current.

import * as api from './api.js';
import { Board } from './board.js';
import { LiveFeed } from './events.js';
import { MapView } from './map.js';
import { ComplianceView } from './reports.js';
import { fromLocalInput, monthOf, setZone, startOfDay, toLocalInput } from './util.js';

const $ = (id) => document.getElementById(id);
const VIEWS = ['board', 'map', 'compliance'];
const MODE_TEXT = {
  live: 'live',
  polling: 'polling every few seconds',
  reconnecting: 'reconnecting…',
};

let board = null;
let mapView = null;
let compliance = null;
let feed = null;

async function loadConfig() {
  try {
    const res = await fetch('/console/config.json', { cache: 'no-store' });
    if (res.ok) return await res.json();
  } catch {
    // Defaults below.
  }
  return { tile_url: null, timezone: 'UTC' };
}

function showLogin(message = '') {
  if (feed) feed.stop();
  feed = null;
  board.clear();
  for (const v of VIEWS) $(`view-${v}`).hidden = true;
  $('nav').hidden = true;
  $('who').hidden = true;
  $('view-login').hidden = false;
  $('login-error').textContent = message;
  $('login-password').value = '';
  $('login-username').focus();
  document.body.dataset.session = 'none';
}

async function afterLogin(member) {
  $('view-login').hidden = true;
  $('nav').hidden = false;
  $('who').hidden = false;
  $('who-name').textContent = `${member.display_name || member.username} (${member.role})`;
  document.body.dataset.session = 'open';
  if (!location.hash || location.hash === '#') history.replaceState(null, '', '#board');
  await route();
  feed = new LiveFeed({
    onEvent: (type, data) => board.onEvent(type, data),
    poll: () => board.refreshStatus(),
    onMode: (mode) => {
      $('live-mode').textContent = MODE_TEXT[mode] || mode;
      $('live-mode').dataset.mode = mode;
    },
  });
  try {
    await board.load();
  } catch (e) {
    $('board-updated').textContent = `The board could not be loaded: ${e.message}`;
  }
  feed.start();
}

function setSpanInputs(from, to) {
  $('map-from').value = toLocalInput(from);
  $('map-to').value = toLocalInput(to);
}

function spanFromInputs() {
  const from = fromLocalInput($('map-from').value);
  const to = fromLocalInput($('map-to').value);
  return from && to && to > from ? [from, to] : null;
}

/** Shows the view the hash names. */
async function route() {
  if (!api.member()) return;
  const name = location.hash.replace(/^#/, '').split('?')[0];
  const view = VIEWS.includes(name) ? name : 'board';
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (view === 'map' && !$('map').dataset.loaded) {
    if (!$('map-from').value) setSpanInputs(startOfDay(new Date()), new Date());
    const span = spanFromInputs();
    if (span) await mapView.show(...span);
  }
  if (view === 'compliance' && !$('view-compliance').dataset.loaded) {
    if (!$('compliance-month').value) $('compliance-month').value = monthOf(new Date());
    await compliance.show($('compliance-month').value, $('compliance-level').value);
  }
}

function wire() {
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = $('login-submit');
    button.disabled = true;
    $('login-error').textContent = '';
    try {
      const member = await api.login($('login-username').value.trim(), $('login-password').value);
      if (member.role !== 'admin' && member.role !== 'commander') {
        await api.logout();
        showLogin('The console is for commanders and administrators. Officers, volunteers and kiosk crews: use the phone app at /app/ (巡防手机应用).');
        return;
      }
      $('login-password').value = '';
      await afterLogin(member);
    } catch (err) {
      $('login-error').textContent = err.status === 401 ? 'Wrong username or password.' : err.message;
    } finally {
      button.disabled = false;
    }
  });
  $('logout').addEventListener('click', async () => {
    await api.logout();
    delete $('map').dataset.loaded;
    delete $('view-compliance').dataset.loaded;
    showLogin('You have logged out.');
  });
  api.whenSessionEnds((reason) => showLogin(reason));
  window.addEventListener('hashchange', () => {
    route().catch(() => {});
  });

  $('map-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const span = spanFromInputs();
    if (!span) {
      $('map-message').textContent = 'Choose a start before the end.';
      return;
    }
    mapView.show(...span);
  });
  for (const button of document.querySelectorAll('#map-form [data-span]')) {
    button.addEventListener('click', () => {
      const now = new Date();
      const spans = {
        today: [startOfDay(now), now],
        yesterday: [startOfDay(now, -1), startOfDay(now)],
        week: [startOfDay(now, -7), now],
      };
      const [from, to] = spans[button.dataset.span];
      setSpanInputs(from, to);
      mapView.show(from, to);
    });
  }
  $('compliance-form').addEventListener('submit', (e) => {
    e.preventDefault();
    compliance.show($('compliance-month').value, $('compliance-level').value);
  });
}

async function main() {
  // A policy violation means a bug here (an inline style or script crept in): count it
  // where a test can see it.
  document.addEventListener('securitypolicyviolation', (e) => {
    document.body.dataset.policyViolations = String(Number(document.body.dataset.policyViolations || 0) + 1);
    console.error(`Content-Security-Policy violation: ${e.violatedDirective} ${e.blockedURI}`);
  });
  const config = await loadConfig();
  setZone(config.timezone || 'UTC');
  board = new Board();
  mapView = new MapView({ tileUrl: config.tile_url });
  compliance = new ComplianceView();
  wire();
  showLogin();
  document.body.dataset.ready = 'true';
}

main();
