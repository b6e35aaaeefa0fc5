/**
 * The other supernodes of a cluster, as a preheat sees them. Every dfdaemon sends a task to the supernode that ranks
 * first for it (rendezvous hashing over the same URL list), so a preheat that seeded every blob on the supernode it
 * happened to reach (one replica behind a Service) would leave the others to fetch their blobs from the registry
 * again. With the list, a preheat seeds each blob on its own supernode, and any supernode answers for any job.
 * Calls carry the operator token and the cluster's TLS, as `dfctl` would.
 */
import { Agent, request, type Dispatcher } from 'undici';
import { clusterTls, describeError, operatorToken, rendezvous, type Trust } from '@damselfly/shared';
import { snError } from '../errors.js';

/** Marks a call one supernode makes to another for a job it does not hold: the other does not ask on. */
export const FORWARDED_HEADER = 'x-damselfly-forwarded';

/** Failures that happen before a request reaches the other side: whatever was asked was not done. */
const NOT_REACHED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

/** A call that failed without reaching the other supernode (its cause's code says so), as opposed to an answer lost. */
export function unreached(err: unknown): boolean {
  const code = ((err as { cause?: { code?: unknown } }).cause?.code ?? (err as { code?: unknown }).code) as string | undefined;
  return code !== undefined && NOT_REACHED.has(code);
}

export class Siblings {
  readonly #urls: readonly string[];
  readonly self: string;
  readonly #headers: Record<string, string>;
  readonly #dispatcher: Dispatcher;

  /** `urls`: every supernode, this one (`self`) included, spelt as the dfdaemons' `supernodes` setting. */
  constructor(urls: readonly string[], self: string, trust: Trust) {
    this.#urls = urls;
    this.self = self;
    this.#headers = trust.secret ? { authorization: `Bearer ${operatorToken(trust.secret)}` } : {};
    // The cluster's TLS as the dfdaemons speak it to a supernode (see clusterTls).
    this.#dispatcher = new Agent({ connect: clusterTls(trust), headersTimeout: 30_000, bodyTimeout: 30_000 });
  }

  /** The supernodes other than this one. */
  get others(): string[] {
    return this.#urls.filter((u) => u !== this.self);
  }

  /** The supernode the dfdaemons send `taskId` to. */
  owner(taskId: string): string {
    return rendezvous(this.#urls, taskId)[0]!;
  }

  /** Calls another supernode's REST API; the answer's status and JSON body (a refusal is not thrown). */
  async call<T>(base: string, method: 'GET' | 'POST', path: string, body: unknown, { signal, forwarded = false }: { signal?: AbortSignal; forwarded?: boolean } = {}): Promise<{ status: number; body: T }> {
    try {
      const res = await request(`${base}${path}`, {
        method,
        headers: { ...this.#headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(forwarded ? { [FORWARDED_HEADER]: '1' } : {}) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        dispatcher: this.#dispatcher,
        signal,
      });
      return { status: res.statusCode, body: (await res.body.json()) as T };
    } catch (err) {
      signal?.throwIfAborted();
      throw snError('SN_SIBLING', `${base}${path}: ${describeError(err)}`, err);
    }
  }

  close(): Promise<void> {
    return this.#dispatcher.close();
  }
}
