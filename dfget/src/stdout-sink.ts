/**
 * -O -: the body streamed to stdout as it arrives, binary-safe, hashed on the way. Bytes written cannot be taken back,
 * so a digest mismatch (or any failure) after some went out says so. A reader that closes the pipe early (`| head`)
 * ends the run quietly with 141, as SIGPIPE ends other tools.
 */
import type { Writable } from 'node:stream';
import type { DamselflyError } from '@damselfly/shared';
import { dfgetError } from './errors.js';
import { Sink } from './sink.js';

export class StdoutSink extends Sink {
  readonly #out: Writable;
  #streamError?: Error;

  constructor(out: Writable = process.stdout) {
    super();
    this.#out = out;
    // Without a listener an EPIPE would be thrown as an uncaught exception; it is reported through the next write.
    out.on('error', (err) => (this.#streamError ??= err));
  }

  protected put(chunk: Buffer): Promise<void> {
    // The callback comes once the chunk is handed to the OS (or with the error), whether stdout is a file or a pipe.
    return new Promise((resolve, reject) => this.#out.write(chunk, (err) => (err ? reject(err) : resolve())));
  }

  /**
   * Bytes sent to stdout cannot be read back to check after a resumed transfer, so this sink takes nobody's word for
   * the digest: it hashes everything (about 1 ms of CPU per MiB).
   */
  override vouch(): void {}

  protected async readBack(): Promise<void> {}

  protected async finish(): Promise<void> {}

  protected async close(): Promise<void> {}

  protected failed(err: unknown): DamselflyError {
    // A write after the stream failed reports "destroyed": the stream's own error is the cause.
    const cause = this.#streamError ?? err;
    if ((cause as { code?: string }).code === 'EPIPE') return dfgetError('DFGET_PIPE_CLOSED', '', cause);
    return dfgetError('DFGET_OUTPUT', `stdout: ${cause instanceof Error ? cause.message : String(cause)}`, cause);
  }

  override leftover(): string | undefined {
    return this.bytes ? `${this.bytes} bytes already went to stdout and cannot be taken back: discard them` : undefined;
  }
}
