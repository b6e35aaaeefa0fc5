import { dirname, resolve } from 'node:path';
import { readFileSync, statSync } from 'node:fs';
import { blobDigestOf, headerArgs, parseDigest, parseHttpUrl, resolveTrust, type Trust } from '@damselfly/shared';
import { dfgetError } from './errors.js';

/** An HTTP header name (RFC 9110 token) and a value without control characters (tab allowed). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[^\x00-\x08\x0a-\x1f\x7f]*$/;
/** The longest --timeout a timer can hold (2^31-1 ms, in whole seconds). */
const MAX_TIMEOUT_S = 2_147_483;

export const DEFAULT_DAEMON = 'http://127.0.0.1:65001';

/** `-O -`: the verified body goes to stdout. */
export const STDOUT = '-';

export interface DfgetOptions {
  url: URL;
  /** Absolute path, or STDOUT. */
  output: string;
  /** The digest the file must match: --digest, or the one a registry blob URL names. */
  digest?: string;
  headers: Record<string, string>;
  supernodes: string[];
  daemon: string;
  /** Skip the local daemon and act as a one-shot peer. */
  standalone: boolean;
  /** Hash locally even when the dfdaemon vouches for the digest. */
  verify: boolean;
  /** Write a file of its own, never a link to the dfdaemon's cached copy. */
  copy: boolean;
  progress: boolean;
  timeoutMs: number;
  /** Cluster secret and TLS material for talking to supernodes as a one-shot peer (from the environment). */
  trust: Trust;
}

export interface RawOptions {
  /** Operands and unrecognised options, in the order commander left them. */
  args?: string[];
  output?: string;
  digest?: string;
  header?: string[];
  supernode?: string[];
  daemon?: string;
  /** Where `daemon` came from, for messages: '--daemon' or '$DFGET_DAEMON'. */
  daemonFrom?: string;
  standalone?: boolean;
  verify?: boolean;
  copy?: boolean;
  progress?: boolean;
  timeout?: string;
  clusterSecretFile?: string;
}

/** Validates everything up front and reports every problem at once. */
export function validateOptions(raw: RawOptions, env: NodeJS.ProcessEnv = process.env): DfgetOptions {
  const errors: string[] = [];
  const attempt = <T>(f: () => T): T | undefined => {
    try {
      return f();
    } catch (err) {
      errors.push((err as Error).message);
      return undefined;
    }
  };
  // A lone '-' is an operand (stdin/stdout by convention), anything else dashed is an option we do not know.
  const isOption = (a: string) => a.startsWith('-') && a !== STDOUT;
  const args = raw.args ?? [];
  // Named, never shown: a stray argument is often a mistyped option's value, a header with its credential.
  for (const a of args.filter(isOption)) errors.push(`unknown option ${JSON.stringify(a.split('=')[0]!.slice(0, 64))}`);
  const operands = args.filter((a) => !isOption(a));
  const [rawUrl, ...extra] = operands;
  for (const [i] of extra.entries()) errors.push(`unexpected argument (#${i + 2} of ${operands.length}: dfget takes one URL)`);
  const url = rawUrl ? attempt(() => parseHttpUrl(rawUrl)) : (errors.push('missing <url>'), undefined);
  let digest = raw.digest;
  if (digest !== undefined && attempt(() => parseDigest(digest!))) {
    // Both given and different is a caller mistake, said as such rather than fetched and failed (or "malformed").
    const fromUrl = url && blobDigestOf(url);
    if (fromUrl && fromUrl !== digest) errors.push(`--digest ${digest} conflicts with the URL's ${fromUrl}`);
  }
  digest ??= url && blobDigestOf(url);
  const headers: Record<string, string> = {};
  // -H @file: a credential need not be on the command line (see headerArgs).
  for (const { line: h, where } of headerArgs(raw.header ?? [], (file) => attempt(() => readFileSync(file, 'utf8')))) {
    // Never echoed: a header is often a credential, and a malformed one is no less secret.
    const i = h.indexOf(':');
    const name = i > 0 ? h.slice(0, i).trim() : '';
    const value = i > 0 ? h.slice(i + 1).trim() : '';
    if (!HEADER_NAME.test(name)) errors.push(`--header ${where} must look like 'Name: value' (a name of letters, digits and -)`);
    else if (!HEADER_VALUE.test(value)) errors.push(`--header ${name}: its value holds a control character (a newline?)`);
    else headers[name.toLowerCase()] = value;
  }
  const supernodes: string[] = [];
  for (const s of raw.supernode ?? []) {
    const u = attempt(() => parseHttpUrl(s));
    if (u) supernodes.push(u.href.replace(/\/$/, ''));
  }
  const daemon = raw.daemon ?? DEFAULT_DAEMON;
  attempt(() => {
    try {
      return parseHttpUrl(daemon);
    } catch (err) {
      throw new Error(`${raw.daemonFrom ?? '--daemon'}: ${(err as Error).message}`);
    }
  });
  let output = '';
  if (!raw.output) errors.push('missing -O <file>');
  else if (raw.output === STDOUT) output = STDOUT;
  else {
    output = resolve(raw.output);
    const dir = attempt(() => statSync(dirname(output)));
    if (dir && !dir.isDirectory()) errors.push(`${dirname(output)} is not a directory`);
    const st = attempt(() => statSync(output, { throwIfNoEntry: false }));
    if (st?.isDirectory()) errors.push(`${output} is a directory`);
  }
  const timeoutMs = raw.timeout === undefined ? 0 : Number(raw.timeout) * 1000;
  if (raw.timeout?.trim() === '' || !Number.isFinite(timeoutMs) || timeoutMs < 0) errors.push(`--timeout must be seconds, got ${JSON.stringify(raw.timeout)}`);
  // Node's timers take at most 2^31-1 ms; a longer delay fires at once (it would time out in a millisecond).
  else if (timeoutMs > MAX_TIMEOUT_S * 1000) errors.push(`--timeout must be at most ${MAX_TIMEOUT_S} s (0, the default, is no limit), got ${raw.timeout}`);
  // The same trust settings as the daemons', from the same environment variables; dfget listens on nothing.
  const trust = resolveTrust(
    {
      clusterSecret: raw.clusterSecretFile ? undefined : env.DAMSELFLY_CLUSTER_SECRET,
      clusterSecretFile: raw.clusterSecretFile ?? env.DAMSELFLY_CLUSTER_SECRET_FILE,
      insecure: false,
      tlsCert: env.DAMSELFLY_TLS_CERT,
      tlsKey: env.DAMSELFLY_TLS_KEY,
      tlsCa: env.DAMSELFLY_TLS_CA,
      tlsClientAuth: false,
    },
    {},
    errors,
  );
  // `user:password@` in the URL is Basic authentication, as curl and wget take it: it becomes that header (unless one
  // was given) and leaves the URL, which is logged, stored and shown without it anyway.
  if (url && (url.username || url.password)) {
    if (headers.authorization === undefined) {
      const user = attempt(() => decodeURIComponent(url.username));
      const pass = attempt(() => decodeURIComponent(url.password));
      if (user !== undefined && pass !== undefined) headers.authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    }
    url.username = '';
    url.password = '';
  }
  if (errors.length) throw dfgetError('DFGET_USAGE', errors.join('\n'));
  return {
    url: url!,
    output,
    digest,
    headers,
    supernodes,
    daemon: daemon.replace(/\/$/, ''),
    standalone: raw.standalone ?? false,
    verify: raw.verify ?? false,
    copy: raw.copy ?? false,
    progress: raw.progress ?? true,
    timeoutMs,
    trust,
  };
}
