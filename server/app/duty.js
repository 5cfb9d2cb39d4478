// Positions from the phone, and the fixes made of them: duty actions, tracking while on
// duty (every `interval` seconds or after `distance` metres, whichever comes first), and
// the SOS beacon (every 10 s until cancelled). Every fix goes into the queue first.

import { metres, stored, store, uuidv7 } from './util.js';
import * as queue from './queue.js';

export const TRACKING = 'patrol.tracking';
export const DEFAULTS = { interval: 30, distance: 20 };
export const BOUNDS = { interval: [10, 300], distance: [10, 500] };
const SOS_EVERY_MS = 10_000;

/** The tracking settings, kept within their bounds. */
export function trackingSettings() {
  const s = { ...DEFAULTS, ...stored(TRACKING, {}) };
  for (const k of Object.keys(BOUNDS)) {
    const [lo, hi] = BOUNDS[k];
    const v = Number(s[k]);
    s[k] = Number.isFinite(v) ? Math.min(hi, Math.max(lo, Math.round(v))) : DEFAULTS[k];
  }
  return s;
}

/** Saves tracking settings; false when a value is out of bounds. */
export function saveTracking(interval, distance) {
  const ok = (k, v) => Number.isFinite(v) && v >= BOUNDS[k][0] && v <= BOUNDS[k][1];
  if (!ok('interval', interval) || !ok('distance', distance)) return false;
  store(TRACKING, { interval: Math.round(interval), distance: Math.round(distance) });
  return true;
}

let last = null; // {lat, lon, accuracy, speed, heading, altitude, at}
let problem = null; // 'denied' | 'unavailable' | 'timeout' | 'unsupported'
let watchId = null;
let battery = null;
const listeners = new Set();

if (navigator.getBattery) {
  navigator.getBattery().then((b) => {
    battery = b;
  }, () => {});
}

/** Calls `fn(position, problem)` on every new position or failure. */
export function onPosition(fn) {
  listeners.add(fn);
}

/** The latest position, or null. */
export function lastPosition() {
  return last;
}

function read(p) {
  const c = p.coords;
  return {
    lat: c.latitude,
    lon: c.longitude,
    accuracy: c.accuracy,
    speed: c.speed,
    heading: c.heading,
    altitude: c.altitude,
    at: p.timestamp || Date.now(),
  };
}

function problemOf(err) {
  if (!err) return 'unavailable';
  return { 1: 'denied', 2: 'unavailable', 3: 'timeout' }[err.code] || 'unavailable';
}

function took(p) {
  last = read(p);
  problem = null;
  listeners.forEach((fn) => fn(last, null));
}

function failed(err) {
  problem = problemOf(err);
  listeners.forEach((fn) => fn(last, problem));
}

/** Follows the phone's position (high accuracy) while the app is open. */
export function watch() {
  if (!navigator.geolocation) {
    problem = 'unsupported';
    listeners.forEach((fn) => fn(null, problem));
    return;
  }
  if (watchId !== null) return;
  watchId = navigator.geolocation.watchPosition(took, failed, { enableHighAccuracy: true, maximumAge: 0, timeout: 30_000 });
}

/** Stops following the position. */
export function unwatch() {
  if (watchId !== null) navigator.geolocation.clearWatch(watchId);
  watchId = null;
}

/** A position no older than `maxAgeMs`: the latest one, or a new reading. */
export function current(maxAgeMs = 10_000, timeoutMs = 20_000) {
  if (last && Date.now() - last.at <= maxAgeMs) return Promise.resolve(last);
  if (!navigator.geolocation) return Promise.reject(new Error('unsupported'));
  return new Promise((resolve, reject) => {
    navigator.geolocation.getCurrentPosition(
      (p) => {
        took(p);
        resolve(last);
      },
      (err) => {
        failed(err);
        reject(new Error(problemOf(err)));
      },
      { enableHighAccuracy: true, maximumAge: maxAgeMs, timeout: timeoutMs },
    );
  });
}

/** A fix of `kind` at `pos`, about `context` ({shift_id, post_id}, either may be null). */
export function fixOf(pos, kind, context = {}) {
  const fix = {
    client_id: uuidv7(),
    recorded_at: new Date(pos.at).toISOString(),
    lat: pos.lat,
    lon: pos.lon,
    accuracy_m: Math.max(0, Number(pos.accuracy) || 0),
    kind,
  };
  if (Number.isFinite(pos.speed) && pos.speed >= 0) fix.speed_mps = pos.speed;
  if (Number.isFinite(pos.heading) && pos.heading >= 0 && pos.heading <= 360) fix.heading_deg = pos.heading;
  if (Number.isFinite(pos.altitude)) fix.altitude_m = pos.altitude;
  if (battery && Number.isFinite(battery.level)) fix.battery = Math.round(battery.level * 100);
  if (context.shift_id) fix.shift_id = context.shift_id;
  if (context.post_id) fix.post_id = context.post_id;
  return fix;
}

/**
 * Sends a ping at most every `interval` seconds, and sooner after `distance` metres of
 * movement, while started. `emit(pos)` queues the fix.
 */
export class Tracker {
  constructor(emit) {
    this.emit = emit;
    this.sent = null; // the position of the last ping
    this.timer = null;
    this.onMove = (pos) => {
      if (this.timer && pos && this.due(pos)) this.send(pos);
    };
    listeners.add(this.onMove);
  }

  due(pos) {
    const { interval, distance } = trackingSettings();
    if (!this.sent) return true;
    if (pos.at <= this.sent.at) return false;
    return pos.at - this.sent.at >= interval * 1000 || metres(this.sent, pos) >= distance;
  }

  send(pos) {
    this.sent = pos;
    this.emit(pos);
  }

  start() {
    if (this.timer) return;
    watch();
    // A phone standing still reports no movement: ask for a reading when one is due.
    this.timer = setInterval(() => this.tick(), 2000);
    this.tick();
  }

  async tick() {
    const { interval } = trackingSettings();
    if (this.sent && Date.now() - this.sent.at < interval * 1000) return;
    if (this.asking) return;
    this.asking = true;
    try {
      const pos = await current(Math.min(interval * 500, 10_000));
      if (this.timer && this.due(pos)) this.send(pos);
    } catch {
      // The position problem is shown by the position line.
    } finally {
      this.asking = false;
    }
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  get running() {
    return this.timer !== null;
  }
}

/** The SOS beacon: an `sos` fix now and every 10 s until stopped. */
export class Beacon {
  constructor(emit) {
    this.emit = emit;
    this.timer = null;
    this.lastAt = 0;
  }

  start() {
    if (this.timer) return;
    watch();
    this.timer = setInterval(() => this.beat(), 1000);
    this.beat();
  }

  async beat() {
    if (this.busy || Date.now() - this.lastAt < SOS_EVERY_MS) return;
    this.busy = true;
    try {
      // Any position beats none: an old one still says where to start looking.
      const pos = await current(5_000, 8_000).catch(() => last);
      if (pos && this.timer && pos.at > (this.sentAt || 0)) {
        this.lastAt = Date.now();
        this.sentAt = pos.at;
        await this.emit(pos);
      }
    } finally {
      this.busy = false;
    }
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }
}

/** Queues a fix for `owner` and returns it once it is on the device. */
export async function keep(owner, fix) {
  await queue.enqueue(owner, fix);
  return fix;
}
