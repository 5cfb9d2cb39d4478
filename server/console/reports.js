// Compliance: the monthly ranking with the plan's marks (GET /reports/compliance), the
// month's roster gaps (GET /rosters/gaps) and volunteer strength (GET /reports/volunteers),
// each downloadable as CSV.

import * as api from './api.js';
import {
  csvField, el, fill, fmtTime, fmtTimeSeconds, getZone, iso, monthBounds, pct, saveBlob, scorePct,
} from './util.js';

const $ = (id) => document.getElementById(id);

const CONSEQUENCE = { named: 'Named', yellow_card: 'Yellow card', veto: 'Veto' };

function table(node, headers, rows) {
  fill(node,
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows.length ? rows : [el('tr', {}, el('td', { colspan: String(headers.length), class: 'muted' }, 'Nothing to show.'))]));
}

/** Downloads a report the server renders as CSV, with the token, as a file. */
async function downloadCsv(path, fallbackName) {
  const res = await api.request('GET', path, undefined, { accept: 'text/csv' });
  saveBlob(await res.blob(), api.filenameOf(res, fallbackName));
}

/** What the ranking says as a whole: how many units it ranks, and why no one is marked. */
function rankingNote(report) {
  const n = report.ranked_units;
  const ranked = `${n} unit${n === 1 ? '' : 's'} ranked in the district`;
  if (report.marks_withheld === 'too_few_units') {
    return `${ranked}: too few to mark (marks need at least 3), so no unit is named or commended.`;
  }
  if (report.items.some((r) => r.tied_units === n)) {
    return `${ranked}: all share one score, so no unit is in the bottom 2.`;
  }
  return report.items.some((r) => r.tied_units > 1)
    ? `${ranked}. Equal scores share a rank (shown "=") and their marks.`
    : `${ranked}.`;
}

export class ComplianceView {
  constructor() {
    this.month = null;
    this.level = null;
    this.gaps = [];
    this.upcoming = [];
    this.seq = 0;
    $('ranking-csv').addEventListener('click', () => this.guard(() =>
      downloadCsv(`/reports/compliance?month=${this.month}&level=${this.level}&format=csv`,
        `compliance-${this.month}-${this.level}.csv`)));
    $('volunteers-csv').addEventListener('click', () => this.guard(() =>
      downloadCsv('/reports/volunteers?format=csv', 'volunteers.csv')));
    $('gaps-csv').addEventListener('click', () => this.guard(async () => this.gapsCsv()));
  }

  async guard(fn) {
    try {
      await fn();
    } catch (e) {
      $('compliance-message').textContent = `The download failed: ${e.message}`;
    }
  }

  /** Shows a month (YYYY-MM) at a level; a later call wins over an earlier one still loading. */
  async show(month, level) {
    const seq = (this.seq += 1);
    const message = $('compliance-message');
    message.textContent = 'Loading…';
    const [from, to] = monthBounds(month);
    const [ranking, gaps, volunteers] = await Promise.allSettled([
      api.get(`/reports/compliance?month=${encodeURIComponent(month)}&level=${encodeURIComponent(level)}`),
      api.get(`/rosters/gaps?from=${iso(from)}&to=${iso(to)}`),
      api.get('/reports/volunteers'),
    ]);
    if (seq !== this.seq) return;
    this.month = month;
    this.level = level;
    const failed = [];
    const render = (result, fn) => {
      if (result.status === 'fulfilled') fn.call(this, result.value);
      else failed.push(result.reason.message);
    };
    render(ranking, this.ranking);
    render(gaps, this.rosterGaps);
    render(volunteers, this.volunteers);
    message.textContent = failed.length ? `Some tables could not be loaded: ${failed.join('; ')}` : '';
    $('view-compliance').dataset.loaded = `${month}/${level}`;
  }

  ranking(report) {
    $('ranking-note').textContent = rankingNote(report);
    table($('ranking'),
      ['Rank', 'Unit', 'Score', 'Shifts met', 'Duty hours', 'Gap hours', 'Marks'],
      report.items.map((r) => {
        const marks = [];
        if (r.bottom2) marks.push(el('span', { class: 'badge mark-bottom2' }, 'Bottom 2'));
        if (r.consequence) {
          marks.push(el('span', { class: `badge mark-${r.consequence}` },
            `${CONSEQUENCE[r.consequence] || r.consequence} (${r.months_in_bottom2} month${r.months_in_bottom2 === 1 ? '' : 's'})`));
        }
        if (r.commended) marks.push(el('span', { class: 'badge mark-commended' }, 'Commended'));
        // A shared rank reads "=2": the tie may be with units this caller does not see.
        const tie = r.tied_units > 1;
        return el('tr', {
          class: r.bottom2 ? 'bottom2' : r.commended ? 'commended' : '',
          dataset: { unitCode: r.unit_code, consequence: r.consequence || '' },
        },
        el('td', tie ? { class: 'rank', title: `Tied with ${r.tied_units - 1} other unit${r.tied_units === 2 ? '' : 's'} on the same score` } : { class: 'rank' },
          r.rank === null ? '—' : `${tie ? '=' : ''}${r.rank}`),
        el('th', { scope: 'row' }, `${r.unit_code} `, el('span', { class: 'muted' }, r.unit_name)),
        el('td', { class: 'num score' }, scorePct(r.score)),
        el('td', { class: 'num' }, `${r.met} of ${r.shifts}`),
        el('td', { class: 'num' }, r.duty_hours.toFixed(1)),
        el('td', { class: 'num' }, r.gap_hours.toFixed(1)),
        el('td', {}, r.rank === null ? el('span', { class: 'muted' }, 'Not ranked: no rostered duty') : marks));
      }));
  }

  /**
   * Past gaps in the table, as the ranking counts them once a post's first shift is
   * rostered; time after now not rostered yet (the server splits gaps at now) only as a
   * total beside it.
   */
  rosterGaps(report) {
    const hours = (g) => (new Date(g.to) - new Date(g.from)) / 3600000;
    this.gaps = report.items.filter((g) => !g.upcoming);
    this.upcoming = report.items.filter((g) => g.upcoming);
    const posts = [...new Set(this.upcoming.map((g) => g.post_code))];
    $('gaps-upcoming').textContent = posts.length
      ? `Not rostered yet, after now: ${this.upcoming.reduce((a, g) => a + hours(g), 0).toFixed(1)} hours `
        + `on ${posts.length} post${posts.length === 1 ? '' : 's'} (${posts.slice(0, 8).join(', ')}`
        + `${posts.length > 8 ? `, and ${posts.length - 8} more` : ''}); not counted as gaps.`
      : '';
    table($('gaps'),
      ['Post', 'From', 'To', 'Hours', 'Rostered', 'Required'],
      this.gaps.map((g) => el('tr', { dataset: { postCode: g.post_code } },
        el('th', { scope: 'row' }, g.post_code),
        el('td', {}, fmtTime(g.from)),
        el('td', {}, fmtTime(g.to)),
        el('td', { class: 'num' }, hours(g).toFixed(1)),
        el('td', { class: 'num' }, g.rostered),
        el('td', { class: 'num' }, g.required))));
  }

  /**
   * The gaps endpoint answers JSON only: the CSV is made here, in the table's time zone
   * (named in the header): the past gaps shown, then the time not rostered yet.
   */
  gapsCsv() {
    const zone = getZone();
    const lines = [['post_id', 'post_code', `from (${zone})`, `to (${zone})`, 'rostered', 'required', 'upcoming']
      .map(csvField).join(',')];
    for (const g of [...this.gaps, ...this.upcoming]) {
      lines.push([g.post_id, g.post_code, fmtTimeSeconds(g.from), fmtTimeSeconds(g.to), g.rostered, g.required,
        Boolean(g.upcoming)].map(csvField).join(','));
    }
    saveBlob(new Blob([`${lines.join('\n')}\n`], { type: 'text/csv' }), `roster-gaps-${this.month}.csv`);
  }

  volunteers(report) {
    // The goal is the district's; below the district the server gives none.
    const goal = report.goal === null || report.goal === undefined
      ? ' (the goal is set for the whole district only)'
      : ` of the goal of ${report.goal.toLocaleString('en')} (${pct(report.share_of_goal)})`;
    $('volunteers-summary').textContent =
      `${report.total_volunteers.toLocaleString('en')} volunteers${goal}; `
      + `${report.below_standard} of ${report.items.length} squads below their standard.`;
    table($('volunteers'),
      ['Squad', 'Unit', 'Unit kind', 'Active members', 'Standard', ''],
      report.items.map((s) => el('tr', { class: s.below_standard ? 'below' : '', dataset: { teamCode: s.team_code } },
        el('th', { scope: 'row' }, `${s.team_code} `, el('span', { class: 'muted' }, s.team_name)),
        el('td', {}, `${s.unit_code} `, el('span', { class: 'muted' }, s.unit_name)),
        el('td', {}, s.unit_kind.replace('_', ' ')),
        el('td', { class: 'num' }, s.active_members),
        el('td', { class: 'num' }, s.standard),
        el('td', {}, s.below_standard ? el('span', { class: 'badge mark-below' }, 'Below standard') : ''))));
  }
}
