/** Reports: JSON for machines, a self-contained HTML page with SVG charts (completion CDF, swarm timeline) for people. */
import type { SimResult } from './engine.js';
import type { MeasuredPoint } from './measured.js';

const W = 640;
const H = 260;
const PAD = 40;

/** A chart frame: scales, axes with ticks and labelled units, and helpers to draw in data coordinates. */
function frame(xLabel: string, yLabel: string, xMax: number, yMax: number, fmtY: (v: number) => string = (v) => niceNum(v)) {
  const sx = (x: number) => PAD + (x / (xMax || 1)) * (W - 2 * PAD);
  const sy = (y: number) => H - PAD - (y / (yMax || 1)) * (H - 2 * PAD);
  let out = `<line x1="${PAD}" y1="${H - PAD}" x2="${W - PAD}" y2="${H - PAD}" stroke="#333"/><line x1="${PAD}" y1="${PAD}" x2="${PAD}" y2="${H - PAD}" stroke="#333"/>`;
  for (const x of ticks(xMax)) out += `<line x1="${sx(x)}" y1="${H - PAD}" x2="${sx(x)}" y2="${H - PAD + 4}" stroke="#333"/><text x="${sx(x)}" y="${H - PAD + 15}" font-size="10" text-anchor="middle">${niceNum(x)}</text>`;
  for (const y of ticks(yMax)) out += `<line x1="${PAD - 4}" y1="${sy(y)}" x2="${PAD}" y2="${sy(y)}" stroke="#333"/><text x="${PAD - 6}" y="${sy(y) + 3}" font-size="10" text-anchor="end">${fmtY(y)}</text>`;
  out += `<text x="${W / 2}" y="${H - 4}" text-anchor="middle" font-size="12">${xLabel}</text>`;
  out += `<text x="12" y="${H / 2}" font-size="12" transform="rotate(-90 12 ${H / 2})" text-anchor="middle">${yLabel}</text>`;
  return {
    out,
    line: (points: [number, number][], color: string) =>
      `<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}"/>`,
    vmark: (x: number, label: string, color: string) =>
      `<line x1="${sx(x)}" y1="${PAD}" x2="${sx(x)}" y2="${H - PAD}" stroke="${color}" stroke-dasharray="4"/><text x="${sx(x) + 4}" y="${PAD + 12}" font-size="11" fill="${color}">${label}</text>`,
    /** A measured run as points (its median and its last node), named in the legend's `row` (top left). */
    run: (pts: [number, number][], label: string, color: string, row: number) =>
      pts.map(([x, y]) => `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="4" fill="${color}"/>`).join('') + legend(row, label, color, 'dot'),
    /** Names the simulated curve in the legend's first row. */
    simulated: (color: string) => legend(0, 'simulated', color, 'line'),
    hmark: (y: number, label: string, color: string) =>
      // Labelled under its line at the right end, clear of a vertical mark's label at the top.
      `<line x1="${PAD}" y1="${sy(y)}" x2="${W - PAD}" y2="${sy(y)}" stroke="${color}" stroke-dasharray="4"/><text x="${W - PAD}" y="${sy(y) + 13}" font-size="11" text-anchor="end" fill="${color}">${label}</text>`,
  };
}

/** One legend row, top left inside the plot (where completion curves, which rise late, leave room). */
function legend(row: number, label: string, color: string, kind: 'dot' | 'line'): string {
  const y = PAD + 10 + row * 15;
  const x = PAD + 10;
  const key = kind === 'dot' ? `<circle cx="${x + 6}" cy="${y - 4}" r="4" fill="${color}"/>` : `<line x1="${x}" y1="${y - 4}" x2="${x + 12}" y2="${y - 4}" stroke="${color}" stroke-width="2"/>`;
  return `${key}<text x="${x + 18}" y="${y}" font-size="11" fill="${color}">${escapeXml(label)}</text>`;
}

/** About five round tick values from 0 to max. */
function ticks(max: number): number[] {
  if (!(max > 0)) return [0];
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = 0; v <= max + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

function niceNum(v: number): string {
  return Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(Math.abs(v) >= 10 ? 1 : 2);
}

const RUN_COLORS = ['#8250df', '#bf8700', '#57606a', '#cf222e'];

function escapeXml(s: string): string {
  return s.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Completion-time CDF with the lower bound marked, and measured runs of the same swarm as points (p50, max). */
export function cdfSvg(r: SimResult, measured: readonly MeasuredPoint[] = []): string {
  const xMax = Math.max(r.max, r.boundSeconds, ...measured.map((m) => m.max)) * 1.05;
  const pts: [number, number][] = r.completion.map((t, i) => [t, (i + 1) / r.completion.length]);
  const f = frame('completion time (s)', 'fraction of peers done', xMax, 1);
  const runs = measured.map((m, i) => f.run([[m.p50, 0.5], [m.max, 1]], `measured: ${m.label}, p50 ${m.p50.toFixed(1)} s, max ${m.max.toFixed(1)} s`, RUN_COLORS[i % RUN_COLORS.length]!, i + 1)).join('');
  const key = measured.length ? f.simulated('#1f6feb') : '';
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">${f.out}${f.vmark(r.boundSeconds, `bound ${r.boundSeconds.toFixed(1)} s`, '#c33')}${f.line(pts, '#1f6feb')}${runs}${key}</svg>`;
}

/**
 * Swarm timeline: peers done over time, and the aggregate download throughput as bytes flow (GB/s) against the most
 * the swarm could move (the sum of downlinks, or the source's and peers' uplinks together, whichever is less).
 */
export function timelineSvg(r: SimResult, measured: readonly MeasuredPoint[] = []): string {
  const tl = r.timeline;
  const xMax = Math.max(tl.length ? tl[tl.length - 1]!.t : 1, r.boundSeconds * 1.05, ...measured.map((m) => m.max * 1.05));
  const done = frame('time (s)', 'peers done', xMax, r.scenario.peers);
  const n = r.scenario.peers;
  const runs =
    measured.map((m, i) => done.run([[m.p50, n / 2], [m.max, n]], `measured: ${m.label}`, RUN_COLORS[i % RUN_COLORS.length]!, i + 1)).join('') +
    (measured.length ? done.simulated('#1f6feb') : '');
  const doneSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">${done.out}${done.vmark(r.boundSeconds, `bound ${r.boundSeconds.toFixed(1)} s`, '#c33')}${done.line(
    tl.map((p) => [p.t, p.done]),
    '#1f6feb',
  )}${runs}</svg>`;
  const cap = r.capacityBytesPerSecond / 1e9;
  const peak = Math.max(0, ...tl.map((p) => p.throughput)) / 1e9;
  const yMax = Math.max(cap, peak) * 1.1 || 1;
  const tp = frame('time (s)', 'swarm throughput (GB/s)', xMax, yMax);
  const tpSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">${tp.out}${tp.hmark(cap, `capacity ${cap.toFixed(2)} GB/s`, '#999')}${tp.vmark(
    r.boundSeconds,
    `bound ${r.boundSeconds.toFixed(1)} s`,
    '#c33',
  )}${tp.line(
    tl.map((p) => [p.t, p.throughput / 1e9]),
    '#2da44e',
  )}<text x="${W - PAD}" y="${PAD - 8}" text-anchor="end" font-size="11" fill="#2da44e">peak ${peak.toFixed(2)} GB/s</text></svg>`;
  return doneSvg + tpSvg;
}

export function summary(r: SimResult): Record<string, number | string> {
  return {
    scenario: r.scenario.name,
    peers: r.scenario.peers,
    fileMB: +(r.scenario.fileBytes / 1e6).toFixed(1),
    pieceMiB: +(r.pieceSize / 2 ** 20).toFixed(1),
    p50: +r.p50.toFixed(2),
    p90: +r.p90.toFixed(2),
    p99: +r.p99.toFixed(2),
    max: +r.max.toFixed(2),
    bound: +r.boundSeconds.toFixed(2),
    p50OverBound: +r.ratioP50.toFixed(2),
    maxOverBound: +r.ratioMax.toFixed(2),
    directBound: +r.directBoundSeconds.toFixed(1),
    originMB: +(r.originBytes / 1e6).toFixed(1),
    originOverFile: +(r.originBytes / r.scenario.fileBytes).toFixed(3),
    uploadUtilisation: +r.uploadUtilisation.toFixed(3),
    unfinished: r.unfinished,
    corruptDetected: r.corruptDetected,
    events: r.events,
    wallSeconds: +(r.wallMs / 1000).toFixed(2),
  };
}

export function toJson(r: SimResult): string {
  return JSON.stringify({ summary: summary(r), completion: r.completion, timeline: r.timeline, scenario: r.scenario }, null, 1);
}

/** Column headings of the HTML table, with units. */
const HEADINGS: Record<string, string> = {
  scenario: 'scenario',
  peers: 'peers',
  fileMB: 'file (MB)',
  pieceMiB: 'piece (MiB)',
  p50: 'p50 (s)',
  p90: 'p90 (s)',
  p99: 'p99 (s)',
  max: 'max (s)',
  bound: 'bound (s)',
  p50OverBound: 'p50 / bound',
  maxOverBound: 'max / bound',
  directBound: 'direct bound (s)',
  originMB: 'origin egress (MB)',
  originOverFile: 'origin / file',
  uploadUtilisation: 'mean upload use',
  unfinished: 'unfinished',
  corruptDetected: 'corrupt pieces caught',
  events: 'events',
  wallSeconds: 'simulated in (s)',
};

/** `measured(r)`: runs of r's swarm measured on a network (bench/swarm.mjs), drawn on its charts. */
export function toHtml(results: SimResult[], measured: (r: SimResult) => readonly MeasuredPoint[] = () => []): string {
  const rows = results.map((r) => summary(r));
  const keys = Object.keys(rows[0] ?? {});
  const table = `<table><tr>${keys.map((k) => `<th>${HEADINGS[k] ?? k}</th>`).join('')}</tr>${rows.map((row) => `<tr>${keys.map((k) => `<td>${row[k]}</td>`).join('')}</tr>`).join('')}</table>`;
  const charts = results
    .map((r) => {
      const m = measured(r);
      const note = m.length ? `<p>Points: the same swarm measured on an emulated network (bench/swarm.mjs), its median and last node: ${m.map((x) => `${escapeXml(x.label)} p50 ${x.p50.toFixed(1)} s, max ${x.max.toFixed(1)} s (${(x.max / r.boundSeconds).toFixed(2)} × this bound)`).join('; ')}.</p>` : '';
      return `<h2>${escapeXml(r.scenario.name)}</h2>${note}<div>${cdfSvg(r, m)}${timelineSvg(r, m)}</div>`;
    })
    .join('');
  return `<!doctype html><meta charset="utf-8"><title>Damselfly simulation</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style><h1>Damselfly swarm simulation</h1>${table}${charts}`;
}
