/**
 * Where the bytes go: a temporary file beside the output, hashed while written, renamed into place only after the
 * digest (when known) matched. On any failure the temporary file is removed, so `-O <file>` is either the whole
 * verified blob or untouched.
 */
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { dfgetError } from './errors.js';

export class FileSink {
  readonly tmp: string;
  readonly stream: WriteStream;
  readonly #hash: Hash = createHash('sha256');
  readonly #output: string;
  bytes = 0;
  #error?: Error;

  constructor(output: string) {
    this.#output = output;
    this.tmp = join(dirname(output), `.${basename(output)}.dfget-${process.pid}.tmp`);
    this.stream = createWriteStream(this.tmp, { highWaterMark: 1 << 20 });
    // Write errors (disk full…) surface at commit; they must never crash the process and leave the file behind.
    this.stream.on('error', (err) => (this.#error ??= err));
  }

  /** Call for every chunk before it is written. */
  observe(chunk: Buffer): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
  }

  async commit(digest: string | undefined): Promise<string> {
    this.#throwIfFailed();
    await new Promise<void>((resolve, reject) => this.stream.end((err?: Error | null) => (err ? reject(err) : resolve())));
    this.#throwIfFailed();
    const got = `sha256:${this.#hash.digest('hex')}`;
    if (digest && got !== digest) throw dfgetError('DFGET_DIGEST', `${digest} (got ${got})`);
    await rename(this.tmp, this.#output).catch((err: Error) => {
      throw dfgetError('DFGET_OUTPUT', err.message, err);
    });
    return got;
  }

  #throwIfFailed(): void {
    if (this.#error) throw dfgetError('DFGET_OUTPUT', this.#error.message, this.#error);
  }

  async abort(): Promise<void> {
    this.stream.destroy();
    await rm(this.tmp, { force: true });
  }
}
