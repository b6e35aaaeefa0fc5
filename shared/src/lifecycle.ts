/**
 * Running a long-lived component as a process: start it, stop it on SIGINT/SIGTERM within a bounded grace, and make
 * command-line help show what each setting defaults to. Shared by the supernode and dfdaemon CLIs.
 */
import { Command } from 'commander';
import { kebab, type ConfigSources, type FieldSpec, type Schema } from './config.js';
import { describeError } from './errors.js';

export interface Component {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Runs `start`; if it fails part-way (a port in use), runs `stop` so nothing it already started stays up. */
export async function startOrUndo(start: () => Promise<void>, stop: () => Promise<void>): Promise<void> {
  try {
    await start();
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
}

/** Help text for a setting: its doc, environment variable and default. */
export function optionHelp(spec: FieldSpec): string {
  const parts = [spec.doc];
  if (spec.env) parts.push(`[$${spec.env}]`);
  if (spec.default !== undefined && !(Array.isArray(spec.default) && spec.default.length === 0) && spec.default !== '') {
    parts.push(`(default: ${typeof spec.default === 'object' ? JSON.stringify(spec.default) : String(spec.default)})`);
  }
  return parts.join(' ');
}

/**
 * Stops `component` on the first SIGINT/SIGTERM and exits 0 when it has stopped; if that takes longer than `graceMs`
 * (a stuck transfer, a disk that does not answer), exits 1 anyway: an orchestrator never needs SIGKILL. A second
 * signal exits at once.
 */
export function stopOnSignals(name: string, component: Component, graceMs: number): void {
  let stopping = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (stopping) process.exit(1);
      stopping = true;
      const hard = setTimeout(() => {
        process.stderr.write(`${name}: did not stop within ${graceMs} ms, exiting anyway\n`);
        process.exit(1);
      }, graceMs);
      component.stop().then(
        () => {
          clearTimeout(hard);
          process.exit(0);
        },
        (err: unknown) => {
          process.stderr.write(`${name}: stop failed: ${describeError(err)}\n`);
          process.exit(1);
        },
      );
    });
  }
}

export interface CliSpec<C, T extends Component> {
  name: string;
  description: string;
  schema: Schema;
  load(sources: ConfigSources): C;
  create(config: C): T;
  /** How long a stop may take before the process exits anyway. */
  graceMs(config: C): number;
}

/**
 * The whole life of a daemon process: flags from the schema (with their env variables and defaults in `--help`),
 * config validated once (every problem listed, exit 1), start (a failure to listen names the setting, exit 1), then
 * run until a signal and stop within the grace.
 */
export async function runCli<C, T extends Component>(spec: CliSpec<C, T>): Promise<void> {
  const program = new Command(spec.name)
    .description(spec.description)
    .option('-c, --config <file>', 'YAML config file (keys as the long options, camelCase)')
    // An unknown option is named without its value: `--cluster-secret=…` (no flag any more) must not reach the logs.
    .configureOutput({ outputError: (text, write) => write(text.replace(/'(--?[^'=\s]+)=[^']*'/g, "'$1=…'")) });
  for (const [key, field] of Object.entries(spec.schema)) if (!field.noFlag) program.option(`--${kebab(key)} <value>`, optionHelp(field));
  program.parse();
  const { config: file, ...flags } = program.opts<Record<string, string>>();
  let config: C;
  let component: T;
  try {
    config = spec.load({ file, flags, env: process.env });
    component = spec.create(config);
    await component.start();
  } catch (err) {
    process.stderr.write(`${spec.name}: ${describeError(err)}\n`);
    process.exit(1);
  }
  stopOnSignals(spec.name, component, spec.graceMs(config));
}
