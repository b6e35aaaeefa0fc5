/**
 * The data plane's memory promise, with the real binaries: 200 sockets that ask for a piece and never read hold a
 * bounded amount of memory on an upload server and on the supernode, are cut after the stall timeout, and honest
 * readers are served again right after.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { readFile } from 'node:fs/promises';
import { request } from 'undici';
import { BLOCK_SIZE, PROTOCOL_VERSION, GRANT_HEADER, issueGrant, pieceRoot, pieceSizeFor } from '@damselfly/shared';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { TEST_SECRET, getViaProxy } from './helpers/cluster.js';
import { spawnDaemonProc, spawnSupernodeProc } from './helpers/procs.js';
import { until } from './helpers/until.js';

const MiB = 1024 * 1024;

function blockList(piece: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let o = 0; o < piece.length; o += BLOCK_SIZE) out.push(piece.subarray(o, o + BLOCK_SIZE));
  return out;
}

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** Opens `n` sockets that each ask for `path` with a grant and then never read; resolves once all were sent. */
async function stalledReaders(base: string, path: string, grantFor: (i: number) => string, n: number): Promise<Socket[]> {
  const u = new URL(base);
  return Promise.all(
    Array.from(
      { length: n },
      (_, i) =>
        new Promise<Socket>((resolve) => {
          const s = connect(Number(u.port), u.hostname, () => {
            s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${GRANT_HEADER}: ${grantFor(i)}\r\n\r\n`);
            s.pause();
            resolve(s);
          });
          s.on('error', () => {});
        }),
    ),
  );
}

t.test('200 readers that never read: memory stays bounded, they are cut, honest readers are served again', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(64 * MiB, 901);
  const { url } = await pushBlob(reg.url, 'team/stall', blob);
  // 16 MiB pieces: far more than the kernel's socket buffers take in for a reader that does not read, so a stalled
  // reader holds its slot. Loopback here takes in 3.75 MiB (tcp_wmem's 4 MiB ceiling): with 4 MiB pieces a stalled
  // reader was sometimes written whole into them and its slot freed, and a newcomer was served instead of refused.
  const sn = await spawnSupernodeProc(t, ['--min-piece-size', '16MiB']);
  const d = await spawnDaemonProc(t, [sn.url]);
  const r = await getViaProxy(d.proxyUrl, url);
  t.equal(r.body.length, blob.length);
  const taskId = r.headers['x-damselfly-task-id'] as string;
  const grant = (piece: number, requester = 'stalled') => issueGrant(Buffer.from(TEST_SECRET), { taskId, piece, requester });

  for (const [name, base, path, pid] of [
    ['upload server', d.uploadUrl, `/pieces/${taskId}/0`, d.child.pid!],
    ['supernode piece API', sn.url, `/api/v1/tasks/${taskId}/pieces/0`, sn.child.pid!],
  ] as const) {
    const before = await rssMiB(pid);
    // 200 members' grants (the supernode answers one grant at most twice at once).
    const sockets = await stalledReaders(base, path, (i) => grant(0, `stalled-${i}`), 200);
    await new Promise((res) => setTimeout(res, 2_000));
    const during = await rssMiB(pid);
    t.ok(during - before < 64, `${name}: ${(during - before).toFixed(0)} MiB more with 200 stalled readers (RSS ${during.toFixed(0)} MiB)`);
    if (name === 'upload server') {
      // Its slots are all taken by readers that do not read: a newcomer is turned away (503), not queued forever.
      const busy = await request(`${base}${path.replace(/\/0$/, '/1')}`, { headers: { [GRANT_HEADER]: grant(1) } });
      await busy.body.dump();
      t.equal(busy.statusCode, 503, `${name}: full, says so`);
    }
    // Past the 10 s stall limit the stalled readers are cut, and their slots and buffers are free again.
    await new Promise((res) => setTimeout(res, 11_000));
    const honest = await request(`${base}${path.replace(/\/0$/, '/1')}`, { headers: { [GRANT_HEADER]: grant(1) } });
    const body = Buffer.from(await honest.body.arrayBuffer());
    t.equal(honest.statusCode, 200, `${name}: an honest reader is served once the stalled ones were cut`);
    // The supernode frames its pieces: every block followed by its sha256.
    const piece1 = blob.subarray(16 * MiB, 32 * MiB); // 16 MiB pieces, as asked
    const want = name === 'upload server' ? piece1 : Buffer.concat(blockList(piece1).flatMap((b) => [b, createHash('sha256').update(b).digest()]));
    t.ok(body.equals(want), `${name}: the right bytes`);
    for (const s of sockets) s.destroy();
  }
  // One grant opens one transfer (two while a retry overlaps): a member cannot fill the piece API's cap with one.
  const greedyPath = `/api/v1/tasks/${taskId}/pieces/2`;
  const greedy = await stalledReaders(sn.url, greedyPath, () => grant(2, 'greedy'), 2);
  // Both are being answered (their first bytes are here), so both count against the grant. (Waiting for `readable`
  // takes in at most the stream's high-water mark, 16 KiB of a 16 MiB piece: the answers stay under way.)
  await Promise.all(greedy.map((s) => new Promise((resolve) => s.once('readable', resolve))));
  const third = await request(`${sn.url}${greedyPath}`, { headers: { [GRANT_HEADER]: grant(2, 'greedy') } });
  const refusal = (await third.body.json()) as { code?: string };
  t.same([third.statusCode, refusal.code], [503, 'SN_BUSY'], 'a third answer on one grant is refused');
  const another = await request(`${sn.url}${greedyPath}`, { headers: { [GRANT_HEADER]: grant(2, 'someone-else') } });
  await another.body.dump();
  t.equal(another.statusCode, 200, 'while another requester\'s grant for the same piece is served');
  for (const s of greedy) s.destroy();
  t.equal(d.child.exitCode, null);
  t.equal(sn.child.exitCode, null);
});

t.test('the whole-blob check is skipped only for pieces fetched against the supernode\'s hashes; announced pieces must match them', async (t) => {
  const { startDaemon, startSupernode } = await import('./helpers/cluster.js');
  const { metricValue } = await import('./helpers/metrics.js');
  const { rawPeer } = await import('./helpers/ws-peer.js');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(12 * MiB, 902);
  const { url } = await pushBlob(reg.url, 'team/inherit', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  // A Range read leaves piece 0 in the cache; a later whole pull builds on it, so the blob is hashed here.
  const first = await getViaProxy(d.proxyUrl, url, { range: 'bytes=0-99' });
  t.equal(first.status, 206);
  const taskId = first.headers['x-damselfly-task-id'] as string;
  // The Range run lingers 2 s for more readers, then ends.
  await until('the Range run ended', () => !d.peer.running(taskId), 10_000);
  const whole = await getViaProxy(d.proxyUrl, url);
  t.ok(whole.body.equals(blob));
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_whole_blob_checks_total', { by: 'local' }), 1, 'inherited pieces: checked here');

  // A peer announcing pieces is listed as a holder only of those whose hash is the supernode's record.
  const liar = await rawPeer(sn.url, 'announcer', TEST_SECRET);
  t.teardown(() => liar.close());
  t.ok((await liar.call({ type: 'peer:hello', peerId: 'announcer', uploadUrl: 'http://127.0.0.1:9', version: PROTOCOL_VERSION })).ok);
  const right = pieceRoot(blockList(blob.subarray(0, pieceSizeFor(blob.length))).map((b) => createHash('sha256').update(b).digest('hex')));
  t.ok((await liar.call({ type: 'task:register', url, have: [0, 1], haveSha: [right, 'f'.repeat(64)] })).ok);
  t.ok(sn.scheduler.holders(taskId, 0).has('announcer'), 'a piece with the recorded hash is accepted');
  t.notOk(sn.scheduler.holders(taskId, 1).has('announcer'), 'a piece with another hash is not');
});
