import t from 'tap';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BLOCK_SIZE,
  GcRunner,
  advertiseHost,
  DamselflyError,
  PROTOCOL_VERSION,
  canonicalUrl,
  anonymousUrl,
  carriesCredentials,
  credentialHeaders,
  displayUrl,
  parseDigest,
  parsePeerMessage,
  parseRange,
  rangeHint,
  pieceCountFor,
  pieceRange,
  pieceSizeFor,
  taskIdFor,
} from '@damselfly/shared';
import { loadSupernodeConfig, parseImageRef } from '@damselfly/supernode';
import { loadDaemonConfig, route } from '@damselfly/dfdaemon';
import type { IncomingMessage } from 'node:http';
import { PEER_FAILURE_CAP, Wants, engineOptions, failureReason, judgeFailure, type LocalTask } from '@damselfly/peer';

const MiB = 1024 * 1024;
const D = `sha256:${'a'.repeat(64)}`;

t.test('task id: digest + registry; repositories, signatures and ns do not split tasks, credentials never count', async (t) => {
  const a = taskIdFor(new URL(`http://r1:5000/v2/lib/x/blobs/${D}`));
  t.equal(a, taskIdFor(new URL(`http://r1:5000/v2/other/y/blobs/${D}?ns=r1:5000`)), 'same registry, another repository -> same task');
  t.equal(a, taskIdFor(new URL(`http://user:pw@r1:5000/v2/lib/x/blobs/${D}`)), 'userinfo is not part of the id');
  t.not(a, taskIdFor(new URL(`https://mirror.example/v2/lib/x/blobs/${D}`)), 'same digest at another registry -> another task');
  t.not(a, taskIdFor(new URL(`https://r1:5000/v2/lib/x/blobs/${D}`)), 'another scheme is another origin');
  t.not(taskIdFor(new URL('http://evil/x'), D), a, 'a digest claimed for another URL never lands in the registry\'s task');
  t.equal(canonicalUrl(new URL('https://u:secret@h/p?X-Amz-Signature=s&a=1')), 'https://h/p?a=1', 'stored form: no userinfo, no signature');
  const s1 = new URL('https://bucket.s3/obj?X-Amz-Signature=1&X-Amz-Date=2&v=1');
  const s2 = new URL('https://bucket.s3/obj?v=1&X-Amz-Signature=9');
  t.equal(taskIdFor(s1), taskIdFor(s2), 'signed URLs of one object share a task');
  t.not(taskIdFor(new URL('https://bucket.s3/obj?v=2')), taskIdFor(s1), 'real query params still matter');
  t.equal(canonicalUrl(new URL('http://h/p?b=1&a=2#frag')), 'http://h/p?a=2&b=1');
});

t.test('credentials: any header not known to be plain counts; what registry clients and Node send does not', async (t) => {
  const u = new URL('http://h/v2/x/blobs/sha256:' + 'a'.repeat(64));
  // What containerd, skopeo and curl send once the proxy dropped hop-by-hop headers, and what Node's fetch adds.
  t.notOk(carriesCredentials(u, { accept: '*/*', 'user-agent': 'containerd/2', 'docker-distribution-api-version': 'registry/2.0' }));
  t.notOk(carriesCredentials(u, { accept: '*/*', 'accept-language': '*', 'sec-fetch-mode': 'cors', 'user-agent': 'node' }));
  t.notOk(carriesCredentials(u, { 'X-Forwarded-For': '10.0.0.1', traceparent: '00-1-2-01' }), 'proxies and tracing');
  for (const h of ['authorization', 'Cookie', 'x-api-key', 'Private-Token', 'x-jfrog-art-api', 'x-auth-token']) t.ok(carriesCredentials(u, { [h]: 'k' }), `${h} is a credential`);
  t.same(credentialHeaders({ 'X-Api-Key': 'k', accept: '*/*', authorization: 'b' }), [['authorization', 'b'], ['x-api-key', 'k']], 'the ones that may be, named lowercase, sorted');
  // A token in the query: a credential too; kept in the identity, redacted where stored or shown, left out when asking anonymously.
  const gl = new URL('https://gitlab.example/api/v4/projects/1/packages/generic/p/1/f.tar?private_token=glpat-S3CRET&v=2');
  t.ok(carriesCredentials(gl), 'private_token is a credential');
  t.not(taskIdFor(gl), taskIdFor(new URL('https://gitlab.example/api/v4/projects/1/packages/generic/p/1/f.tar?private_token=other&v=2')), 'another token is another task');
  t.equal(displayUrl(gl), 'https://gitlab.example/api/v4/projects/1/packages/generic/p/1/f.tar?private_token=redacted&v=2');
  t.equal(anonymousUrl(gl).href, 'https://gitlab.example/api/v4/projects/1/packages/generic/p/1/f.tar?v=2');
  t.notOk(carriesCredentials(new URL('https://h/f?v=2&tag=x')), 'other parameters are not');
});

t.test('announced address of a wildcard bind: the first external IPv4, else a global IPv6, else loopback', async (t) => {
  const nic = (address: string, family: 'IPv4' | 'IPv6', internal = false) =>
    ({ address, family, internal, netmask: '', mac: '00:00:00:00:00:00', cidr: null, ...(family === 'IPv6' ? { scopeid: 0 } : {}) }) as import('node:os').NetworkInterfaceInfo;
  const lo = [nic('127.0.0.1', 'IPv4', true), nic('::1', 'IPv6', true)];
  t.equal(advertiseHost('10.1.2.3', {}), '10.1.2.3', 'a named host is itself');
  t.equal(advertiseHost('fd00::7', {}), '[fd00::7]');
  t.equal(advertiseHost('0.0.0.0', { lo, eth0: [nic('fe80::1', 'IPv6'), nic('192.0.2.9', 'IPv4')] }), '192.0.2.9', 'IPv4 first');
  t.equal(advertiseHost('::', { lo, eth0: [nic('fe80::1', 'IPv6'), nic('2001:db8::5', 'IPv6')] }), '[2001:db8::5]', 'an IPv6-only host: its global address, not link-local');
  t.equal(advertiseHost('::', { lo, eth0: [nic('fe80::1', 'IPv6')] }), '127.0.0.1', 'nothing reachable but loopback');
});

t.test('piece size: about 100 whole-MiB pieces per blob, between 1 and 64 MiB', async (t) => {
  t.equal(pieceSizeFor(0), 1 * MiB);
  t.equal(pieceSizeFor(5 * MiB), 1 * MiB, 'small blobs: 1 MiB pieces, not single blocks');
  t.equal(pieceSizeFor(200 * MiB), 2 * MiB);
  t.equal(pieceSizeFor(200e6), 2 * MiB, '96 pieces');
  t.equal(pieceSizeFor(200 * MiB + 1), 3 * MiB);
  t.equal(pieceSizeFor(256 * MiB), 3 * MiB);
  t.equal(pieceSizeFor(1024 * MiB), 11 * MiB);
  t.equal(pieceSizeFor(100 * 1024 * MiB), 64 * MiB, 'capped');
  for (const mib of [1, 7, 64, 333, 1024, 4096]) {
    const size = pieceSizeFor(mib * MiB);
    t.equal(size % BLOCK_SIZE, 0, `${mib} MiB: pieces are whole blocks`);
    t.ok(Math.ceil((mib * MiB) / size) <= 100, `${mib} MiB: at most 100 pieces`);
  }
  t.equal(pieceCountFor(0, 4 * MiB), 0);
  t.equal(pieceCountFor(4 * MiB + 1, 4 * MiB), 2);
  t.same(pieceRange(1, 4 * MiB, 4 * MiB + 1), { start: 4 * MiB, end: 4 * MiB });
});

t.test('digest parsing rejects junk with a clear error', async (t) => {
  t.same(parseDigest(D), { algorithm: 'sha256', hex: 'a'.repeat(64) });
  for (const bad of ['sha256:xyz', 'md5:' + 'a'.repeat(32), '', `sha256:${'A'.repeat(64)}`]) {
    t.throws(() => parseDigest(bad), { code: 'BAD_DIGEST' });
  }
});

t.test('Range parsing', async (t) => {
  t.equal(parseRange(undefined, 100), undefined);
  t.same(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
  t.same(parseRange('bytes=90-', 100), { start: 90, end: 99 });
  t.same(parseRange('bytes=-10', 100), { start: 90, end: 99 });
  t.same(parseRange('bytes=95-200', 100), { start: 95, end: 99 });
  t.throws(() => parseRange('bytes=100-', 100), { code: 'RANGE_NOT_SATISFIABLE', status: 416 });
  t.throws(() => parseRange('bytes=0-1,5-6', 100), { code: 'BAD_RANGE', status: 400 });
  t.throws(() => parseRange('items=0-1', 100), { code: 'BAD_RANGE' });
  t.throws(() => parseRange('bytes=9-1', 100), { code: 'BAD_RANGE' });
  t.throws(() => parseRange('bytes=-', 100), { code: 'BAD_RANGE' });
});

t.test('Range hints before the length is known: what a new run states with its registration', async (t) => {
  t.same(rangeHint('bytes=5-9'), { start: 5, end: 9 });
  t.same(rangeHint('bytes=5-'), { start: 5, end: Number.MAX_SAFE_INTEGER - 1 }, 'open-ended: to any end (the supernode clamps it)');
  for (const none of [undefined, 'bytes=-10', 'bytes=9-5', 'items=0-1', 'bytes=0-1,5-6', 'bytes=x-']) t.equal(rangeHint(none), undefined, `${none}: no hint`);
});

t.test('peer messages: junk is a typed error, never a crash', async (t) => {
  const id = 'f'.repeat(64);
  t.same(parsePeerMessage(JSON.stringify({ type: 'pieces:want', id: 1, taskId: id, want: [0, 1], max: 4 })), {
    type: 'pieces:want',
    id: 1,
    taskId: id,
    want: [0, 1],
    max: 4,
  });
  t.same(parsePeerMessage(JSON.stringify({ type: 'pieces:want', id: 2, taskId: id, want: [], max: 0 })).type, 'pieces:want', 'wanting nothing (a stop) is valid');
  t.equal((parsePeerMessage(JSON.stringify({ type: 'piece:result', taskId: id, piece: 3, ok: true, rate: 52_000_000 })) as { rate?: number }).rate, 52_000_000);
  const junk = [
    'not json',
    '[]',
    'null',
    '{"type":"nope"}',
    JSON.stringify({ type: 'pieces:want', id: 1, taskId: 'short', want: [], max: 1 }),
    JSON.stringify({ type: 'pieces:want', id: 1, taskId: id, want: [-1], max: 1 }),
    JSON.stringify({ type: 'pieces:want', id: 1, taskId: id, want: [0], max: 0 }),
    JSON.stringify({ type: 'pieces:want', id: 1, taskId: id, want: [0], max: 300 }),
    JSON.stringify({ type: 'piece:result', taskId: id, piece: 0, from: 'x', ok: 'yes' }),
    JSON.stringify({ type: 'piece:result', taskId: id, piece: 0, from: 'x', ok: true, rate: -5 }),
    JSON.stringify({ type: 'piece:result', taskId: id, piece: 0, from: 'x', ok: true, rate: 1e15 }),
    JSON.stringify({ type: 'pieces:endgame', id: 1, taskId: id, pieces: Array.from({ length: 65 }, (_, i) => i) }),
    JSON.stringify({ type: 'task:register', id: 1, url: 5 }),
    JSON.stringify({ type: 'peer:hello', id: 1, peerId: 'p', version: PROTOCOL_VERSION, labels: { a: 1 } }),
    // What a supernode keeps of a message stays small: 64 values of 8 KiB each are 512 KiB to hold per task.
    JSON.stringify({ type: 'task:register', id: 1, url: 'http://r/x', headers: { a: 'x'.repeat(8192), b: 'x'.repeat(8192) } }),
    JSON.stringify({ type: 'peer:hello', id: 1, peerId: 'p', version: PROTOCOL_VERSION, labels: { a: 'x'.repeat(4096) } }),
    JSON.stringify({ type: 'piece:result', taskId: id, piece: 0, from: 'x'.repeat(257), ok: false }),
  ];
  const headers = { authorization: `Bearer ${'t'.repeat(16 * 1024 - 30)}` };
  t.same((parsePeerMessage(JSON.stringify({ type: 'task:register', id: 1, url: 'http://r/x', headers })) as { headers?: unknown }).headers, headers, 'a big token (16 KiB of headers in all) still registers');
  for (const raw of junk) t.throws(() => parsePeerMessage(raw), { code: 'BAD_MESSAGE' }, raw);
});

t.test('config: every error is reported at once; layers apply in order', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cfg-'));
  const file = join(dir, 'sn.yaml');
  await writeFile(file, 'port: 70000\nuploadSlots: many\nbogus: 1\ndataDir: /tmp/x\n');
  const err = t.throws(() => loadSupernodeConfig({ file, flags: { logLevel: 'loud' } })) as DamselflyError;
  t.equal(err.code, 'CONFIG_INVALID');
  t.match(err.message, /port: must be <= 65535/);
  t.match(err.message, /uploadSlots: must be an integer/);
  t.match(err.message, /unknown key "bogus"/);
  t.match(err.message, /--log-level: must be one of/);

  await writeFile(file, 'port: 9000\ndataDir: /from/file\n');
  const cfg = loadSupernodeConfig({ file, env: { SUPERNODE_PORT: '9100', DAMSELFLY_CLUSTER_SECRET: 's'.repeat(20) }, flags: { dataDir: '/from/flag' } });
  t.equal(cfg.port, 9100, 'env beats file');
  t.equal(cfg.dataDir, '/from/flag', 'flag beats file');
  t.ok(Object.isFrozen(cfg), 'frozen');
  t.equal(cfg.minPieceSize, 1024 * 1024, 'pieces of 1 MiB at least by default');
  const secret = { DAMSELFLY_CLUSTER_SECRET: 's'.repeat(20) };
  t.equal(loadSupernodeConfig({ env: { ...secret, SUPERNODE_MIN_PIECE_SIZE: '4MiB' } }).minPieceSize, 4 * 1024 * 1024);
  t.throws(() => loadSupernodeConfig({ env: secret, flags: { minPieceSize: '1.5MiB' } }), /minPieceSize: must be a whole number of MiB, e.g. 4MiB, got 1572864 bytes/, 'pieces are whole MiB');
  t.throws(() => loadSupernodeConfig({ env: secret, flags: { minPieceSize: '512KiB' } }), /--min-piece-size: must be >= 1048576/, 'no smaller than the rule’s own floor');
  t.throws(() => loadSupernodeConfig({ env: secret, flags: { minPieceSize: '128MiB' } }), /--min-piece-size: must be <= 67108864/, 'at most the largest piece');

  const d = loadDaemonConfig({ flags: { supernodes: 'http://a:8002,http://b:8002/', labels: 'zone=z1,rack=r2', clusterSecret: 's'.repeat(20) } });
  t.same(d.supernodes, ['http://a:8002', 'http://b:8002']);
  t.same(d.labels, { zone: 'z1', rack: 'r2' });
  t.throws(() => loadDaemonConfig({ flags: { supernodes: 'not a url', parallelPieces: '0' } }), /not a valid http\(s\) URL[\s\S]*--parallel-pieces: must be >= 1/);

  // One engine schema: dfget standalone's defaults are a node's defaults, and a node's flags reach its engine.
  const node = loadDaemonConfig({ flags: { clusterSecret: 's'.repeat(20) } });
  t.same(engineOptions({}, node.maxBlobSize), engineOptions(node, node.maxBlobSize), 'standalone defaults = dfdaemon defaults');
  const tuned = loadDaemonConfig({ flags: { clusterSecret: 's'.repeat(20), parallelPieces: '3', pieceMinRate: '1MiB', backSource: 'false' } });
  t.match(engineOptions(tuned, tuned.maxBlobSize), { parallelPieces: 3, pieceMinRate: 1 << 20, backSource: false, maxBlobSize: tuned.maxBlobSize });
});

t.test('image references as operators write them', async (t) => {
  const D = `sha256:${'b'.repeat(64)}`;
  t.same(parseImageRef('alpine'), { registry: 'https://registry-1.docker.io', repository: 'library/alpine', reference: 'latest' });
  t.same(parseImageRef('Docker.io/library/nginx:1.25'), { registry: 'https://registry-1.docker.io', repository: 'library/nginx', reference: '1.25' });
  t.same(parseImageRef(`nginx:1.25@${D}`), { registry: 'https://registry-1.docker.io', repository: 'library/nginx', reference: D }, 'a tag pinned to its digest: the digest');
  t.same(parseImageRef(`http://127.0.0.1:5000/team/app:1.0@${D}`), { registry: 'http://127.0.0.1:5000', repository: 'team/app', reference: D });
  t.same(parseImageRef('ghcr.io/org/tool'), { registry: 'https://ghcr.io', repository: 'org/tool', reference: 'latest' });
  for (const bad of ['Not An Image!', `nginx@sha256:short`, 'http://alpine', 'nginx:bad tag']) t.throws(() => parseImageRef(bad), { code: 'SN_BAD_IMAGE' }, bad);
});

t.test('a failed piece: what the supernode is told, and whether the download retries, registers again or ends', async (t) => {
  const err = (fields: Record<string, unknown>) => Object.assign(new Error('x'), fields);
  t.equal(failureReason(err({ code: 'PIECE_CORRUPT' })), 'corrupt', 'a wrong hash is bad data');
  t.equal(failureReason(err({ code: 'PIECE_SHORT' })), 'corrupt', 'a wrong length is bad data');
  t.equal(failureReason(err({ code: 'BULK_PROTOCOL' })), 'corrupt', 'an answer that is not HTTP as members speak it is bad data');
  t.equal(failureReason(err({ code: 'BULK_BODY_TIMEOUT' })), 'timeout', 'a stalled body is a timeout');
  t.equal(failureReason(err({ code: 'ECONNRESET' })), 'error', 'anything else is an error, not blame');
  const at = (tries: number, fromSupernode = true) => ({ taskId: 'T', piece: 3, fromSupernode, tries, pieceAttempts: 5 });
  const code = (v: ReturnType<typeof judgeFailure>) => (typeof v === 'string' ? v : (v.fatal as { code?: string }).code);
  t.equal(judgeFailure(err({ code: 'ECONNRESET' }), at(1)), 'retry', 'a first failure from the supernode is retried');
  t.equal(code(judgeFailure(err({ code: 'ECONNRESET' }), at(5))), 'DF_PIECE_FAILED', 'the fifth from the supernode ends the download');
  t.equal(judgeFailure(err({ code: 'PIECE_CORRUPT' }), at(PEER_FAILURE_CAP - 1, false)), 'retry', 'peer failures do not count against the supernode\'s attempts');
  t.equal(code(judgeFailure(err({ code: 'PIECE_CORRUPT' }), at(PEER_FAILURE_CAP, false))), 'DF_PIECE_FAILED', 'but a cap on them ends it');
  t.equal(code(judgeFailure(err({ code: 'PIECE_DISK_FULL' }), at(1))), 'DF_DISK_FULL', 'a full disk ends it at once');
  t.equal(code(judgeFailure(err({ remoteCode: 'SN_DIGEST_MISMATCH' }), at(1))), 'DIGEST_MISMATCH', 'the origin\'s bytes are not the digest\'s: no retry');
  t.equal(code(judgeFailure(err({ remoteCode: 'SN_TASK_NOT_FOUND' }), at(1))), 'DF_TASK_FAILED', 'the supernode dropped the task');
  t.equal(judgeFailure(err({ remoteCode: 'SN_NOT_REGISTERED' }), at(1)), 'reregister', 'credentials let go of: hand them over again');
  t.equal(code(judgeFailure(err({ remoteCode: 'SN_NOT_REGISTERED' }), at(5))), 'DF_PIECE_FAILED', 'but not forever');
  const refused = judgeFailure(err({ status: 403, remoteCode: 'ORIGIN_AUTH' }), at(1));
  t.equal(code(refused), 'DF_TASK_FAILED', 'the origin\'s own refusal ends it');
  t.equal(typeof refused === 'object' && (refused.fatal as { status?: number }).status, 403, 'carrying the origin\'s status for the client');
  t.equal(judgeFailure(err({ status: 403, remoteCode: 'SN_PEER_MISMATCH' }), at(1)), 'retry', 'a refusal that is not the origin\'s is worth another try');
  t.equal(judgeFailure(err({ status: 404, remoteCode: 'ORIGIN_NOT_FOUND' }), at(1, false)), 'retry', 'a peer cannot end a download with a status');
  // Nor with what its answer claims of the task: only the supernode's word on that counts.
  for (const remoteCode of ['SN_DIGEST_MISMATCH', 'ORIGIN_CHANGED', 'SN_TASK_NOT_FOUND', 'SN_NOT_REGISTERED']) {
    t.equal(judgeFailure(err({ status: 502, remoteCode }), at(1, false)), 'retry', `a peer answering ${remoteCode}: retried elsewhere`);
  }
  t.equal(code(judgeFailure(err({ remoteCode: 'ORIGIN_CHANGED' }), at(1))), 'ORIGIN_CHANGED', 'the supernode saying the object changed ends it');
});

t.test('wants: Range readers\' pieces, and the block each is fetched from first', async (t) => {
  const BS = BLOCK_SIZE;
  const pieceSize = 4 * BS;
  const task = { info: { pieceSize }, missing: () => [0, 1, 2, 3, 5] } as unknown as LocalTask;
  const w = new Wants(false);
  t.same(w.missing(task), [], 'nothing asked: nothing wanted');
  w.add([1, 5, 7], pieceSize + 2 * BS + 10);
  w.add([1], pieceSize + 3 * BS);
  t.same(w.missing(task), [1, 5], 'the asked pieces still missing, in order');
  t.equal(w.firstBlock(task, 1), 2, 'a piece starts at the block its oldest reader needs');
  t.equal(w.firstBlock(task, 5), 0, 'a piece no reader starts in starts at its first block');
  t.same(w.readers(task, [1, 5]), [{ piece: 1, block: 2 }], 'readers: pieces someone starts in, once each');
  t.same(w.readers(task, [5]), [], 'only among the pieces asked for');
  for (let i = 0; i < 64; i++) w.add([3], 3 * pieceSize + BS);
  t.equal(w.firstBlock(task, 1), 0, 'only the latest 64 starts are kept');
  w.add('all');
  t.same(w.missing(task), [0, 1, 2, 3, 5], 'all: every missing piece');
});

t.test('proxy routing: a registry configured as https is never reached over plain http, however the client names it', async (t) => {
  const policy = { registries: ['https://reg.example', 'http://plain.example:5000'], proxyHosts: [] };
  const blob = `/v2/lib/x/blobs/${D}`;
  const req = (url: string, headers: Record<string, string> = {}) => ({ url, method: 'GET', headers }) as unknown as IncomingMessage;
  t.equal(route(req(blob, { 'x-dragonfly-registry': 'http://reg.example' }), policy).url.protocol, 'https:', 'mirror, X-Dragonfly-Registry with http://');
  t.equal(route(req(`http://reg.example${blob}`), policy).url.protocol, 'https:', 'forward proxy, an http:// URL (nydusd with use_http)');
  t.equal(route(req(blob, { 'x-dragonfly-registry': 'http://plain.example:5000' }), policy).url.href, `http://plain.example:5000${blob}`, 'a registry configured as http stays http');
  t.throws(() => route(req(blob, { 'x-dragonfly-registry': 'http://other.example' }), policy), { code: 'DF_PROXY_FORBIDDEN' }, 'and one not configured is refused');
});

t.test('registry token dance: credentials for an https registry never go to a plain-http token endpoint', async (t) => {
  const { createServer } = await import('node:http');
  const { fetchRegistryToken } = await import('@damselfly/shared');
  const seen: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 't' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const challenge = { realm: `http://127.0.0.1:${(server.address() as { port: number }).port}/token`, params: {} };
  const basic = `Basic ${Buffer.from('u:p').toString('base64')}`;
  const { Agent } = await import('undici');
  const dispatcher = new Agent();
  t.teardown(() => dispatcher.close());
  t.equal(await fetchRegistryToken({ dispatcher, timeoutMs: 5_000 }, challenge, basic, undefined, new URL('https://registry.example')), 't');
  t.equal(await fetchRegistryToken({ dispatcher, timeoutMs: 5_000 }, challenge, basic, undefined, new URL('http://registry.internal:5000')), 't');
  t.same(seen, [undefined, basic], 'asked anonymously for the https registry, with them for a plain-http one');
});

t.test('replay cache: a replayed proof is refused; one address fills its tenth of the cache, not the others\' room', async (t) => {
  const { NonceCache } = await import('@damselfly/shared');
  const cache = new NonceCache(100);
  const now = 1_000_000;
  t.equal(cache.add('n0', now + 240_000, now, '10.0.0.1'), true);
  t.equal(cache.add('n0', now + 240_000, now, '10.0.0.2'), 'replayed', 'the same nonce twice: a replay, whoever sends it');
  for (let i = 1; i < 10; i++) t.equal(cache.add(`a${i}`, now + 240_000, now, '10.0.0.1'), true);
  t.equal(cache.add('a10', now + 240_000, now, '10.0.0.1'), 'source_full', 'an eleventh live nonce from one address: refused');
  t.equal(cache.add('b0', now + 240_000, now, '10.0.0.2'), true, 'while another address still gets in');
  t.equal(cache.add('a11', now + 300_000, now + 250_000, '10.0.0.1'), true, 'and the first one again once its nonces expired');
  const full = new NonceCache(10);
  for (let i = 0; i < 10; i++) t.equal(full.add(`x${i}`, now + 240_000, now, `10.1.0.${i}`), true);
  t.equal(full.add('x10', now + 240_000, now, '10.1.0.99'), 'full', 'a cache full of live nonces refuses rather than grows');
});

t.test('GC runs: a timed pass shares the one under way; a pressure pass waits for it, is shared, and a timed call joins it', async (t) => {
  const log: string[] = [];
  const gates: (() => void)[] = [];
  const runner = new GcRunner<string>(async (_now, pressure) => {
    const name = pressure ? 'pressure' : 'timed';
    log.push(`${name}:start`);
    await new Promise<void>((resolve) => gates.push(resolve));
    log.push(`${name}:end`);
    return name;
  });
  const a = runner.run();
  t.equal(runner.run(), a, 'a second timed call shares the pass under way');
  const p = runner.relieve();
  t.equal(runner.relieve(), p, 'writes failing together share one pressure pass');
  t.equal(runner.run(), p, 'a timed call once a pressure pass is asked for joins that one (it covers more)');
  await new Promise((r) => setImmediate(r));
  t.same(log, ['timed:start'], 'the pressure pass waits for the timed one (whose removals may make the room)');
  gates.shift()!();
  t.equal(await a, 'timed');
  await new Promise((r) => setImmediate(r));
  t.same(log, ['timed:start', 'timed:end', 'pressure:start']);
  t.equal(runner.run(), p, 'a timed call during a pressure pass joins it');
  gates.shift()!();
  t.equal(await p, 'pressure');
  // Both done: the next calls start passes of their own (nothing stale is handed out).
  const next = runner.run();
  t.not(next, a);
  await new Promise((r) => setImmediate(r));
  gates.shift()!();
  t.equal(await next, 'timed');
  await runner.settled();
  t.same(log, ['timed:start', 'timed:end', 'pressure:start', 'pressure:end', 'timed:start', 'timed:end']);
});
