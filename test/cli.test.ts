/** The real CLIs: config errors are all listed and stop start-up; a supernode restart keeps its seeded pieces. */
import t from 'tap';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { Supernode, loadSupernodeConfig } from '@damselfly/supernode';
import { ROOT, TEST_ORIGINS, TEST_SECRET, getViaProxy, startDaemon, tempDir } from './helpers/cluster.js';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { metricValue } from './helpers/metrics.js';

function runCli(bin: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, bin), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, stderr })));
  });
}

t.test('dfdaemon and supernode refuse a bad config, listing every problem', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'dfdaemon.yaml');
  await writeFile(file, 'proxyPort: 99999\nsupernodes: [not-a-url]\nlabels: {zone: a}\nbackSource: maybe\ntypo: 1\n');
  const d = await runCli('dfdaemon/dist/cli.js', ['-c', file, '--parallel-pieces', '0'], { DFDAEMON_UPLOAD_PORT: 'x' });
  t.equal(d.code, 1);
  for (const want of [/proxyPort: must be <= 65535/, /not a valid http\(s\) URL: "not-a-url"/, /backSource: must be true or false/, /unknown key "typo"/, /--parallel-pieces: must be >= 1/, /\$DFDAEMON_UPLOAD_PORT: must be an integer/]) {
    t.match(d.stderr, want);
  }
  const s = await runCli('supernode/dist/cli.js', ['--port', '-1', '--log-level', 'chatty']);
  t.equal(s.code, 1);
  t.match(s.stderr, /--port: must be >= 0/);
  t.match(s.stderr, /--log-level: must be one of/);
  const missing = await runCli('supernode/dist/cli.js', ['-c', join(dir, 'nope.yaml')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /nope\.yaml: ENOENT/);
});

t.test('a restarted supernode keeps its tasks and seeded pieces (level + data files)', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(9 * 1024 * 1024, 71);
  const { digest, url } = await pushBlob(reg.url, 'team/sn-restart', blob);
  const dataDir = await tempDir(t);
  const cfg = () => loadSupernodeConfig({ flags: { host: '127.0.0.1', port: 0, dataDir, logLevel: 'warn', clusterSecret: TEST_SECRET, ...TEST_ORIGINS } });
  const sn1 = new Supernode(cfg());
  await sn1.start();
  const d1 = await startDaemon(t, [sn1.url]);
  t.equal((await getViaProxy(d1.proxyUrl, url)).status, 200);
  await d1.stop();
  await sn1.stop();
  const before = await reg.settledBytesServed(digest);

  const sn2 = new Supernode(cfg());
  await sn2.start();
  t.teardown(() => sn2.stop());
  const d2 = await startDaemon(t, [sn2.url]);
  const r = await getViaProxy(d2.proxyUrl, url);
  t.equal(`sha256:${createHash('sha256').update(r.body).digest('hex')}`, digest);
  t.equal(await reg.settledBytesServed(digest), before, 'nothing fetched from the origin again');
  t.equal(await metricValue(d2.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'supernode' }), blob.length, 'all from the restarted supernode');
});
