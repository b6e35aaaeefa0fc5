/**
 * The supernode's fast path for piece bytes from an origin (fetchOriginRange with originFastPath), against a real
 * registry: a plain 206 is read through the BulkClient; a redirect, an error status and a refused address end
 * exactly as they do through the full client (followed, typed, refused), and the address policy holds on the fast
 * path itself, for IP literals and for names.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { AddressPolicy, createOriginDispatcher, fetchOrigin, fetchOriginRange, guardedConnector, originFastPath } from '@damselfly/shared';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function bytesOf(body: Awaited<ReturnType<typeof fetchOriginRange>>): Promise<Buffer> {
  const parts: Buffer[] = [];
  if (Symbol.asyncIterator in body) for await (const c of body as AsyncIterable<Buffer>) parts.push(c);
  else await body.forEach((c) => void parts.push(Buffer.from(c)));
  return Buffer.concat(parts);
}

t.test('origin fast path: plain answers through the BulkClient, everything else as the full client has it', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(6 * MiB + 9, 77);
  const { url, digest } = await pushBlob(reg.url, 'fast/path', blob);
  const loopback = new AddressPolicy(['127.0.0.0/8']);
  const dispatcher = createOriginDispatcher({ connect: guardedConnector(loopback) });
  t.teardown(() => dispatcher.close());
  const fast = originFastPath(loopback);
  t.teardown(() => fast.client.close());

  const before = await reg.settledBytesServed(digest);
  const body = await fetchOriginRange({ url, dispatcher }, MiB, 3 * MiB - 1, fast);
  t.notOk(Symbol.asyncIterator in body, 'a plain 206 comes through the fast path');
  t.equal(sha(await bytesOf(body)), sha(blob.subarray(MiB, 3 * MiB)), 'with exactly the range');
  t.equal((await reg.settledBytesServed(digest, before + 2 * MiB)) - before, 2 * MiB, 'the registry served the range once');
  t.equal(fast.skip.size, 0);

  // An origin that redirects (a registry sending blobs to object storage): followed by the full client, and then
  // asked only through it.
  let hits = 0;
  const redirector = createServer((req, res) => {
    hits++;
    res.writeHead(307, { location: url, 'content-length': 0 });
    res.end();
  });
  await new Promise<void>((r) => redirector.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (redirector.closeAllConnections(), redirector.close(() => r()))));
  const via = `http://127.0.0.1:${(redirector.address() as { port: number }).port}/blob`;
  const redirected = await fetchOriginRange({ url: via, dispatcher }, 0, MiB - 1, fast);
  t.ok(Symbol.asyncIterator in redirected, 'a redirect is followed by the full client');
  t.equal(sha(await bytesOf(redirected)), sha(blob.subarray(0, MiB)), 'to the right bytes');
  t.equal(hits, 2, 'asked once on the fast path, once through the full client');
  t.ok(fast.skip.has(new URL(via).origin), 'and the origin is remembered');
  await bytesOf(await fetchOriginRange({ url: via, dispatcher }, 0, MiB - 1, fast));
  t.equal(hits, 3, 'so the next range goes straight to the full client');

  // An error status is the full client's typed error; the origin is not written off for it.
  const missing = url.replace(/sha256:[0-9a-f]+/, `sha256:${'0'.repeat(64)}`);
  await t.rejects(fetchOriginRange({ url: missing, dispatcher }, 0, 99, fast), { code: 'ORIGIN_NOT_FOUND' });
  t.notOk(fast.skip.has(new URL(missing).origin), 'a 404 does not send the origin to the slow path');
});

t.test('origin fast path: the address policy holds on it, for IP literals and for names', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const { url, digest } = await pushBlob(reg.url, 'fast/guard', makeBlob(MiB, 78));
  const before = await reg.settledBytesServed(digest);
  const strict = new AddressPolicy([]);
  const dispatcher = createOriginDispatcher({ connect: guardedConnector(strict) });
  t.teardown(() => dispatcher.close());
  const fast = originFastPath(strict);
  t.teardown(() => fast.client.close());
  // The fast path itself refuses (it is not only the fallback that does).
  await t.rejects(fast.client.get(url), { code: 'BULK_CONNECT', cause: { code: 'ADDRESS_FORBIDDEN' } }, 'IP literal');
  await t.rejects(fast.client.get(url.replace('127.0.0.1', 'localhost')), { code: 'BULK_CONNECT', cause: { code: 'ADDRESS_FORBIDDEN' } }, 'a name resolving to loopback');
  await t.rejects(fetchOriginRange({ url, dispatcher }, 0, 99, fast), { code: 'ADDRESS_FORBIDDEN' }, 'and the range read is refused with the policy error');
  t.equal((await reg.settledBytesServed(digest)) - before, 0, 'the registry served nothing');
});

t.test('If-Range: a whole answer of the version asked for is Range ignored; of another, the object changed', async (t) => {
  let etag = '"v1"';
  const server = createServer((_req, res) => void res.writeHead(200, { etag, 'content-length': 10 }).end('0123456789'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const dispatcher = createOriginDispatcher();
  t.teardown(() => dispatcher.close());
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/x`;
  await t.rejects(fetchOrigin({ url, dispatcher, validator: '"v1"', total: 10 }, 0, 4), { code: 'ORIGIN_NO_RANGE' }, 'same ETag: the origin ignored Range (a pull-through cache on a miss)');
  etag = '"v2"';
  await t.rejects(fetchOrigin({ url, dispatcher, validator: '"v1"', total: 10 }, 0, 4), { code: 'ORIGIN_CHANGED' }, 'another ETag: the version asked for is gone');
});
