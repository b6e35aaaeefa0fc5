import t from 'tap';
import { MAX_RELAY_DEPTH, SUPERNODE, Scheduler, UNREPORTED_MAX, rarestFirst, type SwarmView } from '@damselfly/supernode';

function view(over: Partial<Omit<SwarmView, "holders">> & { holders: Record<number, string[]> }): SwarmView {
  return {
    inflight: () => 0,
    load: () => 0,
    slots: (id) => (id === SUPERNODE ? 100 : 2),
    uploads: () => true,
    blacklisted: () => false,
    labels: () => undefined,
    ...over,
    holders: (n) => new Set(over.holders[n] ?? []),
  };
}

t.test('rarest piece first, ties in the requester order', async (t) => {
  const v = view({ holders: { 0: ['a', 'b', 'c'], 1: ['a'], 2: ['a', 'b'] } });
  t.same(rarestFirst(v, { requester: 'r', want: [0, 1, 2], max: 3 }).map((c) => c.piece), [1, 2, 0]);
});

t.test('pieces nobody holds go to the supernode; in-flight counts as rarity', async (t) => {
  const v = view({ holders: {}, inflight: (n) => (n === 0 ? 3 : 0) });
  const out = rarestFirst(v, { requester: 'r', want: [0, 1, 2], max: 2 });
  t.same(out, [
    { piece: 1, from: SUPERNODE },
    { piece: 2, from: SUPERNODE },
  ]);
});

t.test('load limit: a holder with no free slot is skipped, within one call too', async (t) => {
  const v = view({ holders: { 0: ['a'], 1: ['a'], 2: ['a'] }, load: (id) => (id === 'a' ? 1 : 0) });
  const out = rarestFirst(v, { requester: 'r', want: [0, 1, 2], max: 3 });
  t.same(out.map((c) => c.from), ['a', SUPERNODE, SUPERNODE], 'a has 2 slots and 1 in use: one more');
});

t.test('blacklisted peers, the requester itself and non-uploaders are never sources', async (t) => {
  const v = view({ holders: { 0: ['bad', 'r', 'oneshot'] }, blacklisted: (id) => id === 'bad', uploads: (id) => id !== 'oneshot' });
  t.same(rarestFirst(v, { requester: 'r', want: [0], max: 1 }), [{ piece: 0, from: SUPERNODE }]);
});

t.test('nearest by topology labels wins over a less loaded far peer', async (t) => {
  const labels: Record<string, Record<string, string>> = { r: { zone: 'z1' }, near: { zone: 'z1' }, far: { zone: 'z2' } };
  const v = view({ holders: { 0: ['far', 'near'] }, labels: (id) => labels[id], load: (id) => (id === 'near' ? 1 : 0) });
  t.same(rarestFirst(v, { requester: 'r', want: [0], max: 1 }), [{ piece: 0, from: 'near' }]);
});

t.test('nothing assignable when everyone, supernode included, is saturated', async (t) => {
  const v = view({ holders: { 0: ['a'] }, load: () => 1000 });
  t.same(rarestFirst(v, { requester: 'r', want: [0], max: 1 }), []);
});

t.test('scheduler state: holders, slots, blacklist, peers leaving', async (t) => {
  const s = new Scheduler({ supernodeSlots: 1, peerSlots: 1, failuresBeforeBlacklist: 2 });
  const task = 'f'.repeat(64);
  for (const p of ['a', 'b', 'c']) s.peerJoined(p, true);
  for (const p of ['a', 'b', 'c']) s.taskJoined(p, task);
  t.same(s.schedule(task, 'a', [0, 1], 2), [{ piece: 0, from: SUPERNODE }], 'supernode has one slot');
  t.same(s.schedule(task, 'b', [0], 1), [], 'slot is taken');
  s.pieceResult(task, 'a', 0, SUPERNODE, true);
  t.same([...s.holders(task, 0)], ['a']);
  t.same(s.schedule(task, 'b', [0], 1), [{ piece: 0, from: 'a' }], 'now from peer a');
  t.equal(s.load('a'), 1);
  s.pieceResult(task, 'b', 0, 'a', false, 'corrupt');
  t.ok(s.isBlacklisted(task, 'a'), 'corrupt data blacklists at once');
  t.equal(s.load('a'), 0, 'slot released');
  t.same(s.schedule(task, 'b', [0], 1), [{ piece: 0, from: SUPERNODE }], 'a is skipped');
  s.pieceResult(task, 'b', 0, SUPERNODE, true);
  t.same(s.schedule(task, 'b', [1], 1), [{ piece: 1, from: SUPERNODE }]);
  s.pieceResult(task, 'b', 1, SUPERNODE, true);
  t.same(s.schedule(task, 'c', [0], 1), [{ piece: 0, from: 'b' }]);
  s.pieceResult(task, 'c', 0, 'b', false, 'timeout');
  t.notOk(s.isBlacklisted(task, 'b'), 'one timeout is not enough');
  t.same(s.schedule(task, 'c', [0], 1), [{ piece: 0, from: SUPERNODE }], 'a source that failed c for a piece is not tried again for it');
  s.pieceResult(task, 'c', 0, SUPERNODE, false, 'cancelled');
  t.same(s.schedule(task, 'c', [1], 1), [{ piece: 1, from: 'b' }], 'but it still may serve c another piece');
  s.pieceResult(task, 'c', 1, 'b', false, 'timeout');
  t.ok(s.isBlacklisted(task, 'b'), 'repeated failures blacklist');

  s.peerJoined('d', true);
  s.peerJoined('e', true);
  s.taskJoined('d', task, [0]);
  s.taskJoined('e', task);
  s.schedule(task, 'e', [0], 1);
  t.equal(s.load('d'), 1);
  s.peerLeft('d');
  t.equal(s.load('d'), 0);
  t.same([...s.holders(task, 0)].sort(), ['a', 'b'].sort().filter((p) => p !== 'd'), 'd no longer offered');
  t.same(s.schedule(task, 'e', [0], 1), [{ piece: 0, from: SUPERNODE }], 'its pieces are rescheduled elsewhere');
});

t.test('a cancelled transfer frees its slot at once and blames nobody', async (t) => {
  const s = new Scheduler({ supernodeSlots: 4, peerSlots: 1, failuresBeforeBlacklist: 1 });
  const task = 'c'.repeat(64);
  for (const p of ['a', 'b']) s.peerJoined(p, true);
  s.taskJoined('a', task, [0]);
  t.same(s.schedule(task, 'b', [0], 1), [{ piece: 0, from: 'a' }]);
  t.equal(s.load('a'), 1);
  s.pieceResult(task, 'b', 0, 'a', false, 'cancelled');
  t.equal(s.load('a'), 0);
  t.notOk(s.isBlacklisted(task, 'a'), 'not blacklisted even with a 1-failure threshold');
  t.same(s.schedule(task, 'b', [0], 1), [{ piece: 0, from: 'a' }], 'the piece can be scheduled again right away');
});

t.test('stale assignments are swept', async (t) => {
  const s = new Scheduler({ supernodeSlots: 1, peerSlots: 1, failuresBeforeBlacklist: 3, assignmentTimeoutMs: 1000 });
  const task = 'e'.repeat(64);
  s.peerJoined('a', true);
  s.schedule(task, 'a', [0], 1, 0);
  t.equal(s.load(SUPERNODE), 1);
  s.sweep(500);
  t.equal(s.load(SUPERNODE), 1);
  s.sweep(1500);
  t.equal(s.load(SUPERNODE), 0);
});

t.test('scale: thousands of holders, bounded work per decision, load spread over the swarm', async (t) => {
  // The policy's work per decision, counted (not timed): each holder it weighs is asked whether it is blacklisted.
  let weighed = 0;
  let most = 0;
  const s = new Scheduler({
    supernodeSlots: 64,
    peerSlots: 8,
    failuresBeforeBlacklist: 3,
    policy: (view, o) => {
      weighed = 0;
      const counting: SwarmView = { ...view, blacklisted: (p) => (weighed++, view.blacklisted(p)) };
      const out = rarestFirst(counting, o);
      most = Math.max(most, weighed);
      return out;
    },
  });
  const task = 'd'.repeat(64);
  const pieces = Array.from({ length: 100 }, (_, i) => i);
  for (let i = 0; i < 5000; i++) {
    s.peerJoined(`h${i}`, true);
    s.taskJoined(`h${i}`, task, pieces);
  }
  const sources = new Set<string>();
  const t0 = performance.now();
  for (let r = 0; r < 500; r++) {
    s.peerJoined(`r${r}`, true);
    for (const c of s.schedule(task, `r${r}`, pieces, 8)) sources.add(c.from);
  }
  const perCall = (performance.now() - t0) / 500;
  // Bounded by the policy's budget (64 holders per piece asked for), not by the 5000 holders x 100 pieces there are.
  t.ok(most <= 64 * 8, `a decision over 5000 holders x 100 pieces weighed at most ${most} holders (${perCall.toFixed(3)} ms per decision here)`);
  t.ok(sources.size > 1000, `4000 assignments spread over ${sources.size} holders`);
  t.notOk(sources.has(SUPERNODE), 'the supernode is not used while peers have free slots');
});

t.test('blame is weighed: a liar blaming peers others verified is discredited and its blame withdrawn; garbage peers are not', async (t) => {
  const s = new Scheduler({ supernodeSlots: 64, peerSlots: 8, failuresBeforeBlacklist: 3 });
  const task = 'b'.repeat(64);
  const events: string[] = [];
  s.on('peer:blacklisted', ({ peerId }) => events.push(`blacklisted ${peerId}`));
  s.on('peer:reinstated', ({ peerId }) => events.push(`reinstated ${peerId}`));
  s.on('peer:discredited', ({ peerId }) => events.push(`discredited ${peerId}`));
  const honest = ['h1', 'h2', 'h3', 'h4'];
  for (const p of [...honest, 'good', 'liar', 'evil', 'victim', 'u']) s.peerJoined(p, true);
  honest.forEach((h, i) => s.taskJoined(h, task, [i]));
  for (const p of ['good', 'liar', 'victim']) s.taskJoined(p, task);
  // 'good' verifies a piece from every honest peer: they are vouched for.
  for (let i = 0; i < 4; i++) {
    t.same(s.schedule(task, 'good', [i], 1), [{ piece: i, from: honest[i] }]);
    t.equal(s.pieceResult(task, 'good', i, honest[i], true), 'accepted');
  }
  // First the liar blames 'u', a holder nobody vouched for: its word alone condemns it, for now.
  s.taskJoined('u', task, [5]);
  t.same(s.schedule(task, 'liar', [5], 1), [{ piece: 5, from: 'u' }]);
  s.pieceResult(task, 'liar', 5, 'u', false, 'corrupt');
  t.ok(s.isBlacklisted(task, 'u'), 'an unvouched source goes on one corrupt report');
  // The liar blames them one by one, through real assignments.
  for (let i = 0; i < 3; i++) {
    const [c] = s.schedule(task, 'liar', [i], 1);
    t.equal(c?.from, honest[i]);
    s.pieceResult(task, 'liar', i, c!.from, false, 'corrupt');
    t.notOk(s.isBlacklisted(task, honest[i]!), `${honest[i]} (vouched for) is not condemned on one word`);
  }
  t.ok(s.isBlacklisted(task, 'liar'), 'the third contested blame discredits the liar: it is blacklisted as a source');
  t.notOk(s.isBlacklisted(task, 'u'), 'its blame is withdrawn: the source it alone condemned is reinstated');
  t.same(events, ['blacklisted u', 'discredited liar', 'reinstated u', 'blacklisted liar']);
  t.same(s.schedule(task, 'victim', [2], 1), [{ piece: 2, from: 'h3' }], 'honest peers keep serving others');

  // A garbage peer nobody vouched for (the only holder of its piece) goes on the first corrupt report; its accuser is
  // not discredited.
  s.taskJoined('evil', task, [6]);
  s.pieceResult(task, 'victim', 2, 'h3', true);
  t.same(s.schedule(task, 'victim', [6], 1, Date.now()), [{ piece: 6, from: 'evil' }]);
  s.pieceResult(task, 'victim', 6, 'evil', false, 'corrupt');
  t.ok(s.isBlacklisted(task, 'evil'), 'an unvouched garbage peer is blacklisted at once');
  t.notOk(s.isBlacklisted(task, 'victim'), 'blaming garbage costs the accuser nothing');
  t.equal(events.at(-1), 'blacklisted evil');

  // Two requesters blaming a vouched-for source condemn it.
  const two = new Scheduler({ supernodeSlots: 64, peerSlots: 8, failuresBeforeBlacklist: 3 });
  for (const p of ['src', 'a', 'b', 'c']) two.peerJoined(p, true);
  two.taskJoined('src', task, [0, 1]);
  for (const p of ['a', 'b', 'c']) two.taskJoined(p, task);
  two.schedule(task, 'a', [0], 1);
  two.pieceResult(task, 'a', 0, 'src', true);
  two.schedule(task, 'b', [1], 1);
  two.pieceResult(task, 'b', 1, 'src', false, 'corrupt');
  t.notOk(two.isBlacklisted(task, 'src'), 'one word against a vouched source: only that pair is split');
  t.same(two.schedule(task, 'b', [1], 1), [{ piece: 1, from: SUPERNODE }], 'b is not sent to src again');
  two.schedule(task, 'c', [1], 1);
  two.pieceResult(task, 'c', 1, 'src', false, 'corrupt');
  t.ok(two.isBlacklisted(task, 'src'), 'a second requester confirms: blacklisted');
});

t.test('reports are accepted only from the requester of a pending assignment, about its source', async (t) => {
  const s = new Scheduler({ supernodeSlots: 4, peerSlots: 4, failuresBeforeBlacklist: 1 });
  const task = 'a'.repeat(64);
  for (const p of ['src', 'req', 'other']) s.peerJoined(p, true);
  s.taskJoined('src', task, [0]);
  s.taskJoined('req', task);
  s.taskJoined('other', task);
  t.equal(s.pieceResult(task, 'other', 0, 'src', false, 'corrupt'), 'no_assignment');
  s.schedule(task, 'req', [0], 1);
  t.equal(s.pieceResult(task, 'other', 0, 'src', false, 'corrupt'), 'no_assignment', 'not the requester');
  t.equal(s.pieceResult(task, 'req', 0, SUPERNODE, false, 'corrupt'), 'source_mismatch', 'not the assigned source');
  t.notOk(s.isBlacklisted(task, 'src'));
  t.equal(s.pieceResult(task, 'req', 0, undefined, false, 'corrupt'), 'accepted', 'the source is taken from the assignment');
  t.ok(s.isBlacklisted(task, 'src'));
  for (let i = 0; i < 1000; i++) s.pieceResult(`${i}`.padStart(64, '0'), 'req', 0, undefined, true);
  t.equal(s.taskCount, 1, 'reports about unknown tasks create no state');
  for (const p of ['src', 'req', 'other']) s.peerLeft(p);
  t.equal(s.taskCount, 0, 'a task nobody is in is forgotten');
});

t.test('a peer still fetching a piece relays it when no whole holder is free, before the supernode', async (t) => {
  const fetching = (m: Record<number, string[]>) => (n: number) => new Set(m[n] ?? []);
  const v = view({ holders: { 1: ['h'] }, fetching: fetching({ 0: ['a', 'r'], 1: ['a'] }), load: (id) => (id === 'h' ? 2 : 0) });
  t.same(rarestFirst(v, { requester: 'r', want: [0], max: 1 }), [{ piece: 0, from: 'a', relay: true }], 'never the requester itself');
  t.same(rarestFirst(v, { requester: 'r', want: [1], max: 1 }), [{ piece: 1, from: 'a', relay: true }], 'the whole holder is full');
  const bad = view({ holders: {}, fetching: fetching({ 0: ['a'] }), blacklisted: (id) => id === 'a' });
  t.same(rarestFirst(bad, { requester: 'r', want: [0], max: 1 }), [{ piece: 0, from: SUPERNODE }], 'a blacklisted peer relays nothing');
  const tried = rarestFirst(view({ holders: {}, fetching: fetching({ 0: ['a'] }) }), { requester: 'r', want: [0], max: 1, tried: new Map([[0, new Set(['a'])]]) });
  t.same(tried, [{ piece: 0, from: SUPERNODE }], 'nor one that already failed this requester');
});

t.test('scheduler: relays only pieces whose block hashes the supernode has, and chains relays up to MAX_RELAY_DEPTH', async (t) => {
  let hashed = false;
  // One upload slot each: every next downloader has to find a new relay.
  const s = new Scheduler({ supernodeSlots: 10, peerSlots: 1, failuresBeforeBlacklist: 3, hashed: () => hashed });
  const peers = ['a', 'b', 'c', 'd', 'e', 'f'];
  for (const p of peers) {
    s.peerJoined(p, true);
    s.taskJoined(p, 'T');
  }
  t.same(s.schedule('T', 'a', [0], 1), [{ piece: 0, from: SUPERNODE }]);
  t.same(s.schedule('T', 'b', [0], 1), [{ piece: 0, from: SUPERNODE }], 'not hashed yet: no relay');
  s.release('T', 'b', 0);
  hashed = true;
  t.same(s.schedule('T', 'b', [0], 1), [{ piece: 0, from: 'a', relay: true }], 'hashed: a relays its piece in flight');
  t.same(s.schedule('T', 'c', [0], 1), [{ piece: 0, from: 'b', relay: true }], 'b relays what it gets through a relay (a is full)');
  t.equal(MAX_RELAY_DEPTH, 2);
  t.same(s.schedule('T', 'd', [0], 1), [{ piece: 0, from: SUPERNODE }], 'c, two relays from a whole copy, is not offered: the supernode serves d');
  s.release('T', 'c', 0);
  t.same(s.schedule('T', 'e', [0], 1), [{ piece: 0, from: 'b', relay: true }], 'a relay that ends frees its source for the next');
  s.pieceResult('T', 'a', 0, SUPERNODE, true);
  t.ok(s.holders('T', 0).has('a'), 'a holds it once done');
  t.same(s.schedule('T', 'f', [0], 1), [{ piece: 0, from: 'd', relay: true }], 'a and b are busy; d (fetching from the supernode) relays to f');
});

t.test('a relay never feeds on its own requester: a peer whose fetch failed is not sent to the relays it was feeding', async (t) => {
  const fetching = (n: number) => new Set(n === 0 ? ['b'] : []);
  const v = view({ holders: {}, fetching, relaysFrom: (n, peer, source) => n === 0 && peer === 'b' && source === 'a' });
  t.same(rarestFirst(v, { requester: 'a', want: [0], max: 1 }), [{ piece: 0, from: SUPERNODE }], 'b gets its blocks from a');
  t.same(rarestFirst(v, { requester: 'c', want: [0], max: 1 }), [{ piece: 0, from: 'b', relay: true }], 'b relays to anyone else');

  // The swarm emulation's case: a's stream from the supernode is cut as too slow while b and c relay it (c through
  // b). b and c keep waiting for a's blocks, since a asks again at once; a must not get the piece from either. Two
  // slots each, so b still has a free one when a asks.
  const s = new Scheduler({ supernodeSlots: 10, peerSlots: 2, failuresBeforeBlacklist: 3, hashed: () => true });
  for (const p of ['a', 'b', 'c', 'd']) {
    s.peerJoined(p, true);
    s.taskJoined(p, 'T');
  }
  t.same(s.schedule('T', 'a', [0], 1), [{ piece: 0, from: SUPERNODE }]);
  t.same(s.schedule('T', 'b', [0], 1), [{ piece: 0, from: 'a', relay: true }]);
  t.same(s.schedule('T', 'c', [0], 1), [{ piece: 0, from: 'b', relay: true }]);
  t.equal(s.pieceResult('T', 'a', 0, SUPERNODE, false, 'timeout'), 'accepted');
  t.same(s.schedule('T', 'a', [0], 1), [{ piece: 0, from: SUPERNODE }], 'neither b (from a) nor c (from b, from a)');
});

t.test('scheduler: the typical transfer rate is the median over reporting peers, so one inflated reporter moves nothing', async (t) => {
  const s = new Scheduler({ supernodeSlots: 10, peerSlots: 8, failuresBeforeBlacklist: 3 });
  for (const p of ['h', 'r1', 'r2', 'r3', 'evil']) {
    s.peerJoined(p, true);
    s.taskJoined(p, 'T');
  }
  t.equal(s.flowRate(), undefined, 'nothing reported yet');
  const pieces = [0, 1, 2, 3];
  for (const n of pieces) {
    t.same(s.schedule('T', 'h', [n], 1), [{ piece: n, from: SUPERNODE }]);
    s.pieceResult('T', 'h', n, SUPERNODE, true, undefined, 1e9);
  }
  t.equal(s.flowRate(), undefined, 'transfers from the supernode say nothing of peers’ transfers');
  for (const r of ['r1', 'r2', 'r3']) {
    t.same(s.schedule('T', r, [0], 1), [{ piece: 0, from: 'h' }]);
    s.pieceResult('T', r, 0, 'h', true, undefined, 10e6);
  }
  for (const n of pieces) {
    t.same(s.schedule('T', 'evil', [n], 1), [{ piece: n, from: 'h' }]);
    s.pieceResult('T', 'evil', n, 'h', true, undefined, 1e12);
  }
  t.equal(s.flowRate(), 10e6, 'three peers saw 10 MB/s; the fourth’s 1 TB/s reports do not move it');
  s.peerLeft('r1');
  s.peerLeft('r2');
  t.equal(s.flowRate(), 1e12, 'a reporter that leaves is forgotten (here: half the reporters now claim 1 TB/s)');
});

t.test('scheduler: a relay that stalls is not blamed for it (its own source may be slow); bad bytes are', async (t) => {
  const s = new Scheduler({ supernodeSlots: 10, peerSlots: 8, failuresBeforeBlacklist: 2, hashed: () => true });
  for (const p of ['a', 'r1', 'r2', 'r3', 'r4']) {
    s.peerJoined(p, true);
    s.taskJoined(p, 'T');
  }
  t.same(s.schedule('T', 'a', [0], 1), [{ piece: 0, from: SUPERNODE }]);
  for (const r of ['r1', 'r2', 'r3']) {
    t.same(s.schedule('T', r, [0], 1), [{ piece: 0, from: 'a', relay: true }]);
    s.pieceResult('T', r, 0, 'a', false, 'timeout');
  }
  t.notOk(s.isBlacklisted('T', 'a'), 'three relay timeouts: not blacklisted');
  t.same(s.schedule('T', 'r1', [0], 1), [{ piece: 0, from: SUPERNODE }], 'but never the same relay twice for one requester');
  t.same(s.schedule('T', 'r4', [0], 1), [{ piece: 0, from: 'a', relay: true }]);
  s.pieceResult('T', 'r4', 0, 'a', false, 'corrupt');
  t.ok(s.isBlacklisted('T', 'a'), 'corrupt bytes from a relay count like any');
});

t.test('a member that books pieces and never fetches them: after the sweep it books one at a time and relays for nobody', async (t) => {
  const s = new Scheduler({ supernodeSlots: 4, peerSlots: 8, failuresBeforeBlacklist: 3, hashed: () => true, assignmentTimeoutMs: 60_000 });
  const pieces = [...Array(20).keys()];
  for (const p of ['h1', 'h2', 'hog', 'a']) s.peerJoined(p, true);
  s.taskJoined('h1', 'T', pieces);
  s.taskJoined('h2', 'T', pieces);
  s.taskJoined('hog', 'T');
  s.taskJoined('a', 'T');
  const booked = s.schedule('T', 'hog', pieces, 256, 0);
  t.ok(booked.length >= 16, `it takes every free slot at first (${booked.length})`);
  // Nothing is reported for a minute: the sweep frees its slots.
  s.sweep(61_000);
  t.equal(s.load('h1') + s.load('h2'), 0, 'its slots are freed');
  const again = s.schedule('T', 'hog', pieces, 256, 61_000);
  t.equal(again.length, UNREPORTED_MAX, 'then it books one piece at a time');
  t.same(s.schedule('T', 'hog', pieces, 256, 61_000), [], 'and no more while that one is out');
  // An honest peer wanting the piece the hog has booked is sent to a whole copy, not to the hog as a relay.
  for (const p of ['h1', 'h2']) s.setSlots(p, 0);
  const honest = s.schedule('T', 'a', [again[0]!.piece], 1, 61_000);
  t.notOk(honest.some((c) => c.from === 'hog'), `the hog is nobody's relay (${JSON.stringify(honest)})`);
  // A peer that reports what it fetched earns its room back, one piece per assignment it left unreported.
  for (const p of ['h1', 'h2']) s.setSlots(p, 8);
  let next = again[0]!;
  for (let i = 0; i < booked.length; i++) {
    s.pieceResult('T', 'hog', next.piece, next.from, true);
    if (i < booked.length - 1) next = s.schedule('T', 'hog', pieces, 256, 62_000)[0]!;
  }
  t.equal(s.schedule('T', 'hog', pieces, 4, 62_000).length, 4, 'once worked off, it books as many as it asks for');
});

t.test('a task dropped from the scheduler is forgotten by the demands too: no flush brings an empty swarm of it back', async (t) => {
  const { Demands } = await import('@damselfly/supernode');
  const s = new Scheduler({ supernodeSlots: 1, peerSlots: 2, failuresBeforeBlacklist: 3, policy: rarestFirst });
  const d = new Demands(s, { onMarked: () => {} });
  s.peerJoined('a', true);
  s.taskJoined('a', 'T');
  d.connect('a', () => {});
  t.same(d.want('T', 'a', [0, 1], 2), [{ piece: 0, from: SUPERNODE }]);
  t.equal(d.waiting('T'), 1, 'piece 1 waits for a source');
  // Its bytes turned out not to be its digest's (or GC evicted it): the supernode drops it everywhere.
  s.dropTask('T');
  d.forget('T');
  d.markAll();
  d.flush();
  t.equal(s.taskCount, 0, 'the scheduler holds nothing of it');
  t.equal(d.size, 0, 'nor do the demands');
});

t.test('demands: sources are pushed as they free up, to peers with room, round-robin; a failed piece is wanted again', async (t) => {
  const { Demands } = await import('@damselfly/supernode');
  let decisions = 0;
  const s = new Scheduler({ supernodeSlots: 1, peerSlots: 2, failuresBeforeBlacklist: 3, policy: (v, i) => (decisions++, rarestFirst(v, i)) });
  let marked = 0;
  const d = new Demands(s, { misses: 2, onMarked: () => marked++ });
  const pushed: string[] = [];
  for (const p of ['a', 'b', 'c', 'x1', 'x2', 'x3', 'x4']) {
    s.peerJoined(p, true);
    s.taskJoined(p, 'T');
    d.connect(p, (taskId, choices) => pushed.push(...choices.map((c) => `${p}:${taskId}:${c.piece}<${c.from}`)));
  }
  t.same(d.want('T', 'a', [0, 1, 2], 2), [{ piece: 0, from: SUPERNODE }], 'the reply carries what is possible at once');
  t.same(d.want('T', 'b', [0, 1], 2), [], 'the supernode is busy and nobody holds a piece: nothing yet');
  t.equal(d.waiting('T'), 2, 'both wait with room (a has one of two in flight)');
  d.flush();
  t.same(pushed, [], 'nothing changed: nothing pushed');

  s.pieceResult('T', 'a', 0, SUPERNODE, true);
  t.ok(marked > 0, 'the change marked the task for a flush');
  d.flush();
  t.same(pushed, ['a:T:1<supernode', 'b:T:0<a'], 'the freed supernode slot and the new holder are pushed at once, in turn');
  t.equal(s.inflightOf('T', 'a'), 1);

  pushed.length = 0;
  s.pieceResult('T', 'b', 0, 'a', false, 'timeout');
  d.failed('T', 'b', 0);
  d.flush();
  t.same(pushed, [], 'the failed piece is wanted again, but a (who failed it) is not asked twice and the supernode is busy');
  s.pieceResult('T', 'a', 1, SUPERNODE, true);
  d.flush();
  t.same(pushed, ['a:T:2<supernode', 'b:T:1<a'], 'a, first in turn, takes the supernode slot; b gets the piece a now holds');
  pushed.length = 0;
  s.pieceResult('T', 'a', 2, SUPERNODE, true);
  d.flush();
  t.same(pushed, ['b:T:0<supernode'], 'and b gets its failed piece from the supernode once it is free');

  // Bounded work per change: four peers wait for a piece nobody can serve; one change tries `misses` of them in a row.
  s.pieceResult('T', 'b', 0, SUPERNODE, true);
  pushed.length = 0;
  for (const p of ['x1', 'x2', 'x3', 'x4']) d.want('T', p, [3], 1);
  s.wake('T');
  decisions = 0;
  d.flush();
  t.equal(decisions, 2, 'two misses in a row end the flush (the rest wait for the next change)');

  d.want('T', 'b', [], 0);
  d.disconnect('c');
  t.equal(d.size, 5, 'an empty want and a closed session drop their demands');
  t.same(d.want('T', 'c', [], 0), []);
});

t.test('endgame: a second source for a piece in flight, never the first one; the first report wins, the other is cancelled', async (t) => {
  const s = new Scheduler({ supernodeSlots: 4, peerSlots: 2, failuresBeforeBlacklist: 3 });
  for (const p of ['a', 'b', 'r']) {
    s.peerJoined(p, true);
    s.taskJoined(p, 'T');
  }
  t.same(s.schedule('T', 'a', [0], 1), [{ piece: 0, from: SUPERNODE }]);
  s.pieceResult('T', 'a', 0, SUPERNODE, true);
  t.same(s.schedule('T', 'b', [0], 1), [{ piece: 0, from: 'a' }]);
  s.pieceResult('T', 'b', 0, 'a', true);
  const [first] = s.schedule('T', 'r', [0], 1);
  const other = first?.from === 'a' ? 'b' : 'a';
  t.same(s.endgame('T', 'r', [0, 5]), [{ piece: 0, from: other }], 'the other holder, not the first source again; piece 5 is not in flight: nothing');
  t.same(s.endgame('T', 'r', [0]), [], 'one second source per piece');
  t.equal(s.inflightOf('T', 'r'), 1, 'the second does not count against the in-flight limit');
  t.equal(s.load(other), 1);
  t.ok(s.fetching('T', 'r', 0));
  t.equal(s.pieceResult('T', 'r', 0, other, true), 'accepted', 'the second source finished first');
  t.ok(s.holders('T', 0).has('r'));
  t.equal(s.pieceResult('T', 'r', 0, first!.from, false, 'cancelled'), 'accepted', 'the first is cancelled');
  t.equal(s.load('a') + s.load('b'), 0, 'both slots are free');
  t.notOk(s.fetching('T', 'r', 0));
  t.equal(s.pendingCount, 0);
});

t.test('endgame: a piece that already failed from two peers gets no third peer as its second source', async (t) => {
  const s = new Scheduler({ supernodeSlots: 4, peerSlots: 2, failuresBeforeBlacklist: 3 });
  const holders = ['h1', 'h2', 'h3', 'h4'];
  for (const p of [...holders, 'r']) s.peerJoined(p, true);
  for (const h of holders) s.taskJoined(h, 'T', [0, 1]);
  s.taskJoined('r', 'T');
  // Two peers fail piece 0 for r (timeouts, not corruption: nobody is blacklisted for the task).
  for (let i = 0; i < 2; i++) {
    const [c] = s.schedule('T', 'r', [0], 1);
    t.not(c?.from, SUPERNODE);
    s.pieceResult('T', 'r', 0, c!.from, false, 'timeout');
  }
  t.same(s.schedule('T', 'r', [0], 1), [{ piece: 0, from: SUPERNODE }], 'after two peers, the supernode');
  t.same(s.endgame('T', 'r', [0]), [], 'and no third peer races it');
  // A piece with no failures still gets a peer as its second source.
  const [c1] = s.schedule('T', 'r', [1], 1);
  t.not(c1?.from, SUPERNODE);
  const [second] = s.endgame('T', 'r', [1]);
  t.ok(second && second.from !== c1!.from && second.piece === 1, `piece 1: a second source (${second?.from})`);
});

t.test('endgame rule: only when everything needed is in flight, for pieces slower than 1.5x this run\'s median, oldest first', async (t) => {
  const { endgamePieces, slowAfterMs } = await import('@damselfly/peer');
  t.equal(slowAfterMs([]), Infinity, 'nothing finished yet: nothing is slow');
  t.equal(slowAfterMs([100, 200, 300]), 1000, 'never under a second');
  t.equal(slowAfterMs([2000, 4000, 3000]), 4500);
  const inflight = [
    { piece: 7, startedAt: 0, asked: false },
    { piece: 8, startedAt: 1000, asked: false },
    { piece: 9, startedAt: 5000, asked: false },
    { piece: 3, startedAt: 0, asked: true },
  ];
  const durations = [2000, 2000, 2000];
  t.same(endgamePieces({ unrequested: 1, inflight, room: 4, durations, now: 9000 }).pieces, [], 'pieces still to request: not the endgame');
  t.same(endgamePieces({ unrequested: 0, inflight, room: 0, durations, now: 9000 }).pieces, [], 'no room');
  t.same(endgamePieces({ unrequested: 0, inflight, room: 4, durations, now: 7000 }), { pieces: [7, 8], nextAt: 8000 }, 'slow ones, oldest first; piece 9 turns slow at 8 s');
  t.same(endgamePieces({ unrequested: 0, inflight, room: 1, durations, now: 9000 }).pieces, [7], 'at most the room');
});

t.test('in-flight limit: one more while every transfer is busy, kept only if the rate grew, else back and hold', async (t) => {
  const { tuneInflight, startInflight, inflightBounds, SaturationClock, INFLIGHT_HOLD } = await import('@damselfly/peer');
  const b = inflightBounds(8);
  t.same(b, { min: 4, max: 32 });
  t.same(inflightBounds(1), { min: 1, max: 4 });
  t.same(inflightBounds(40), { min: 20, max: 64 });
  let s = startInflight(8);
  s = tuneInflight(s, { rate: 100, saturated: false }, b);
  t.equal(s.limit, 8, 'sources held it back: unchanged');
  s = tuneInflight(s, { rate: 100, saturated: true }, b);
  t.ok(s.limit === 9 && s.probing, 'every transfer busy: one more, on probation');
  s = tuneInflight(s, { rate: 120, saturated: true }, b);
  t.ok(s.limit === 9 && !s.probing, 'the rate grew: kept');
  s = tuneInflight(s, { rate: 120, saturated: true }, b);
  t.equal(s.limit, 10);
  s = tuneInflight(s, { rate: 121, saturated: true }, b);
  t.ok(s.limit === 9 && s.hold === INFLIGHT_HOLD, 'it did not pay: back, and hold');
  for (let i = 0; i < INFLIGHT_HOLD; i++) s = tuneInflight(s, { rate: 121, saturated: true }, b);
  t.equal(s.limit, 9, 'held');
  s = tuneInflight(s, { rate: 121, saturated: true }, b);
  t.equal(s.limit, 10, 'then probes again');
  let top = { ...startInflight(8), limit: 32 };
  top = tuneInflight(top, { rate: 1, saturated: true }, b);
  t.equal(top.limit, 32, 'never above the bound');
  const c = new SaturationClock();
  c.update(0, true);
  c.update(1500, false);
  t.notOk(c.take(2000, 2000), '1.5 s of 2 s at the limit: not saturated');
  c.update(2000, true);
  t.ok(c.take(4000, 2000), 'the whole window: saturated');
  t.ok(c.take(6000, 2000), 'still at the limit into the next window');
});

t.test('bandwidth-aware: the scheduler learns each source\'s capacity from reported rates and prefers spare capacity', async (t) => {
  const s = new Scheduler({ supernodeSlots: 8, peerSlots: 8, failuresBeforeBlacklist: 3 });
  for (const p of ['fast', 'slow', 'r1', 'r2', 'r3']) {
    s.peerJoined(p, true);
    s.taskJoined(p, 'T', p === 'fast' || p === 'slow' ? [0, 1, 2, 3] : []);
  }
  t.equal(s.capacity('fast'), undefined, 'nothing measured yet');
  const [a] = s.schedule('T', 'r1', [0], 1);
  const other = a!.from === 'fast' ? 'slow' : 'fast';
  const [b] = s.schedule('T', 'r2', [0], 1);
  t.equal(b!.from, other, 'unmeasured: the least loaded holder');
  // Two transfers each shared their source with nobody: their rates are the sources' capacities.
  s.pieceResult('T', 'r1', 0, a!.from, true, undefined, a!.from === 'fast' ? 50e6 : 5e6);
  s.pieceResult('T', 'r2', 0, b!.from, true, undefined, b!.from === 'fast' ? 50e6 : 5e6);
  t.equal(s.capacity('fast'), 50e6);
  t.equal(s.capacity('slow'), 5e6);
  t.equal(s.capacity('r3'), 27.5e6, 'a peer not measured yet counts as the mean');
  const picks = ['r1', 'r2', 'r3'].map((r) => s.schedule('T', r, [1], 1)[0]!.from);
  t.same(picks, ['fast', 'fast', 'fast'], 'three new streams: 50/1, 50/2, 50/3 MB/s from fast beat 5 MB/s from slow');
  t.equal(s.schedule('T', 'r1', [2], 1)[0]!.from, 'fast', 'still 12.5 MB/s for a fourth stream against 5');
  s.peerJoined('r4', true);
  s.taskJoined('r4', 'T');
  // fast now has 4 uploads: 50/5 = 10 MB/s against slow's 5/1.
  t.equal(s.schedule('T', 'r4', [3], 1)[0]!.from, 'fast');
  s.peerLeft('fast');
  t.equal(s.capacity('fast'), 5e6, 'a peer that left is forgotten (the mean of who is left)');
});

t.test('a big saturated swarm: the one free holder among hundreds of busy ones is found through the free set', async (t) => {
  const holders = Array.from({ length: 300 }, (_, i) => `h${i}`);
  const busy = (id: string) => id !== 'h277';
  const free = new Set(['h277', 'x1', 'x2']);
  // Walking the holders would give up after 64 busy ones (a bounded decision); the free set names the free one.
  const v = view({ holders: { 0: holders }, load: (id) => (id === SUPERNODE ? 100 : busy(id) ? 2 : 0), free: () => free });
  t.same(rarestFirst(v, { requester: 'r', want: [0], max: 1 }), [{ piece: 0, from: 'h277' }]);
  const blind = view({ holders: { 0: holders }, load: (id) => (id === SUPERNODE ? 100 : busy(id) ? 2 : 0) });
  t.same(rarestFirst(blind, { requester: 'r', want: [0], max: 1 }), [], 'without it the decision stays bounded and finds none');
  // The same for relays: a free peer among hundreds fetching the piece.
  const fetching = new Set(holders);
  const relays = view({ holders: {}, load: (id) => (id === SUPERNODE ? 100 : busy(id) ? 2 : 0), free: () => free, fetching: () => fetching });
  t.same(rarestFirst(relays, { requester: 'r', want: [0], max: 1 }), [{ piece: 0, from: 'h277', relay: true }]);

  // The scheduler keeps its free set as loads, slots and peers change.
  const s = new Scheduler({ supernodeSlots: 1, peerSlots: 1, failuresBeforeBlacklist: 2 });
  const task = 'e'.repeat(64);
  for (const p of ['a', 'b', 'c']) (s.peerJoined(p, p !== 'c'), s.taskJoined(p, task));
  t.same(s.schedule(task, 'a', [0], 1), [{ piece: 0, from: SUPERNODE }]);
  s.pieceResult(task, 'a', 0, SUPERNODE, true);
  s.setSlots(SUPERNODE, 0);
  t.same(s.schedule(task, 'b', [0], 1), [{ piece: 0, from: 'a' }]);
  t.same(s.schedule(task, 'c', [0], 1), [], 'a is busy now');
  s.pieceResult(task, 'b', 0, 'a', false, 'cancelled');
  t.same(s.schedule(task, 'c', [0], 1), [{ piece: 0, from: 'a' }], 'and free again once its upload ended');
});
