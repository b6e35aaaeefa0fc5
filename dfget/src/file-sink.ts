/**
 * -O <file>: a temporary file beside the output, renamed into place only after the digest (when known) matched, so
 * the output is either the whole verified blob or untouched (opened for reading too: a resumed transfer reads back
 * what it has, to hash it). The temporary file is opened before anything is
 * fetched: a read-only or missing destination fails at once (exit 5), not after the download.
 */
import { randomBytes } from 'node:crypto';
import { link, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BufferPool, readFileChunks, type DamselflyError } from '@damselfly/shared';
import { dfgetError } from './errors.js';
import { Sink } from './sink.js';
import type { Scratch } from './scratch.js';

/** The file a link must turn out to be (see FileSink.link): device, inode and mtime as decimal strings, and size. */
export interface LinkTarget {
  dev: string;
  ino: string;
  size: number;
  mtimeNs: string;
}

/**
 * Only a file this user owns, that nobody else may write, is taken as the output: whoever else owns the file (another
 * account the dfdaemon runs as, or anyone who answers on its port) could change the output after it was checked, and
 * one who may write it could too.
 */
function ours(st: { uid: number | bigint; mode: number | bigint; isFile(): boolean }): boolean {
  const uid = process.getuid?.();
  return st.isFile() && uid !== undefined && Number(st.uid) === uid && (Number(st.mode) & 0o022) === 0;
}

export class FileSink extends Sink {
  readonly tmp: string;
  /** The output is a link to the dfdaemon's cached file (see link). */
  linked = false;
  readonly output: string;
  readonly #fh: FileHandle;
  readonly #scratch: Scratch;

  private constructor(output: string, tmp: string, fh: FileHandle, scratch: Scratch) {
    super();
    this.output = output;
    this.tmp = tmp;
    this.#fh = fh;
    this.#scratch = scratch;
  }

  static tmpPathFor(output: string): string {
    // Random, not the pid alone: two containers with the same small pid writing into one shared directory would
    // truncate each other's file (each then renaming a file another run wrote into). Opened exclusively below.
    // The output's name, cut so the whole name stays within the 255 bytes a filesystem takes (a valid long output name
    // must not fail for its temporary file's).
    const suffix = `.dfget-${process.pid}-${randomBytes(6).toString('hex')}.tmp`;
    const chars = [...basename(output)];
    while (Buffer.byteLength(`.${chars.join('')}${suffix}`) > 255) chars.pop();
    return join(dirname(output), `.${chars.join('')}${suffix}`);
  }

  static async open(output: string, scratch: Scratch): Promise<FileSink> {
    const tmp = FileSink.tmpPathFor(output);
    scratch.add(tmp);
    try {
      return new FileSink(output, tmp, await scratch.during(() => open(tmp, 'wx+')), scratch);
    } catch (err) {
      throw outputError(output, err);
    }
  }

  /**
   * Takes `path`, a file of `length` bytes completed elsewhere in the output's directory (the one-shot peer's cache,
   * which lives there for this), as the output's content: moved over the temporary file instead of copied into it, so
   * the blob is written once. `digest`: what the peer verified it is (else it is read back and hashed).
   */
  async adopt(path: string, length: number, digest: string | undefined): Promise<void> {
    if (this.bytes) throw new Error('adopt() after write()');
    // After abort() the run is over and its files are being removed: nothing is moved back in.
    if (this.ended) throw dfgetError('DFGET_OUTPUT', 'the run has ended');
    try {
      // Over the empty file opened exclusively, whose name is this run's: nobody else's file is replaced.
      await rename(path, this.tmp);
    } catch (err) {
      throw (this.failure ??= this.failed(err));
    }
    await this.adopted(length, digest);
  }

  /**
   * Whether the dfdaemon's data file at `path` looks linkable as the output: on the output's filesystem, and this
   * user's own (see `ours`: a dfdaemon running as root and dfget as root, or both as one user). A guess the link
   * itself may still prove wrong.
   */
  async canLink(path: string): Promise<boolean> {
    try {
      const [file, dir] = await Promise.all([stat(path), stat(dirname(this.output))]);
      return file.dev === dir.dev && ours(file);
    } catch {
      return false;
    }
  }

  /**
   * Takes the dfdaemon's complete, verified data file at `path` as the output by a hard link, so the blob is neither
   * sent nor written again. The link must turn out to be the very file the dfdaemon named (`target`: a path seen from
   * another mount namespace may be another file). `digest`: what the dfdaemon verified it is (else it is read back and
   * hashed). False, with nothing changed, when it cannot be done: the caller then asks for the bytes. `linked` is
   * called once the output is a name of the file, before any hashing: the dfdaemon may let go of the file then (its
   * second name holds it), not only after a read of the whole blob that can outlast its wait.
   */
  async link(path: string, target: LinkTarget, digest: string | undefined, linked?: () => void): Promise<boolean> {
    if (this.bytes) throw new Error('link() after write()');
    if (this.ended) throw dfgetError('DFGET_OUTPUT', 'the run has ended');
    const at = FileSink.tmpPathFor(this.output);
    this.#scratch.add(at);
    try {
      // Through `during`, as every creation of the run: a run ended meanwhile (a timeout, a signal) waits for the link
      // and removes it, rather than the link landing after the removal and staying, a hidden second name.
      await this.#scratch.during(() => link(path, at));
      const st = await stat(at, { bigint: true });
      const same = String(st.dev) === target.dev && String(st.ino) === target.ino && Number(st.size) === target.size && String(st.mtimeNs) === target.mtimeNs;
      if (!same || !ours(st)) throw new Error('not the file named, or not ours');
      // Over the empty file opened exclusively, whose name is this run's (see adopt).
      await rename(at, this.tmp);
      // Removed if the run fails, but never touched: it is the dfdaemon's file too, which a change makes it drop.
      this.#scratch.untouched(this.tmp);
    } catch {
      await rm(at, { force: true }).catch(() => {});
      return false;
    } finally {
      this.#scratch.forget(at);
    }
    this.linked = true;
    linked?.();
    await this.adopted(target.size, digest);
    return true;
  }

  protected async put(chunk: Buffer): Promise<void> {
    // A short write is how a filling disk first shows; the rest then fails with ENOSPC.
    for (let off = 0; off < chunk.length; ) off += (await this.#fh.write(chunk, off, chunk.length - off)).bytesWritten;
  }

  protected async readBack(length: number, take: (chunk: Buffer) => void): Promise<void> {
    const got = await readFileChunks(this.tmp, 0, length, new BufferPool(1 << 20, 1), take);
    if (got < length) throw new Error(`${this.tmp} ended at ${got} of ${length} bytes`);
  }

  protected async finish(): Promise<void> {
    // close() reports the write errors some filesystems (NFS) only find at close. No fsync: it would cost seconds on
    // big blobs, and a crash before the data reaches the disk leaves what any downloader would leave.
    await this.#fh.close();
    await rename(this.tmp, this.output);
    this.#scratch.forget(this.tmp);
  }

  protected async close(): Promise<void> {
    await this.#fh.close();
  }

  protected failed(err: unknown): DamselflyError {
    return outputError(this.output, err);
  }
}

/** Node's fs messages name the cause ("ENOSPC: no space left on device, write"); prefix the file they are about. */
function outputError(output: string, err: unknown): DamselflyError {
  return dfgetError('DFGET_OUTPUT', `${output}: ${err instanceof Error ? err.message : String(err)}`, err);
}
