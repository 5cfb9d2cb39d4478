// Small helpers: building elements, times in the server's zone, ids, distances.

/** Makes an element: el('li', {class: 'x', dataset: {id: '…'}}, 'text', child). */
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
  for (const c of children.flat()) node.append(c);
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

/** The element with this id. */
export function $(id) {
  return document.getElementById(id);
}

/** PATROL_TIMEZONE, from the server's config: every time is shown in it. */
let zone = 'Asia/Shanghai';
export function setZone(z) {
  if (z) zone = z;
}

const formats = new Map();
function format(lang, options) {
  const key = `${lang}|${JSON.stringify(options)}`;
  let f = formats.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(lang, { timeZone: zone, hourCycle: 'h23', ...options });
    formats.set(key, f);
  }
  return f;
}

/** 24-hour clock time in the server's zone: "08:00". */
export function fmtTime(date, lang) {
  return format(lang, { hour: '2-digit', minute: '2-digit' }).format(new Date(date));
}

/** Time with seconds: "08:00:05". */
export function fmtClock(date, lang) {
  return format(lang, { hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(new Date(date));
}

/** Day and time: "12月7日 08:00" / "7 Dec, 08:00". */
export function fmtDayTime(date, lang) {
  return format(lang, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }).format(new Date(date));
}

/** The day in the server's zone, to compare days: "2026-12-07". */
export function dayOf(date) {
  return format('en-CA', { year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(date));
}

/** A time-ordered UUID (version 7): 48 bits of milliseconds, then randomness. */
export function uuidv7() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  let ms = Date.now();
  for (let i = 5; i >= 0; i -= 1) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Great-circle distance in metres. */
export function metres(a, b) {
  const r = 6371008.8;
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const s = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * r * Math.asin(Math.min(1, Math.sqrt(s)));
}

/** JSON kept on the device, or a fallback. */
export function stored(key, fallback = null) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}

/** Keeps JSON on the device (null removes it). */
export function store(key, value) {
  if (value === null || value === undefined) localStorage.removeItem(key);
  else localStorage.setItem(key, JSON.stringify(value));
}
