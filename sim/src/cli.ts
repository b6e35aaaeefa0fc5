#!/usr/bin/env node
/**
 * damselfly-sim: capacity planning with the supernode's own scheduler.
 *   damselfly-sim list
 *   damselfly-sim run <scenario> [--peers N] [--seed S] [--out DIR]     JSON + HTML report
 *   damselfly-sim sweep <scenario> --peers 100,1000,10000 [--out DIR]   how results and run time grow with N
 * Both take --measured <bench/swarm.mjs --json output>: the runs measured on a network, drawn on the same charts.
 */
import { Command } from 'commander';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { simulate, type SimResult } from './engine.js';
import { scenarios, type Scenario } from './scenario.js';
import { summary, toHtml, toJson } from './report.js';
import { measuredFor, type MeasuredPoint } from './measured.js';

const program = new Command('damselfly-sim').description('Swarm simulator running the real Damselfly scheduler');

function pick(name: string) {
  const make = scenarios[name];
  if (!make) {
    process.stderr.write(`damselfly-sim: unknown scenario ${JSON.stringify(name)}; one of: ${Object.keys(scenarios).join(', ')}\n`);
    process.exit(2);
  }
  return make;
}

function positiveInt(v: string, what: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) {
    process.stderr.write(`damselfly-sim: ${what} must be a positive integer, got ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return n;
}

function fail(msg: string): never {
  process.stderr.write(`damselfly-sim: ${msg}\n`);
  process.exit(2);
}

/** The measured runs file, read and parsed once (before any simulation runs, so a bad file fails fast). */
function loadMeasured(file: string | undefined): unknown {
  if (file === undefined) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    fail(`--measured ${file}: ${(err as Error).message}`);
  }
}

function measuredOf(json: unknown, sc: Scenario): MeasuredPoint[] {
  if (json === undefined) return [];
  try {
    return measuredFor(json, sc);
  } catch (err) {
    fail(`--measured: ${(err as Error).message}`);
  }
}

/** `measured[i]`: the measured runs drawn beside `results[i]`. */
function write(out: string, results: SimResult[], measured: MeasuredPoint[][]): void {
  const dir = resolve(out);
  mkdirSync(dir, { recursive: true });
  for (const r of results) writeFileSync(join(dir, `${r.scenario.name}.json`), toJson(r));
  writeFileSync(join(dir, 'report.html'), toHtml(results, (r) => measured[results.indexOf(r)] ?? []));
  process.stderr.write(`wrote ${join(dir, 'report.html')} and ${results.length} JSON file(s)\n`);
}

program.command('list').action(() => {
  for (const [name, make] of Object.entries(scenarios)) {
    const s = make();
    process.stdout.write(`${name.padEnd(18)} ${s.peers} peers, ${(s.fileBytes / 1e6).toFixed(0)} MB, peer ${(s.peerUp / 1e6).toFixed(0)} MB/s, source ${(s.sourceUp / 1e6).toFixed(0)} MB/s\n`);
  }
});

program
  .command('run <scenario>')
  .option('--peers <n>', 'number of peers')
  .option('--seed <n>', 'random seed', '1')
  .option('--out <dir>', 'report directory', 'sim-report')
  .option('--measured <file>', 'swarm benchmark results (bench/swarm.mjs --json) to draw beside the simulation')
  .action((name: string, o: { peers?: string; seed: string; out: string; measured?: string }) => {
    const sc = { ...pick(name)(o.peers ? positiveInt(o.peers, '--peers') : undefined), seed: positiveInt(o.seed, '--seed') };
    // Picked out before the simulation: a file of another swarm is refused before minutes of it, not after.
    const measured = measuredOf(loadMeasured(o.measured), sc);
    const r = simulate(sc);
    process.stdout.write(JSON.stringify(summary(r)) + '\n');
    write(o.out, [r], [measured]);
  });

program
  .command('sweep <scenario>')
  .requiredOption('--peers <list>', 'comma-separated peer counts')
  .option('--out <dir>', 'report directory', 'sim-report')
  .option('--measured <file>', 'swarm benchmark results (bench/swarm.mjs --json) to draw beside the simulation')
  .action((name: string, o: { peers: string; out: string; measured?: string }) => {
    const make = pick(name);
    const json = loadMeasured(o.measured);
    const counts = o.peers.split(',').map((x) => positiveInt(x, '--peers'));
    const measured = counts.map((n) => measuredOf(json, make(n)));
    const results: SimResult[] = [];
    for (const n of counts) {
      const r = simulate(make(n));
      results.push(r);
      const s = summary(r);
      process.stdout.write(`N=${n}: p50 ${s.p50} s, p99 ${s.p99} s, max ${s.max} s, bound ${s.bound} s (p50/bound ${s.p50OverBound}), origin ${s.originOverFile}x file, ${s.events} events in ${s.wallSeconds} s\n`);
    }
    write(o.out, results, measured);
  });

program.parse();
