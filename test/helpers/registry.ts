/**
 * A real CNCF distribution registry (Debian's `docker-registry`) on loopback, for integration tests. It keeps an
 * access log so tests can count what the origin actually served.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Agent, request } from 'undici';

export interface AccessLine {
  method: string;
  path: string;
  status: number;
  bytes: number;
}

export interface Registry {
  url: string;
  host: string;
  /** Parsed access-log lines so far. */
  access: AccessLine[];
  /** Body bytes the registry sent for GETs of this blob digest, as far as its access log has arrived. */
  blobBytesServed(digest: string): number;
  /**
   * The same for one or more digests, once the log has caught up: the registry logs each answer a moment after
   * sending it, so this waits (up to 5 s) for at least `atLeast` bytes, then until no line has arrived for 100 ms.
   */
  settledBytesServed(digests: string | string[], atLeast?: number): Promise<number>;
  stop(): Promise<void>;
  kill(): void;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const ACCESS_RE = /"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP\/[\d.]+" (\d{3}) (\d+|-)/;

export interface RegistryOptions {
  htpasswd?: string;
  port?: number;
  dir?: string;
  /** Address to listen on and to reach it at (default loopback). */
  host?: string;
  /** Run it inside this network namespace (`ip netns exec`), as the swarm benchmark's origin host. */
  netns?: string;
  /** Serve HTTPS with this certificate and key (PEM files); `ca` is what the readiness check trusts. */
  tls?: { cert: string; key: string; ca: Buffer };
  /** Token authentication (the Bearer dance): tokens from `realm`, signed by a key whose certificate is `rootcertbundle`. */
  token?: { realm: string; service: string; issuer: string; rootcertbundle: string };
  /** A pull-through mirror of this registry URL (docker-registry's proxy mode): fetches what it lacks, keeps it. */
  proxy?: string;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'damselfly-registry-')));
  const port = opts.port ?? (await freePort());
  const host = opts.host ?? '127.0.0.1';
  const tls = opts.tls ? `  tls:\n    certificate: ${opts.tls.cert}\n    key: ${opts.tls.key}\n` : '';
  const auth = opts.htpasswd
    ? `auth:\n  htpasswd:\n    realm: damselfly-test\n    path: ${join(dir, 'htpasswd')}\n`
    : opts.token
      ? `auth:\n  token:\n    realm: ${opts.token.realm}\n    service: ${opts.token.service}\n    issuer: ${opts.token.issuer}\n    rootcertbundle: ${opts.token.rootcertbundle}\n`
      : '';
  if (opts.htpasswd) await writeFile(join(dir, 'htpasswd'), opts.htpasswd);
  await writeFile(
    join(dir, 'config.yml'),
    `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n  delete:\n    enabled: true\nhttp:\n  addr: ${host}:${port}\n${tls}${auth}${opts.proxy ? `proxy:\n  remoteurl: ${opts.proxy}\n` : ''}`,
  );
  const argv = ['docker-registry', 'serve', join(dir, 'config.yml')];
  if (opts.netns) argv.unshift('ip', 'netns', 'exec', opts.netns);
  const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const access: AccessLine[] = [];
  let buf = '';
  const onData = (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const m = ACCESS_RE.exec(line);
      if (m) access.push({ method: m[1]!, path: m[2]!, status: Number(m[3]), bytes: m[4] === '-' ? 0 : Number(m[4]) });
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const url = `${opts.tls ? 'https' : 'http'}://${host}:${port}`;
  const deadline = Date.now() + 15_000;
  const check = opts.tls ? new Agent({ connect: { ca: opts.tls.ca } }) : undefined;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}`);
    try {
      const r = await request(`${url}/v2/`, { dispatcher: check });
      await r.body.dump();
      if (r.statusCode === 200 || r.statusCode === 401) break;
    } catch {}
    if (Date.now() > deadline) throw new Error('docker-registry did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  await check?.close();
  const served = (digest: string) =>
    access.filter((a) => a.method === 'GET' && a.path.includes(`/blobs/${digest}`) && a.status < 300).reduce((s, a) => s + a.bytes, 0);
  return {
    url,
    host: `${host}:${port}`,
    access,
    blobBytesServed: served,
    async settledBytesServed(digests, atLeast = 0) {
      const list = typeof digests === 'string' ? [digests] : digests;
      const total = () => list.reduce((s, d) => s + served(d), 0);
      const deadline = Date.now() + 5_000;
      const tick = () => new Promise((r) => setTimeout(r, 20));
      while (total() < atLeast && Date.now() < deadline) await tick();
      let last = total();
      for (let quietSince = Date.now(); Date.now() - quietSince < 100 && Date.now() < deadline; ) {
        await tick();
        if (total() !== last) (last = total()), (quietSince = Date.now());
      }
      return last;
    },
    kill: () => child.kill('SIGKILL'),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      if (!opts.dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Deterministic pseudo-random bytes (fast: sha256 counter blocks expanded). */
export function makeBlob(size: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(size);
  const block = randomBytesSeeded(seed, 1 << 20);
  for (let off = 0; off < size; off += block.length) {
    block.copy(out, off, 0, Math.min(block.length, size - off));
    block.writeUInt32LE((off / block.length) ^ seed, 0);
  }
  // Make every MiB distinct so pieces differ.
  for (let off = 0; off + 4 <= size; off += 1 << 20) out.writeUInt32BE(off / (1 << 20), off);
  return out;
}

/** The same bytes as `makeBlob(size, seed)`, generated 1 MiB at a time (for blobs too big to hold in memory). */
export function* blobChunks(size: number, seed = 1): Generator<Buffer> {
  const block = randomBytesSeeded(seed, 1 << 20);
  for (let off = 0; off < size; off += block.length) {
    const chunk = Buffer.from(block.subarray(0, Math.min(block.length, size - off)));
    if (chunk.length >= 4) chunk.writeUInt32BE(off / (1 << 20), 0);
    yield chunk;
    block.writeUInt32LE((off / block.length) ^ seed, 0);
  }
}

/** Pushes a generated blob of any size without holding it: one pass to hash it, one to upload it. */
export async function pushBlobStream(registryUrl: string, repo: string, size: number, seed = 1): Promise<{ digest: string; url: string }> {
  const h = createHash('sha256');
  for (const c of blobChunks(size, seed)) h.update(c);
  const digest = `sha256:${h.digest('hex')}`;
  const start = await request(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.body.dump();
  if (start.statusCode !== 202) throw new Error(`upload start: ${start.statusCode}`);
  const loc = new URL(String(start.headers.location), registryUrl);
  loc.searchParams.set('digest', digest);
  const put = await request(loc.href, {
    method: 'PUT',
    body: Readable.from(blobChunks(size, seed)),
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
  });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`upload put: ${put.statusCode}`);
  return { digest, url: `${registryUrl}/v2/${repo}/blobs/${digest}` };
}

function randomBytesSeeded(seed: number, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let h = createHash('sha256').update(String(seed)).digest();
  for (let off = 0; off < size; off += 32) {
    h.copy(out, off, 0, Math.min(32, size - off));
    h = createHash('sha256').update(h).digest();
  }
  return out;
}


/** Pushes one blob with the registry's monolithic upload; returns its digest and the blob URL. */
export async function pushBlob(registryUrl: string, repo: string, data: Buffer, headers: Record<string, string> = {}): Promise<{ digest: string; url: string }> {
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const start = await request(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
  await start.body.dump();
  if (start.statusCode !== 202) throw new Error(`upload start: ${start.statusCode}`);
  const loc = new URL(String(start.headers.location), registryUrl);
  loc.searchParams.set('digest', digest);
  const put = await request(loc.href, { method: 'PUT', body: data, headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(data.length) } });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`upload put: ${put.statusCode}`);
  return { digest, url: `${registryUrl}/v2/${repo}/blobs/${digest}` };
}
