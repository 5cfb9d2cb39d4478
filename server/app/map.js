// A small map of one post, drawn on SVG as the console draws: a route as a line (its
// covered stretches green, the uncovered red, when the coverage is known), a checkpoint
// or kiosk as a point with its radius, an area as a polygon; and my position with its
// accuracy. Web Mercator, fitted to the post and my position; no tiles.

import { svg, fill } from './util.js';

const COLOURS = { post: '#1565c0', covered: '#2e7d32', uncovered: '#c62828', me: '#6a1b9a' };
const EARTH = 6378137;

function mercator(lon, lat) {
  const s = Math.min(Math.max(Math.sin((lat * Math.PI) / 180), -0.9999), 0.9999);
  return [(lon * Math.PI * EARTH) / 180, (EARTH / 2) * Math.log((1 + s) / (1 - s))];
}

/** Metres along a line of [lon, lat] pairs, per vertex. */
function along(coords) {
  const out = [0];
  for (let i = 1; i < coords.length; i += 1) {
    const [lon1, lat1] = coords[i - 1];
    const [lon2, lat2] = coords[i];
    const rad = Math.PI / 180;
    const s = Math.sin(((lat2 - lat1) * rad) / 2) ** 2
      + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(((lon2 - lon1) * rad) / 2) ** 2;
    out.push(out[i - 1] + 2 * 6371008.8 * Math.asin(Math.min(1, Math.sqrt(s))));
  }
  return out;
}

/** The part of a line between `from` and `to` metres along it. */
function slice(coords, dist, from, to) {
  const at = (m) => {
    for (let i = 1; i < coords.length; i += 1) {
      if (m <= dist[i] || i === coords.length - 1) {
        const f = dist[i] === dist[i - 1] ? 0 : Math.min(1, Math.max(0, (m - dist[i - 1]) / (dist[i] - dist[i - 1])));
        return [coords[i - 1][0] + f * (coords[i][0] - coords[i - 1][0]), coords[i - 1][1] + f * (coords[i][1] - coords[i - 1][1])];
      }
    }
    return coords[coords.length - 1];
  };
  const out = [at(from)];
  for (let i = 0; i < coords.length; i += 1) if (dist[i] > from && dist[i] < to) out.push(coords[i]);
  out.push(at(to));
  return out;
}

function lines(geometry) {
  if (geometry.type === 'LineString') return [geometry.coordinates];
  if (geometry.type === 'MultiLineString') return geometry.coordinates;
  return [];
}

function rings(geometry) {
  if (geometry.type === 'Polygon') return geometry.coordinates;
  if (geometry.type === 'MultiPolygon') return geometry.coordinates.flat();
  return [];
}

/**
 * Draws `post` ({geometry, radius_m, corridor_m}) into the SVG `root`, with `uncovered`
 * stretches ([[from_m, to_m]], or null when unknown) and `me` ({lat, lon, accuracy}).
 */
export function drawPost(root, post, { uncovered = null, me = null } = {}) {
  const w = Math.max(1, root.clientWidth || 360);
  const h = Math.max(1, root.clientHeight || 220);
  root.setAttribute('viewBox', `0 0 ${w} ${h}`);
  if (!post || !post.geometry) {
    fill(root);
    return;
  }
  const g = post.geometry;
  // Bounds in metres of Web Mercator, with the radius and my accuracy around points.
  const pts = [];
  const add = (lon, lat, r = 0) => {
    const [x, y] = mercator(lon, lat);
    const k = 1 / Math.cos((lat * Math.PI) / 180);
    pts.push([x - r * k, y - r * k], [x + r * k, y + r * k]);
  };
  if (g.type === 'Point') add(g.coordinates[0], g.coordinates[1], post.radius_m || 30);
  for (const line of lines(g)) line.forEach(([lon, lat]) => add(lon, lat, 10));
  for (const ring of rings(g)) ring.forEach(([lon, lat]) => add(lon, lat));
  if (me) add(me.lon, me.lat, Math.min(me.accuracy || 0, 200));
  if (pts.length === 0) return;
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = 16;
  const scale = Math.min((w - 2 * pad) / Math.max(maxX - minX, 1), (h - 2 * pad) / Math.max(maxY - minY, 1));
  const cx = (minX + maxX) / 2;
  const cy = (minY + maxY) / 2;
  const screen = (lon, lat) => {
    const [x, y] = mercator(lon, lat);
    return [w / 2 + (x - cx) * scale, h / 2 - (y - cy) * scale];
  };
  // Metres on the ground to pixels at a latitude.
  const px = (m, lat) => (m / Math.cos((lat * Math.PI) / 180)) * scale;
  const path = (coords) => coords.map(([lon, lat], i) => `${i ? 'L' : 'M'}${screen(lon, lat).map((v) => v.toFixed(1)).join(' ')}`).join('');

  const parts = [];
  for (const ring of rings(g)) {
    parts.push(svg('path', { d: `${path(ring)}Z`, fill: COLOURS.post, 'fill-opacity': 0.15, stroke: COLOURS.post, 'stroke-width': 2 }));
  }
  for (const line of lines(g)) {
    const known = Array.isArray(uncovered);
    parts.push(svg('path', { d: path(line), fill: 'none', stroke: known ? COLOURS.covered : COLOURS.post, 'stroke-width': 6, 'stroke-linecap': 'round', 'stroke-linejoin': 'round', class: known ? 'covered' : 'route' }));
    if (known && g.type === 'LineString') {
      const dist = along(line);
      for (const [from, to] of uncovered) {
        parts.push(svg('path', { d: path(slice(line, dist, from, to)), fill: 'none', stroke: COLOURS.uncovered, 'stroke-width': 6, 'stroke-linecap': 'round', class: 'uncovered' }));
      }
    }
  }
  if (g.type === 'Point') {
    const [x, y] = screen(g.coordinates[0], g.coordinates[1]);
    parts.push(svg('circle', { cx: x, cy: y, r: px(post.radius_m || 30, g.coordinates[1]), fill: COLOURS.post, 'fill-opacity': 0.12, stroke: COLOURS.post, 'stroke-width': 2 }));
    parts.push(svg('circle', { cx: x, cy: y, r: 5, fill: COLOURS.post }));
  }
  if (me) {
    const [x, y] = screen(me.lon, me.lat);
    parts.push(svg('circle', { cx: x, cy: y, r: Math.max(px(me.accuracy || 0, me.lat), 8), fill: COLOURS.me, 'fill-opacity': 0.15 }));
    parts.push(svg('circle', { cx: x, cy: y, r: 7, fill: COLOURS.me, stroke: '#fff', 'stroke-width': 3, class: 'me' }));
  }
  fill(root, parts);
}
