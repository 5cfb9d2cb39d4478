// Small helpers shared by the views: building elements, and times in the server's zone.

/** Makes an element: el('td', {class: 'x', dataset: {code: 'K01'}}, 'text', child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** The same for SVG elements. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(node, attrs);
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
}

/** Replaces the children of a node. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

/** The time zone days and months are counted in (PATROL_TIMEZONE), set from the config. */
let zone = 'UTC';
export function setZone(z) {
  zone = z;
}
export function getZone() {
  return zone;
}

const partsCache = new Map();
function formatter(tz) {
  let f = partsCache.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-GB', {
      timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
    partsCache.set(tz, f);
  }
  return f;
}

/** Local calendar fields of an instant in the configured zone. */
export function localParts(instant) {
  const out = {};
  for (const p of formatter(zone).formatToParts(instant)) {
    if (p.type !== 'literal') out[p.type] = Number(p.value);
  }
  return out; // {year, month, day, hour, minute, second}
}

/** The zone's offset from UTC at an instant, in milliseconds. */
function offsetAt(ms) {
  const p = localParts(new Date(ms));
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/**
 * The instant of a local wall-clock time in the configured zone. A time that occurs twice
 * takes the earlier instant; one skipped by a clock change, the first instant after it.
 */
export function zonedInstant(year, month, day, hour = 0, minute = 0) {
  const wall = Date.UTC(year, month - 1, day, hour, minute);
  const candidates = [offsetAt(wall - 86400000), offsetAt(wall + 86400000)]
    .map((o) => wall - o)
    .filter((t) => {
      const p = localParts(new Date(t));
      return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute) === wall;
    })
    .sort((a, b) => a - b);
  if (candidates.length) return new Date(candidates[0]);
  // In a gap: the wall time does not exist; take the later offset's reading.
  return new Date(wall - offsetAt(wall + 86400000));
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** `YYYY-MM-DD HH:MM` in the zone. */
export function fmtTime(value) {
  if (!value) return '—';
  const p = localParts(new Date(value));
  return `${p.year}-${pad(p.month)}-${pad(p.day)} ${pad(p.hour)}:${pad(p.minute)}`;
}

/** `YYYY-MM-DD HH:MM:SS` in the zone, for files. */
export function fmtTimeSeconds(value) {
  const p = localParts(new Date(value));
  return `${p.year}-${pad(p.month)}-${pad(p.day)} ${pad(p.hour)}:${pad(p.minute)}:${pad(p.second)}`;
}

/** `HH:MM:SS` in the zone. */
export function fmtClock(value) {
  const p = localParts(new Date(value));
  return `${pad(p.hour)}:${pad(p.minute)}:${pad(p.second)}`;
}

/** The value of a datetime-local input for an instant (zone time). */
export function toLocalInput(instant) {
  const p = localParts(instant);
  return `${p.year}-${pad(p.month)}-${pad(p.day)}T${pad(p.hour)}:${pad(p.minute)}`;
}

/** The instant a datetime-local input means (zone time), or null. */
export function fromLocalInput(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(text || '');
  if (!m) return null;
  return zonedInstant(+m[1], +m[2], +m[3], +m[4], +m[5]);
}

/** Local midnight of the zone's day containing an instant, shifted by whole days. */
export function startOfDay(instant, addDays = 0) {
  const p = localParts(instant);
  const d = new Date(Date.UTC(p.year, p.month - 1, p.day + addDays));
  return zonedInstant(d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate());
}

/** `YYYY-MM` of the zone's month containing an instant. */
export function monthOf(instant) {
  const p = localParts(instant);
  return `${p.year}-${pad(p.month)}`;
}

/** The instants bounding a `YYYY-MM` month in the zone. */
export function monthBounds(month) {
  const [y, m] = month.split('-').map(Number);
  const next = m === 12 ? [y + 1, 1] : [y, m + 1];
  return [zonedInstant(y, m, 1), zonedInstant(next[0], next[1], 1)];
}

/** RFC 3339 in UTC without milliseconds, safe in a query string. */
export function iso(instant) {
  return new Date(instant).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** A fraction as a whole percentage. */
export function pct(x) {
  return x === null || x === undefined ? '—' : `${Math.round(x * 100)} %`;
}

/**
 * A compliance score as a percentage to 0.01 %, the precision at which the server compares
 * scores: units ranked apart never read alike.
 */
export function scorePct(x) {
  return x === null || x === undefined ? '—' : `${(Math.round(x * 10000) / 100).toFixed(2)} %`;
}

/** Runs `fn` once `ms` after the last call. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Quotes a CSV field when it needs it. */
export function csvField(v) {
  const s = v === null || v === undefined ? '' : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Offers a Blob as a file download. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: filename, class: 'download-link' });
  document.body.append(a);
  a.click();
  a.remove();
  // The browser has taken the file by the next turn; the URL can go after a while.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
