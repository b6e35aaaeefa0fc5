/**
 * Where the bytes go. Every sink hashes what it is given, so the digest is checked whatever the path (dfdaemon, peer,
 * origin), and turns a failed write into a typed error at once: a write that fails must end the download with that
 * cause, never be waited on forever (a `drain` that never comes) or be mistaken for the sender's fault.
 */
import { createHash } from 'node:crypto';
import type { DamselflyError } from '@damselfly/shared';
import { dfgetError } from './errors.js';

export abstract class Sink {
  bytes = 0;
  /** The first write failure; a failed sink refuses every later write with it. */
  failure?: DamselflyError;
  readonly #hash = createHash('sha256');
  /** Set when the sender vouched for the digest (the dfdaemon checks every byte itself): no second hash here. */
  #vouched?: string;
  #closed = false;

  /**
   * The dfdaemon answered for exactly this digest: it verifies every piece and the whole blob (and holds the last
   * piece back until it has), so hashing every byte again here would only cost CPU. `--verify` keeps the hash.
   */
  vouch(digest: string): void {
    if (this.bytes === 0) this.#vouched = digest;
  }

  /** abort() was called: the run is over. */
  protected get ended(): boolean {
    return this.#closed;
  }

  get vouched(): boolean {
    return this.#vouched !== undefined;
  }

  /**
   * The sender's word no longer covers what follows (a transfer resumed with another answer): the bytes so far are
   * read back into the hash, and every later one is hashed as it comes.
   */
  async unvouch(): Promise<void> {
    if (!this.#vouched) return;
    this.#vouched = undefined;
    try {
      await this.readBack(this.bytes, (chunk) => this.#hash.update(chunk));
    } catch (err) {
      this.failure ??= this.failed(err);
      throw this.failure;
    }
  }

  /**
   * The whole content came by another way than write() (a file the one-shot peer completed, moved into place): `length`
   * bytes, which are `digest` when the peer verified them; otherwise they are read back and hashed here.
   */
  protected async adopted(length: number, digest: string | undefined): Promise<void> {
    this.bytes = length;
    if (digest) {
      this.#vouched = digest;
      return;
    }
    try {
      await this.readBack(length, (chunk) => this.#hash.update(chunk));
    } catch (err) {
      this.failure ??= this.failed(err);
      throw this.failure;
    }
  }

  /** Resolves once `chunk` is written (so awaiting it is the backpressure); rejects with the typed failure. */
  async write(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    // After abort() the run is over; a transfer still winding down in the background must not write on.
    if (this.#closed) throw dfgetError('DFGET_OUTPUT', 'the run has ended');
    if (!this.#vouched) this.#hash.update(chunk);
    this.bytes += chunk.length;
    try {
      await this.put(chunk);
    } catch (err) {
      this.failure ??= this.failed(err);
      throw this.failure;
    }
  }

  /** Checks the digest (when one is known) and makes the output final. Returns the sha256 of what was written. */
  async commit(digest: string | undefined): Promise<string> {
    if (this.failure) throw this.failure;
    const got = this.#vouched ?? `sha256:${this.#hash.digest('hex')}`;
    if (digest && got !== digest) throw dfgetError('DFGET_DIGEST', `the downloaded bytes are ${got}, not ${digest}`);
    await this.finish().catch((err: unknown) => {
      throw (this.failure ??= this.failed(err));
    });
    return got;
  }

  /** Stops taking bytes; whatever was started is left for the caller's Scratch to remove. */
  async abort(): Promise<void> {
    this.#closed = true;
    await this.close().catch(() => {});
  }

  /** What a failed run leaves the user with, said after the failure's message (or undefined: nothing). */
  leftover(): string | undefined {
    return undefined;
  }

  protected abstract put(chunk: Buffer): Promise<void>;
  /** Feeds bytes [0, length) written so far to `take`, in order (only a sink that accepts a vouch needs to). */
  protected abstract readBack(length: number, take: (chunk: Buffer) => void): Promise<void>;
  protected abstract finish(): Promise<void>;
  protected abstract close(): Promise<void>;
  /** The typed error a write failure stands for. */
  protected abstract failed(err: unknown): DamselflyError;
}
