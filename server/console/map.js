// The coverage map: GET /coverage/map drawn on SVG with a Web Mercator projection of our
// own. Routes are split into covered and uncovered pieces, points and areas coloured by
// the worst status of their shifts. Pan by dragging or with the arrow keys, zoom with the
// wheel, the buttons or + and -. An XYZ tile server, when configured, draws beneath.

import * as api from './api.js';
import { el, fill, fmtTime, iso, pct, svg } from './util.js';

const TILE = 256;
const MIN_ZOOM = 3;
const MAX_ZOOM = 19;
const LABEL_ZOOM = 12;

/** Colours by status, the same as the hints the server puts on each feature. */
export const PALETTE = {
  met: '#2e7d32',
  partial: '#f9a825',
  missed: '#c62828',
  pending: '#1565c0',
  unrostered: '#9e9e9e',
};

const KIND_NAME = { route: 'Route', checkpoint: 'Checkpoint', kiosk: 'Kiosk', area: 'Volunteer area' };

/** Longitude and latitude to Web Mercator world pixels at zoom 0 (0‥256 each way). */
export function project(lon, lat) {
  const s = Math.min(Math.max(Math.sin((lat * Math.PI) / 180), -0.9999), 0.9999);
  return [
    ((lon + 180) / 360) * TILE,
    (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * TILE,
  ];
}

/** Every [lon, lat] of a GeoJSON geometry, as rings/lines of world points. */
function worldParts(geometry) {
  const line = (coords) => coords.map(([lon, lat]) => project(lon, lat));
  switch (geometry && geometry.type) {
    case 'Point': return [[project(geometry.coordinates[0], geometry.coordinates[1])]];
    case 'LineString': return [line(geometry.coordinates)];
    case 'MultiLineString': return geometry.coordinates.map(line);
    case 'Polygon': return geometry.coordinates.map(line);
    case 'MultiPolygon': return geometry.coordinates.flatMap((p) => p.map(line));
    default: return [];
  }
}

export class CoverageMap {
  constructor(root, { tileUrl, onSelect }) {
    this.root = root;
    this.tileUrl = tileUrl;
    this.onSelect = onSelect;
    this.view = null; // {z, cx, cy}: zoom and centre in zoom-0 world pixels
    this.features = [];
    this.frame = 0;
    this.tiles = new Map();
    this.selected = null;
    this.layers = {};
    for (const name of ['tiles', 'areas', 'routes', 'points', 'labels']) {
      this.layers[name] = svg('g', { class: `layer-${name}` });
      root.append(this.layers[name]);
    }
    this.wire();
    new ResizeObserver(() => this.draw()).observe(root);
  }

  size() {
    const r = this.root.getBoundingClientRect();
    return [Math.max(1, r.width), Math.max(1, r.height)];
  }

  /** World (zoom 0) to screen pixels. */
  toScreen([wx, wy]) {
    const [w, h] = this.size();
    const k = 2 ** this.view.z;
    return [(wx - this.view.cx) * k + w / 2, (wy - this.view.cy) * k + h / 2];
  }

  /** Replaces the features with a FeatureCollection. */
  setData(collection) {
    for (const layer of ['areas', 'routes', 'points', 'labels']) fill(this.layers[layer]);
    this.selected = null;
    this.features = (collection.features || []).map((f, index) => this.makeFeature(f, index));
    if (!this.view) this.fit();
    else this.draw();
  }

  makeFeature(f, index) {
    const p = f.properties || {};
    const status = p.status || 'unrostered';
    const parts = worldParts(f.geometry);
    const kind = p.kind;
    let colour;
    let node;
    const common = {
      class: `feature kind-${kind} status-${status}`,
      tabindex: '0',
      role: 'button',
      dataset: { index: String(index), postCode: p.post_code, kind, status },
    };
    if (kind === 'route') {
      colour = p.stroke || (p.covered ? PALETTE.met : PALETTE[status]);
      const stretch = p.covered ? 'covered' : 'not covered';
      node = svg('path', {
        ...common,
        class: `${common.class} ${p.covered ? 'covered' : 'uncovered'}`,
        fill: 'none',
        stroke: colour,
        'stroke-width': p['stroke-width'] || 4,
        'stroke-linecap': 'round',
        'stroke-linejoin': 'round',
        'aria-label': `Route ${p.post_code}, ${Math.round(p.from_m)} to ${Math.round(p.to_m)} m, ${stretch}`,
      });
      node.dataset.covered = String(Boolean(p.covered));
      this.layers.routes.append(node);
    } else if (kind === 'area') {
      colour = p.fill || PALETTE[status];
      node = svg('path', {
        ...common,
        fill: colour,
        'fill-opacity': p['fill-opacity'] ?? 0.35,
        'fill-rule': 'evenodd',
        stroke: p.stroke || colour,
        'stroke-width': 1.5,
        'aria-label': `Volunteer area ${p.post_code}, ${status}`,
      });
      this.layers.areas.append(node);
    } else {
      colour = p['marker-color'] || PALETTE[status];
      const shape = kind === 'checkpoint' ? 'rect' : 'circle';
      node = svg(shape, {
        ...common,
        fill: colour,
        stroke: '#ffffff',
        'stroke-width': 2,
        'aria-label': `${KIND_NAME[kind] || kind} ${p.post_code}, ${status}`,
      });
      this.layers.points.append(node);
    }
    node.dataset.colour = colour;
    let label = null;
    if (kind !== 'route' || Number(p.from_m) === 0) {
      label = svg('text', { class: `label label-${kind}`, 'aria-hidden': 'true' }, p.post_code);
      this.layers.labels.append(label);
    }
    return { f, p, kind, parts, node, label };
  }

  /** Zooms and centres on every feature. */
  fit() {
    const pts = this.features.flatMap((x) => x.parts.flat());
    if (!pts.length) {
      this.view = { z: MIN_ZOOM, cx: TILE / 2, cy: TILE / 2 };
      this.draw();
      return;
    }
    const xs = pts.map((p) => p[0]);
    const ys = pts.map((p) => p[1]);
    const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const [w, h] = this.size();
    // A tenth of the frame is left as margin; a single point gets a street-level zoom.
    const z = Math.min(
      Math.log2((w * 0.9) / Math.max(maxX - minX, 1e-9)),
      Math.log2((h * 0.9) / Math.max(maxY - minY, 1e-9)),
      16,
    );
    this.view = { z: Math.max(MIN_ZOOM, z), cx: (minX + maxX) / 2, cy: (minY + maxY) / 2 };
    this.draw();
  }

  zoomBy(dz, [sx, sy] = this.size().map((v) => v / 2)) {
    if (!this.view) return;
    const [w, h] = this.size();
    const k0 = 2 ** this.view.z;
    const wx = this.view.cx + (sx - w / 2) / k0;
    const wy = this.view.cy + (sy - h / 2) / k0;
    const z = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, this.view.z + dz));
    const k = 2 ** z;
    this.view = { z, cx: wx - (sx - w / 2) / k, cy: wy - (sy - h / 2) / k };
    this.draw();
  }

  panBy(dx, dy) {
    if (!this.view) return;
    const k = 2 ** this.view.z;
    this.view.cx -= dx / k;
    this.view.cy -= dy / k;
    this.draw();
  }

  /** Redraws on the next frame. */
  draw() {
    if (this.frame || !this.view) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const showLabels = this.view.z >= LABEL_ZOOM;
    for (const x of this.features) {
      const screen = x.parts.map((part) => part.map((pt) => this.toScreen(pt)));
      if (x.kind === 'route' || x.kind === 'area') {
        const close = x.kind === 'area' ? 'Z' : '';
        x.node.setAttribute('d', screen
          .filter((part) => part.length)
          .map((part) => `M${part.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join('L')}${close}`)
          .join(''));
      } else if (screen[0] && screen[0][0]) {
        const [sx, sy] = screen[0][0];
        if (x.node.tagName === 'rect') {
          x.node.setAttribute('x', (sx - 6).toFixed(1));
          x.node.setAttribute('y', (sy - 6).toFixed(1));
          x.node.setAttribute('width', '12');
          x.node.setAttribute('height', '12');
        } else {
          x.node.setAttribute('cx', sx.toFixed(1));
          x.node.setAttribute('cy', sy.toFixed(1));
          x.node.setAttribute('r', '6.5');
        }
      }
      if (x.label) {
        const anchor = this.labelAnchor(x, screen);
        x.label.classList.toggle('hidden', !showLabels || !anchor);
        if (anchor) {
          x.label.setAttribute('x', (anchor[0] + 9).toFixed(1));
          x.label.setAttribute('y', (anchor[1] - 7).toFixed(1));
        }
      }
    }
    this.renderTiles();
  }

  labelAnchor(x, screen) {
    const pts = screen.flat();
    if (!pts.length) return null;
    if (x.kind === 'area') {
      const n = pts.length;
      return [pts.reduce((s, p) => s + p[0], 0) / n, pts.reduce((s, p) => s + p[1], 0) / n];
    }
    return pts[0];
  }

  renderTiles() {
    const layer = this.layers.tiles;
    if (!this.tileUrl) return;
    const [w, h] = this.size();
    const tz = Math.max(0, Math.min(MAX_ZOOM, Math.round(this.view.z)));
    const n = 2 ** tz;
    const scale = 2 ** (this.view.z - tz);
    const size = TILE * scale;
    const [left, top] = [this.view.cx - w / 2 / 2 ** this.view.z, this.view.cy - h / 2 / 2 ** this.view.z];
    const x0 = Math.floor((left * n) / TILE);
    const y0 = Math.max(0, Math.floor((top * n) / TILE));
    const x1 = Math.floor(((left + w / 2 ** this.view.z) * n) / TILE);
    const y1 = Math.min(n - 1, Math.floor(((top + h / 2 ** this.view.z) * n) / TILE));
    const wanted = new Set();
    for (let ty = y0; ty <= y1; ty += 1) {
      for (let tx = x0; tx <= x1; tx += 1) {
        const key = `${tz}/${tx}/${ty}`;
        wanted.add(key);
        let image = this.tiles.get(key);
        if (!image) {
          const wrapped = ((tx % n) + n) % n;
          const href = this.tileUrl.replace('{z}', tz).replace('{x}', wrapped).replace('{y}', ty);
          image = svg('image', { href, class: 'tile' });
          image.addEventListener('error', () => image.classList.add('tile-missing'));
          this.tiles.set(key, image);
          layer.append(image);
        }
        const [sx, sy] = this.toScreen([(tx * TILE) / n, (ty * TILE) / n]);
        image.setAttribute('x', sx.toFixed(1));
        image.setAttribute('y', sy.toFixed(1));
        // Half a pixel of overlap hides the seams between tiles.
        image.setAttribute('width', (size + 0.5).toFixed(1));
        image.setAttribute('height', (size + 0.5).toFixed(1));
      }
    }
    for (const [key, image] of this.tiles) {
      if (!wanted.has(key)) {
        image.remove();
        this.tiles.delete(key);
      }
    }
  }

  select(x) {
    if (this.selected) this.selected.node.classList.remove('selected');
    this.selected = x;
    if (x) {
      x.node.classList.add('selected');
      this.onSelect(x.p, x.kind);
    }
  }

  wire() {
    const root = this.root;
    let drag = null;
    root.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY, moved: false, id: e.pointerId };
    });
    root.addEventListener('pointermove', (e) => {
      if (!drag || drag.id !== e.pointerId) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      if (!drag.moved) {
        drag.moved = true;
        root.setPointerCapture(e.pointerId);
        root.classList.add('dragging');
      }
      drag.x = e.clientX;
      drag.y = e.clientY;
      this.panBy(dx, dy);
    });
    const end = (e) => {
      if (!drag || drag.id !== e.pointerId) return;
      const { moved } = drag;
      drag = null;
      root.classList.remove('dragging');
      if (moved) {
        // The click that follows a drag is not a selection.
        root.addEventListener('click', (c) => c.stopPropagation(), { capture: true, once: true });
      }
    };
    root.addEventListener('pointerup', end);
    root.addEventListener('pointercancel', end);
    root.addEventListener('click', (e) => {
      const node = e.target.closest('.feature');
      if (node) this.select(this.features[Number(node.dataset.index)]);
    });
    root.addEventListener('wheel', (e) => {
      e.preventDefault();
      const r = root.getBoundingClientRect();
      const unit = e.deltaMode === 1 ? 0.05 : e.deltaMode === 2 ? 1 : 0.002;
      this.zoomBy(-e.deltaY * unit, [e.clientX - r.left, e.clientY - r.top]);
    }, { passive: false });
    root.addEventListener('keydown', (e) => {
      const step = 80;
      const keys = {
        '+': () => this.zoomBy(0.5),
        '=': () => this.zoomBy(0.5),
        '-': () => this.zoomBy(-0.5),
        _: () => this.zoomBy(-0.5),
        ArrowLeft: () => this.panBy(step, 0),
        ArrowRight: () => this.panBy(-step, 0),
        ArrowUp: () => this.panBy(0, step),
        ArrowDown: () => this.panBy(0, -step),
        0: () => this.fit(),
      };
      const node = e.target.closest && e.target.closest('.feature');
      if ((e.key === 'Enter' || e.key === ' ') && node) {
        e.preventDefault();
        this.select(this.features[Number(node.dataset.index)]);
        return;
      }
      if (keys[e.key] && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }
}

/** The coverage map view: the span form, the map, and the details of a clicked feature. */
export class MapView {
  constructor({ tileUrl }) {
    this.span = null;
    this.seq = 0;
    this.map = new CoverageMap(document.getElementById('map'), {
      tileUrl,
      onSelect: (p, kind) => this.details(p, kind).catch((e) => this.detailError(e)),
    });
    document.getElementById('zoom-in').addEventListener('click', () => this.map.zoomBy(1));
    document.getElementById('zoom-out').addEventListener('click', () => this.map.zoomBy(-1));
    document.getElementById('zoom-fit').addEventListener('click', () => this.map.fit());
    const attribution = document.getElementById('map-attribution');
    if (tileUrl) {
      attribution.hidden = false;
      attribution.textContent = `Background: ${new URL(tileUrl.replace(/[{}]/g, '')).host}`;
    }
  }

  /** Loads and draws the coverage of a span. */
  async show(from, to) {
    const message = document.getElementById('map-message');
    const seq = (this.seq += 1);
    message.textContent = 'Loading…';
    document.getElementById('map').setAttribute('aria-busy', 'true');
    try {
      const data = await api.get(`/coverage/map?from=${iso(from)}&to=${iso(to)}`);
      // A later request (another span chosen meanwhile) wins.
      if (seq !== this.seq) return;
      this.span = [from, to];
      this.map.setData(data);
      const features = data.features || [];
      const pieces = features.filter((f) => f.properties.kind === 'route');
      const covered = pieces.filter((f) => f.properties.covered).length;
      const count = (s) => features.filter((f) => f.properties.kind !== 'route' && f.properties.status === s).length;
      document.getElementById('map-totals').textContent =
        `${pieces.length} route pieces (${covered} covered, ${pieces.length - covered} not); `
        + `posts and areas: ${count('met')} met, ${count('partial')} partial, ${count('missed')} missed, `
        + `${count('pending')} pending, ${count('unrostered')} not rostered.`;
      // The figures are per whole shift (the server does not clip them to the span): say
      // so, and which time they cover.
      const starts = features.map((f) => f.properties.shifts_from).filter(Boolean).sort();
      const ends = features.map((f) => f.properties.shifts_to).filter(Boolean).sort();
      message.textContent = `Figures of the shifts overlapping ${fmtTime(from)} to ${fmtTime(to)}, each whole`
        + (starts.length ? ` (together ${fmtTime(starts[0])} to ${fmtTime(ends[ends.length - 1])}).` : '.');
      fill(document.getElementById('feature-body'),
        el('p', { class: 'muted' }, 'Click a route, post or area for its figures and shifts.'));
      document.getElementById('map').dataset.loaded = iso(from) + '/' + iso(to);
    } catch (e) {
      if (seq === this.seq) message.textContent = `The map could not be loaded: ${e.message}`;
    } finally {
      document.getElementById('map').removeAttribute('aria-busy');
    }
  }

  detailError(e) {
    fill(document.getElementById('feature-body'), el('p', { class: 'error' }, e.message));
  }

  /** The figures of a feature and the shifts of its post in the span. */
  async details(p, kind) {
    const body = document.getElementById('feature-body');
    const rows = [
      ['Post', `${p.post_code} (${KIND_NAME[kind] || kind})`],
      ['Status over the span', p.status],
      ['Figures of', p.shifts_from ? `whole shifts, ${fmtTime(p.shifts_from)} to ${fmtTime(p.shifts_to)}` : 'no shifts'],
    ];
    if (kind === 'route') {
      rows.push(['This stretch', `${Math.round(p.from_m)}–${Math.round(p.to_m)} m, ${p.covered ? 'covered' : 'not covered'}`]);
    } else {
      rows.push(['Staffed', pct(p.staffed_fraction)], ['Someone present', pct(p.present_fraction)]);
    }
    const figures = el('dl', { class: 'figures' }, rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
    fill(body, figures, el('p', { class: 'muted' }, 'Loading shifts…'));
    const [from, to] = this.span;
    const report = await api.get(`/coverage?from=${iso(from)}&to=${iso(to)}&post_id=${encodeURIComponent(p.post_id)}`);
    const shifts = report.items || [];
    const table = el('table', { class: 'data compact' },
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col' }, 'Shift'),
        el('th', { scope: 'col' }, 'Status'),
        el('th', { scope: 'col' }, kind === 'route' ? 'Covered' : 'Staffed'),
        el('th', { scope: 'col' }, kind === 'route' ? 'Gaps' : 'Late'))),
      el('tbody', {}, shifts.map((s) => el('tr', { dataset: { shiftId: s.shift_id } },
        el('td', {}, `${fmtTime(s.starts_at)} – ${fmtTime(s.ends_at).slice(11)}`),
        el('td', {}, el('span', { class: `badge status-${s.status}` }, s.status)),
        el('td', {}, s.route ? pct(s.route.covered_fraction) : s.presence ? pct(s.presence.staffed_fraction) : '—'),
        el('td', {}, s.route
          ? s.route.uncovered.map(([a, b]) => `${Math.round(a)}–${Math.round(b)} m`).join(', ') || 'none'
          : s.presence && s.presence.late_min !== null && s.presence.late_min !== undefined
            ? `${Math.round(s.presence.late_min)} min` : '—')))));
    fill(body, figures,
      el('h3', {}, `Shifts in the span (${shifts.length})`),
      shifts.length ? el('div', { class: 'table-wrap' }, table) : el('p', { class: 'muted' }, 'No shifts.'));
  }
}
