// The live board: every post in scope with its rostered and present headcount and whether
// it is staffed now (GET /posts, GET /status/now), members on duty who went silent, and
// the open alerts (GET /alerts?state=open) with an acknowledge dialog.

import * as api from './api.js';
import { debounce, el, fill, fmtClock, fmtTime } from './util.js';

const KINDS = [
  ['route', 'Routes'],
  ['checkpoint', 'Checkpoints'],
  ['kiosk', 'Kiosks'],
  ['area', 'Volunteer areas'],
];

const STATE_LABEL = { staffed: 'Staffed', unstaffed: 'Unstaffed', unrostered: 'Not rostered' };

const ALERT_KIND = {
  post_unstaffed: 'Post unstaffed',
  route_idle: 'Route idle',
  member_silent: 'Member silent',
  sos: 'SOS',
  roster_gap: 'Roster gap',
  spoof_suspected: 'Spoofing suspected',
};

const $ = (id) => document.getElementById(id);

/** The state a post shows: staffed, unstaffed (rostered but short) or unrostered. */
function stateOf(required, present, staffed) {
  if (staffed) return 'staffed';
  return required > 0 ? 'unstaffed' : 'unrostered';
}

export class Board {
  constructor() {
    this.posts = [];
    this.units = new Map();
    this.status = null;
    this.alerts = [];
    this.alertsMore = false;
    this.alertsAvailable = true;
    this.alertKey = '';
    this.ackTarget = null;
    this.refreshSoon = debounce(() => this.refreshStatus().catch(() => {}), 300);
    this.alertsSoon = debounce(() => this.refreshAlerts().catch(() => {}), 300);
    this.wireDialog();
  }

  /** Loads the posts once after login, then the live figures. */
  async load() {
    const [posts, units] = await Promise.all([
      api.all('/posts'),
      api.all('/units').catch(() => []),
    ]);
    this.posts = posts;
    this.units = new Map(units.map((u) => [u.id, u]));
    await Promise.all([this.refreshStatus(), this.refreshAlerts()]);
  }

  /** Clears everything (logout). */
  clear() {
    this.posts = [];
    this.status = null;
    this.alerts = [];
    this.alertsMore = false;
    this.alertKey = '';
    fill($('board-posts'));
    fill($('alerts'));
    fill($('silent'));
  }

  async refreshStatus() {
    this.status = await api.get('/status/now');
    this.renderPosts();
    this.renderSilent();
  }

  async refreshAlerts() {
    try {
      // The newest 200 open alerts, with every open SOS first: a flood of newer alerts
      // (members silent when a shift starts) must never push an SOS off the list.
      const [sos, page] = await Promise.all([
        api.get('/alerts?state=open&kind=sos&limit=200'),
        api.get('/alerts?state=open&limit=200'),
      ]);
      this.alertsAvailable = true;
      const first = new Set(sos.items.map((a) => a.id));
      this.alerts = [...sos.items, ...page.items.filter((a) => !first.has(a.id))];
      this.alertsMore = Boolean(page.next_cursor);
    } catch (e) {
      if (e.status !== 404) throw e;
      // A server without the alerts endpoint: say so instead of an empty list.
      this.alertsAvailable = false;
      this.alerts = [];
    }
    this.renderAlerts();
  }

  /** An event from the stream. */
  onEvent(type, data) {
    if (type === 'checkin') {
      this.refreshSoon();
    } else if (type === 'post_status' && data) {
      this.applyPostStatus(data);
      this.refreshSoon();
    } else if (type === 'alert' && data && data.alert) {
      this.applyAlert(data.action, data.alert);
      this.alertsSoon();
    } else if (type === 'reset') {
      this.refreshSoon();
      this.alertsSoon();
    }
  }

  applyPostStatus(s) {
    const card = document.querySelector(`.post-card[data-post-id="${CSS.escape(s.post_id)}"]`);
    if (!card) return;
    const state = stateOf(s.required, s.present, s.staffed);
    this.paintCard(card, state, s.present, s.required, card.dataset.rostered);
  }

  applyAlert(action, alert) {
    const others = this.alerts.filter((a) => a.id !== alert.id);
    // A new alert goes first, after the open SOS alerts unless it is one.
    const sos = others.filter((a) => a.kind === 'sos');
    const rest = others.filter((a) => a.kind !== 'sos');
    this.alerts = action === 'raised' && alert.state === 'open'
      ? (alert.kind === 'sos' ? [alert, ...sos, ...rest] : [...sos, alert, ...rest])
      : others;
    this.renderAlerts();
  }

  renderPosts() {
    const byId = new Map((this.status ? this.status.posts : []).map((p) => [p.post_id, p]));
    // Posts from the list, in code order; a post the list missed still shows from the board.
    const known = new Set(this.posts.map((p) => p.id));
    const rows = this.posts.map((p) => ({ post: p, now: byId.get(p.id) }));
    for (const s of byId.values()) {
      if (!known.has(s.post_id)) {
        rows.push({ post: { id: s.post_id, code: s.post_code, name: s.name, kind: s.kind }, now: s });
      }
    }
    rows.sort((a, b) => a.post.code.localeCompare(b.post.code, 'en', { numeric: true }));
    const counts = { staffed: 0, unstaffed: 0, unrostered: 0 };
    const sections = [];
    for (const [kind, title] of KINDS) {
      const mine = rows.filter((r) => r.post.kind === kind);
      if (!mine.length) continue;
      const cards = mine.map(({ post, now }) => {
        const required = now ? now.required : 0;
        const present = now ? now.present.length : 0;
        const rostered = now ? now.rostered : 0;
        const state = stateOf(required, present, now && now.staffed);
        counts[state] += 1;
        const unit = this.units.get(post.unit_id);
        const card = el('li', {
          class: 'post-card',
          dataset: { postId: post.id, code: post.code, kind, rostered: String(rostered) },
        },
        el('span', { class: 'code' }, post.code),
        el('span', { class: 'name', title: post.name }, post.name),
        el('span', { class: 'heads' }),
        el('span', { class: 'state' }),
        el('span', { class: 'meta' },
          unit ? unit.code : '',
          post.staffing === '24x7' ? ' · 24x7' : '',
          now && now.last_fix_at ? ` · last fix ${fmtClock(now.last_fix_at)}` : ''));
        this.paintCard(card, state, present, required, rostered);
        return card;
      });
      sections.push(el('section', { class: 'kind-group', dataset: { kind } },
        el('h2', {}, `${title} `, el('span', { class: 'count' }, String(mine.length))),
        el('ul', { class: 'post-grid' }, cards)));
    }
    fill($('board-posts'), sections);
    fill($('board-counts'),
      el('span', { class: 'tally staffed' }, `${counts.staffed} staffed`), ' · ',
      el('span', { class: 'tally unstaffed' }, `${counts.unstaffed} unstaffed`), ' · ',
      el('span', { class: 'tally unrostered' }, `${counts.unrostered} not rostered`));
    if (this.status) $('board-updated').textContent = `as of ${fmtClock(this.status.at)}`;
  }

  paintCard(card, state, present, required, rostered) {
    card.dataset.state = state;
    card.classList.remove('staffed', 'unstaffed', 'unrostered');
    card.classList.add(state);
    card.querySelector('.heads').textContent = required > 0
      ? `${present} of ${required} present · ${rostered} rostered`
      : `${present} present · none rostered`;
    card.querySelector('.state').textContent = STATE_LABEL[state];
  }

  renderSilent() {
    const silent = this.status ? this.status.silent : [];
    const shiftPost = new Map();
    for (const p of this.status ? this.status.posts : []) {
      for (const s of p.shift_ids) shiftPost.set(s, p.post_code);
    }
    $('silent-count').textContent = String(silent.length);
    fill($('silent'), silent.length
      ? silent.map((m) => el('li', { dataset: { memberId: m.member_id } },
        el('strong', {}, m.display_name || m.member_id),
        ' ',
        el('span', { class: 'muted' },
          [...new Set(m.shift_ids.map((s) => shiftPost.get(s)).filter(Boolean))].join(', ')),
        el('br'),
        el('span', { class: 'muted' }, m.last_fix_at
          ? `last fix ${fmtTime(m.last_fix_at)}${m.last_position
            ? ` at ${m.last_position.lat.toFixed(5)}, ${m.last_position.lon.toFixed(5)}` : ''}`
          : 'no fix in the last 48 hours')))
      : [el('li', { class: 'muted' }, 'Nobody on duty has gone silent.')]);
  }

  renderAlerts() {
    $('alerts-note').textContent = this.alertsAvailable ? '' : 'This server does not raise alerts yet.';
    const key = JSON.stringify(this.alerts.map((a) => a.id));
    // More open alerts than listed: say so rather than give the listed number as the total.
    $('alerts-count').textContent = this.alertsAvailable
      ? `${this.alerts.length}${this.alertsMore ? '+' : ''}`
      : '';
    if (key === this.alertKey) return; // Unchanged: keep focus where it is.
    this.alertKey = key;
    const focused = document.activeElement && document.activeElement.closest('#alerts') !== null;
    fill($('alerts'), this.alerts.length || !this.alertsAvailable
      ? this.alerts.map((a) => el('li', { class: `alert kind-${a.kind}`, dataset: { alertId: a.id, kind: a.kind } },
        el('div', { class: 'alert-head' },
          el('span', { class: 'badge' }, ALERT_KIND[a.kind] || a.kind),
          a.post_code ? el('span', { class: 'code' }, a.post_code) : null,
          el('span', { class: 'muted' }, fmtTime(a.raised_at))),
        el('p', {}, a.message),
        a.member_name ? el('p', { class: 'muted' }, a.member_name) : null,
        el('button', { type: 'button', class: 'ack', onclick: () => this.openAck(a) }, 'Acknowledge')))
      : [el('li', { class: 'muted' }, 'No open alerts.')]);
    if (focused) {
      const first = document.querySelector('#alerts button.ack');
      if (first) first.focus();
    }
  }

  wireDialog() {
    const dialog = $('ack-dialog');
    const form = $('ack-form');
    const note = $('ack-note');
    $('ack-cancel').addEventListener('click', () => dialog.close());
    note.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submitAck().catch(() => {});
    });
    dialog.addEventListener('close', () => {
      const back = this.ackTarget && document.querySelector(`li[data-alert-id="${CSS.escape(this.ackTarget.id)}"] button`);
      this.ackTarget = null;
      (back || document.querySelector('#alerts button.ack') || $('alerts-title')).focus?.();
    });
  }

  openAck(alert) {
    this.ackTarget = alert;
    $('ack-message').textContent = `${alert.post_code ? `${alert.post_code}: ` : ''}${alert.message}`;
    $('ack-note').value = '';
    $('ack-error').textContent = '';
    $('ack-submit').disabled = false;
    $('ack-dialog').showModal();
    $('ack-note').focus();
  }

  async submitAck() {
    const alert = this.ackTarget;
    const note = $('ack-note').value.trim();
    if (!alert) return;
    if (!note) {
      $('ack-error').textContent = 'Write a note: who is handling it, or what was done.';
      return;
    }
    $('ack-submit').disabled = true;
    try {
      await api.post(`/alerts/${encodeURIComponent(alert.id)}/ack`, { note });
      this.alerts = this.alerts.filter((a) => a.id !== alert.id);
      this.renderAlerts();
      $('ack-dialog').close();
    } catch (e) {
      $('ack-submit').disabled = false;
      if (e.status === 409 || e.status === 404) {
        // Someone else acknowledged it, or it resolved itself: show the list as it is now.
        $('ack-error').textContent = `${e.message} The list has been refreshed.`;
        this.refreshAlerts().catch(() => {});
      } else {
        const fields = (e.problem.errors || []).map((f) => `${f.field}: ${f.message}`).join('; ');
        $('ack-error').textContent = fields || e.message;
      }
    }
  }
}
