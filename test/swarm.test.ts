/**
 * Swarm efficiency: the supernode serves as few pieces at once as keep its uplink full, and a source whose
 * uplink is fairly shared among a peer's transfers is not cut as "too slow". The emulated-network benchmark
 * (bench/swarm.mjs, run small in bench.test.ts) measures the effect; these pin the mechanisms.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { RateMeter, RateMeters, TokenBucket, TransferGuard, taskIdFor } from '@damselfly/shared';
import { SUPERNODE, Scheduler, slotsForRate, tuneSlots } from '@damselfly/supernode';
import { freePort, makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { throttledRelay } from './helpers/throttle.js';
import { getViaProxy, startDaemon, startSupernode } from './helpers/cluster.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('tuneSlots: as few streams as fill the uplink at the target rate each', async (t) => {
  const tuning = { min: 4, max: 64, streamRate: MiB };
  t.equal(tuneSlots({ slots: 4, active: 0, rate: 0 }, tuning), 4, 'idle: unchanged');
  t.equal(tuneSlots({ slots: 4, active: 4, rate: 400 * MiB }, tuning), 8, 'busy and every stream fast: doubles (slow start)');
  t.equal(tuneSlots({ slots: 32, active: 32, rate: 4000 * MiB }, tuning), 64, 'up to uploadSlots');
  t.equal(tuneSlots({ slots: 64, active: 64, rate: 4000 * MiB }, tuning), 64, 'never above it');
  t.equal(tuneSlots({ slots: 6, active: 6, rate: 7 * MiB }, tuning), 7, 'each stream at the target: one more');
  t.equal(tuneSlots({ slots: 6, active: 3, rate: 7 * MiB }, tuning), 6, 'slots to spare: unchanged');
  // A 50 Mbit/s uplink shared by 32 streams: back to what it carries at 1 MiB/s each.
  t.equal(tuneSlots({ slots: 32, active: 32, rate: 6.25e6 }, tuning), 6, 'streams under half the target: down to rate / target');
  t.equal(tuneSlots({ slots: 5, active: 5, rate: 0.5 * MiB }, tuning), 4, 'never below the minimum');
  t.equal(tuneSlots({ slots: 4, active: 4, rate: 1 }, { ...tuning, streamRate: 0 }), 64, 'streamRate 0: fixed at uploadSlots');
  t.equal(tuneSlots({ slots: 8, active: 8, rate: 400 * MiB, sinceIncreaseMs: 500 }, tuning), 8, 'grows at most once per measuring window');
  t.equal(tuneSlots({ slots: 32, active: 32, rate: 6.25e6, sinceIncreaseMs: 500 }, tuning), 6, 'but falls at once');
  // Settles: from the minimum on a 6.25 MB/s uplink, busy all the time.
  let slots = 4;
  for (let i = 0; i < 20; i++) slots = tuneSlots({ slots, active: slots, rate: 6.25e6, sinceIncreaseMs: 2_000 }, tuning);
  t.ok(slots >= 5 && slots <= 7, `a 50 Mbit/s uplink settles at ${slots} streams (about 1 MiB/s each)`);
});

t.test('tuneSlots: a stream aims at what transfers between peers get, so relay trees of first copies keep up', async (t) => {
  const tuning = { min: 4, max: 64, streamRate: MiB };
  // A 300 MB/s uplink, peers' transfers at 37.5 MB/s (a 300 MB/s downlink shared by 8).
  const flowRate = 37.5e6;
  t.equal(tuneSlots({ slots: 8, active: 8, rate: 300e6, flowRate, sinceIncreaseMs: 2_000 }, tuning), 9, 'streams as fast as peers’ transfers: one more');
  t.equal(tuneSlots({ slots: 16, active: 16, rate: 300e6, flowRate, sinceIncreaseMs: 2_000 }, tuning), 16, 'streams at half of that: no more (without flowRate it would double)');
  t.equal(tuneSlots({ slots: 16, active: 16, rate: 300e6, sinceIncreaseMs: 2_000 }, tuning), 32, '(the same with nothing reported yet)');
  t.equal(tuneSlots({ slots: 32, active: 32, rate: 300e6, flowRate, sinceIncreaseMs: 2_000 }, tuning), 11, 'streams under half of it: down to what the uplink carries at that rate');
  t.equal(tuneSlots({ slots: 8, active: 8, rate: 8 * MiB, flowRate: 0.5 * MiB, sinceIncreaseMs: 2_000 }, tuning), 9, 'slow peer transfers never bring the target under streamRate');
  // The settled count on a 300 MB/s uplink: between what fills it at flowRate and at half of it.
  let slots = 4;
  for (let i = 0; i < 20; i++) slots = tuneSlots({ slots, active: slots, rate: 300e6, flowRate, sinceIncreaseMs: 2_000 }, tuning);
  t.ok(slots >= 8 && slots <= 16, `a 300 MB/s uplink settles at ${slots} streams, not 64`);
});

t.test('RateMeter: bytes per second over the last two seconds', async (t) => {
  const m = new RateMeter();
  for (let ms = 0; ms < 2000; ms += 100) m.add(100_000, 10_000 + ms);
  t.ok(Math.abs(m.rate(11_999) - 1_000_000) < 60_000, `1 MB/s measured as ${m.rate(11_999)}`);
  t.equal(m.rate(20_000), 0, 'forgotten after the window');
  t.ok(m.idle(20_000));
  const ms = new RateMeters();
  ms.add('a', 5000, 1000);
  t.ok(ms.rate('a', 1000) > 0);
  t.equal(ms.rate('b', 1000), 0, 'an unknown source delivers nothing');
});

t.test('TransferGuard: a slow transfer from a source that delivers enough in all is not cut', async (t) => {
  const guarded = (sourceRate: number) =>
    new Promise<string>((resolve) => {
      const g = new TransferGuard({ deadlineMs: 10_000, minBytesPerSecond: 1_000_000, graceMs: 100, sourceRate: () => sourceRate });
      g.startRate();
      g.onBytes(1000);
      const timer = setTimeout(() => (g.done(), resolve('kept')), 900);
      g.signal.addEventListener('abort', () => (clearTimeout(timer), g.done(), resolve(String((g.signal.reason as { code?: string }).code))));
    });
  t.equal(await guarded(2_000_000), 'kept', 'the source sends 2 MB/s to this node over all its transfers: kept');
  t.equal(await guarded(10_000), 'TRANSFER_TOO_SLOW', 'the source is slow in all: cut');
});

t.test('peers sharing a slow supernode uplink: no transfer cut as too slow, the supernode narrows to what its uplink carries', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(64 * MiB, 91);
  const { digest, url } = await pushBlob(reg.url, 'team/narrow', blob);
  const taskId = taskIdFor(new URL(url));
  // Pieces (16 of 4 MiB) leave the supernode through an 8 MB/s link (it advertises the relay): 16 streams at once
  // would get 500 KB/s each, below the dfdaemons' minimum of 640 KiB/s, while each dfdaemon gets 4 MB/s from it in
  // all; tuned to 2 MiB/s per stream, the supernode serves about 4 at once, each well above the minimum.
  const port = await freePort();
  const slow = await throttledRelay({ host: '127.0.0.1', port }, 8e6);
  t.teardown(() => slow.close());
  const sn = await startSupernode(t, { port, advertiseUrl: slow.url, uploadStreamRate: 2 * MiB, minPieceSize: 4 * MiB });
  const opts = { parallelPieces: 8, pieceMinRate: 640 * 1024 };
  const daemons = [await startDaemon(t, [sn.url], opts), await startDaemon(t, [sn.url], opts)];
  // The supernode's load only grows when an assignment is booked: read right after each decision, the highest it
  // reached is exact (a sampler could miss a peak).
  let maxLoad = 0;
  const { scheduler } = sn;
  for (const m of ['schedule', 'endgame'] as const) {
    const decide = scheduler[m].bind(scheduler) as (...a: unknown[]) => ReturnType<typeof scheduler.schedule>;
    (scheduler as unknown as Record<string, unknown>)[m] = (...a: unknown[]) => {
      const out = decide(...a);
      maxLoad = Math.max(maxLoad, scheduler.load(SUPERNODE));
      return out;
    };
  }
  const got = await Promise.all(daemons.map((d) => getViaProxy(d.proxyUrl, url)));
  for (const r of got) t.equal(`sha256:${sha(r.body)}`, digest, 'the blob, whole');
  for (const d of daemons) {
    const failures = (await d.metrics.pieceFailures.get()).values.filter((v) => v.value > 0);
    t.same(failures, [], 'without a failed piece');
  }
  // Loopback socket buffers take the first megabytes at memory speed, so the first ticks see a fast uplink: the count
  // may overshoot a little before it settles.
  t.ok(maxLoad <= 12, `the supernode served at most ${maxLoad} pieces at once (16 were asked for)`);
  t.ok(sn.scheduler.slots(SUPERNODE) <= 8, `its slots settled at ${sn.scheduler.slots(SUPERNODE)}`);
  t.equal(await reg.settledBytesServed(digest, blob.length), blob.length, 'the origin served the blob once (the size probe brought its first block)');
  t.notOk(sn.store.pieceSha(taskId, 0) === undefined, 'the supernode recorded the pieces');
});

t.test('TokenBucket: bytes pass at the limit, on credit, and a wait can be abandoned', async (t) => {
  const none = new TokenBucket(0);
  t.equal(none.take(1 << 30), undefined, 'no limit: nothing waits');
  const b = new TokenBucket(1_000_000);
  t.equal(b.take(1000), undefined, 'within the burst: at once');
  const ac = new AbortController();
  const wait = b.take(2_000_000, ac.signal);
  t.ok(wait, 'beyond it: a wait');
  t.ok(b.waitedSeconds > 1.9 && b.waitedSeconds < 2.0, `2 MB at 1 MB/s past a 64 KiB burst waits ${b.waitedSeconds.toFixed(3)} s`);
  ac.abort();
  await t.rejects(wait!, 'a caller that goes away stops waiting');
  const next = new AbortController();
  const later = b.take(1, next.signal);
  t.ok(later, 'the debt stays: the next byte waits behind it');
  next.abort();
  await t.rejects(later!);
});

t.test('a peer with an upload limit is given only as many uploads at once as the limit carries', async (t) => {
  t.equal(slotsForRate(0, MiB, 8), 8, 'no limit: the usual slots');
  t.equal(slotsForRate(2.5 * MiB, MiB, 8), 2);
  t.equal(slotsForRate(100 * 1024, MiB, 8), 1, 'at least one');
  t.equal(slotsForRate(100 * MiB, MiB, 8), 8, 'at most the usual');
  const s = new Scheduler({ supernodeSlots: 4, peerSlots: 8, failuresBeforeBlacklist: 3 });
  s.peerJoined('capped', true, undefined, 3 * MiB);
  s.peerJoined('free', true);
  t.equal(s.slots('capped'), 3);
  t.equal(s.slots('free'), 8);
  s.peerLeft('capped');
  s.peerJoined('capped', true);
  t.equal(s.slots('capped'), 8, 'rejoining without a limit: the usual slots again');
});

t.test('endgame: the last piece crawling from a slow holder gets a second source, which wins; the blob is whole', async (t) => {
  const { metricValue } = await import('./helpers/metrics.js');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(24 * MiB, 31);
  const { url, digest } = await pushBlob(reg.url, 'team/endgame', blob);
  const sn = await startSupernode(t, { minPieceSize: 4 * MiB });
  // The only other holder uploads at 400 KiB/s in all: above the too-slow cut, so its transfer is not cut, but a
  // 4 MiB piece from it takes 10 s where the supernode's take a fraction of one.
  const slow = await startDaemon(t, [sn.url], { uploadRate: 400 * 1024 });
  t.equal(sha((await getViaProxy(slow.proxyUrl, url)).body), digest.slice(7));
  const r = await startDaemon(t, [sn.url]);
  const got = await getViaProxy(r.proxyUrl, url);
  t.equal(got.status, 200);
  t.equal(sha(got.body), digest.slice(7), 'the blob is whole and right');
  // Piece 0 went to the slow holder first (every piece had one holder; it had a free slot); everything else came
  // from the supernode; then piece 0 alone was left, slow, and got a second source.
  t.ok((await metricValue(sn.metrics.registry, 'damselfly_supernode_assignments_total', { how: 'endgame' })) >= 1, 'the supernode gave a second source');
  t.ok((await metricValue(r.metrics.registry, 'damselfly_dfdaemon_endgame_wins_total')) >= 1, 'and it finished first');
  t.ok((await metricValue(r.metrics.registry, 'damselfly_dfdaemon_piece_failures_total', { reason: 'timeout' })) === 0, 'nothing was cut as too slow');
});
