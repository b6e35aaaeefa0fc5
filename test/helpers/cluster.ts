/** Fixture factories: supernodes and dfdaemons on loopback, port 0, torn down with the test. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { Supernode, loadSupernodeConfig, type SupernodeConfig } from '@damselfly/supernode';
import { Daemon, loadDaemonConfig, type DaemonConfig } from '@damselfly/dfdaemon';
import { DAEMON_NODE_FLAGS, metricsToken, operatorToken } from '@damselfly/shared';
import { freePort } from './registry.js';

export const ROOT = resolve(import.meta.dirname, '..', '..');

/**
 * The cluster secret the fixtures share, so every test runs the authenticated path (session proofs, piece grants).
 * It is also put into this test process's environment, which the real binaries the tests spawn inherit.
 */
export const TEST_SECRET = 'test-cluster-secret-0123456789abcdef';
/** What the operator API, the dashboard and /metrics want: the token derived from the secret, never the secret. */
export const OPERATOR_TOKEN = operatorToken(Buffer.from(TEST_SECRET));
/** What a scraper sends for /metrics (and nothing else). */
export const METRICS_TOKEN = metricsToken(Buffer.from(TEST_SECRET));
process.env.DAMSELFLY_CLUSTER_SECRET ??= TEST_SECRET;

/** Origins every test supernode may seed from: anything, on loopback (where the test registries run). */
export const TEST_ORIGINS = { allowedOrigins: ['*'], originAllowCidrs: ['127.0.0.0/8', '::1/128'] };

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function tempDir(t: Teardown, prefix = 'damselfly-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function startSupernode(t: Teardown, overrides: Partial<Record<keyof SupernodeConfig, unknown>> = {}): Promise<Supernode> {
  const dataDir = await tempDir(t, 'damselfly-sn-');
  const sn = new Supernode(loadSupernodeConfig({ flags: { host: '127.0.0.1', port: 0, dataDir, logLevel: 'warn', clusterSecret: TEST_SECRET, ...TEST_ORIGINS, ...overrides } }));
  await sn.start();
  t.teardown(() => sn.stop());
  return sn;
}

export async function startDaemon(t: Teardown, supernodes: string[], overrides: Partial<Record<keyof DaemonConfig, unknown>> = {}, components: ConstructorParameters<typeof Daemon>[1] = {}): Promise<Daemon> {
  const dataDir = await tempDir(t, 'damselfly-df-');
  const d = new Daemon(
    loadDaemonConfig({
      flags: {
        supernodes,
        dataDir,
        proxyPort: 0,
        uploadHost: '127.0.0.1',
        uploadPort: 0,
        healthPort: 0,
        peerId: `peer-${Math.random().toString(36).slice(2, 8)}`,
        logLevel: 'warn',
        pieceTimeoutMs: 10_000,
        proxyHosts: ['*'],
        clusterSecret: TEST_SECRET,
        ...overrides,
      },
    }),
    components,
  );
  await d.start();
  t.teardown(() => d.stop());
  return d;
}

/** A supernode as a separate process (so a test can SIGKILL it). */
export async function spawnSupernode(t: Teardown): Promise<{ url: string; child: ChildProcess }> {
  const dataDir = await tempDir(t, 'damselfly-sn-');
  const port = await freePort();
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, join(ROOT, 'supernode/dist/cli.js'), '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir, '--log-level', 'warn', '--allowed-origins', '*', '--origin-allow-cidrs', '127.0.0.0/8'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const r = await request(`${url}/healthy`);
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {}
    if (Date.now() > deadline) throw new Error('supernode did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url, child };
}

/** GET through a dfdaemon's forward proxy; returns status, headers and body. */
export async function getViaProxy(proxyUrl: string, url: string, headers: Record<string, string> = {}) {
  const { Client } = await import('undici');
  const c = new Client(proxyUrl);
  try {
    const res = await c.request({ method: 'GET', path: url, headers });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, headers: res.headers, body };
  } finally {
    await c.close();
  }
}
