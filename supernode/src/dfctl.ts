#!/usr/bin/env node
/**
 * dfctl: the operator's command line for a supernode's REST API.
 *   dfctl preheat <image> [--platform linux/amd64]... [--scope supernode|all-peers] [-H 'Name: value']... [--wait]
 *   dfctl preheat-status <job id>
 *   dfctl token
 * Requests carry the operator token, derived from the cluster secret ($DAMSELFLY_CLUSTER_SECRET, or the file in
 * --cluster-secret-file / $DAMSELFLY_CLUSTER_SECRET_FILE), never the secret itself; `dfctl token` prints it (for the
 * dashboard, a scraper's configuration). Exit 0 when the request (and with --wait the job) succeeded, 1 when the job failed,
 * 2 on a usage error, 3 when the supernode could not be reached or refused.
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, CommanderError, Option } from 'commander';
import { Agent, request, type Dispatcher } from 'undici';
import { headerArgs, metricsToken, operatorToken } from '@damselfly/shared';
import type { PreheatJob } from './preheat/jobs.js';

const collect = (v: string, prev: string[]) => [...prev, v];

class Exit extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

interface Common {
  supernode: string;
  clusterSecretFile?: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** A file dfctl needs, read or a usage error naming it. */
function readOrExit(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Exit(2, `cannot read ${what} ${file}: ${(err as Error).message}`);
  }
}

/** The cluster secret as the daemons read it (trimmed), or undefined when none is given. */
function secretOf(o: { clusterSecretFile?: string }): string | undefined {
  const file = o.clusterSecretFile ?? process.env.DAMSELFLY_CLUSTER_SECRET_FILE;
  if (!file) return process.env.DAMSELFLY_CLUSTER_SECRET?.trim() || undefined;
  return readOrExit(file, 'the cluster secret file').toString('utf8').trim();
}

function client(o: Common): { base: string; headers: Record<string, string>; dispatcher?: Dispatcher } {
  const secret = secretOf(o);
  // A supernode serving TLS, with client certificates required (the chart's tls.clientAuth): the members' certificate.
  const cert = o.certFile ?? process.env.DAMSELFLY_TLS_CERT;
  const key = o.keyFile ?? process.env.DAMSELFLY_TLS_KEY;
  const ca = o.caFile ?? process.env.DAMSELFLY_TLS_CA;
  if (!cert !== !key) throw new Exit(2, 'a client certificate needs both --cert-file and --key-file');
  const connect = {
    ...(ca ? { ca: readOrExit(ca, 'the CA file') } : {}),
    ...(cert && key ? { cert: readOrExit(cert, 'the certificate file'), key: readOrExit(key, 'the key file') } : {}),
  };
  const dispatcher = Object.keys(connect).length ? new Agent({ connect }) : undefined;
  return { base: o.supernode.replace(/\/$/, ''), headers: secret ? { authorization: `Bearer ${operatorToken(Buffer.from(secret))}` } : {}, ...(dispatcher ? { dispatcher } : {}) };
}

async function call<T>(c: ReturnType<typeof client>, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(`${c.base}${path}`, {
      method,
      headers: { ...c.headers, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      dispatcher: c.dispatcher,
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
  } catch (err) {
    throw new Exit(3, `supernode ${c.base} unreachable: ${(err as Error).message}`);
  }
  const text = await res.body.text();
  if (res.statusCode >= 400) {
    let msg = text;
    try {
      const j = JSON.parse(text) as { code?: string; message?: string };
      msg = `${j.code}: ${j.message}`;
    } catch {}
    throw new Exit(res.statusCode === 400 ? 2 : 3, `supernode answered ${res.statusCode}: ${msg}`);
  }
  return JSON.parse(text) as T;
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const line = (j: PreheatJob) =>
  `${j.id} ${j.state}: ${j.layers.filter((l) => l.state === 'seeded').length}/${j.layers.length} blobs, ${mib(j.bytes.seeded)} of ${mib(j.bytes.total)}` +
  (j.platforms.length ? ` [${j.platforms.join(', ')}]` : '') +
  (j.peers ? `, ${j.peers.asked} dfdaemons told to fetch` : '');

async function preheat(image: string, o: Common & { platform: string[]; scope: string; header: string[]; wait?: boolean; timeout: string }): Promise<void> {
  if (!/^\d+(\.\d+)?$/.test(o.timeout.trim())) throw new Exit(2, `--timeout wants seconds (0 = never), got ${JSON.stringify(o.timeout.slice(0, 40))}`);
  const c = client(o);
  const headers: Record<string, string> = {};
  for (const { line: h, where } of headerArgs(o.header, (file) => readOrExit(file, 'the header file').toString())) {
    const i = h.indexOf(':');
    // Named by position, never shown: a header is often a credential, and a malformed one is no less secret.
    if (i <= 0) throw new Exit(2, `--header ${where} wants 'Name: value'`);
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  }
  let job = await call<PreheatJob>(c, 'POST', '/api/v1/preheat', { image, scope: o.scope, ...(o.platform.length ? { platforms: o.platform } : {}), ...(o.header.length ? { headers } : {}) });
  process.stdout.write(`${line(job)}\n`);
  if (!o.wait) return;
  const deadline = Number(o.timeout) > 0 ? Date.now() + Number(o.timeout) * 1000 : Infinity;
  let last = '';
  while (job.state !== 'succeeded' && job.state !== 'failed') {
    if (Date.now() > deadline) throw new Exit(3, `not done after ${o.timeout} s: ${line(job)}`);
    await sleep(500);
    job = await call<PreheatJob>(c, 'GET', `/api/v1/preheat/${job.id}`);
    const l = line(job);
    if (l !== last && process.stderr.isTTY) process.stderr.write(`${l}\n`);
    last = l;
  }
  process.stdout.write(`${line(job)}\n`);
  if (job.state === 'failed') throw new Exit(1, job.errors.join('; '));
}

async function main(argv: string[]): Promise<void> {
  const common = (cmd: Command) =>
    cmd
      .addOption(new Option('--supernode <url>', 'supernode base URL').env('DFCTL_SUPERNODE').default('http://127.0.0.1:8002'))
      .option('--cluster-secret-file <file>', 'cluster secret, the operator token is derived from [$DAMSELFLY_CLUSTER_SECRET_FILE, $DAMSELFLY_CLUSTER_SECRET]')
      .option('--ca-file <file>', 'CA the supernode\'s TLS certificate chains to [$DAMSELFLY_TLS_CA]')
      .option('--cert-file <file>', 'client certificate, for a supernode that requires one (mutual TLS) [$DAMSELFLY_TLS_CERT]')
      .option('--key-file <file>', 'its key [$DAMSELFLY_TLS_KEY]');
  const program = new Command('dfctl').description('Operator commands for a Damselfly supernode').exitOverride().configureOutput({ outputError: () => {} });
  common(
    program
      .command('preheat')
      .description('fetch an image\'s blobs into the supernode (scope all-peers: onto every dfdaemon too) before a rollout')
      .argument('<image>', 'registry/repo:tag or registry/repo@sha256:…; http://registry/… for a plain-HTTP registry')
      .addOption(new Option('--platform <os/arch[/variant]>', 'platform to preheat from a multi-arch image (repeatable; default all)').argParser(collect).default([], 'all'))
      .addOption(new Option('--scope <scope>', 'supernode or all-peers').choices(['supernode', 'all-peers']).default('supernode'))
      .addOption(new Option('-H, --header <header>', "header for the registry, 'Name: value', or @file for a file's lines (repeatable)").argParser(collect).default([], 'none'))
      .option('--wait', 'wait for the job to finish (exit 1 if it failed)')
      .addOption(new Option('--timeout <seconds>', 'with --wait, give up after this long (exit 3)').default('0', '0 = never'))
      .action(preheat),
  ).exitOverride();
  common(
    program
      .command('preheat-status')
      .description('show a preheat job')
      .argument('<id>', 'job id')
      .action(async (id: string, o: Common) => {
        process.stdout.write(`${JSON.stringify(await call<PreheatJob>(client(o), 'GET', `/api/v1/preheat/${encodeURIComponent(id)}`), null, 2)}\n`);
      }),
  ).exitOverride();
  program
    .command('token')
    .description('print the operator token (the dashboard, the REST API), or with --metrics the metrics token (a scraper\'s Authorization: Bearer: /metrics only), derived from the cluster secret')
    .option('--cluster-secret-file <file>', 'cluster secret [$DAMSELFLY_CLUSTER_SECRET_FILE, $DAMSELFLY_CLUSTER_SECRET]')
    .option('--metrics', 'the metrics token instead: it reads /metrics on supernodes and dfdaemons, nothing else')
    .action((o: { clusterSecretFile?: string; metrics?: boolean }) => {
      const secret = secretOf(o);
      if (!secret) throw new Exit(2, 'no cluster secret: give --cluster-secret-file or set $DAMSELFLY_CLUSTER_SECRET_FILE / $DAMSELFLY_CLUSTER_SECRET');
      process.stdout.write(`${(o.metrics ? metricsToken : operatorToken)(Buffer.from(secret))}\n`);
    })
    .exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return;
      throw new Exit(2, err.message.replace(/^error: /, ''));
    }
    throw err;
  }
}

main(process.argv).then(
  () => process.exit(0),
  (err: unknown) => {
    const code = err instanceof Exit ? err.code : 3;
    process.stderr.write(`dfctl: ${(err as Error).message}\n`, () => process.exit(code));
  },
);
