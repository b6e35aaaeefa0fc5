#!/usr/bin/env node
/**
 * dfget <url> -O <file>: fetch a blob through the local dfdaemon (P2P), or as a one-shot peer when none runs.
 * Exit 0 only when <file> holds the whole (digest-verified, when a digest is known) blob; otherwise one line on
 * stderr, the exit code of the table in errors.ts, and no partial <file> or temporary file.
 */
import { parseArgs } from './program.js';
import { validateOptions } from './options.js';
import { run } from './run.js';
import { outcomeOf, type Outcome } from './classify.js';

async function main(): Promise<Outcome> {
  const parsed = parseArgs();
  if (parsed.help) return { status: 0 };
  return run(validateOptions(parsed.raw));
}

function exit({ status, message }: Outcome): void {
  if (message === undefined) return process.exit(status);
  // One line, whatever the error held (a list of usage problems, a multi-line remote message).
  const line = message.replace(/\s*\n\s*/g, '; ').trim();
  // Exit once the line is out: stderr may be a pipe, written asynchronously.
  process.stderr.write(`dfget: ${line}\n`, () => process.exit(status));
}

main().then(exit, (err: unknown) => exit(outcomeOf(err)));
