/**
 * The block data plane: every block is checked against the supernode's record before any byte of it is written,
 * served or relayed; pieces stream block by block while still arriving (from the origin through the supernode, and
 * from the supernode through a dfdaemon to its client); a dying origin mid-piece ends in an error, never a
 * complete-looking body; a kill -9 mid-piece leaves nothing recorded that is not on disk.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, readdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { Agent, Client, request } from 'undici';
import { createServer } from 'node:http';
import {
  BLOCK_SIZE,
  BufferPool,
  GRANT_HEADER,
  PROTOCOL_VERSION,
  issueGrant,
  DigestCheck,
  PieceSink,
  PieceStore,
  firstBlockParam,
  StoredTask,
  type TaskGeometry,
  TaskIndex,
  blockCountFor,
  pieceSizeFor,
  pieceRoot,
  splitBlocks,
  taskIdFor,
  verifyStoredPiece,
  writePiece,
  writeFully,
  writeWholeStream,
  holdBlock,
  isDiskFull,
  serveBlocks,
  serveCheckedRange,
  type HeldBlock,
  type TaskInfo,
} from '@damselfly/shared';
import { LocalStore, backToSource, streamTask } from '@damselfly/peer';
import { blobChunks, freePort, makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { throttledRelay } from './helpers/throttle.js';
import { TEST_SECRET, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { rawPeer } from './helpers/ws-peer.js';
import { shapedOrigin } from './helpers/file-server.js';
import { gatedRelay } from './helpers/gate.js';
import { startBadPeer } from './helpers/bad-peer.js';
import { metricValue } from './helpers/metrics.js';
import { until } from './helpers/until.js';
import { spawnDaemonProc, spawnSupernodeProc } from './helpers/procs.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const blockShas = (piece: Buffer) => Array.from({ length: blockCountFor(piece.length) }, (_, b) => sha(piece.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE)));
/** A body arriving in 64 KiB chunks, as from a socket. */
const chunked = (data: Buffer) => Readable.from((function* () { for (let o = 0; o < data.length; o += 65536) yield data.subarray(o, o + 65536); })());

/** A streaming GET through a dfdaemon's forward proxy (absolute-form request line, as curl -x sends). */
function viaProxy(t: { teardown(fn: () => unknown): void }, proxyUrl: string, url: string) {
  const c = new Client(proxyUrl);
  t.teardown(() => c.destroy());
  return c.request({ method: 'GET', path: url });
}

t.test('the benchmark’s streamed blobs are the tests’ blobs', async (t) => {
  const size = 3 * MiB + 5;
  t.ok(Buffer.concat([...blobChunks(size, 9)]).equals(makeBlob(size, 9)));
});

t.test('writes to one data file go one at a time; a failed one fails only its caller', async (t) => {
  const dir = await tempDir(t);
  const fh = await open(join(dir, 'data'), 'w+');
  t.teardown(() => fh.close());
  // Count writes under way on this handle (the real FileHandle, its write wrapped to watch it).
  const real = fh.write.bind(fh) as (b: Buffer, o: number, l: number, p: number) => Promise<{ bytesWritten: number; buffer: Buffer }>;
  let now = 0;
  let most = 0;
  let failOnce = true;
  (fh as unknown as { write: typeof real }).write = async (b, o, l, p) => {
    most = Math.max(most, ++now);
    try {
      await new Promise((r) => setTimeout(r, 2));
      if (p === 3 * BLOCK_SIZE && failOnce) {
        failOnce = false;
        throw Object.assign(new Error('EIO (injected)'), { code: 'EIO' });
      }
      return await real(b, o, l, p);
    } finally {
      now--;
    }
  };
  const blocks = Array.from({ length: 8 }, (_, i) => makeBlob(BLOCK_SIZE, 300 + i));
  const results = await Promise.allSettled(blocks.map((b, i) => writeFully(fh, b, i * BLOCK_SIZE)));
  t.equal(most, 1, 'never two writes on the file at once');
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'], 'the failed write rejects its own caller, the ones after it still run');
  await writeFully(fh, blocks[3]!, 3 * BLOCK_SIZE);
  t.ok((await readFile(join(dir, 'data'))).equals(Buffer.concat(blocks)), 'every block where it belongs');
});

t.test('block bytes handed out from memory are held: their pooled buffer is not reused until the reader lets go', async (t) => {
  const dir = await tempDir(t);
  const length = 4 * BLOCK_SIZE;
  const fh = await open(join(dir, 'data'), 'w+');
  t.teardown(() => fh.close());
  await fh.truncate(3 * length);
  const pieces = [0, 1, 2].map((i) => makeBlob(length, 90 + i));
  // A reader waiting for block 1 of piece 0 takes a hold on its bytes as they are handed out.
  let held: HeldBlock | undefined;
  await writePiece(fh, 0, length, chunked(pieces[0]!), { onHashed: (b, _sha, data) => void (b === 1 && (held = holdBlock(data))) });
  const original = pieces[0]!.subarray(BLOCK_SIZE, 2 * BLOCK_SIZE);
  // Other pieces go through the pool meanwhile: the held bytes stay what they were.
  const seen = new Set<ArrayBufferLike>();
  await writePiece(fh, length, length, chunked(pieces[1]!), { onBlock: (_b, _sha, data) => void seen.add(data[0]!.buffer) });
  t.ok(Buffer.concat(held!.data as Buffer[]).equals(original), 'the held block is intact after more blocks went through the pool');
  t.notOk(seen.has(held!.data[0]!.buffer), 'its buffer was not handed to anyone else');
  held!.release();
  held!.release();
  // Let go: the buffer is the pool's again, and the next block uses it.
  const reused: ArrayBufferLike[] = [];
  await writePiece(fh, 2 * length, length, chunked(pieces[2]!), { onBlock: (_b, _sha, data) => void reused.push(data[0]!.buffer) });
  t.ok(reused.includes(held!.data[0]!.buffer), 'released, the buffer is reused');
  t.ok((await readFile(join(dir, 'data'))).equals(Buffer.concat(pieces)), 'every piece is on disk as sent');
});

t.test('a block handed to its readers lets them run before the rest of the same network read is hashed', async (t) => {
  const dir = await tempDir(t);
  const length = 4 * BLOCK_SIZE;
  const fh = await open(join(dir, 'data'), 'w+');
  t.teardown(() => fh.close());
  const piece = makeBlob(length, 95);
  const events: string[] = [];
  // The whole piece in one chunk, as one 1 MiB socket read delivers it; a reader waiting for block 0 sends it on
  // through a few promise hops (as the supernode's piece API does).
  const oneRead = { forEach: async (fn: (c: Buffer) => Promise<void> | void) => fn(piece), discard: () => {} };
  const reader = async (ready: Promise<void>) => {
    await ready;
    await Promise.resolve();
    events.push('reader sent block 0');
  };
  let handed!: () => void;
  const sent = reader(new Promise<void>((r) => (handed = r)));
  await writePiece(fh, 0, length, oneRead, {
    onHashed: (b) => {
      events.push(`hashed ${b}`);
      if (b === 0) handed();
    },
  });
  await sent;
  t.same(events, ['hashed 0', 'reader sent block 0', 'hashed 1', 'hashed 2', 'hashed 3']);
  t.ok((await readFile(join(dir, 'data'))).equals(piece), 'the piece is on disk as sent');
});

t.test('a piece read from disk: its first block goes out alone, the rest in reads of the pool\'s buffer size', async (t) => {
  const dir = await tempDir(t);
  const piece = makeBlob(8 * BLOCK_SIZE, 41);
  const path = join(dir, 'data');
  await writeFile(path, piece);
  const writes: number[] = [];
  const got: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push(chunk.length);
      got.push(Buffer.from(chunk));
      cb();
    },
  });
  // `block` is asked for the first block of every read: at least once per buffer's worth, so a caller's answer to it
  // (a file handed out meanwhile is to be hashed block by block) holds from the next read on.
  const asked: number[] = [];
  const block = async (b: number) => (asked.push(b), { sha: '' });
  // The reader needs block 5 first: the body starts there and wraps around.
  await serveBlocks(path, 0, piece.length, out, { framed: false, firstBlock: 5, pool: new BufferPool(MiB, 4), onDisk: () => true, block });
  t.ok(Buffer.concat(got).equals(Buffer.concat([piece.subarray(5 * BLOCK_SIZE), piece.subarray(0, 5 * BLOCK_SIZE)])), 'every byte, from block 5 on and wrapping around');
  t.equal(writes[0], BLOCK_SIZE, 'the block the reader waits on is written by itself, not behind a 1 MiB read');
  t.same(writes.slice(1), [2 * BLOCK_SIZE, MiB, BLOCK_SIZE], 'then blocks 6-7, and blocks 0-4 in 1 MiB reads');
  t.same(asked, [5, 6, 0, 4], 'asked again after every buffer\'s worth: blocks 0-3 are one read, block 4 the next');
  // A later piece of one answer (nobody waits on its first block): 1 MiB reads from its start.
  writes.length = 0;
  got.length = 0;
  asked.length = 0;
  await serveBlocks(path, 0, piece.length, out, { framed: false, firstAlone: false, pool: new BufferPool(MiB, 4), onDisk: () => true, block });
  t.ok(Buffer.concat(got).equals(piece));
  t.same(writes, [MiB, MiB], 'firstAlone: false: the whole piece in 1 MiB reads');
  t.same(asked, [0, 4], 'one read per buffer\'s worth, each asked for');
});

t.test('framed, a block\'s hash is written right behind its bytes, before the socket has taken them', async (t) => {
  // The downloader can use none of a block before its hash: a hash sent only once the bytes were taken waited for
  // whatever else the serving process did in between (on a seeding supernode, milliseconds).
  const dir = await tempDir(t);
  const piece = makeBlob(2 * BLOCK_SIZE, 43);
  const path = join(dir, 'data');
  await writeFile(path, piece);
  const shas = blockShas(piece);
  const hash = (b: number) => Buffer.from(shas[b]!, 'hex');
  for (const [how, block] of [
    ['from memory', async (b: number) => ({ sha: shas[b]!, data: [piece.subarray(b * BLOCK_SIZE, b * BLOCK_SIZE + 1000), piece.subarray(b * BLOCK_SIZE + 1000, (b + 1) * BLOCK_SIZE)] })],
    ['from disk', async (b: number) => ({ sha: shas[b]! })],
  ] as const) {
    // The socket takes nothing until the test lets it: each write's callback is held.
    const held: (() => void)[] = [];
    const got: Buffer[] = [];
    const out = new Writable({
      highWaterMark: 16 * MiB,
      write(chunk: Buffer, _enc, cb) {
        got.push(Buffer.from(chunk));
        held.push(() => cb());
      },
    });
    const done = serveBlocks(path, 0, piece.length, out, { framed: true, pool: new BufferPool(MiB, 4), block });
    await until(`${how}: block 0 and its hash written`, () => out.writableLength === BLOCK_SIZE + 32);
    t.equal(held.length, 1, `${how}: written while the first write is not taken yet`);
    // Let everything through, as it comes.
    let finished = false;
    void done.finally(() => (finished = true)).catch(() => {});
    while (!finished) {
      held.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    await done;
    t.ok(Buffer.concat(got).equals(Buffer.concat([piece.subarray(0, BLOCK_SIZE), hash(0), piece.subarray(BLOCK_SIZE), hash(1)])), `${how}: each block, then its hash`);
  }
});

t.test('a block that does not match is refused before a byte of it is written; the blocks before it are reported', async (t) => {
  const dir = await tempDir(t);
  const piece = makeBlob(3 * BLOCK_SIZE + 1000, 71);
  const expected = blockShas(piece);
  const bad = Buffer.from(piece);
  bad[BLOCK_SIZE + 5] ^= 0xff;
  const fh = await open(join(dir, 'data'), 'w+');
  t.teardown(() => fh.close());
  await fh.truncate(piece.length);
  const reported: number[] = [];
  await t.rejects(writePiece(fh, 0, piece.length, chunked(bad), { expected, onBlock: (b) => reported.push(b) }), { code: 'PIECE_CORRUPT' });
  t.same(reported, [0], 'block 0 was verified and reported; block 1 never');
  const onDisk = await readFile(join(dir, 'data'));
  t.ok(onDisk.subarray(0, BLOCK_SIZE).equals(piece.subarray(0, BLOCK_SIZE)), 'block 0 is on disk');
  t.ok(onDisk.subarray(BLOCK_SIZE, 2 * BLOCK_SIZE).equals(Buffer.alloc(BLOCK_SIZE)), 'no byte of the bad block reached the file');

  // A retry keeps block 0 (readers may be on it) and must still match it.
  const again: number[] = [];
  const blocks = await writePiece(fh, 0, piece.length, chunked(piece), { expected, have: (b) => b === 0, onBlock: (b) => again.push(b) });
  t.same(blocks, expected);
  t.same(again, [1, 2, 3], 'only new blocks are reported');
  await verifyStoredPiece(join(dir, 'data'), 0, piece.length, expected);
  const flipped = [...expected];
  flipped[3] = sha(Buffer.from('x'));
  await t.rejects(verifyStoredPiece(join(dir, 'data'), 0, piece.length, flipped), { code: 'PIECE_CORRUPT' }, 'a stored piece is checked block by block');
  // An abandoned attempt takes nothing more: a consumer still holding one of its chunks cannot write or report it.
  const sink = new PieceSink(fh, 0, piece.length, { expected, onBlock: (b) => t.fail(`block ${b} of an abandoned attempt was reported`) });
  t.equal(sink.feed(piece.subarray(0, 1000)), 1000);
  sink.drop();
  t.throws(() => sink.feed(piece, 1000), { code: 'PIECE_SHORT', message: /abandoned/ }, 'a feed after drop() throws');
  await t.rejects(sink.ready(), { code: 'PIECE_SHORT' });
  // Through a few reused buffers: more checks at once than buffers all finish, and a file cut short says so.
  await Promise.all(Array.from({ length: 9 }, () => verifyStoredPiece(join(dir, 'data'), 0, piece.length, expected)));
  // A piece that starts mid-file and ends in a short block.
  const at = 1005;
  const part = piece.subarray(at);
  await verifyStoredPiece(join(dir, 'data'), at, part.length, [0, 1, 2].map((b) => sha(part.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE))));
  await t.rejects(verifyStoredPiece(join(dir, 'data'), BLOCK_SIZE, piece.length, expected.slice(1)), { code: 'PIECE_SHORT' }, 'past the end of the file: short, not corrupt');
  t.equal(splitBlocks(blocks.join(''), piece.length)?.length, 4);
  t.equal(splitBlocks(blocks.join(''), 5 * BLOCK_SIZE), undefined, 'a record of the wrong shape is not a piece');
});

t.test('the piece store: blocks left by an earlier attempt are built on only if they are what the supernode recorded', async (t) => {
  const dir = await tempDir(t);
  const store = new PieceStore<{ g: TaskGeometry }>({ dataDir: dir, geometry: (m) => m.g, make: (init) => new StoredTask(init) });
  await store.start();
  t.teardown(() => store.stop());
  const piece = makeBlob(4 * MiB, 81);
  const shas = blockShas(piece);
  const task = await store.create({ g: { taskId: 'a'.repeat(64), contentLength: piece.length, pieceSize: 4 * MiB, pieceCount: 1 } });
  // An attempt straight from an origin that sent other bytes for block 1, and died after 2 blocks.
  const other = Buffer.from(piece);
  other[BLOCK_SIZE + 9] ^= 1;
  const dying = Readable.from((function* () { yield other.subarray(0, 2 * BLOCK_SIZE); throw new Error('origin died'); })());
  await t.rejects(task.writePiece(0, dying), /origin died/);
  t.ok(task.hasBlock(0, 1), 'its blocks were kept');
  const ended: number[] = [];
  task.on('fetch:ended', (n) => ended.push(n));
  // A peer's copy, checked against the supernode's hashes: block 1 on disk is not theirs, so nothing is reused.
  t.same(await task.writePiece(0, chunked(piece), { expected: shas }), shas);
  await task.recheck();
  t.ok((await readFile(store.dataPath('a'.repeat(64)))).equals(piece), 'the data file holds the recorded bytes');
  t.same(ended, [], 'a fetch that ends with the piece is not "ended without it"');

  // Framed: a stored block the supernode's hash disagrees with fails that attempt and is dropped, so the next works.
  const t2 = await store.create({ g: { taskId: 'b'.repeat(64), contentLength: piece.length, pieceSize: 4 * MiB, pieceCount: 1 } });
  await t.rejects(t2.writePiece(0, Readable.from((function* () { yield other.subarray(0, 2 * BLOCK_SIZE); throw new Error('cut'); })())), /cut/);
  const framed = Buffer.concat(shas.flatMap((h, b) => [piece.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE), Buffer.from(h, 'hex')]));
  await t.rejects(t2.writePiece(0, chunked(framed), { framed: true }), { code: 'PIECE_CORRUPT' });
  t.notOk(t2.hasBlock(0, 0), 'the disagreeing attempt’s blocks are gone');
  t.same(await t2.writePiece(0, chunked(framed), { framed: true }), shas, 'and the next attempt succeeds');

  // A seeding supernode hands a block out from memory before writing it: a reader waiting gets its bytes and hash at
  // once, and any later attempt must bring those same bytes, until every attempt failed and the piece starts afresh.
  const t4 = await store.create({ g: { taskId: 'd'.repeat(64), contentLength: piece.length, pieceSize: 4 * MiB, pieceCount: 1 } });
  const waiting = t4.waitBlock(0, 2);
  t4.hashed(0, 2, shas[2]!, [piece.subarray(2 * BLOCK_SIZE, 3 * BLOCK_SIZE)]);
  t.ok(Buffer.concat(((await waiting)?.data ?? []) as Buffer[]).equals(piece.subarray(2 * BLOCK_SIZE, 3 * BLOCK_SIZE)), 'the waiting reader got the block from memory');
  t.equal(t4.blockSha(0, 2), shas[2], 'with its hash');
  t.notOk(t4.hasBlock(0, 2), 'not counted as on disk');
  t.same(t4.expectedBlocks(0).map((s, b) => (s === undefined ? null : b)).filter((b) => b !== null), [2], 'the next attempt must match the handed-out block');
  const changed = Buffer.from(piece);
  changed[2 * BLOCK_SIZE + 1] ^= 1;
  const fh4 = await open(store.dataPath('d'.repeat(64)), 'r+');
  t.teardown(() => fh4.close());
  await t.rejects(writePiece(fh4, 0, piece.length, chunked(changed), { expected: t4.expectedBlocks(0) }), { code: 'PIECE_CORRUPT' }, 'other bytes for it are refused');
  t4.forgetAttempts(0);
  t.same(t4.expectedBlocks(0).filter((s) => s !== undefined), [], 'after every attempt failed, nothing is expected any more');

  // Waiting with a signal that already fired rejects at once (no listener left behind, no hang).
  const t3 = await store.create({ g: { taskId: 'c'.repeat(64), contentLength: piece.length, pieceSize: 4 * MiB, pieceCount: 1 } });
  const gone = new AbortController();
  gone.abort(new Error('reader gone'));
  await t.rejects(t3.waitBlock(0, 0, { signal: gone.signal }), /reader gone/);
  await t.rejects(t3.waitPiece(0, { signal: gone.signal }), /reader gone/);
  const endedC: number[] = [];
  t3.on('fetch:ended', (n) => endedC.push(n));
  t3.beginFetch(0)();
  t.same(endedC, [0], 'a fetch that ends without the piece says so (relays stop waiting)');
});

t.test('back to source, cancelled: the call rejects with the abort, never returns as if its pieces were fetched', async (t) => {
  const dir = await tempDir(t);
  const store = new LocalStore(dir);
  await store.start();
  t.teardown(() => store.stop());
  const info: TaskInfo = { taskId: 'f'.repeat(64), contentLength: 4 * MiB, pieceSize: MiB, pieceCount: 4, public: true };
  const task = await store.open(info, 'http://origin.test/blob');
  const stopped = new AbortController();
  stopped.abort(new Error('the run was stopped'));
  let asked = 0;
  const origin = createServer((_req, res) => (asked++, res.end()));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => origin.close(r)));
  const req = { url: `http://127.0.0.1:${(origin.address() as { port: number }).port}/blob`, headers: {}, dispatcher: new Agent(), parallel: 2, signal: stopped.signal, onBytes: () => {} };
  await t.rejects(backToSource(task, req, { contentLength: info.contentLength, acceptsRanges: true }), { message: 'the run was stopped' });
  t.equal(asked, 0, 'nothing was fetched');
  t.equal(task.missing().length, 4);
});

t.test('a read is not held behind the cache record; a removed task is not reopened or written back', async (t) => {
  const dir = await tempDir(t);
  const store = new LocalStore(dir);
  await store.start();
  t.teardown(() => store.stop());
  const blob = makeBlob(2 * MiB, 83);
  const shas = blockShas(blob);
  const info: TaskInfo = { taskId: 'e'.repeat(64), contentLength: blob.length, pieceSize: 2 * MiB, pieceCount: 1, public: true };
  const task = await store.open(info, 'http://origin.test/blob');
  await task.writePiece(0, chunked(blob), { expected: shas });
  // A record write that never finishes (a stuck database) must not keep the bytes from the reader: the task is marked
  // used once the read is done, and the write is not waited for.
  const marks: unknown[] = [];
  const persist = task.updateMeta.bind(task);
  task.updateMeta = (patch) => (marks.push(patch), new Promise<void>(() => {}));
  const got: Buffer[] = [];
  const out = new Writable({ write: (c: Buffer, _e, cb) => (got.push(Buffer.from(c)), cb()) });
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the read waited for the record write')), 5_000)));
  await Promise.race([streamTask({ task, done: Promise.resolve(task), want: () => true }, out, { start: 1000, end: 300_000, pool: new BufferPool(MiB, 2) }), stuck]);
  clearTimeout(timer);
  t.ok(Buffer.concat(got).equals(blob.subarray(1000, 300_001)), 'the range was served');
  t.equal(marks.length, 1, 'and the task marked used');
  task.updateMeta = persist;

  // Removed (GC, a digest mismatch) while a reader still holds the object: nothing reopens its data file (a handle on
  // the unlinked file would be cached under the path a new entry of the same id gets), nor writes its record back.
  await store.remove(info.taskId);
  await t.rejects(task.withFile(async () => 0), { code: 'PIECE_MISSING' }, 'its file is not reopened for a read');
  await t.rejects(task.writePiece(0, chunked(blob), { expected: shas }), { code: 'PIECE_MISSING' }, 'nor for a write');
  t.equal(store.openFiles, 0, 'no handle was cached for it');
  task.touch();
  await task.updateMeta({ lastAccess: Date.now() });
  await store.stop();
  const again = new LocalStore(dir);
  await again.start();
  t.teardown(() => again.stop());
  t.equal(again.get(info.taskId), undefined, 'after a restart the task is still gone');
});

t.test('a file handed out to a local client while an answer reads it: the answer hashes what it reads from then on, and is cut before a changed block', async (t) => {
  const dir = await tempDir(t);
  const store = new LocalStore(dir);
  await store.start();
  t.teardown(() => store.stop());
  const blob = makeBlob(4 * MiB, 86);
  const info: TaskInfo = { taskId: 'c'.repeat(64), contentLength: blob.length, pieceSize: 4 * MiB, pieceCount: 1, public: true };
  const task = await store.open(info, 'http://origin.test/blob');
  await task.writePiece(0, chunked(blob), { expected: blockShas(blob) });
  await task.markComplete();
  // The client takes nothing until the test lets it.
  const held: (() => void)[] = [];
  const got: Buffer[] = [];
  const out = new Writable({ highWaterMark: 16 * MiB, write: (c: Buffer, _e, cb) => (got.push(Buffer.from(c)), held.push(() => cb())) });
  const answer = streamTask({ task, done: Promise.resolve(task), want: () => true }, out, { start: 0, end: blob.length - 1, pool: new BufferPool(MiB, 4) });
  answer.catch(() => {});
  // The first block goes alone; the blocks after it are read from disk in one go, already decided on.
  await until('the answer\'s first block written', () => held.length > 0);
  held.shift()!();
  await until('the answer\'s next read written', () => held.length > 0);
  // Meanwhile dfget is handed the file, links it, and its user changes a byte further on, putting the mtime back:
  // the stamp cannot tell, only the bytes can.
  await task.handOut();
  const at = 10 * BLOCK_SIZE + 7;
  const mtime = (await stat(task.dataPath, { bigint: true })).mtimeNs;
  const fh = await open(task.dataPath, 'r+');
  await fh.write(Buffer.from([blob[at]! ^ 0xff]), 0, 1, at);
  await fh.close();
  execFileSync('touch', ['-m', '-d', `@${mtime / 1_000_000_000n}.${String(mtime % 1_000_000_000n).padStart(9, '0')}`, task.dataPath]);
  let finished = false;
  void answer.finally(() => (finished = true)).catch(() => {});
  while (!finished) {
    held.shift()?.();
    await new Promise((r) => setImmediate(r));
  }
  await t.rejects(answer, { code: 'PIECE_MISSING' }, 'cut at the changed block');
  const sent = Buffer.concat(got);
  t.ok(sent.length <= at - (at % BLOCK_SIZE), `nothing of the changed block was sent (${sent.length} bytes)`);
  t.ok(sent.equals(blob.subarray(0, sent.length)), 'what was sent is the blob\'s');
});

t.test('serveCheckedRange: any range, in big reads, each block hashed before a byte of it is written', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'data');
  const pieceSize = 3 * MiB;
  const blob = makeBlob(7 * MiB + 1234, 87);
  await writeFile(path, blob);
  // Block k's hash, as the pieces record them (blocks never straddle pieces).
  const shas = Array.from({ length: Math.ceil(blob.length / BLOCK_SIZE) }, (_, k) => sha(blob.subarray(k * BLOCK_SIZE, Math.min(blob.length, (k + 1) * BLOCK_SIZE))));
  const fh = await open(path, 'r');
  t.teardown(() => fh.close());
  // Two buffers: the chunk being sent and the one read ahead (an answer needing more would wait here for good).
  const pool = new BufferPool(MiB, 2);
  const entered: number[] = [];
  const serve = async (from: number, to: number) => {
    const got: Buffer[] = [];
    const out = new Writable({ write: (c: Buffer, _e, cb) => (got.push(Buffer.from(c)), cb()) });
    const done = serveCheckedRange(fh, from, to, out, { size: blob.length, pieceSize, blockSha: (k) => shas[k], enterPiece: async (n) => void entered.push(n), label: 'test', pool });
    return { done, got };
  };
  for (const [from, to] of [[0, blob.length - 1], [1000, 1000], [BLOCK_SIZE - 1, 3 * MiB + 5], [7 * MiB, blob.length - 1]]) {
    entered.length = 0;
    const { done, got } = await serve(from!, to!);
    await done;
    t.ok(Buffer.concat(got).equals(blob.subarray(from!, to! + 1)), `bytes ${from}-${to}`);
    t.same(entered, Array.from({ length: Math.floor(to! / pieceSize) - Math.floor(from! / pieceSize) + 1 }, (_, i) => Math.floor(from! / pieceSize) + i), 'each piece entered once, in order');
  }
  // One block changed on disk: the answer stops before any byte of the read holding it.
  const bad = 5 * BLOCK_SIZE + 9;
  const w = await open(path, 'r+');
  await w.write(Buffer.from([blob[bad]! ^ 1]), 0, 1, bad);
  await w.close();
  const { done, got } = await serve(0, blob.length - 1);
  await t.rejects(done, { code: 'PIECE_CORRUPT' });
  const sent = Buffer.concat(got);
  t.ok(sent.length <= bad - (bad % BLOCK_SIZE), `nothing of the changed block went out (${sent.length} bytes)`);
  t.ok(sent.equals(blob.subarray(0, sent.length)), 'what went out is the blob\'s');
  // Every buffer came back, the one read ahead included.
  const both = await Promise.race([Promise.all([pool.acquire(), pool.acquire()]), sleep(2000, undefined, { ref: false }).then(() => [])]);
  t.equal(both.length, 2, 'the pool has both its buffers again');
});

t.test('a task removed while a new download opens it again keeps the new one whole; a body its removed task never read is let go', async (t) => {
  const dir = await tempDir(t);
  const store = new LocalStore(dir);
  await store.start();
  const blob = makeBlob(2 * MiB, 84);
  const info: TaskInfo = { taskId: 'd'.repeat(64), contentLength: blob.length, pieceSize: 2 * MiB, pieceCount: 1, public: true };
  const old = await store.open(info, 'http://origin.test/blob');
  // GC (or a digest mismatch) removes the task; a new download of the same blob opens it while that is under way.
  const removal = store.remove(info.taskId);
  await new Promise((r) => setImmediate(r));
  const fresh = await store.open(info, 'http://origin.test/blob');
  await removal;
  t.equal(store.get(info.taskId), fresh, 'the new task is the one kept');
  await fresh.writePiece(0, chunked(blob), { expected: blockShas(blob) });
  t.ok((await readFile(fresh.dataPath)).equals(blob), 'its data file was not deleted under it: its piece is written');

  // The removed object, asked to write: its file is not opened again, and the body handed to it (an origin or peer
  // response) is destroyed rather than left holding its connection.
  const body = chunked(blob);
  await t.rejects(old.writePiece(0, body, { expected: blockShas(blob) }), { code: 'PIECE_MISSING' });
  t.ok(body.destroyed, 'the unread body is let go');
  await store.stop();
  const again = new LocalStore(dir);
  await again.start();
  t.teardown(() => again.stop());
  t.ok(again.get(info.taskId)?.has(0), 'after a restart the new task and its piece are there');
});

t.test('a data file with no record (a crash between the two) is removed at start; a task’s own file and others stay', async (t) => {
  const dir = await tempDir(t);
  const first = new LocalStore(dir);
  await first.start();
  const info: TaskInfo = { taskId: 'c'.repeat(64), contentLength: MiB, pieceSize: MiB, pieceCount: 1, public: true };
  await first.open(info, 'http://origin.test/kept');
  await first.stop();
  const stray = join(dir, 'tasks', `${'d'.repeat(64)}.data`);
  const other = join(dir, 'tasks', 'notes.txt');
  for (const f of [stray, other]) await (await open(f, 'w')).close();
  const store = new LocalStore(dir);
  await store.start();
  t.teardown(() => store.stop());
  const names = (await readdir(join(dir, 'tasks'))).sort();
  t.same(names, [`${'c'.repeat(64)}.data`, 'notes.txt'], 'the orphan is gone, the task’s file and a foreign file stay');
  t.ok(store.get(info.taskId), 'and the task is there');
});

t.test('a record whose data file is gone (a removal cut short on a full disk) is dropped at start, not served from', async (t) => {
  const dir = await tempDir(t);
  const first = new LocalStore(dir);
  await first.start();
  const gone: TaskInfo = { taskId: 'a'.repeat(64), contentLength: MiB, pieceSize: MiB, pieceCount: 1, public: true };
  const kept: TaskInfo = { ...gone, taskId: 'b'.repeat(64) };
  await first.open(gone, 'http://origin.test/gone');
  await first.open(kept, 'http://origin.test/kept');
  await first.stop();
  await rm(join(dir, 'tasks', `${gone.taskId}.data`));
  const store = new LocalStore(dir);
  await store.start();
  t.notOk(store.get(gone.taskId), 'the task without its file is not loaded');
  t.ok(store.get(kept.taskId), 'the other one is');
  await store.stop();
  const again = new LocalStore(dir);
  await again.start();
  t.teardown(() => again.stop());
  t.same([...again.tasks()].map((x) => x.info.taskId), [kept.taskId], 'and its record is gone from the index for good');
});

t.test('a full disk (real tmpfs): an index write says so, and a removal still frees its file though the index cannot log', { skip: process.getuid?.() === 0 ? false : 'needs root to mount a tmpfs' }, async (t) => {
  const dir = await tempDir(t);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
  t.teardown(() => execFileSync('umount', ['-l', dir]));
  const store = new LocalStore(dir);
  await store.start();
  t.teardown(() => store.stop().catch(() => {}));
  const big: TaskInfo = { taskId: '1'.repeat(64), contentLength: 2 * MiB, pieceSize: MiB, pieceCount: 2, public: true };
  await store.open(big, 'http://origin.test/big');
  const data = join(dir, 'tasks', `${big.taskId}.data`);
  await writeFile(data, makeBlob(2 * MiB, 30));
  // Fill what is left, then make index writes until the index's log has no room either.
  await writeFile(join(dir, 'filler'), Buffer.alloc(4 * MiB)).catch((err: NodeJS.ErrnoException) => t.equal(err.code, 'ENOSPC', 'the disk is full'));
  let full: unknown;
  for (let i = 0; i < 10_000 && !full; i++) {
    const id = (i + 2).toString(16).padStart(64, '0');
    await store.open({ ...big, taskId: id, contentLength: MiB, pieceCount: 1 }, `http://origin.test/${i}`).catch((err: unknown) => (full = err));
  }
  // LevelDB says only "IO error" (its errno is in the message): the filesystem is asked.
  t.equal((full as { code?: string }).code, 'DF_DISK_FULL', `an index write on the full disk is a disk-full error (${(full as Error)?.message})`);
  t.equal(((full as Error).cause as { code?: string }).code, 'INDEX_DISK_FULL');
  t.ok(isDiskFull((full as Error).cause));
  t.equal((full as { status?: number }).status, 507);
  // The removal GC makes under pressure: without its file going first it would fail, and the space never come back.
  await store.remove(big.taskId);
  await t.rejects(readFile(data), { code: 'ENOENT' }, 'the data file is gone');
  t.notOk(store.get(big.taskId));
  await store.stop();
  const again = new LocalStore(dir);
  await again.start();
  t.teardown(() => again.stop());
  t.notOk(again.get(big.taskId), 'after a restart the removed task stays removed');
});

t.test('the task index recovers from a full disk that hit a compaction (LevelDB keeps that error until reopened)', { skip: process.getuid?.() === 0 ? false : 'needs root to mount a tmpfs' }, async (t) => {
  const dir = await tempDir(t);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', dir]);
  t.teardown(() => execFileSync('umount', ['-l', dir]));
  const index = new TaskIndex<object>(join(dir, 'index'));
  await index.start();
  t.teardown(() => index.stop().catch(() => {}));
  const id = '7'.repeat(64);
  // Just under LevelDB's 4 MiB write buffer, then a disk with room for the log's next records but not for the table
  // file the buffer is compacted into.
  const value = () => randomBytes(1500).toString('base64');
  let n = 0;
  // ~2,080 bytes a record (key and value): 1,900 fill 3.95 of the 4 MiB, the next hundred or so go in the log, the
  // table file does not fit.
  for (; n < 1900; n++) await index.putPiece(id, n, value());
  const { bavail, bsize } = await statfs(dir);
  await writeFile(join(dir, 'filler'), Buffer.alloc(bavail * bsize - 1024 * 1024));
  let full: unknown;
  for (; n < 4000 && !full; n++) await index.putPiece(id, n, value()).catch((err: unknown) => (full = err));
  t.equal((full as { code?: string }).code, 'INDEX_DISK_FULL', 'the full disk is reported');
  await sleep(200); // the failed compaction's thread settles
  await rm(join(dir, 'filler'));
  await index.putPiece(id, 999_999, 'after');
  t.equal((await index.pieces(id)).get(999_999), 'after', 'with room again, the index takes writes, not the old error for good');
  t.equal(index.reopens, 1, 'having reopened the database once (LevelDB kept the compaction\'s error)');
  t.equal((await index.pieces(id)).get(5)?.length, 2000, 'and kept what it had');
});

t.test('a piece another reader found bad and dropped: a reader of a finished download gets an error, not a wait for good', async (t) => {
  const dir = await tempDir(t);
  const blob = makeBlob(2 * MiB, 84);
  const info: TaskInfo = { taskId: 'f'.repeat(64), contentLength: blob.length, pieceSize: MiB, pieceCount: 2, public: true };
  const first = new LocalStore(dir);
  await first.start();
  const written = await first.open(info, 'http://origin.test/blob');
  for (const n of [0, 1]) await written.writePiece(n, chunked(blob.subarray(n * MiB, (n + 1) * MiB)), { expected: blockShas(blob.subarray(n * MiB, (n + 1) * MiB)) });
  await written.markComplete();
  await first.stop();
  // Piece 1 goes bad on disk while the daemon is down; after the restart nothing has read it back yet.
  const fh = await open(join(dir, 'tasks', `${info.taskId}.data`), 'r+');
  await fh.write(Buffer.from([0xff]), 0, 1, MiB + 5);
  await fh.close();
  const store = new LocalStore(dir);
  await store.start();
  t.teardown(() => store.stop());
  const task = store.get(info.taskId)!;
  t.ok(task.complete, 'the cache entry is complete');
  const pool = new BufferPool(MiB, 4);
  const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
  // A finished download takes no new wants (its run is over).
  const ended = { task, done: Promise.resolve(task), want: () => false };
  await t.rejects(streamTask(ended, sink(), { start: 0, end: blob.length - 1, pool }), { code: 'PIECE_CORRUPT' }, 'the first reader finds piece 1 bad');
  t.notOk(task.has(1), 'and it is dropped');
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the second reader waits for a piece nobody fetches')), 3_000)));
  await t.rejects(Promise.race([streamTask(ended, sink(), { start: MiB, end: blob.length - 1, pool }), hang]), { code: 'DF_PIECE_FAILED' }, 'the next reader is told, at once');
  clearTimeout(timer);
  t.notOk(task.inUse, 'and lets go of the task');
});

t.test('framed bodies: each block is checked against the hash that follows it', async (t) => {
  const dir = await tempDir(t);
  const piece = makeBlob(2 * MiB + 7, 72);
  const shas = blockShas(piece);
  const frame = (blocks: string[]) =>
    Buffer.concat(blocks.flatMap((h, b) => [piece.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE), Buffer.from(h, 'hex')]));
  const fh = await open(join(dir, 'data'), 'w+');
  t.teardown(() => fh.close());
  t.same(await writePiece(fh, 0, piece.length, chunked(frame(shas)), { framed: true }), shas);
  const lying = [...shas];
  lying[2] = sha(Buffer.from('not it'));
  await t.rejects(writePiece(fh, 0, piece.length, chunked(frame(lying)), { framed: true }), { code: 'PIECE_CORRUPT' });
  await t.rejects(writePiece(fh, 0, piece.length, chunked(frame(shas).subarray(0, -10)), { framed: true }), { code: 'PIECE_SHORT' });
});

t.test('a body that starts at a block in the middle and wraps around is written and checked block by block', async (t) => {
  const dir = await tempDir(t);
  const piece = makeBlob(4 * BLOCK_SIZE + 123, 78);
  const shas = blockShas(piece);
  const fh = await open(join(dir, 'data'), 'w+');
  t.teardown(() => fh.close());
  // Blocks 3, 4, 0, 1, 2: what a supernode sends a reader who needs block 3 first.
  const order = [3, 4, 0, 1, 2];
  const rotated = Buffer.concat(order.map((b) => piece.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE)));
  const seen: number[] = [];
  t.same(await writePiece(fh, 0, piece.length, chunked(rotated), { expected: shas, firstBlock: 3, onBlock: (b) => seen.push(b) }), shas);
  t.same(seen, order, 'each block is reported as it lands, the reader’s first');
  t.ok((await readFile(join(dir, 'data'))).subarray(0, piece.length).equals(piece));
  const framed = Buffer.concat(order.flatMap((b) => [piece.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE), Buffer.from(shas[b]!, 'hex')]));
  t.same(await writePiece(fh, 0, piece.length, chunked(framed), { framed: true, firstBlock: 3 }), shas);
  await t.rejects(writePiece(fh, 0, piece.length, chunked(rotated.subarray(1)), { expected: shas, firstBlock: 3 }), { code: 'PIECE_CORRUPT' });
  await t.rejects(writePiece(fh, 0, piece.length, chunked(rotated), { expected: shas, firstBlock: 5 }), { code: 'PIECE_SHORT' });
  // How servers read `?from=`: absent or past the end is block 0, junk is for the server to refuse or ignore.
  t.same([firstBlockParam(undefined, 5), firstBlockParam('3', 5), firstBlockParam('5', 5), firstBlockParam('-1', 5), firstBlockParam('1e3', 5)], [0, 3, 0, 'bad', 'bad']);
});

t.test('the whole-blob digest takes in-order blocks as they land and reads back only what landed ahead', async (t) => {
  const dir = await tempDir(t);
  const blob = makeBlob(10 * MiB + 3, 73);
  const path = join(dir, 'data');
  const fh = await open(path, 'w+');
  t.teardown(() => fh.close());
  await fh.truncate(blob.length);
  const meta = { taskId: 'x', origin: '', digest: `sha256:${sha(blob)}`, contentLength: blob.length, pieceSize: 4 * MiB, pieceCount: 3, createdAt: 0, acceptsRanges: true };
  const seeded = new Set<number>();
  const ac = new AbortController();
  const check = new DigestCheck(meta, { seeded: (n) => seeded.has(n), dataPath: path, signal: ac.signal });
  // Pieces land 1, 0, 2: piece 1 is ahead of the prefix (read back later), 0 and 2 are taken as they land.
  for (const n of [1, 0, 2]) {
    const part = blob.subarray(n * 4 * MiB, (n + 1) * 4 * MiB);
    await writePiece(fh, n * 4 * MiB, part.length, chunked(part), { onBlock: (b, _sha, data) => check.offer(n, b, data) });
    seeded.add(n);
    t.equal(await check.advance(), n === 2 ? 'match' : 'pending');
  }
  t.equal(check.readBackBytes, 4 * MiB, 'only piece 1 was read back');
  t.equal(check.inlineBytes, blob.length - 4 * MiB);

  // A whole-object read (no Range) is all in order: nothing is read back.
  const fh2 = await open(join(dir, 'whole'), 'w+');
  t.teardown(() => fh2.close());
  const check2 = new DigestCheck(meta, { seeded: () => true, dataPath: join(dir, 'whole'), signal: ac.signal });
  const roots: string[] = [];
  await writeWholeStream(fh2, chunked(blob), {
    pieceSize: 4 * MiB,
    length: blob.length,
    onBlock: (n, b, _s, data) => check2.offer(n, b, data),
    onPiece: async (_n, blocks) => void roots.push(pieceRoot(blocks)),
  });
  t.equal(await check2.advance(), 'match');
  t.equal(check2.readBackBytes, 0);
  t.equal(roots.length, 3);
});

t.test('the size probe brings the first block: a blob of one block costs the origin one GET, a bigger one no byte twice', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const small = makeBlob(100 * 1024 + 3, 81);
  const big = makeBlob(MiB + 5, 82);
  const [s, b] = [await pushBlob(reg.url, 'team/small', small), await pushBlob(reg.url, 'team/two', big)];
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const gets = (digest: string) => reg.access.filter((l) => l.method === 'GET' && l.path.includes(`/blobs/${digest}`)).map((l) => l.bytes);

  const r = await getViaProxy(d.proxyUrl, s.url);
  t.equal(`sha256:${sha(r.body)}`, s.digest, 'the small blob, whole');
  t.equal(await reg.settledBytesServed(s.digest, small.length), small.length, 'its bytes once');
  t.same(gets(s.digest), [small.length], 'in one GET: the size probe, whose answer was the whole blob');
  const taskId = r.headers['x-damselfly-task-id'] as string;
  t.ok(sn.store.pieceSha(taskId, 0), 'recorded with the probe, before any piece was asked for');
  t.equal(sn.store.get(taskId)?.verified, true, 'and checked against its digest');

  const r2 = await getViaProxy(d.proxyUrl, b.url);
  t.equal(`sha256:${sha(r2.body)}`, b.digest, 'the two-piece blob, whole');
  t.equal(await reg.settledBytesServed(b.digest, big.length), big.length, 'its bytes once: piece 0 was asked from its second block');
  t.same(gets(b.digest).sort((x, y) => x - y), [5, BLOCK_SIZE, MiB - BLOCK_SIZE], 'the probe (block 0), the rest of piece 0, piece 1');
});

t.test('a registration arriving while the probe’s first block is still coming waits for it: block 0 is asked for once', async (t) => {
  const blob = makeBlob(2 * MiB + 9, 83);
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let probing!: () => void;
  const probeAt = new Promise<void>((r) => (probing = r));
  const origin = await shapedOrigin(t, blob, (i, range, res) => {
    if (i !== 0 || !range) return;
    // The size probe: its head and part of its block now, the rest once released.
    res.writeHead(206, { 'content-length': range.end - range.start + 1, 'content-range': `bytes ${range.start}-${range.end}/${blob.length}` });
    res.write(blob.subarray(0, 100 * 1024));
    probing();
    void released.then(() => res.end(blob.subarray(100 * 1024, range.end + 1)));
    return true;
  });
  const sn = await startSupernode(t);
  const [p1, p2] = await Promise.all([rawPeer(sn.url, 'n1', TEST_SECRET), rawPeer(sn.url, 'n2', TEST_SECRET)]);
  t.teardown(() => (p1.close(), p2.close()));
  for (const [p, id] of [[p1, 'n1'], [p2, 'n2']] as const) t.ok((await p.call({ type: 'peer:hello', peerId: id, version: PROTOCOL_VERSION })).ok);
  const events: string[] = [];
  const first = p1.call<TaskInfo>({ type: 'task:register', url: origin.url }).then((r) => (events.push('first registered'), r));
  await probeAt;
  // The task is in the store (its size known) while its first block is still coming.
  for (let i = 0; i < 500 && !sn.store.get(taskIdFor(new URL(origin.url))); i++) await new Promise((r) => setTimeout(r, 5));
  t.ok(sn.store.get(taskIdFor(new URL(origin.url))), 'the task exists, its first block not yet');
  const second = p2.call<TaskInfo>({ type: 'task:register', url: origin.url }).then((r) => (events.push('second registered'), r));
  // Long enough for the second registration to be answered if it did not wait.
  await new Promise((r) => setTimeout(r, 300));
  events.push('first block released');
  release();
  const [a, b] = (await Promise.all([first, second])) as { ok: boolean; result?: TaskInfo }[];
  t.ok(a!.ok && b!.ok, 'both registered');
  t.equal(events[0], 'first block released', 'neither registration was answered while the probe’s first block was still coming');
  const id = b!.result!.taskId;
  t.ok(sn.store.pieces(id)?.hasBlock(0, 0), 'the first block is in');
  // The second peer reads from the start of piece 0: its seeding asks the origin for the rest of the piece only.
  const want = (await p2.call({ type: 'pieces:want', taskId: id, want: [0], max: 1, readers: [{ piece: 0, block: 0 }] })) as { ok: boolean };
  t.ok(want.ok);
  for (let i = 0; i < 500 && !sn.store.pieceSha(id, 0); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(sn.store.pieceSha(id, 0), 'piece 0 seeded');
  t.same(origin.ranges, [`bytes=0-${BLOCK_SIZE - 1}`, `bytes=${BLOCK_SIZE}-${MiB - 1}`], 'block 0 once (the probe), then the rest of piece 0');
});

t.test('a probe whose first block stalls: the registration goes on without it, and piece 0’s own fetch brings it', async (t) => {
  const blob = makeBlob(MiB + 7, 86);
  // The probe's answer sends its head and 100 KiB, then nothing more, ever; later requests are answered normally.
  const origin = await shapedOrigin(t, blob, (i, range, res) => {
    if (i !== 0 || !range) return;
    res.writeHead(206, { 'content-length': range.end - range.start + 1, 'content-range': `bytes ${range.start}-${range.end}/${blob.length}` });
    res.write(blob.subarray(0, 100 * 1024));
    return true;
  });
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const r = await getViaProxy(d.proxyUrl, origin.url);
  t.ok(r.body.equals(blob), 'the blob, whole');
  t.equal(origin.ranges[0], `bytes=0-${BLOCK_SIZE - 1}`, 'the probe, left stalled');
  t.ok(origin.ranges.includes(`bytes=0-${MiB - 1}`), 'piece 0 asked for whole, its first block included');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'supernode' }), blob.length, 'all of it through the supernode: the registration did not time out');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'back_to_source' }), 0, 'nothing fetched around it');
});

t.test('an origin that stops honouring Range after the probe: piece 0 falls back to one sequential read at once', async (t) => {
  const blob = makeBlob(MiB + 3 * BLOCK_SIZE, 84);
  // Range for the probe only; then the whole object, as a pull-through cache might answer.
  const good = await shapedOrigin(t, blob, (i, _range, res) => {
    if (i === 0) return;
    res.writeHead(200, { 'content-length': blob.length }).end(blob);
    return true;
  });
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const r = await getViaProxy(d.proxyUrl, good.url);
  t.ok(r.body.equals(blob), 'the blob, whole, through the fallback to one sequential read');
  t.equal(good.ranges[0], `bytes=0-${BLOCK_SIZE - 1}`, 'the probe brought the first block');
  t.ok(good.ranges.includes(`bytes=${BLOCK_SIZE}-${MiB - 1}`), 'piece 0 was asked for from its second block, and refused Range');
  t.equal(good.ranges.filter((r) => r === 'none').length, 1, 'one sequential read for the whole blob');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_piece_failures_total'), 0, 'and no piece failed on the way');
});

t.test('a blob of one block whose bytes are not its digest is refused at registration, and stays refused', async (t) => {
  const data = makeBlob(40 * 1024, 85);
  const o = await shapedOrigin(t, data, () => {});
  const sn = await startSupernode(t);
  const p = await rawPeer(sn.url, 'reg', TEST_SECRET);
  t.teardown(() => p.close());
  t.ok((await p.call({ type: 'peer:hello', peerId: 'reg', version: PROTOCOL_VERSION })).ok);
  const wrong = `sha256:${'a'.repeat(64)}`;
  const first = (await p.call({ type: 'task:register', url: o.url, digest: wrong })) as { ok: boolean; error?: { code: string } };
  t.equal(first.error?.code, 'SN_DIGEST_MISMATCH', 'the probe brought the whole blob, and it is not the digest');
  const again = (await p.call({ type: 'task:register', url: o.url, digest: wrong })) as { ok: boolean; error?: { code: string } };
  t.equal(again.error?.code, 'SN_DIGEST_MISMATCH', 'refused again, without asking the origin');
  t.equal(o.ranges.length, 1, 'one origin request in all');
  t.equal(sn.store.get(taskIdFor(new URL(o.url), wrong)), undefined, 'nothing of it kept');
});

t.test('a piece whose every attempt failed starts afresh for the digest check too: other bytes for a block it had hashed are caught', async (t) => {
  // One piece of two blocks. The size probe brings the right block 0 (the digest check takes it as it lands); block 1
  // fails until the piece's attempts are spent and its blocks forgotten; then the origin sends other bytes for
  // block 0 and the right block 1.
  const blob = makeBlob(2 * BLOCK_SIZE, 87);
  const digest = `sha256:${sha(blob)}`;
  const other = Buffer.from(blob);
  other[100] ^= 0xff;
  let mode: 'right' | 'failing' | 'other' = 'right';
  const o = await shapedOrigin(t, blob, (_i, range, res) => {
    if (mode === 'right' || !range) return;
    if (mode === 'failing') return (res.writeHead(503).end(), true);
    res.writeHead(206, { 'content-length': range.end - range.start + 1, 'content-range': `bytes ${range.start}-${range.end}/${blob.length}` });
    res.end(other.subarray(range.start, range.end + 1));
    return true;
  });
  const sn = await startSupernode(t);
  const p = await rawPeer(sn.url, 'seeder-peer', TEST_SECRET);
  t.teardown(() => p.close());
  t.ok((await p.call({ type: 'peer:hello', peerId: 'seeder-peer', version: PROTOCOL_VERSION })).ok);
  const reg = (await p.call<TaskInfo>({ type: 'task:register', url: o.url, digest })) as { ok: boolean; result?: TaskInfo };
  t.ok(reg.ok, 'registered');
  const { taskId, pieceCount } = reg.result!;
  t.equal(pieceCount, 1, 'one piece');
  t.ok(sn.store.pieces(taskId)?.hasBlock(0, 0), 'the probe brought block 0');
  const grant = issueGrant(Buffer.from(TEST_SECRET), { taskId, piece: 0, requester: 'seeder-peer' });
  /** The supernode's framed answer for piece 0: whole, or cut (an error while reading it). */
  const getPiece = async () => {
    const res = await request(`${sn.url}/api/v1/tasks/${taskId}/pieces/0`, { headers: { [GRANT_HEADER]: grant } });
    return res.body.arrayBuffer().then((b) => ({ status: res.statusCode, bytes: b.byteLength, cut: false }), () => ({ status: res.statusCode, bytes: -1, cut: true }));
  };
  mode = 'failing';
  const failed = await getPiece();
  t.ok(failed.cut || failed.status !== 200, `every attempt failed: no piece (${failed.status}${failed.cut ? ', cut' : ''})`);
  t.notOk(sn.store.pieces(taskId)?.hasBlock(0, 0), 'and its blocks are forgotten');

  mode = 'other';
  const second = await getPiece();
  t.equal(o.ranges.at(-1), `bytes=0-${blob.length - 1}`, 'the next attempt asked for block 0 again');
  t.ok(second.cut, `the piece with other bytes for block 0 is cut, never complete-looking (${second.status}, ${second.bytes} bytes)`);
  const status = (await p.call({ type: 'task:status', taskId })) as { ok: boolean; result?: { verified: boolean }; error?: { code: string } };
  t.equal(status.error?.code, 'SN_DIGEST_MISMATCH', `the task is not reported verified (${JSON.stringify(status.result ?? status.error)})`);
  t.equal(sn.store.get(taskId), undefined, 'it was dropped');
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_digest_mismatches_total'), 1, 'as a digest mismatch');
});

t.test('a Range read gets its bytes while the rest of its piece is still coming from the origin', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(8 * MiB, 74);
  const { digest } = await pushBlob(reg.url, 'team/cut', blob);
  // The first three blocks of piece 0 pass (the size probe brings block 0, the piece's fetch blocks 1 and 2; a few
  // KiB for the answers' heads), then the origin stalls: piece 0 cannot complete until released.
  t.ok(pieceSizeFor(blob.length) >= 4 * BLOCK_SIZE, 'piece 0 has a fourth block to hold back');
  const gate = await gatedRelay({ host: '127.0.0.1', port: Number(new URL(reg.url).port) }, 3 * BLOCK_SIZE + 4096, 'hold');
  t.teardown(() => gate.close());
  const url = `${gate.url}/v2/team/cut/blobs/${digest}`;
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  // A range in block 1: what the piece's own fetch brings, not the size probe.
  const at = BLOCK_SIZE + 1000;
  const r = await getViaProxy(d.proxyUrl, url, { range: `bytes=${at}-${at + 65535}` });
  t.equal(r.status, 206);
  t.ok(r.body.equals(blob.subarray(at, at + 65536)), 'the range is right');
  const taskId = r.headers['x-damselfly-task-id'] as string;
  // The order of events, not a time: the answer is complete while piece 0 is not, and cannot be (the origin is held
  // mid-piece; the relay may still be passing the last bytes it lets through when the answer completes).
  t.equal(sn.store.pieceSha(taskId, 0), undefined, 'the supernode had not finished piece 0 when the answer was complete');
  t.notOk(d.store.get(taskId)?.has(0), 'nor had the dfdaemon');
  for (let i = 0; i < 500 && !gate.closed; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(gate.closed, 'the origin is held mid-piece');
  t.equal(sn.store.pieceSha(taskId, 0), undefined, 'and piece 0 waits for it');
  // (Its bytes went to the client as soon as they matched; being on disk follows a moment later.)
  for (let i = 0; i < 100 && !d.store.get(taskId)?.hasBlock(0, 1); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(d.store.get(taskId)?.hasBlock(0, 1), 'the dfdaemon holds block 1 verified');

  gate.release();
  const whole = await getViaProxy(d.proxyUrl, url);
  t.equal(`sha256:${sha(whole.body)}`, digest);
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_digest_bytes_total', { how: 'read_back' }) + (await metricValue(sn.metrics.registry, 'damselfly_supernode_digest_bytes_total', { how: 'inline' })), blob.length, 'the supernode checked the digest over every byte once');
});

t.test('a Range read in the middle of a piece: its block is fetched first, from the origin and from peers', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(8 * MiB, 79);
  const { digest, url } = await pushBlob(reg.url, 'team/mid', blob);
  const sn = await startSupernode(t);
  const a = await startDaemon(t, [sn.url]);
  const b = await startDaemon(t, [sn.url]);
  const P = pieceSizeFor(blob.length);
  const perPiece = P / BLOCK_SIZE;
  const at = P + 2 * BLOCK_SIZE + 77; // piece 1, block 2
  const ra = await getViaProxy(a.proxyUrl, url, { range: `bytes=${at}-${at + 4095}` });
  t.ok(ra.body.equals(blob.subarray(at, at + 4096)), 'first node: right bytes');
  const rb = await getViaProxy(b.proxyUrl, url, { range: `bytes=${at}-${at + 4095}` });
  t.ok(rb.body.equals(blob.subarray(at, at + 4096)), 'second node: right bytes');
  const whole = await getViaProxy(b.proxyUrl, url);
  t.equal(`sha256:${sha(whole.body)}`, digest);
  // Once everything is in (a Range answer may finish before the rest of its piece): every other piece in one GET,
  // piece 1 as blocks 2… and blocks 0–1 apart; the size probe brought the first block, so piece 0 is asked from its
  // second.
  const pieces = blob.length / P;
  const getsOf = () => reg.access.filter((l) => l.method === 'GET' && l.path.includes(`/blobs/${digest}`) && l.bytes > 1).map((l) => l.bytes);
  // (The registry's access log arrives through a pipe: give its last line a moment.)
  for (let i = 0; i < 200 && getsOf().length < pieces + 2; i++) await new Promise((r) => setTimeout(r, 10));
  const gets = getsOf();
  const expected = [BLOCK_SIZE, P - BLOCK_SIZE, 2 * BLOCK_SIZE, (perPiece - 2) * BLOCK_SIZE, ...Array<number>(pieces - 2).fill(P)];
  t.same(gets.sort((x, y) => x - y), expected.sort((x, y) => x - y), 'the supernode asked the origin for block 2 and the rest of its piece apart');
  t.equal(await reg.settledBytesServed(digest, blob.length), blob.length, 'the origin served each byte once');
});

t.test('a peer still fetching a piece relays its blocks to others as they land', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(16 * MiB, 80);
  const { digest, url } = await pushBlob(reg.url, 'team/relay', blob);
  const taskId = taskIdFor(new URL(url));
  // Pieces leave the supernode through an 8 MB/s link (it advertises the relay), the origin is fast: the supernode
  // has every piece's hashes long before the first peer has the piece.
  const port = await freePort();
  const slow = await throttledRelay({ host: '127.0.0.1', port }, 8e6);
  t.teardown(() => slow.close());
  const sn = await startSupernode(t, { port, advertiseUrl: slow.url });
  const a = await startDaemon(t, [sn.url]);
  const pa = getViaProxy(a.proxyUrl, url);
  for (let i = 0; i < 500 && sn.store.pieceSha(taskId, 0) === undefined; i++) await new Promise((r) => setTimeout(r, 10));
  t.notOk(a.store.get(taskId)?.has(0), 'the first peer is still fetching piece 0');
  const b = await startDaemon(t, [sn.url]);
  const rb = await getViaProxy(b.proxyUrl, url);
  t.equal(`sha256:${sha(rb.body)}`, digest, 'the second peer got the blob');
  t.equal(`sha256:${sha((await pa).body)}`, digest, 'and so did the first');
  const relayed = await metricValue(a.metrics.registry, 'damselfly_dfdaemon_relayed_pieces_total');
  t.ok(relayed >= 1, `the first peer relayed ${relayed} piece(s) it did not have yet`);
  t.ok((await metricValue(b.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'peer' })) > 0, 'the second peer fetched from it');
  t.equal(await metricValue(b.metrics.registry, 'damselfly_dfdaemon_piece_failures_total'), 0, 'without a failed piece');
});

t.test('a peer getting a piece through a relay relays it on (a chain of relays), every byte checked', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(16 * MiB, 81);
  const { digest, url } = await pushBlob(reg.url, 'team/chain', blob);
  const taskId = taskIdFor(new URL(url));
  // One supernode stream and one upload slot per peer, through an 8 MB/s link: a takes the supernode's only stream,
  // b can only relay from a, and c can only relay from b (or wait).
  const port = await freePort();
  const slow = await throttledRelay({ host: '127.0.0.1', port }, 8e6);
  t.teardown(() => slow.close());
  const sn = await startSupernode(t, { port, advertiseUrl: slow.url, uploadSlots: 1, uploadStreamRate: 0, peerUploadSlots: 1 });
  // What the real scheduler decides, recorded as it hands it out (the scheduler itself is untouched).
  const decided: { requester: string; piece: number; from: string; relay?: boolean }[] = [];
  const schedule = sn.scheduler.schedule.bind(sn.scheduler);
  sn.scheduler.schedule = (task, requester, ...rest) => {
    const out = schedule(task, requester, ...rest);
    for (const c of out) decided.push({ requester, ...c });
    return out;
  };
  const opts = { parallelPieces: 1 };
  const [a, b, c] = [await startDaemon(t, [sn.url], opts), await startDaemon(t, [sn.url], opts), await startDaemon(t, [sn.url], opts)];
  const pa = getViaProxy(a.proxyUrl, url);
  for (let i = 0; i < 500 && sn.store.pieceSha(taskId, 0) === undefined; i++) await new Promise((r) => setTimeout(r, 10));
  t.notOk(a.store.get(taskId)?.has(0), 'a is still fetching piece 0');
  const pb = getViaProxy(b.proxyUrl, url);
  for (let i = 0; i < 500 && !decided.some((d) => d.requester === b.config.peerId && d.relay); i++) await new Promise((r) => setTimeout(r, 10));
  const pc = getViaProxy(c.proxyUrl, url);
  for (const [name, p] of [['a', pa], ['b', pb], ['c', pc]] as const) t.equal(`sha256:${sha((await p).body)}`, digest, `${name} got the blob`);
  const viaRelay = decided.filter((d) => d.requester === b.config.peerId && d.from === a.config.peerId && d.relay);
  t.ok(viaRelay.length >= 1, `b relayed piece(s) ${viaRelay.map((d) => d.piece)} from a while a fetched them`);
  const chained = decided.filter((d) => d.requester === c.config.peerId && d.from === b.config.peerId && d.relay && viaRelay.some((v) => v.piece === d.piece));
  t.ok(chained.length >= 1, `c relayed piece(s) ${chained.map((d) => d.piece)} from b while b got them through a relay`);
  t.ok((await metricValue(b.metrics.registry, 'damselfly_dfdaemon_relayed_pieces_total')) >= 1, 'b served a piece it did not have yet');
  t.ok((await metricValue(c.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'peer' })) > 0, 'c fetched from peers');
  for (const d of [b, c]) t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_piece_failures_total'), 0, 'without a failed piece');
  t.equal(await reg.settledBytesServed(digest, blob.length), blob.length, 'the origin served each byte once (the size probe’s answer is the first block)');
});

t.test('the origin dies mid-piece while the supernode streams it: the client sees an error, never a whole-looking body', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(6 * MiB, 75);
  const { digest } = await pushBlob(reg.url, 'team/dies', blob);
  const gate = await gatedRelay({ host: '127.0.0.1', port: Number(new URL(reg.url).port) }, 2.5 * MiB, 'cut');
  t.teardown(() => gate.close());
  const url = `${gate.url}/v2/team/dies/blobs/${digest}`;
  const sn = await startSupernode(t);
  // One piece at a time: the budget goes to piece 0, whose first blocks are verified before the origin dies.
  const d = await startDaemon(t, [sn.url], { backSource: false, parallelPieces: 1 });
  const parts: Buffer[] = [];
  let status = 0;
  let declared = 0;
  const outcome = await viaProxy(t, d.proxyUrl, url)
    .then(async (res) => {
      status = res.statusCode;
      declared = Number(res.headers['content-length']);
      for await (const c of res.body) parts.push(c as Buffer);
      return 'ended';
    })
    .catch((err: Error) => `error: ${err.message}`);
  const got = Buffer.concat(parts);
  t.ok(gate.closed, 'the origin died mid-piece');
  t.equal(status, 200, `the answer had started (its first block was verified): ${status === 200 ? "" : got.toString().slice(0, 200)}`);
  t.equal(declared, blob.length);
  t.ok(outcome.startsWith('error'), `the client saw the body cut (${outcome})`);
  t.ok(got.length >= 2 * BLOCK_SIZE && got.length < blob.length, `it got ${got.length} bytes: the blocks verified before the origin died`);
  t.ok(got.equals(blob.subarray(0, got.length)), 'and every byte it got is the blob’s');
  t.equal(await (await fetch(`${d.healthUrl}/server/ping`)).status, 200, 'the dfdaemon is alive');
});

t.test('a peer whose first block is right and the rest garbage: caught at the first bad block, blacklisted', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(16 * MiB, 76);
  const { digest, url } = await pushBlob(reg.url, 'team/tail', blob);
  const sn = await startSupernode(t);
  const first = await startDaemon(t, [sn.url]);
  t.equal(sha((await getViaProxy(first.proxyUrl, url)).body), digest.slice(7));
  await first.stop();
  const bad = await startBadPeer(sn.url, url, undefined, 'tail-peer', 'tail', blob);
  t.teardown(() => bad.close());
  const d = await startDaemon(t, [sn.url]);
  const r = await getViaProxy(d.proxyUrl, url);
  t.equal(sha(r.body), digest.slice(7), 'the client got exactly the blob');
  t.ok(bad.served > 0, `the bad peer was asked (${bad.served})`);
  const taskId = r.headers['x-damselfly-task-id'] as string;
  t.ok(sn.scheduler.isBlacklisted(taskId, bad.peerId), 'and blacklisted');
  t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_piece_failures_total', { reason: 'corrupt' })) >= 1);
});

t.test('kill -9 mid-piece: everything recorded is on disk and matches; the rest is fetched again', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  // Two pieces, so whatever passes the gate after piece 0 is piece 1's (with more, the supernode would fetch several
  // at once and share those bytes among them).
  const blob = makeBlob(2 * MiB, 77);
  const { digest } = await pushBlob(reg.url, 'team/kill9', blob);
  // Piece 0 passes whole, then 5/8 of piece 1, then the origin stalls.
  const P = pieceSizeFor(blob.length);
  t.equal(blob.length / P, 2);
  const gate = await gatedRelay({ host: '127.0.0.1', port: Number(new URL(reg.url).port) }, P + (5 / 8) * P, 'hold');
  t.teardown(() => gate.close());
  const url = `${gate.url}/v2/team/kill9/blobs/${digest}`;
  const sn = await spawnSupernodeProc(t);
  const d = await spawnDaemonProc(t, [sn.url]);
  const head = await getViaProxy(d.proxyUrl, url, { range: `bytes=0-${P - 1}` });
  t.ok(head.body.equals(blob.subarray(0, P)), 'piece 0 is in');
  // Then the whole blob, until two blocks of piece 1 have reached the client: verified, while piece 1 is in flight.
  const res = await viaProxy(t, d.proxyUrl, url);
  let seen = 0;
  for await (const c of res.body) {
    seen += (c as Buffer).length;
    if (seen >= P + 2 * BLOCK_SIZE) break;
  }
  t.ok(gate.closed, 'the origin is held mid-piece');
  d.child.kill('SIGKILL');
  await d.exited();

  const index = new TaskIndex<{ info: TaskInfo }>(join(d.dataDir, 'index'));
  await index.start();
  let records = 0;
  for await (const [taskId, meta] of index.tasks()) {
    for (const [n, stored] of await index.pieces(taskId)) {
      records++;
      const start = n * meta.info.pieceSize;
      const length = Math.min(meta.info.pieceSize, meta.info.contentLength - start);
      await verifyStoredPiece(join(d.dataDir, 'tasks', `${taskId}.data`), start, length, splitBlocks(stored, length)!);
    }
  }
  await index.stop();
  t.equal(records, 1, 'only piece 0 is recorded (and matched its data above); piece 1 was in flight, its blocks in memory only');

  gate.release();
  const again = await spawnDaemonProc(t, [sn.url], ['--data-dir', d.dataDir]);
  const whole = await getViaProxy(again.proxyUrl, url);
  t.equal(`sha256:${sha(whole.body)}`, digest, 'the restarted dfdaemon serves the right blob');
});
