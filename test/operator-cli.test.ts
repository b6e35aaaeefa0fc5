/**
 * What an operator meets first, with the real binaries: a port in use names its setting, help shows defaults,
 * run.sh passes its flags through (and refuses unknown ones), and absurd origin sizes get a clear refusal.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { networkInterfaces } from 'node:os';
import { request } from 'undici';
import { freePort } from './helpers/registry.js';
import { ROOT, OPERATOR_TOKEN, TEST_SECRET, startSupernode, tempDir } from './helpers/cluster.js';
import { dfget } from './helpers/dfget.js';

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; until?: RegExp; ms?: number } = {}) {
  return new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      if (opts.until?.test(out)) child.kill('SIGTERM');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.ms ?? 60_000);
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, out })));
  });
}

async function occupy(t: { teardown(fn: () => unknown): void }): Promise<number> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => s.close(r)));
  return (s.address() as { port: number }).port;
}

t.test('a port in use names the setting; nothing is left running', async (t) => {
  const dir = await tempDir(t);
  const busy = await occupy(t);
  const df = await run(process.execPath, [join(ROOT, 'dfdaemon/dist/cli.js'), '--data-dir', join(dir, 'df'), '--upload-host', '127.0.0.1', '--upload-port', '0', '--health-port', '0', '--proxy-port', String(busy)]);
  t.equal(df.code, 1);
  t.match(df.out, new RegExp(`LISTEN_FAILED: cannot listen: proxyPort ${busy} on 127\\.0\\.0\\.1: address already in use`));
  const sn = await run(process.execPath, [join(ROOT, 'supernode/dist/cli.js'), '--host', '127.0.0.1', '--data-dir', join(dir, 'sn'), '--port', String(busy)]);
  t.equal(sn.code, 1, 'and the process exits instead of lingering with half its servers');
  t.match(sn.out, new RegExp(`cannot listen: port ${busy} on 127\\.0\\.0\\.1: address already in use`));
});

t.test('--help shows every default and environment variable', async (t) => {
  const df = await run(process.execPath, [join(ROOT, 'dfdaemon/dist/cli.js'), '--help']);
  t.equal(df.code, 0);
  t.match(df.out, /--proxy-port <value>\s+mirror\/proxy port \[\$DFDAEMON_PROXY_PORT\]\s+\(default: 65001\)/);
  t.match(df.out, /--shutdown-grace-seconds <value>[^-]+\(default: 10\)/);
  const sn = await run(process.execPath, [join(ROOT, 'supernode/dist/cli.js'), '--help']);
  t.equal(sn.code, 0);
  t.match(sn.out, /--port <value>\s+REST \+ ws \+ metrics port \[\$SUPERNODE_PORT\]\s+\(default: 8002\)/);
});

t.test('dfctl: a malformed header is named by its position, never printed', async (t) => {
  const r = await run(process.execPath, [join(ROOT, 'supernode/dist/dfctl.js'), 'preheat', 'alpine', '--supernode', 'http://127.0.0.1:9', '-H', 'Authorization Basic SECRET-CREDENTIAL']);
  t.equal(r.code, 2);
  t.match(r.out, /--header #1 wants 'Name: value'/);
  t.notOk(r.out.includes('SECRET-CREDENTIAL'), 'the credential is not echoed');
  const half = await run(process.execPath, [join(ROOT, 'supernode/dist/dfctl.js'), 'preheat', 'alpine', '--supernode', 'https://127.0.0.1:9', '--cert-file', '/nonexistent.crt']);
  t.same([half.code, /needs both --cert-file and --key-file/.test(half.out)], [2, true], `a certificate without its key: a usage error (${half.out.trim()})`);
  for (const bad of ['abc', '-5']) {
    const timeout = await run(process.execPath, [join(ROOT, 'supernode/dist/dfctl.js'), 'preheat', 'alpine', '--supernode', 'http://127.0.0.1:9', '--wait', `--timeout=${bad}`]);
    t.same([timeout.code, /--timeout wants seconds/.test(timeout.out)], [2, true], `--timeout ${bad}: a usage error, not a wait for ever (${timeout.out.trim()})`);
  }
});

t.test('run.sh passes its flags through (moved ports work, the hint names them) and refuses unknown ones', async (t) => {
  const bad = await run('bash', ['scripts/run.sh', '--prot', '9000']);
  t.equal(bad.code, 2);
  t.match(bad.out, /Unknown option '--prot'/);
  const [port, proxy, upload, health] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const home = await tempDir(t);
  // The registry and the secret as flags: the supernode seeds from that registry, and no second secret is made.
  const secretFile = join(await tempDir(t), 'secret');
  await writeFile(secretFile, 'a-cluster-secret-given-as-a-flag\n', { mode: 0o600 });
  const up = await run(
    'bash',
    ['scripts/run.sh', '--port', String(port), '--proxy-port', String(proxy), '--upload-port', String(upload), '--health-port', String(health), '--log-level', 'warn', '--registries', 'http://127.0.0.1:5999', '--cluster-secret-file', secretFile, '--advertise-url', `http://127.0.0.1:${upload}`],
    // The environment has a secret too (the tests' own): the flag wins, as every flag does.
    { env: { DAMSELFLY_HOME: home, DAMSELFLY_CLUSTER_SECRET: TEST_SECRET }, until: /try: .*/ },
  );
  t.match(up.out, /seeds from\s+http:\/\/127\.0\.0\.1:5999\n/, 'the supernode may seed from the registry given as a flag');
  t.match(up.out, new RegExp(`cluster secret ${secretFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n`));
  t.notOk(existsSync(join(home, 'cluster-secret')), 'no secret file made beside the one given');
  // --advertise-url is the upload server's; the supernode keeps its own name.
  t.match(up.out, new RegExp(`upload\\s+http://127\\.0\\.0\\.1:${upload}\\n`), 'the upload server announced at --advertise-url');
  // Bound to every interface, the supernode is announced at this host's address, for other hosts to join.
  const external = Object.values(networkInterfaces()).flat().find((a) => a?.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.1';
  t.match(up.out, new RegExp(`supernode\\s+http://${external.replace(/\./g, '\\.')}:${port}`));
  t.match(up.out, new RegExp(`proxy/mirror\\s+http://127\\.0\\.0\\.1:${proxy}`));
  t.match(up.out, new RegExp(`try: node dfget/dist/cli\\.js <url> -O <file> --daemon http://127\\.0\\.0\\.1:${proxy}`), 'the hint works with the moved port');
});

t.test('absurd origin sizes are refused with a clear error, never a sparse file or a crash', async (t) => {
  const sizes: Record<string, string> = { '/pb': '1125899906842624', '/unsafe': '9007199254740993', '/tib': String(1024 ** 4) };
  const origin = createServer((req, res) => {
    const total = sizes[req.url ?? ''];
    if (!total) return void res.writeHead(404).end();
    res.writeHead(206, { 'content-range': `bytes 0-0/${total}`, 'content-length': 1 }).end('x');
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => origin.close(r)));
  const base = `http://127.0.0.1:${(origin.address() as { port: number }).port}`;
  const sn = await startSupernode(t);
  for (const [path, want, code] of [
    ['/pb', 413, 'ORIGIN_TOO_LARGE'],
    ['/tib', 413, 'ORIGIN_TOO_LARGE'],
    ['/unsafe', 502, 'ORIGIN_BAD_STATUS'],
  ] as const) {
    const res = await request(`${sn.url}/api/v1/tasks`, { method: 'POST', headers: { authorization: `Bearer ${OPERATOR_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ url: base + path }) });
    const body = (await res.body.json()) as { code: string; message: string };
    t.equal(res.statusCode, want, `${path}: ${body.message}`);
    t.equal(body.code, code);
  }
  const dir = await tempDir(t);
  const alone = await dfget([`${base}/pb`, '-O', join(dir, 'f'), '--standalone', '--no-progress']);
  t.equal(alone.code, 3, alone.stderr);
  t.match(alone.stderr, /origin object too large: 1125899906842624 bytes > maxBlobSize 274877906944/);
});
