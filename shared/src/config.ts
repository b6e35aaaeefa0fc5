/**
 * Config loading shared by every component: defaults < YAML file < environment < flags. Validated once at start-up;
 * every problem is collected and reported together (like fastify's initial-config validation), then the result is
 * frozen.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { sharedError } from './errors.js';

export type FieldType = 'string' | 'int' | 'bool' | 'url' | 'urls' | 'strings' | 'labels' | 'size';

export interface FieldSpec {
  type: FieldType;
  doc: string;
  default?: unknown;
  /** Environment variable that sets this field. */
  env?: string;
  min?: number;
  max?: number;
  /** Allowed values for strings. */
  oneOf?: readonly string[];
  /**
   * Not a command-line flag, only a config-file key and an environment variable: a command line is visible to every
   * local user (`ps`, /proc/<pid>/cmdline) and lands in shell history.
   */
  noFlag?: boolean;
}

export type Schema = Readonly<Record<string, FieldSpec>>;

export interface ConfigSources {
  /** Path of a YAML file (optional). */
  file?: string;
  /** Values from command-line flags, already keyed by field name; undefined entries are ignored. */
  flags?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?$/i;
const SIZE_UNITS: Record<string, number> = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

function coerce(spec: FieldSpec, raw: unknown, where: string, errors: string[]): unknown {
  const fail = (why: string) => {
    errors.push(`${where}: ${why}`);
    return undefined;
  };
  const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : String(v).split(',').map((s) => s.trim()).filter(Boolean));
  switch (spec.type) {
    case 'string': {
      if (typeof raw !== 'string' && typeof raw !== 'number') return fail('must be a string');
      const s = String(raw);
      if (spec.oneOf && !spec.oneOf.includes(s)) return fail(`must be one of ${spec.oneOf.join(', ')}, got ${JSON.stringify(s)}`);
      return s;
    }
    case 'int':
    case 'size': {
      let n: number;
      if (typeof raw === 'number') n = raw;
      else if (typeof raw === 'string' && spec.type === 'size' && SIZE_RE.test(raw.trim())) {
        const m = SIZE_RE.exec(raw.trim())!;
        n = Math.floor(Number(m[1]) * (SIZE_UNITS[(m[2] ?? 'b')[0]!.toLowerCase()] ?? 1));
      } else if (typeof raw === 'string' && /^-?\d+$/.test(raw.trim())) n = Number(raw);
      else return fail(`must be ${spec.type === 'size' ? 'a size like 10GiB' : 'an integer'}, got ${JSON.stringify(raw)}`);
      if (!Number.isInteger(n)) return fail(`must be an integer, got ${n}`);
      if (spec.min !== undefined && n < spec.min) return fail(`must be >= ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max) return fail(`must be <= ${spec.max}, got ${n}`);
      return n;
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      return fail(`must be true or false, got ${JSON.stringify(raw)}`);
    }
    case 'url':
    case 'urls': {
      const items = spec.type === 'url' ? [raw] : list(raw);
      const out: string[] = [];
      for (const item of items) {
        try {
          const u = new URL(String(item));
          if (u.protocol !== 'http:' && u.protocol !== 'https:' && u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new Error();
          out.push(u.href.replace(/\/$/, ''));
        } catch {
          fail(`not a valid http(s) URL: ${JSON.stringify(item)}`);
        }
      }
      return spec.type === 'url' ? out[0] : out;
    }
    case 'strings':
      return list(raw).map(String);
    case 'labels': {
      if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
        return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, String(v)]));
      }
      const out: Record<string, string> = {};
      for (const pair of list(raw)) {
        const [k, v] = String(pair).split('=');
        if (!k || v === undefined) return fail(`labels must be key=value pairs, got ${JSON.stringify(pair)}`);
        out[k] = v;
      }
      return out;
    }
  }
}

/**
 * Cross-field checks run after every field was read: they append problems to `errors` (reported with the rest) and
 * may return derived values to freeze into the config (e.g. a secret read from a file).
 */
export type ConfigCheck = (values: Record<string, unknown>, errors: string[]) => Record<string, unknown> | void;

/** Loads, validates and freezes a config; throws CONFIG_INVALID listing every problem. */
export function loadConfig<T>(schema: Schema, sources: ConfigSources, check?: ConfigCheck): Readonly<T> {
  const errors: string[] = [];
  let fromFile: Record<string, unknown> = {};
  if (sources.file) {
    try {
      const doc: unknown = parseYaml(readFileSync(sources.file, 'utf8'));
      if (doc !== null && doc !== undefined) {
        if (typeof doc !== 'object' || Array.isArray(doc)) errors.push(`${sources.file}: must be a YAML mapping`);
        else fromFile = doc as Record<string, unknown>;
      }
    } catch (err) {
      errors.push(`${sources.file}: ${(err as Error).message.split('\n')[0]}`);
    }
    for (const key of Object.keys(fromFile)) if (!(key in schema)) errors.push(`${sources.file}: unknown key ${JSON.stringify(key)}`);
  }
  const env = sources.env ?? {};
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    let value: unknown = spec.default;
    if (fromFile[key] !== undefined && fromFile[key] !== null) value = coerce(spec, fromFile[key], `${sources.file}: ${key}`, errors);
    if (spec.env && env[spec.env] !== undefined && env[spec.env] !== '') value = coerce(spec, env[spec.env], `$${spec.env}`, errors);
    const flag = sources.flags?.[key];
    if (flag !== undefined) value = coerce(spec, flag, `--${kebab(key)}`, errors);
    out[key] = value;
  }
  if (check) Object.assign(out, check(out, errors) ?? {});
  if (errors.length) throw sharedError('CONFIG_INVALID', errors.map((e) => `  - ${e}`).join('\n'));
  return Object.freeze(out) as Readonly<T>;
}

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Markdown table of a schema, for the README. */
export function describeSchema(schema: Schema): string {
  const rows = Object.entries(schema).map(
    // A flag always takes a value, booleans too (`--insecure true`): a bare one would swallow the next argument.
    ([k, s]) => `| \`${k}\` | \`--${kebab(k)}${s.type === 'bool' ? ' <bool>' : ''}\` | ${s.env ? `\`${s.env}\`` : ''} | ${JSON.stringify(s.default ?? '')} | ${s.doc} |`,
  );
  return ['| key | flag | env | default | meaning |', '| --- | --- | --- | --- | --- |', ...rows].join('\n');
}
