// The live feed: GET /api/v1/events read with fetch() and a streaming reader (EventSource
// cannot send the Authorization header), Server-Sent Events parsed here, reconnection with
// Last-Event-ID; and polling as the fallback whenever the stream is not up (a server
// without the endpoint answers 404) plus, slowly, while it is.

import { accessToken, refresh } from './api.js';

/** Polling period while the stream is down: a check-in shows within 5 s. */
export const POLL_FALLBACK_MS = 3000;
/** Polling period while the stream is up, to heal anything missed. */
export const POLL_LIVE_MS = 30000;
/** Without a byte for this long (the server sends a comment every 15 s) the stream is dead. */
const SILENCE_MS = 45000;
/** When the server has no event stream, look again after this long. */
const ABSENT_RETRY_MS = 60000;

/**
 * Parses an SSE byte stream incrementally. `push(text)` takes decoded text; complete
 * events go to `dispatch({id, event, data})`; comments to `comment(text)`.
 */
export class SseParser {
  constructor(dispatch, comment = () => {}) {
    this.dispatch = dispatch;
    this.comment = comment;
    this.buffer = '';
    this.lastEventId = '';
    this.retry = null;
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
    this.sawData = false;
  }

  push(text) {
    this.buffer += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (!m || (m[0] === '\r' && m.index === this.buffer.length - 1)) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.sawData) {
        this.dispatch({ id: this.lastEventId, event: this.event || 'message', data: this.data.join('\n') });
      }
      this.reset();
      return;
    }
    if (line.startsWith(':')) {
      this.comment(line.slice(1).trimStart());
      return;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event': this.event = value; break;
      case 'data': this.data.push(value); this.sawData = true; break;
      case 'id': if (!value.includes('\0')) this.lastEventId = value; break;
      case 'retry': if (/^\d+$/.test(value)) this.retry = Number(value); break;
      default: break; // Unknown fields are ignored, as the standard says.
    }
  }
}

/**
 * Keeps the console up to date. `onEvent(type, data)` receives each parsed event,
 * `poll()` is called on the polling schedule, `onMode(mode)` hears 'live', 'polling'
 * (no event stream on this server) or 'reconnecting'.
 */
export class LiveFeed {
  constructor({ onEvent, poll, onMode }) {
    this.onEvent = onEvent;
    this.poll = poll;
    this.onMode = onMode;
    this.mode = null;
    this.running = false;
    this.lastEventId = '';
    this.backoff = 1000;
    this.controller = null;
    this.timers = new Set();
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.setMode('reconnecting');
    this.connect();
    this.schedulePoll(0);
  }

  stop() {
    this.running = false;
    if (this.controller) this.controller.abort();
    this.controller = null;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  later(fn, ms) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.running) fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  setMode(mode) {
    if (this.mode === mode) return;
    const wasLive = this.mode === 'live';
    this.mode = mode;
    this.onMode(mode);
    // Dropping out of the stream: poll at once and then often, until it is back; once it
    // is up, events drive the updates and polling slows down.
    if (wasLive && mode !== 'live') this.schedulePoll(0);
    if (mode === 'live') this.schedulePoll(POLL_LIVE_MS);
  }

  schedulePoll(delay) {
    clearTimeout(this.pollTimer);
    this.timers.delete(this.pollTimer);
    this.pollTimer = this.later(async () => {
      if (!document.hidden) {
        try {
          await this.poll();
        } catch {
          // A failed poll is retried on the next turn.
        }
      }
      this.schedulePoll(this.mode === 'live' ? POLL_LIVE_MS : POLL_FALLBACK_MS);
    }, delay);
  }

  async connect() {
    if (!this.running) return;
    const controller = new AbortController();
    this.controller = controller;
    const headers = { accept: 'text/event-stream', authorization: `Bearer ${accessToken()}` };
    if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
    let res;
    try {
      res = await fetch('/api/v1/events', { headers, signal: controller.signal, cache: 'no-store' });
    } catch {
      this.retryLater();
      return;
    }
    if (res.status === 404) {
      // This server has no event stream (yet): poll, and look again now and then.
      this.setMode('polling');
      this.later(() => this.connect(), ABSENT_RETRY_MS);
      return;
    }
    if (res.status === 401) {
      try {
        await refresh();
      } catch {
        return; // The login has ended; the app goes back to the login screen.
      }
      this.retryLater();
      return;
    }
    if (!res.ok || !res.body) {
      this.retryLater();
      return;
    }
    this.setMode('live');
    this.backoff = 1000;
    await this.read(res.body, controller);
    if (this.running && this.controller === controller) {
      this.setMode('reconnecting');
      this.retryLater();
    }
  }

  async read(body, controller) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser((e) => this.dispatch(e));
    parser.lastEventId = this.lastEventId;
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), SILENCE_MS);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        parser.push(decoder.decode(value, { stream: true }));
        this.lastEventId = parser.lastEventId;
        if (parser.retry !== null) this.backoff = parser.retry;
      }
    } catch {
      // Aborted or broken: reconnect below.
    } finally {
      clearTimeout(watchdog);
    }
  }

  dispatch({ event, data }) {
    let parsed = null;
    try {
      parsed = data ? JSON.parse(data) : null;
    } catch {
      return;
    }
    this.onEvent(event, parsed);
  }

  retryLater() {
    if (!this.running) return;
    if (this.mode !== 'polling') this.setMode('reconnecting');
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 30000);
    this.later(() => this.connect(), delay);
  }
}
