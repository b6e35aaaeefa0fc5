/** The simulator: bound arithmetic, determinism, a small swarm within bounds, failures, and that it runs the real scheduler. */
import t from 'tap';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { directBound, lazyBound, p2pBound, scenarios, simulate, summary, toHtml, defaults, type Scenario } from '@damselfly/sim';
import { rarestFirst, type SchedulePolicy } from '@damselfly/supernode';
import { ROOT } from './helpers/cluster.js';

const MB = 1e6;
const small = (over: Partial<Scenario> = {}): Scenario => ({
  ...defaults,
  name: 'small',
  fileBytes: 64 * 1024 * 1024,
  peers: 30,
  peerUp: 50 * MB,
  peerDown: 100 * MB,
  sourceUp: 100 * MB,
  joinSpreadMs: 200,
  ...over,
});

t.test('lower bound: max(F/us, F/dmin, N·F/(us+Σui))', async (t) => {
  t.equal(p2pBound(100, 10, [50, 20], [5, 5]), 10, 'source-bound');
  t.equal(p2pBound(100, 1000, [50, 20], [5, 5]), 5, 'slowest downlink');
  t.equal(p2pBound(100, 10, [1000, 1000, 1000, 1000], [1, 1, 1, 1]), 400 / 14, 'total upload');
  t.equal(directBound(100, 10, 8), 80);
  t.equal(lazyBound(50, [10, 20], 10, [10, 10], [0, 0]), 5);
});

t.test('deterministic for a seed, different for another', async (t) => {
  const a = simulate(small());
  const b = simulate(small());
  const c = simulate(small({ seed: 2 }));
  t.same(a.completion, b.completion);
  t.same({ ...summary(a), wallSeconds: 0 }, { ...summary(b), wallSeconds: 0 });
  t.notSame(a.completion, c.completion);
});

t.test('a small swarm: everyone finishes, between the bound and a few times it, origin serves the blob once', async (t) => {
  const r = simulate(small());
  t.equal(r.finished, 30);
  t.equal(r.unfinished, 0);
  t.ok(r.max >= r.boundSeconds * 0.999, `the last peer (${r.max.toFixed(2)} s) is not faster than the bound ${r.boundSeconds.toFixed(2)} s`);
  t.ok(r.max <= r.boundSeconds * 4, `max ${r.max.toFixed(2)} s within 4x the bound`);
  t.ok(r.max < r.directBoundSeconds, 'beats pulling directly from the source');
  t.equal(r.originBytes, 64 * 1024 * 1024, 'each piece left the origin once');
  t.ok(r.peerBytes > r.supernodeBytes, 'most bytes moved peer to peer');
  t.match(toHtml([r]), /<svg[\s\S]*polyline/);
});

t.test('peers leaving and corrupt peers: everyone who stays finishes; corruption is caught', async (t) => {
  const r = simulate(small({ peers: 60, leaveFraction: 0.1, corruptFraction: 0.1, seed: 7 }));
  t.equal(r.unfinished, 0, 'all staying peers finished');
  t.ok(r.corruptDetected > 0, `${r.corruptDetected} corrupt pieces detected and refetched`);
  t.ok(r.corruptDetected <= 6 * 8 * 2, 'corrupt peers are blacklisted quickly, not asked again and again');
});

t.test('lazy loading: the origin serves only the pieces somebody read', async (t) => {
  const r = simulate({ ...scenarios['nydus-lazy']!(40), fileBytes: 2 * 1024 * 1024 * 1024, lazy: { reads: 4, readBytes: 1 << 20, hot: 0.8 } });
  t.equal(r.unfinished, 0);
  t.ok(r.originBytes < r.scenario.fileBytes / 2, `origin ${r.originBytes} of ${r.scenario.fileBytes}`);
});

t.test('the simulator runs the supernode scheduler itself, not a copy', async (t) => {
  let calls = 0;
  const counting: SchedulePolicy = (view, input) => {
    calls++;
    return rarestFirst(view, input);
  };
  const r = simulate(small({ peers: 10 }), { policy: counting });
  t.ok(calls > 10, `the pluggable policy was consulted ${calls} times`);
  t.equal(r.unfinished, 0);
  const dir = join(ROOT, 'sim', 'src');
  for (const f of await readdir(dir)) {
    const src = await readFile(join(dir, f), 'utf8');
    t.notMatch(src, /class Scheduler|const rarestFirst|function rarestFirst/, `${f} defines no scheduler of its own`);
  }
  t.match(await readFile(join(dir, 'engine.ts'), 'utf8'), /from '@damselfly\/supernode'/);
});

t.test('the throughput timeline credits bytes as they flow: never above what the swarm can move, and it adds up', async (t) => {
  // The swarm the issue reported "14.11 GB/s" for: 200 peers × 25 MB/s can move about 5.1 GB/s at most.
  const r = simulate(scenarios['dragonfly-200mb']!(200));
  const peak = Math.max(...r.timeline.map((p) => p.throughput));
  t.ok(peak <= r.capacityBytesPerSecond * 1.0001, `peak ${(peak / 1e9).toFixed(2)} GB/s within capacity ${(r.capacityBytesPerSecond / 1e9).toFixed(2)} GB/s`);
  const step = r.timeline[1]!.t - r.timeline[0]!.t;
  const credited = r.timeline.reduce((s, p) => s + p.throughput * step, 0);
  const delivered = r.supernodeBytes + r.peerBytes;
  t.ok(Math.abs(credited - delivered) / delivered < 0.05, `bytes credited over time (${(credited / 1e9).toFixed(2)} GB) match bytes delivered (${(delivered / 1e9).toFixed(2)} GB)`);
  const html = toHtml([r]);
  for (const label of ['time (s)', 'swarm throughput (GB/s)', 'peers done', 'capacity', 'bound', 'max / bound', 'origin egress (MB)']) t.ok(html.includes(label), `the report shows "${label}"`);
});

t.test('the swarm benchmark in the simulator: relaying and a tuned supernode rank as the emulation does', async (t) => {
  // bench/swarm.mjs measured (same machine, 200 MiB over 50 Mbit/s uplinks): N=4 max/T* 1.77–1.93 before relaying and
  // slot tuning, 1.15 after; N=8 2.11–2.35 before, 1.28 after. The simulator must order them the same way.
  for (const n of [4, 8]) {
    const before = simulate({ ...scenarios['swarm-bench']!(n), supernodeStreamRate: 0, noRelay: true });
    const relayOnly = simulate({ ...scenarios['swarm-bench']!(n), supernodeStreamRate: 0 });
    const now = simulate(scenarios['swarm-bench']!(n));
    t.equal(now.finished, n);
    t.ok(now.ratioMax < before.ratioMax - 0.2, `N=${n}: ${now.ratioMax.toFixed(2)}× the bound now, ${before.ratioMax.toFixed(2)}× before`);
    t.ok(now.ratioMax < relayOnly.ratioMax, `N=${n}: tuning the supernode's slots is what lets relaying pay (${relayOnly.ratioMax.toFixed(2)}× with 64 fixed slots)`);
    t.ok(now.ratioMax < 1.5 && now.ratioMax >= 1, `N=${n}: within the emulation's range (${now.ratioMax.toFixed(2)})`);
    t.equal(now.originBytes, now.scenario.fileBytes, 'the origin serves the blob once');
  }
});

t.test('sharing the supernode among downloaders: first copies spread over distinct peers; it pays in the smallest swarm', async (t) => {
  // bench/swarm.mjs measured N=8 1.23–1.28× T* and N=12 1.56× before the supernode shared its streams among a task's
  // downloaders (and pushed assignments), 1.19 and 1.35 after. Without the share, one peer takes most first copies and
  // its uplink has to pass them all on; since relays relay on (up to MAX_RELAY_DEPTH), its downloaders share that
  // work: the share pays at N=4 (and at N=8), and at N=12 ends within 0.02 of going without it.
  const { rarestFirst } = await import('@damselfly/supernode');
  for (const n of [4, 8, 12]) {
    const shared = simulate(scenarios['swarm-bench']!(n));
    const greedy = simulate(scenarios['swarm-bench']!(n), { policy: (v, i) => rarestFirst(v, { ...i, downloaders: 1 }) });
    const msg = `N=${n}: ${shared.ratioMax.toFixed(3)}× the bound shared, ${greedy.ratioMax.toFixed(3)}× without`;
    if (n === 4) t.ok(shared.ratioMax < greedy.ratioMax - 0.03, msg);
    else t.ok(shared.ratioMax <= greedy.ratioMax + 0.02, msg);
    t.ok(shared.supernodeBytes <= 1.1 * shared.scenario.fileBytes, `N=${n}: the supernode sends ${(shared.supernodeBytes / shared.scenario.fileBytes).toFixed(2)} copies`);
  }
});

t.test('in-flight limits adapt: a node whose downlink outruns its sources takes more at once; symmetric swarms barely change', async (t) => {
  // 40 nodes joining over two minutes, 8 GiB, 1 Gbit/s up and 10 Gbit/s down: late joiners pull from many holders at
  // once, and a fixed 8 in flight leaves their downlinks idle.
  const MB = 1e6;
  const asym = { ...scenarios['swarm-bench']!(40), fileBytes: 8 * 1024 ** 3, peerUp: 125 * MB, peerDown: 1250 * MB, sourceUp: 1250 * MB, latencyMs: 1, joinSpreadMs: 120_000 };
  const fixed = simulate({ ...asym, fixedParallel: true });
  const adaptive = simulate(asym);
  t.ok(adaptive.p50 < fixed.p50 * 0.95, `p50 ${adaptive.p50.toFixed(1)} s adaptive, ${fixed.p50.toFixed(1)} s fixed`);
  t.equal(adaptive.unfinished, 0);
  for (const n of [4, 8]) {
    const a = simulate(scenarios['swarm-bench']!(n));
    const f = simulate({ ...scenarios['swarm-bench']!(n), fixedParallel: true });
    // Where the uplinks are the limit the limit goes back after one probe, but the probe's re-announced wants change
    // who gets which source from then on (N=8: 1.12 against 1.07 fixed).
    t.ok(Math.abs(a.ratioMax - f.ratioMax) < 0.06, `swarm-bench N=${n}: ${a.ratioMax.toFixed(3)} adaptive, ${f.ratioMax.toFixed(3)} fixed`);
  }
});

t.test('relays whose source leaves, fails or sends corrupt blocks are dropped and their downloaders ask again', async (t) => {
  // scale-10k has peers leaving half-way and corrupt peers: a relay fed by them must not hang its downloader (an
  // earlier version left such relays at rate 0 forever and the run never ended).
  const r = simulate(scenarios['scale-10k']!(150));
  t.equal(r.unfinished, 0, `everyone who stays finishes (${r.finished} did)`);
  t.ok(r.corruptDetected > 0, 'corrupt pieces were sent and caught');
  t.ok(r.ratioMax < 2, `in reasonable time (${r.ratioMax.toFixed(2)}× the bound)`);
});

t.test('the report draws a swarm benchmark run beside the simulation of the same swarm (real CLI, real browser)', async (t) => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { existsSync } = await import('node:fs');
  const { writeFile } = await import('node:fs/promises');
  const { tempDir } = await import('./helpers/cluster.js');
  const dir = await tempDir(t, 'damselfly-simrep-');
  // As bench/swarm.mjs --json writes it (the README's run, N=8): one row per scenario and node count.
  const row = (scenario: string, n: number, p50: number, max: number) => ({ scenario, n, sizeMiB: 200, bound: 33.554432, p50, max, maxOverBound: max / 33.554432 });
  const measured = join(dir, 'swarm.json');
  await writeFile(measured, JSON.stringify({ sizeMiB: 200, originMbit: 50, nodeMbit: 50, results: [row('Damselfly', 4, 35.6, 35.8), row('Damselfly', 8, 37.2, 37.6), row('BitTorrent (aria2c)', 8, 43.8, 44.2)] }));
  const cli = join(ROOT, 'sim/dist/cli.js');
  const run = promisify(execFile);
  await run(process.execPath, [cli, 'run', 'swarm-bench', '--peers', '8', '--measured', measured, '--out', join(dir, 'out')]);
  const html = await readFile(join(dir, 'out', 'report.html'), 'utf8');
  t.ok(html.includes('measured: Damselfly, p50 37.2 s, max 37.6 s'), 'the N=8 Damselfly run is in the legend');
  t.ok(html.includes('measured: BitTorrent (aria2c)'), 'and the BitTorrent run');
  t.notOk(html.includes('max 35.8 s'), 'not the N=4 run: another swarm');
  t.ok(html.includes('Damselfly p50 37.2 s, max 37.6 s (1.12 × this bound)'), 'the note says where the measured run ends against the bound');

  // The points sit where the numbers say: the measured max on the x axis of the completion chart, at "all peers done".
  const skip = existsSync('/usr/bin/chromium') ? false : 'needs /usr/bin/chromium (scripts/install.sh --test)';
  await t.test('in a browser', { skip }, async (t) => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
    t.teardown(() => browser.close());
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`file://${join(dir, 'out', 'report.html')}`);
    const svgs = page.locator('svg');
    t.equal(await svgs.count(), 3, 'completion, peers done, throughput');
    // Two runs, each its p50 and max point and a legend key, on each of the first two charts.
    t.equal(await svgs.nth(0).locator('circle').count(), 6);
    t.equal(await svgs.nth(1).locator('circle').count(), 6);
    const xOf = async (label: string) => Number(await svgs.nth(0).locator('text', { hasText: new RegExp(`^${label}$`) }).first().getAttribute('x'));
    // Axis ticks are at 0, 10, 20, 30, 40 s: the measured max (37.6 s) lies between the 30 and 40 s ticks, nearer 40.
    const [x30, x40] = [await xOf('30'), await xOf('40')];
    const maxDot = svgs.nth(0).locator('circle').nth(1);
    const cx = Number(await maxDot.getAttribute('cx'));
    t.ok(Math.abs(cx - (x30 + ((37.6 - 30) / 10) * (x40 - x30))) < 1, `the max point is at 37.6 s on the axis (cx ${cx})`);
    t.same(errors, [], 'no script errors');
  });

  // A run of another swarm (another blob size) is refused before any simulation, with the reason.
  await writeFile(measured, JSON.stringify({ sizeMiB: 100, results: [row('Damselfly', 8, 20, 21)] }));
  const err = await run(process.execPath, [cli, 'run', 'swarm-bench', '--peers', '8', '--measured', measured, '--out', join(dir, 'out2')]).catch((e: { code: number; stderr: string }) => e);
  t.match(err, { code: 2, stderr: /the measured runs are of another swarm: they are of 100 MiB, the scenario swarm-bench-8 is of 200\.0 MiB/ });
  // So is a run on other links (its ratio to this bound would mean nothing).
  await writeFile(measured, JSON.stringify({ sizeMiB: 200, originMbit: 50, nodeMbit: 100, results: [row('Damselfly', 8, 20, 21)] }));
  const links = await run(process.execPath, [cli, 'run', 'swarm-bench', '--peers', '8', '--measured', measured, '--out', join(dir, 'out3')]).catch((e: { code: number; stderr: string }) => e);
  t.match(links, { code: 2, stderr: /their nodeMbit is 100, the scenario swarm-bench-8's is 50/ });
  await writeFile(measured, '{"results": "nope"}');
  const junk = await run(process.execPath, [cli, 'sweep', 'swarm-bench', '--peers', '4,8', '--measured', measured]).catch((e: { code: number; stderr: string }) => e);
  t.match(junk, { code: 2, stderr: /not a swarm benchmark result/ });
});

t.test('per-connection ramp-up: a transfer starts at one initial window per round trip and doubles it (slow start)', async (t) => {
  const { INITIAL_WINDOW } = await import('@damselfly/sim');
  const one = (latencyMs: number, initialWindow?: number): Scenario => ({
    ...defaults,
    name: 'ramp',
    fileBytes: 1024 * 1024,
    peers: 1,
    peerUp: 100 * MB,
    peerDown: 100 * MB,
    sourceUp: 100 * MB,
    latencyMs,
    joinSpreadMs: 0,
    ...(initialWindow === undefined ? {} : { initialWindow }),
  });
  // 50 ms each way: the piece is asked for (one latency), then round k (100 ms each) carries 14,480 × 2^k bytes,
  // so 1 MiB takes six whole rounds and part of a seventh; at 100 MB/s without slow start it would take 10 ms.
  const bytes = 1024 * 1024;
  // Round k moves min(window × 2^k, what the 100 MB/s link carries in a round trip).
  const slowStart = (latency: number) => {
    const rtt = 2 * latency;
    let sent = 0;
    let ms = latency;
    for (let k = 0; ; k++) {
      const round = Math.min(INITIAL_WINDOW * 2 ** k, 100e3 * rtt);
      if (sent + round >= bytes) return ms + ((bytes - sent) / round) * rtt;
      sent += round;
      ms += rtt;
    }
  };
  // Latencies whose round-trip multiples are not exact in floating point too (a round counted short once froze a
  // transfer's cap: 13.7 ms took 1998 ms instead of 182).
  for (const latency of [50, 13.7, 21.9, 0.35]) {
    const got = simulate(one(latency)).max * 1000;
    t.ok(Math.abs(got - slowStart(latency)) < 0.5, `${latency} ms each way: ${got.toFixed(2)} ms, slow start says ${slowStart(latency).toFixed(2)} ms`);
  }
  t.ok(Math.abs(simulate(one(50, 0)).max * 1000 - (50 + bytes / 100e3)) < 1, 'without ramp-up: one latency and the link rate');
  // Inside a data centre the window outgrows the link within a few round trips of 0.1 ms: nothing changes.
  t.ok(Math.abs(simulate(one(0.05)).max - simulate(one(0.05, 0)).max) < 0.0005, 'at 0.05 ms it costs under half a millisecond');
});
