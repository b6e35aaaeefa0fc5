/**
 * A deadline and a minimum throughput for one transfer (a piece from a peer, a range from an origin), with timers the
 * guard itself owns and clears: `AbortSignal.any([... AbortSignal.timeout()])` can lose its timer to GC
 * (nodejs/node#57736), and undici's `bodyTimeout` restarts on every chunk, so a source sending one byte a second
 * would otherwise hold a transfer forever. A source that is slower than `minBytesPerSecond` (averaged since the start,
 * after `graceMs`) or not done by `deadlineMs` is cut, and the error says which.
 */
import { errorFactory, type ErrorTable } from './errors.js';

export const TransferErrors = {
  TRANSFER_TIMEOUT: { message: 'transfer not done within %s', status: 504 },
  TRANSFER_TOO_SLOW: { message: 'transfer too slow: %s', status: 504 },
} as const satisfies ErrorTable<string>;

export const transferError = errorFactory(TransferErrors);

export interface TransferGuardOptions {
  /** The caller's own cancellation (shutdown, client gone). */
  signal?: AbortSignal;
  deadlineMs: number;
  /** 0 = no minimum. */
  minBytesPerSecond?: number;
  /** Time allowed to get going (slow start) after `startRate()` before the rate is judged. */
  graceMs?: number;
  /**
   * What the same source delivers to this node right now across all its transfers (bytes/s). A transfer is only too
   * slow if this is below the minimum too: a source whose uplink is fairly shared among several of our transfers (or
   * our own downlink shared among sources) is not slow, and cutting its transfers would only waste what they carried.
   */
  sourceRate?: () => number;
}

/** How often the rate is looked at. */
const CHECK_MS = 500;

export class TransferGuard {
  readonly signal: AbortSignal;
  readonly #ac = new AbortController();
  readonly #deadline: NodeJS.Timeout;
  #check?: NodeJS.Timeout;
  readonly #parent?: AbortSignal;
  readonly #onParent = () => this.#ac.abort(this.#parent!.reason);
  readonly #min: number;
  readonly #grace: number;
  readonly #sourceRate?: () => number;
  #t0 = 0;
  #bytes = 0;

  constructor(o: TransferGuardOptions) {
    this.signal = this.#ac.signal;
    this.#deadline = setTimeout(() => this.#ac.abort(transferError('TRANSFER_TIMEOUT', `${o.deadlineMs} ms`)), o.deadlineMs);
    this.#min = o.minBytesPerSecond ?? 0;
    this.#grace = o.graceMs ?? 3_000;
    this.#sourceRate = o.sourceRate;
    if (o.signal) {
      this.#parent = o.signal;
      if (o.signal.aborted) this.#ac.abort(o.signal.reason);
      else o.signal.addEventListener('abort', this.#onParent, { once: true });
    }
  }

  /**
   * Starts judging the rate: call when the source has answered (a source may legitimately take a while to answer —
   * the supernode seeds a piece before it sends it — but once it sends, it must keep up).
   */
  startRate(): void {
    if (this.#min <= 0 || this.#check || this.signal.aborted) return;
    this.#t0 = performance.now();
    this.#bytes = 0;
    this.#check = setInterval(() => {
      const elapsed = performance.now() - this.#t0;
      if (elapsed < this.#grace) return;
      const rate = this.#bytes / (elapsed / 1000);
      if (rate >= this.#min) return;
      const source = this.#sourceRate?.();
      if (source !== undefined && source >= this.#min) return;
      const all = source === undefined ? '' : `, ${Math.round(source)} B/s from the source in all`;
      this.#ac.abort(transferError('TRANSFER_TOO_SLOW', `${Math.round(rate)} B/s after ${Math.round(elapsed)} ms${all} (minimum ${this.#min} B/s)`));
    }, CHECK_MS);
  }

  /** Counts bytes as they arrive. */
  onBytes = (n: number): void => {
    this.#bytes += n;
  };

  /** Stops the timers; call in `finally`. */
  done(): void {
    clearTimeout(this.#deadline);
    clearInterval(this.#check);
    this.#parent?.removeEventListener('abort', this.#onParent);
  }
}

/** True for an error a guard raised (the source was too slow or too late: a timeout, not bad data). */
export function isTransferTimeout(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  return code === 'TRANSFER_TIMEOUT' || code === 'TRANSFER_TOO_SLOW';
}

/**
 * The guard of one sequential read of a whole object (an origin that ignores Range): a piece's options, with a
 * piece's deadline for each of its `pieceCount` pieces.
 */
export function wholeObjectGuard(perPiece: TransferGuardOptions, pieceCount: number): TransferGuard {
  return new TransferGuard({ ...perPiece, deadlineMs: perPiece.deadlineMs * Math.max(1, pieceCount) });
}
