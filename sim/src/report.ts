/** Reports: JSON for machines, a self-contained HTML page with SVG charts (completion CDF, swarm timeline) for people. */
import type { SimResult } from './engine.js';

const W = 640;
const H = 260;
const PAD = 40;

function poly(points: [number, number][], xMax: number, yMax: number, color: string): string {
  const sx = (x: number) => PAD + (x / (xMax || 1)) * (W - 2 * PAD);
  const sy = (y: number) => H - PAD - (y / (yMax || 1)) * (H - 2 * PAD);
  return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')}"/>`;
}

function axes(xLabel: string, yLabel: string, xMax: number, yMax: number): string {
  return (
    `<line x1="${PAD}" y1="${H - PAD}" x2="${W - PAD}" y2="${H - PAD}" stroke="#333"/><line x1="${PAD}" y1="${PAD}" x2="${PAD}" y2="${H - PAD}" stroke="#333"/>` +
    `<text x="${W / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${xLabel} (max ${xMax.toFixed(1)})</text>` +
    `<text x="12" y="${H / 2}" font-size="12" transform="rotate(-90 12 ${H / 2})" text-anchor="middle">${yLabel} (max ${yMax.toFixed(1)})</text>`
  );
}

/** Completion-time CDF with the lower bound marked. */
export function cdfSvg(r: SimResult): string {
  const xMax = Math.max(r.max, r.boundSeconds) * 1.05;
  const pts: [number, number][] = r.completion.map((t, i) => [t, (i + 1) / r.completion.length]);
  const bx = PAD + (r.boundSeconds / xMax) * (W - 2 * PAD);
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">${axes('completion time, s', 'fraction of peers', xMax, 1)}` +
    `<line x1="${bx}" y1="${PAD}" x2="${bx}" y2="${H - PAD}" stroke="#c33" stroke-dasharray="4"/><text x="${bx + 4}" y="${PAD + 12}" font-size="11" fill="#c33">bound ${r.boundSeconds.toFixed(2)} s</text>` +
    `${poly(pts, xMax, 1, '#1f6feb')}</svg>`
  );
}

/** Swarm timeline: finished peers and aggregate throughput over time. */
export function timelineSvg(r: SimResult): string {
  const tl = r.timeline;
  const xMax = tl.length ? tl[tl.length - 1]!.t : 1;
  const tpMax = Math.max(1, ...tl.map((p) => p.throughput));
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">${axes('time, s', 'peers done (blue) / throughput (green)', xMax, r.scenario.peers)}` +
    `${poly(tl.map((p) => [p.t, p.done]), xMax, r.scenario.peers, '#1f6feb')}` +
    `${poly(tl.map((p) => [p.t, (p.throughput / tpMax) * r.scenario.peers]), xMax, r.scenario.peers, '#2da44e')}` +
    `<text x="${W - PAD}" y="${PAD - 8}" text-anchor="end" font-size="11" fill="#2da44e">peak ${(tpMax / 1e9).toFixed(2)} GB/s</text></svg>`
  );
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

export function toHtml(results: SimResult[]): string {
  const rows = results.map((r) => summary(r));
  const keys = Object.keys(rows[0] ?? {});
  const table = `<table><tr>${keys.map((k) => `<th>${k}</th>`).join('')}</tr>${rows.map((row) => `<tr>${keys.map((k) => `<td>${row[k]}</td>`).join('')}</tr>`).join('')}</table>`;
  const charts = results.map((r) => `<h2>${r.scenario.name}</h2><div>${cdfSvg(r)}${timelineSvg(r)}</div>`).join('');
  return `<!doctype html><meta charset="utf-8"><title>Damselfly simulation</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style><h1>Damselfly swarm simulation</h1>${table}${charts}`;
}
