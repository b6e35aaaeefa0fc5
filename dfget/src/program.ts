/**
 * The command line. Commander only splits argv here: unknown options and extra operands are let through, so that
 * validateOptions can list every problem at once (exit 2) instead of commander stopping at the first (exit 1).
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { dfgetError } from './errors.js';
import { DEFAULT_DAEMON, type RawOptions } from './options.js';

const collect = (v: string, prev: string[]) => [...prev, v];
const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

function build(): Command {
  return new Command('dfget')
    .description('Download a URL through the Damselfly P2P network (the local dfdaemon, or as a one-shot peer when none runs)')
    .usage('<url> -O <file|-> [options]')
    .version(version)
    .argument('[url]', 'http(s) URL to fetch')
    .option('-O, --output <file>', "where to write the file; '-' streams it to stdout")
    .option('--digest <digest>', 'expected sha256:<hex> of the whole file (registry blob URLs carry their own)')
    .addOption(new Option('-H, --header <header>', "header for the origin, 'Name: value', or @file for a file's lines (repeatable)").argParser(collect).default([], 'none'))
    .addOption(new Option('--supernode <url>', 'supernode to use as a one-shot peer, when no dfdaemon runs (repeatable)').argParser(collect).default([], 'none'))
    .addOption(new Option('--daemon <url>', 'local dfdaemon proxy').env('DFGET_DAEMON').default(DEFAULT_DAEMON))
    .option('--standalone', 'do not use the local dfdaemon')
    .option('--verify', 'hash the file here too, even when the dfdaemon vouches for its digest')
    .option('--copy', "write a file of its own, never a hard link to the local dfdaemon's cached copy")
    .option('--no-progress', 'no progress bar (there is none when stderr is not a terminal)')
    .addOption(new Option('--timeout <seconds>', 'give up after this long in total, exit 3').default('0', '0 = never'))
    .option('--cluster-secret-file <file>', 'cluster secret, for --supernode as a one-shot peer [$DAMSELFLY_CLUSTER_SECRET_FILE, $DAMSELFLY_CLUSTER_SECRET]')
    .allowUnknownOption()
    .allowExcessArguments()
    .exitOverride()
    // Commander's own complaints (an option missing its value) are reported like every other usage error.
    .configureOutput({ outputError: () => {} });
}

/** What the command line asks for; `help: true` once --help or --version has been printed (exit 0). */
export type Parsed = { help: true } | { help: false; raw: RawOptions };

export function parseArgs(argv: string[] = process.argv): Parsed {
  const program = build();
  try {
    program.parse(argv);
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    if (err.exitCode === 0) return { help: true };
    throw dfgetError('DFGET_USAGE', err.message.replace(/^error: /, ''), err);
  }
  const opts = program.opts<Omit<RawOptions, 'args' | 'daemonFrom'>>();
  return { help: false, raw: { ...opts, args: program.args, daemonFrom: program.getOptionValueSource('daemon') === 'env' ? '$DFGET_DAEMON' : '--daemon' } };
}
