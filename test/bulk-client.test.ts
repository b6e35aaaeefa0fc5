/**
 * The cluster's piece client (BulkClient) against real sockets: kept-alive connections are reused and a reused one
 * the server closed is retried; a body handed out as views of the connection's read buffer stays intact while its
 * consumer holds it back; and every malformed, stalled, short or over-long answer ends in a typed error, never in a
 * complete-looking body.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { createServer as createHttpsServer } from 'node:https';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { BulkClient } from '@damselfly/shared';
import { tempDir } from './helpers/cluster.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function listen(server: Server | ReturnType<typeof createNetServer>): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

/** An HTTP server answering every GET with `body`; counts the connections it accepted. */
async function bodyServer(t: Test, body: Buffer): Promise<{ url: string; connections: () => number; sockets: Set<Socket> }> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createHttpServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length, 'x-test': 'yes' });
    res.end(body);
  });
  server.on('connection', (s: Socket) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const url = await listen(server);
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  return { url, connections: () => connections, sockets };
}

/** A raw TCP server that answers each connection with `answer(socket)`. */
async function rawServer(t: Test, answer: (s: Socket) => void): Promise<string> {
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    s.once('data', () => answer(s));
  });
  const url = await listen(server);
  t.teardown(() => new Promise<void>((r) => (sockets.forEach((s) => s.destroy()), server.close(() => r()))));
  return url;
}

async function collect(client: BulkClient, url: string, opts: Parameters<BulkClient['get']>[1] = {}): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  const res = await client.get(url, opts);
  const parts: Buffer[] = [];
  await res.body.forEach((c) => void parts.push(Buffer.from(c)));
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) };
}

t.test('kept-alive connections are reused; one the server closed meanwhile is retried on a new one', async (t) => {
  const blob = randomBytes(3 * MiB + 5);
  const srv = await bodyServer(t, blob);
  const client = new BulkClient();
  t.teardown(() => client.close());
  for (let i = 0; i < 3; i++) {
    const r = await collect(client, `${srv.url}/p/${i}`);
    t.equal(r.status, 200);
    t.equal(r.headers['x-test'], 'yes', 'headers in lower case');
    t.equal(sha(r.body), sha(blob), `answer ${i} is the body`);
  }
  t.equal(srv.connections(), 1, 'three requests, one connection');
  // The server drops the idle connection: the next request notices before any answer and asks again afresh.
  for (const s of srv.sockets) s.destroy();
  await delay(50);
  const again = await collect(client, `${srv.url}/p/again`);
  t.equal(sha(again.body), sha(blob), 'answered after the retry');
  t.equal(srv.connections(), 2, 'on a second connection');
  // A connection the server closes while it sits idle leaves the pool at once (and its read buffers with it).
  t.equal(client.idle, 1, 'kept for reuse');
  for (const s of srv.sockets) s.destroy();
  await delay(50);
  t.equal(client.idle, 0, 'gone from the pool when the server closed it, not when the host is next asked');
  t.equal(client.connections, 0);
});

t.test('a consumer that holds the body back gets every byte intact (the read buffer waits for it)', async (t) => {
  const blob = randomBytes(24 * MiB + 77);
  const srv = await bodyServer(t, blob);
  // A small read buffer: many reads, each a view that would be overwritten by the next if reading went on.
  const client = new BulkClient({ readBufferSize: 16 * 1024 });
  t.teardown(() => client.close());
  const res = await client.get(`${srv.url}/slow`);
  t.equal(res.body.length, blob.length, 'Content-Length');
  const h = createHash('sha256');
  let n = 0;
  let held = 0;
  await res.body.forEach((chunk) => {
    // Every 50th chunk is hashed only after a pause: the bytes must still be the same then.
    if (++n % 50 !== 0) return void h.update(chunk);
    held++;
    return delay(2).then(() => void h.update(chunk));
  });
  t.ok(held > 10, `the consumer held the body back ${held} times`);
  t.equal(h.digest('hex'), sha(blob), 'and got exactly the body');
  // The connection is reusable afterwards.
  t.equal(sha((await collect(client, `${srv.url}/next`)).body), sha(blob));
  t.equal(srv.connections(), 1);
});

t.test('over TLS too: bytes decrypted after a pause never land in a buffer the consumer still holds', async (t) => {
  const dir = await tempDir(t, 'damselfly-bulk-tls-');
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1');
  const cert = await readFile(join(dir, 'cert.pem'));
  const blob = randomBytes(24 * MiB + 3);
  const server = createHttpsServer({ cert, key: await readFile(join(dir, 'key.pem')) }, (req, res) => {
    res.writeHead(200, { 'content-length': blob.length });
    res.end(blob);
  });
  const url = (await listen(server)).replace('http:', 'https:');
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  for (const how of ['tls option', 'dial'] as const) {
    const client = how === 'dial' ? new BulkClient({ readBufferSize: 16 * 1024, dial: () => ({ tls: { ca: cert } }) }) : new BulkClient({ readBufferSize: 16 * 1024, tls: { ca: cert } });
    t.teardown(() => client.close());
    const res = await client.get(`${url}/tls`);
    const h = createHash('sha256');
    let n = 0;
    await res.body.forEach((chunk) => (++n % 20 !== 0 ? void h.update(chunk) : delay(2).then(() => void h.update(chunk))));
    t.equal(h.digest('hex'), sha(blob), `${how}: exactly the body, with the consumer holding it back ${Math.floor(n / 20)} times`);
  }
  // A server certificate nobody vouched for is refused.
  const stranger = new BulkClient();
  t.teardown(() => stranger.close());
  await t.rejects(stranger.get(`${url}/tls`), { code: 'BULK_CONNECT' }, 'an unknown CA is refused');
});

t.test('answers that are not framed as cluster members frame them are refused before any body byte is taken', async (t) => {
  const client = new BulkClient();
  t.teardown(() => client.close());
  const chunked = await rawServer(t, (s) => s.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'));
  await t.rejects(client.get(`${chunked}/x`), { code: 'BULK_PROTOCOL', message: /chunked/ }, 'chunked');
  const unframed = await rawServer(t, (s) => s.end('HTTP/1.1 200 OK\r\ncontent-type: x\r\n\r\nhello'));
  await t.rejects(client.get(`${unframed}/x`), { code: 'BULK_PROTOCOL', message: /Content-Length/ }, 'no length');
  const garbage = await rawServer(t, (s) => s.end('SSH-2.0-OpenSSH_9.2\r\n\r\n'));
  await t.rejects(client.get(`${garbage}/x`), { code: 'BULK_PROTOCOL', message: /status line/ }, 'not HTTP');
  const spaced = await rawServer(t, (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length : 5\r\n\r\nhello'));
  await t.rejects(client.get(`${spaced}/x`), { code: 'BULK_PROTOCOL', message: /header line/ }, 'a space before the colon is refused, not trimmed');
  // One read holding a whole head far over the limit (the terminator is there, the size is still refused).
  const big = await rawServer(t, (s) => s.end(`HTTP/1.1 200 OK\r\nx: ${'a'.repeat(40 * 1024)}\r\ncontent-length: 5\r\n\r\nhello`));
  await t.rejects(client.get(`${big}/x`), { code: 'BULK_PROTOCOL', message: /head over/ }, 'an over-long head with its end in sight');
  const huge = await rawServer(t, (s) => s.write(`HTTP/1.1 200 OK\r\nx: ${'a'.repeat(64 * 1024)}`));
  await t.rejects(client.get(`${huge}/x`), { code: 'BULK_PROTOCOL', message: /head over/ }, 'endless head');
  await t.rejects(client.get(`${huge}/x`, { headers: { 'x-bad': 'a\r\nhost: evil' } }), { code: 'BULK_PROTOCOL', message: /refusing to send header/ }, 'header injection is not sent');
});

t.test('stalls, short bodies, aborts and over-long bodies end in errors, never a complete-looking body', async (t) => {
  const client = new BulkClient();
  t.teardown(() => client.close());
  const silent = await rawServer(t, () => {});
  await t.rejects(client.get(`${silent}/x`, { headersTimeoutMs: 200 }), { code: 'BULK_HEADERS_TIMEOUT' }, 'no answer');

  const stalls = await rawServer(t, (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n' + 'a'.repeat(100)));
  const res = await client.get(`${stalls}/x`, { bodyTimeoutMs: 300 });
  let got = 0;
  await t.rejects(res.body.forEach((c) => void (got += c.length)), { code: 'BULK_BODY_TIMEOUT' }, 'the body stops');
  t.equal(got, 100, 'what arrived was handed on, and then the error');

  const short = await rawServer(t, (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n' + 'a'.repeat(100)));
  const r2 = await client.get(`${short}/x`);
  await t.rejects(r2.body.forEach(() => {}), { code: 'BULK_CLOSED' }, 'closed before Content-Length');

  const ac = new AbortController();
  const r3 = await client.get(`${stalls}/x`, { signal: ac.signal });
  setTimeout(() => ac.abort(new Error('caller gave up')), 50);
  await t.rejects(r3.body.forEach(() => {}), /caller gave up/, 'an abort ends the body with its reason');

  // More bytes than Content-Length: the body is exactly Content-Length, and the connection is not used again.
  let conns = 0;
  const overlong = await rawServer(t, (s) => {
    conns++;
    s.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA');
  });
  t.equal((await collect(client, `${overlong}/x`)).body.toString(), 'hello', 'only the framed bytes');
  t.equal((await collect(client, `${overlong}/y`)).body.toString(), 'hello');
  t.equal(conns, 2, 'a connection that sent too much is not used again');

  const refused = `http://127.0.0.1:${(await new Promise<number>((r) => { const s = createNetServer(); s.listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => r(p)); }); }))}`;
  await t.rejects(client.get(`${refused}/x`), { code: 'BULK_CONNECT' }, 'nobody listening');
});

t.test('an interim 1xx answer (103 Early Hints) is skipped for the answer that follows it', async (t) => {
  const client = new BulkClient();
  t.teardown(() => client.close());
  const hints = await rawServer(t, (s) => s.end('HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\nHTTP/1.1 206 Partial Content\r\ncontent-length: 5\r\n__proto__: x\r\n\r\nhello'));
  const r = await collect(client, `${hints}/x`);
  t.equal(r.status, 206);
  t.equal(r.body.toString(), 'hello');
  t.equal(r.headers['__proto__'], 'x', 'a header named __proto__ is just a header');
  // Split across reads: the interim head in one write, the real one later.
  const split = await rawServer(t, (s) => {
    s.write('HTTP/1.1 100 Continue\r\n\r\n');
    setTimeout(() => s.end('HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc'), 30);
  });
  t.equal((await collect(client, `${split}/x`)).body.toString(), 'abc');
  // A head with a big body behind it in the same read (only the head is decoded as text): every body byte intact.
  const body = randomBytes(300 * 1024);
  const behind = await rawServer(t, (s) => s.end(Buffer.concat([Buffer.from(`HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n`), body])));
  t.ok((await collect(client, `${behind}/x`)).body.equals(body), 'the body that came in the head\'s read');
});

t.test('a body that fails while its consumer is busy with a chunk is reported only once the consumer is done with it', async (t) => {
  const client = new BulkClient();
  t.teardown(() => client.close());
  const stalls = await rawServer(t, (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n' + 'a'.repeat(100)));
  const ac = new AbortController();
  const res = await client.get(`${stalls}/x`, { signal: ac.signal });
  const events: string[] = [];
  const body = res.body.forEach(async () => {
    events.push('chunk');
    ac.abort(new Error('caller gave up'));
    await delay(100);
    events.push('consumer done');
  });
  await t.rejects(body, /caller gave up/);
  events.push('rejected');
  t.same(events, ['chunk', 'consumer done', 'rejected'], 'the caller hears of the failure after its consumer let go of the chunk');
});

t.test('close() ends the connects under way at once, not at their timeout', async (t) => {
  // A TCP peer that never answers the TLS handshake: the connect would otherwise wait out its 30 s.
  const mute = await rawServer(t, () => {});
  const client = new BulkClient({ connectTimeoutMs: 30_000 });
  const pending = client.get(`${mute.replace('http:', 'https:')}/x`);
  await delay(100);
  await client.close();
  await t.rejects(pending, { code: 'BULK_CONNECT', message: /the client is closed/ });
  t.equal(client.connections, 0);
});
