/**
 * Runs measured on a real (emulated) network, to draw beside a simulation of the same swarm: the JSON that
 * `bench/swarm.mjs --json` writes, one row per scenario (Damselfly, BitTorrent, …) and node count.
 */
import type { Scenario } from './scenario.js';
import { simError } from './errors.js';

export interface MeasuredPoint {
  /** What ran: "Damselfly", "BitTorrent (aria2c)", … */
  label: string;
  /** Completion times of that run, s. */
  p50: number;
  max: number;
}

interface Row {
  scenario: string;
  n: number;
  p50: number;
  max: number;
}

function isRow(x: unknown): x is Row {
  const r = x as Partial<Row> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.scenario === 'string' &&
    Number.isInteger(r.n) &&
    typeof r.p50 === 'number' &&
    Number.isFinite(r.p50) &&
    typeof r.max === 'number' &&
    Number.isFinite(r.max)
  );
}

const Mbit = 1e6 / 8;

/**
 * The measured runs of `scenario`'s swarm in a swarm benchmark's JSON: its rows for the scenario's node count. The
 * file must be of the same blob size and the same uplinks (a run on other links is another swarm, and its ratio to
 * this bound would mean nothing); every problem is one clear error (SIM_MEASURED_*).
 */
export function measuredFor(json: unknown, scenario: Scenario): MeasuredPoint[] {
  const doc = json as { sizeMiB?: unknown; originMbit?: unknown; nodeMbit?: unknown; results?: unknown } | null;
  if (typeof doc !== 'object' || doc === null || !Array.isArray(doc.results) || typeof doc.sizeMiB !== 'number') {
    throw simError('SIM_MEASURED_INVALID', 'expected {"sizeMiB": …, "results": [ … ]} as bench/swarm.mjs --json writes it');
  }
  const bad = doc.results.findIndex((r) => !isRow(r));
  if (bad >= 0) throw simError('SIM_MEASURED_INVALID', `results[${bad}] is not a row with scenario, n, p50 and max`);
  const size = doc.sizeMiB * 2 ** 20;
  if (Math.abs(size - scenario.fileBytes) > 1) {
    throw simError('SIM_MEASURED_OTHER_SWARM', `they are of ${doc.sizeMiB} MiB, the scenario ${scenario.name} is of ${(scenario.fileBytes / 2 ** 20).toFixed(1)} MiB`);
  }
  for (const [key, field, want] of [
    ['originMbit', doc.originMbit, scenario.sourceUp],
    ['nodeMbit', doc.nodeMbit, scenario.peerUp],
  ] as const) {
    if (field === undefined) continue;
    if (typeof field !== 'number' || Math.abs(field * Mbit - want) > 1) {
      throw simError('SIM_MEASURED_OTHER_SWARM', `their ${key} is ${JSON.stringify(field)}, the scenario ${scenario.name}'s is ${want / Mbit}`);
    }
  }
  return (doc.results as Row[]).filter((r) => r.n === scenario.peers).map((r) => ({ label: r.scenario, p50: r.p50, max: r.max }));
}
