/**
 * Every benchmark, run small, so none of them rots: each spawns the real binaries and a real registry, checks every
 * output's digest itself (a mismatch throws, non-zero exit) and prints its table.
 */
import t from 'tap';
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ROOT } from './helpers/cluster.js';

function bench(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'bench', script), ...args], { cwd: ROOT, maxBuffer: 1 << 24, timeout: 240_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

t.test('bench/core.mjs: N dfgets vs N curls, origin bytes', async (t) => {
  const r = await bench('core.mjs', ['--size-mib', '8', '--n', '2']);
  t.equal(r.code, 0, r.stderr.slice(-500));
  t.match(r.stdout, /N=2 8 MiB loopback: direct [\d.]+ s, origin 2\.00x blob \| P2P [\d.]+ s, origin 1\.00x blob/, 'P2P costs the origin the blob once');
  t.match(r.stdout, /dfget output linked to its dfdaemon's copy/, 'each output is its dfdaemon\'s copy');
  t.match(r.stdout, /CPU per MiB supernode [\d.]+ ms \(event loop [\d.]+\), dfdaemon [\d.]+ ms/, "the supernode's event loop apart");
  t.notMatch(r.stdout, /pages warmed/);
  const copied = await bench('core.mjs', ['--size-mib', '8', '--n', '1', '--copy', '--warm-pages']);
  t.equal(copied.code, 0, copied.stderr.slice(-500));
  t.match(copied.stdout, /N=1 8 MiB loopback: .* \| dfget output a copy of its own \| pages warmed before each pull/, '--copy: files of their own; --warm-pages said');
});

t.test('bench/standalone.mjs: dfget as a one-shot peer vs curl -o, from the registry and from a supernode', async (t) => {
  for (const mode of [[], ['--supernode']]) {
    const r = await bench('standalone.mjs', ['--size-mib', '8', '--runs', '1', ...mode]);
    t.equal(r.code, 0, r.stderr.slice(-500));
    t.match(r.stdout, /run 1: 8 MiB (from the origin|via a fresh supernode): curl -o [\d.]+ s \| dfget --standalone [\d.]+ s \(ratio [\d.]+\) \| dfget CPU [\d.]+ ms per MiB, peak RSS \d+ MiB \| origin 1\.00x blob \| digest ok/, `${mode.join(' ') || 'from the origin'}: one pull, digest-checked`);
  }
});

t.test('bench/serve.mjs: a cached blob through the mirror and a second node, vs curl from the registry', async (t) => {
  const r = await bench('serve.mjs', ['--size-mib', '8', '--runs', '1']);
  t.equal(r.code, 0, r.stderr.slice(-500));
  t.match(r.stdout, /warm: cached on the node \(mirror\)\s+\d+ MB\/s \(ratio [\d.]+\)/);
  t.match(r.stdout, /warm, once dfget linked it \(checked\) \d+ MB\/s \(ratio [\d.]+; every block hashed as it is read\)/, 'a file handed out to dfget, served through the mirror');
  t.match(r.stdout, /registry to a new file \(curl -o\)\s+\d+ MB\/s/, 'the write-to-disk baseline, in the same run');
  t.match(r.stdout, /second node \(first node \+ supernode\) \d+ MB\/s \(ratio [\d.]+; [\d.]+ of writing it to a file\)/);
  t.match(r.stdout, /origin bytes for the cold pull and 1 second node\(s\): 1\.00x the blob/, 'the second node cost the origin nothing');
});

t.test('bench/range.mjs: Range TTFB through dfdaemon vs direct', async (t) => {
  const r = await bench('range.mjs', ['--size-mib', '32', '--reads', '2']);
  t.equal(r.code, 0, r.stderr.slice(-500));
  t.match(r.stdout, /direct from registry\s+TTFB [\d.]+ ms/);
  t.match(r.stdout, /3rd node, 500 ms later\s+TTFB [\d.]+ ms, total [\d.]+ ms \(ratio [\d.]+\)/, 'a node reading the range once the swarm is quiet');
  const perRead = /origin bytes per read via P2P \(3 nodes read it\): ([\d.]+) MiB = the 1 MiB piece/.exec(r.stdout);
  t.ok(perRead && Number(perRead[1]) >= 1 && Number(perRead[1]) <= 2, `the origin sent the covering piece(s) once for three nodes (${perRead?.[1]} MiB per read)`);
  t.match(r.stdout, /and once for the blob: its first 256 KiB, which came with its size/);
  t.match(r.stdout, /every read's body \(13 of them\) was the blob's bytes for its range/, '2 first-pass direct reads, 3 warm-ups, 2 x (direct + 3 nodes): each one checked');
  // With the registry behind a relay adding 5 ms each way, direct reads included.
  const far = await bench('range.mjs', ['--size-mib', '32', '--reads', '2', '--latency-ms', '5']);
  t.equal(far.code, 0, far.stderr.slice(-500));
  t.match(far.stdout, /registry 5 ms away each way/);
  t.match(far.stdout, /dfdaemon, 2nd node\s+TTFB [\d.]+ ms/);
  const farPerRead = /origin bytes per read via P2P \(3 nodes read it\): ([\d.]+) MiB/.exec(far.stdout);
  t.ok(farPerRead && Number(farPerRead[1]) >= 1 && Number(farPerRead[1]) <= 2, `through the relay too (${farPerRead?.[1]} MiB per read)`);
  t.match(far.stdout, /every read's body \(13 of them\) was the blob's bytes for its range/);
});

t.test('bench/wake.mjs: a message between two processes, busy and after a pause', async (t) => {
  const r = await bench('wake.mjs', ['--rounds', '20', '--gaps', '0,5']);
  t.equal(r.code, 0, r.stderr.slice(-500));
  const busy = /back to back\s+median ([\d.]+) ms, p90 ([\d.]+) ms/.exec(r.stdout);
  const idle = /after 5 ms idle\s+median ([\d.]+) ms, p90 ([\d.]+) ms/.exec(r.stdout);
  t.ok(busy && Number(busy[1]) > 0 && Number(busy[1]) <= Number(busy[2]), `back to back: ${busy?.[1]} ms`);
  t.ok(idle && Number(idle[1]) > 0 && Number(idle[1]) <= Number(idle[2]), `after a pause: ${idle?.[1]} ms`);
});

t.test('bench/private-pull.mjs: access-check cost on private pulls vs a public one', async (t) => {
  const r = await bench('private-pull.mjs', ['--size-mib', '2', '--pulls', '2', '--cold', '2', '--latency-ms', '2']);
  t.equal(r.code, 0, r.stderr.slice(-500));
  t.match(r.stdout, /\| public registry \(no check\) \| [\d.]+ ms \| [\d.]+ ms \| 1\.00 \| 0\.00 \|/);
  // The last column is the origin's requests per warm pull (the one before it, TTFB against public, may read 1.00 too).
  t.match(r.stdout, /^\| private, access cached \(default\) \|[^|]+\|[^|]+\|[^|]+\| 0\.00 \|$/m, 'cached: no origin request per warm pull');
  t.match(r.stdout, /^\| private, checked every pull \|[^|]+\|[^|]+\|[^|]+\| 1\.00 \|$/m, 'uncached: one HEAD per pull');
  t.match(r.stdout, /through the dfdaemon\s+TTFB [\d.]+ ms, total [\d.]+ ms \(ratio [\d.]+\)/, 'first pulls of private blobs nobody has, beside direct ones');
});

/** Namespaces of a prefix, and processes still running from a swarm run's scratch directory. */
function swarmLeftovers(prefix: string): { namespaces: string[]; processes: string[] } {
  const namespaces = execFileSync('ip', ['netns', 'list']).toString().split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(`${prefix}-`));
  const processes = (spawnSync('pgrep', ['-af', `damselfly-swarm-${prefix}-`]).stdout?.toString() ?? '').split('\n').filter((l) => l && !l.includes('pgrep'));
  return { namespaces, processes };
}

const root = process.getuid?.() === 0;

t.test('bench/swarm.mjs: Damselfly, BitTorrent, direct curl and a pull-through mirror over capped network namespaces', { skip: root ? false : 'needs root (network namespaces)' }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'swarm-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const json = join(dir, 'out.json');
  const r = await bench('swarm.mjs', ['--nodes', '2', '--size-mib', '8', '--origin-mbit', '200', '--node-mbit', '200', '--prefix', 'dfswt', '--subnet', '10.213.78', '--json', json]);
  t.equal(r.code, 0, r.stderr.slice(-800));
  const out = JSON.parse(await readFile(json, 'utf8')) as { results: { scenario: string; n: number; max: number; bound: number; maxOverBound: number; originBytesOverF: number; uploadUtilisation: number }[] };
  t.same(out.results.map((x) => x.scenario), ['Damselfly', 'BitTorrent (aria2c)', 'direct curl', 'pull-through mirror'], 'every scenario ran (each output digest-checked by the script)');
  const [df, , direct, mirror] = out.results;
  t.ok(mirror!.originBytesOverF >= 0.99, `the mirror fetched the blob from the origin (${mirror!.originBytesOverF.toFixed(2)}×)`);
  // The caps are real: nobody beats the bound by more than the tbf burst allows, and two direct pulls share the
  // origin's uplink.
  for (const x of out.results) t.ok(x.maxOverBound > 0.8, `${x.scenario}: ${x.max.toFixed(2)} s against a bound of ${x.bound.toFixed(2)} s`);
  t.ok(direct!.originBytesOverF > 1.99 && direct!.originBytesOverF < 2.01, 'two direct pulls cost the origin the blob twice');
  t.ok(df!.originBytesOverF > 0.99 && df!.originBytesOverF <= 1.05, `Damselfly: the origin served the blob once (${df!.originBytesOverF.toFixed(3)}×)`);
  t.match(r.stdout, /\| N \| scenario \| T\* s \| p50 s \| max s \| max\/T\* \|/, 'prints the table');
  t.same(swarmLeftovers('dfswt'), { namespaces: [], processes: [] }, 'no namespace or process left behind');
});

t.test('bench/swarm.mjs: SIGTERM mid-run removes its namespaces and processes', { skip: root ? false : 'needs root (network namespaces)' }, async (t) => {
  const child = spawn(process.execPath, [join(ROOT, 'bench/swarm.mjs'), '--nodes', '2', '--size-mib', '64', '--origin-mbit', '20', '--node-mbit', '20', '--prefix', 'dfswk', '--subnet', '10.213.79', '--scenarios', 'damselfly'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.resume();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // Mid-run: the hosts exist and their dfdaemons are pulling (the supernode's data directory fills).
  const deadline = Date.now() + 60_000;
  while (!swarmLeftovers('dfswk').processes.some((p) => p.includes('dfdaemon/dist/cli.js'))) {
    if (Date.now() > deadline || child.exitCode !== null) break;
    await delay(200);
  }
  await delay(1500);
  const during = swarmLeftovers('dfswk');
  t.equal(during.namespaces.length, 4, 'hub + origin + 2 nodes exist mid-run');
  t.ok(during.processes.some((p) => p.includes('docker-registry')), 'the registry runs in the origin namespace');
  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  t.not(code, 0, 'a stopped run does not report success');
  t.same(swarmLeftovers('dfswk'), { namespaces: [], processes: [] }, `nothing left behind (the run said: ${stderr.slice(-500)})`);
});

t.test('bench/limits.mjs: every bandwidth limit holds (never exceeded by more than 10 %)', async (t) => {
  const r = await bench('limits.mjs', ['--size-mib', '8', '--rate-mib', '4']);
  t.equal(r.code, 0, r.stderr.slice(-800));
  const rows = [...r.stdout.matchAll(/^\| (\w+ \w+) \| [\d.]+ MiB\/s \| [\d.]+ MiB\/s \| ([\d.]+) \|$/gm)].map((m) => ({ limit: m[1]!, ratio: Number(m[2]) }));
  t.same(rows.map((x) => x.limit), ['dfdaemon downloadRate', 'dfdaemon uploadRate', 'dfdaemon backSourceRate', 'supernode originRate']);
  for (const x of rows) t.ok(x.ratio > 0.5 && x.ratio <= 1.1, `${x.limit}: ${x.ratio} of the limit`);
});
