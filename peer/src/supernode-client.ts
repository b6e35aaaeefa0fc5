/**
 * The peer's end of the control channel to one supernode: request/reply over a WebSocket, with time limits.
 * When the socket drops every pending request fails with DF_SUPERNODE_UNAVAILABLE and `close` is emitted.
 */
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { AUTH_HEADER, PROTOCOL_VERSION, WS_PATH, clusterTls, describeError, sessionProof, type Assignment, type Reply, type Trust } from '@damselfly/shared';
import { peerError } from './errors.js';

export interface HelloInfo {
  peerId: string;
  uploadUrl?: string;
  labels?: Record<string, string>;
  /** The node's upload limit, bytes/s (0 or absent = none). */
  uploadRate?: number;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void; cleanup: () => void };

type RequestBody = { type: string } & Record<string, unknown>;

export interface SupernodeClientEvents {
  close: [];
  /** An operator preheats these blobs on every node. */
  'task:preheat': [{ url: string; digest: string }[]];
}

/**
 * How often the peer pings its supernode; a supernode that has sent nothing (no pong, no message) for a whole period
 * after a ping is gone. The socket alone does not say so: a supernode frozen (SIGSTOP, a hung host) or cut off
 * without a FIN keeps it open, and a download waiting for assignments would wait forever instead of going back to
 * the origin. Matches the supernode's own ping period for its peers.
 */
export const HEARTBEAT_MS = 15_000;

export interface SupernodeClientOptions {
  /** Ping period, and how long a ping may go unanswered (tests shorten it). */
  heartbeatMs?: number;
}

export class SupernodeClient extends EventEmitter<SupernodeClientEvents> {
  readonly url: string;
  readonly #hello: HelloInfo;
  readonly #trust: Trust | undefined;
  readonly #heartbeatMs: number;
  #ws?: WebSocket;
  /** The hello was answered: only a connection that was up says `close` when it goes (a failed connect just throws). */
  #up = false;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  /** Who takes the assignments pushed for each task (the task's running download). */
  readonly #assignees = new Map<string, (a: Assignment[]) => void>();
  /** Ids of registrations stating wants that were given up before their answer (see #abandon). */
  readonly #abandoned = new Set<number>();

  constructor(url: string, hello: HelloInfo, trust?: Trust, opts: SupernodeClientOptions = {}) {
    super();
    this.url = url;
    this.#hello = hello;
    this.#trust = trust;
    this.#heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;
  }

  get connected(): boolean {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Opens the socket and says hello; rejects with DF_SUPERNODE_UNAVAILABLE if that fails in time. */
  async connect({ signal, timeoutMs = 3000 }: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    const wsUrl = this.url.replace(/^http/, 'ws') + WS_PATH;
    // The session proof (an HMAC over this peer id, a time and a nonce) goes on the upgrade request: a peer without
    // the cluster secret is turned away before it has a socket.
    const secret = this.#trust?.secret;
    const ws = new WebSocket(wsUrl, {
      handshakeTimeout: timeoutMs,
      maxPayload: 16 << 20,
      headers: secret ? { [AUTH_HEADER]: sessionProof(secret, this.#hello.peerId) } : {},
      ...clusterTls(this.#trust),
    });
    this.#ws = ws;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => ws.terminate();
      signal?.addEventListener('abort', onAbort, { once: true });
      ws.once('open', () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      ws.once('error', (err) => {
        signal?.removeEventListener('abort', onAbort);
        reject(peerError('DF_SUPERNODE_UNAVAILABLE', `${this.url}: ${describeError(err)}`, err));
      });
      ws.once('unexpected-response', (_req, res) => {
        signal?.removeEventListener('abort', onAbort);
        const status = res.statusCode ?? 0;
        res.resume();
        ws.terminate();
        const why = status === 401 || status === 403 ? 'the supernode refused this peer (cluster secret missing or wrong)' : `upgrade answered ${status}`;
        const e = peerError('DF_SUPERNODE_UNAVAILABLE', `${this.url}: ${why}`);
        Object.assign(e, { upstreamStatus: status });
        reject(e);
      });
    });
    let heard = true;
    const heartbeat = setInterval(() => {
      if (!heard) return void ws.terminate();
      heard = false;
      ws.ping();
    }, this.#heartbeatMs);
    heartbeat.unref();
    ws.on('pong', () => (heard = true));
    ws.on('message', (data) => {
      heard = true;
      this.#onMessage(data.toString());
    });
    ws.on('close', () => {
      clearInterval(heartbeat);
      this.#onClose();
    });
    ws.on('error', () => {});
    let reply: { version?: number };
    try {
      reply = await this.request<{ version?: number }>({ type: 'peer:hello', ...this.#hello, version: PROTOCOL_VERSION }, { signal, timeoutMs });
    } catch (err) {
      // A socket whose hello failed (refused, timed out, cancelled) is let go at once. Left open, a late answer would
      // bind this peer's id to it on the supernode, where it answers pings by itself and keeps the id from every
      // later connection of this peer.
      ws.terminate();
      // A supernode of another protocol version is no supernode for this peer: unavailable, so the download goes back
      // to the origin (when allowed) instead of failing on messages neither side understands.
      if ((err as { remoteCode?: string }).remoteCode === 'SN_PROTOCOL_VERSION') throw peerError('DF_SUPERNODE_UNAVAILABLE', `${this.url}: ${describeError(err)}`, err);
      throw err;
    }
    if (reply.version !== PROTOCOL_VERSION) {
      ws.terminate();
      throw peerError('DF_SUPERNODE_UNAVAILABLE', `${this.url} speaks control protocol v${reply.version ?? '?'}, this peer v${PROTOCOL_VERSION} (upgrade dfdaemons and supernodes together)`);
    }
    // Closed right after its answer: this connect failed (the close, which came first, said nothing).
    if (ws.readyState !== WebSocket.OPEN) throw peerError('DF_SUPERNODE_UNAVAILABLE', `${this.url}: connection closed`);
    this.#up = true;
  }

  /** Sends a request and waits for its reply. */
  request<T>(body: RequestBody, { signal, timeoutMs = 30_000 }: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<T> {
    const ws = this.#ws;
    // An already-cancelled caller gets no request at all (a shutting-down download loop must not keep asking).
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(peerError('DF_SUPERNODE_UNAVAILABLE', `${this.url}: not connected`));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        this.#pending.delete(id);
        this.#abandon(id, body);
        reject(peerError('DF_SUPERNODE_UNAVAILABLE', `${this.url}: no answer to ${body.type} in ${timeoutMs} ms`));
      }, timeoutMs);
      const onAbort = () => {
        cleanup();
        this.#pending.delete(id);
        this.#abandon(id, body);
        reject(signal!.reason);
      };
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, cleanup });
      ws.send(JSON.stringify({ ...body, id }));
    });
  }

  /**
   * A registration that stated wants (`want`) and was given up before its answer: the answer may still come, with
   * assignments nobody will fetch, which are then handed back (see #onMessage) instead of holding their sources'
   * slots until the supernode's sweep. Bounded: the oldest are forgotten first.
   */
  #abandon(id: number, body: RequestBody): void {
    if (body.type !== 'task:register' || body.want === undefined) return;
    this.#abandoned.add(id);
    if (this.#abandoned.size > 256) this.#abandoned.delete(this.#abandoned.values().next().value!);
  }

  /**
   * Hands back an assignment nobody will fetch (cancelled, superseded, its run gone): its source's slot is freed at
   * once instead of at the supernode's sweep, and nobody is blamed.
   */
  giveBack(taskId: string, a: Pick<Assignment, 'piece' | 'from'>): void {
    this.notify({ type: 'piece:result', taskId, piece: a.piece, from: a.from, ok: false, reason: 'cancelled' });
  }

  /** Fire-and-forget report; silently dropped if the socket is down (the supernode re-learns on reconnect). */
  notify(body: RequestBody): void {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(body));
  }

  /** Says goodbye (a close frame: the supernode drops this peer's pieces and slots at once), then lets go. */
  close(): void {
    const ws = this.#ws;
    if (!ws) return;
    if (ws.readyState === WebSocket.OPEN) {
      ws.close(1001, 'peer leaving');
      setTimeout(() => ws.terminate(), 1000).unref();
    } else ws.terminate();
  }

  /**
   * Routes the assignments pushed for `taskId` to `take` until the returned function is called. Pushes for a task
   * nobody takes (its download ended meanwhile) are handed back at once, so their sources' slots are not held.
   */
  assignments(taskId: string, take: (a: Assignment[]) => void): () => void {
    this.#assignees.set(taskId, take);
    return () => {
      if (this.#assignees.get(taskId) === take) this.#assignees.delete(taskId);
    };
  }

  #onMessage(raw: string): void {
    let reply: Reply;
    try {
      reply = JSON.parse(raw) as Reply;
    } catch {
      return;
    }
    // A push, not a reply: no id.
    const push = reply as unknown as { type?: unknown; taskId?: unknown };
    if (push.type === 'pieces:assigned') {
      const list = (push as { assignments?: unknown }).assignments;
      if (typeof push.taskId !== 'string' || !Array.isArray(list)) return;
      const got = list.filter((a): a is Assignment => Number.isInteger(a?.piece) && typeof a?.from === 'string' && typeof a?.base === 'string');
      const take = this.#assignees.get(push.taskId);
      if (take) take(got);
      else for (const a of got) this.giveBack(push.taskId, a);
      return;
    }
    if (push.type === 'task:preheat') {
      const blobs = (push as { blobs?: unknown }).blobs;
      if (Array.isArray(blobs)) {
        this.emit('task:preheat', blobs.filter((b): b is { url: string; digest: string } => typeof b?.url === 'string' && typeof b?.digest === 'string').slice(0, 1024));
      }
      return;
    }
    const p = this.#pending.get(reply.id);
    if (!p) {
      if (this.#abandoned.delete(reply.id) && reply.ok) {
        const r = reply.result as { taskId?: unknown; wanted?: { assignments?: unknown } };
        const list = Array.isArray(r?.wanted?.assignments) ? (r.wanted.assignments as Partial<Assignment>[]) : [];
        for (const a of list) {
          if (typeof r.taskId === 'string' && Number.isInteger(a?.piece) && typeof a?.from === 'string') this.giveBack(r.taskId, { piece: a.piece!, from: a.from });
        }
      }
      return;
    }
    this.#pending.delete(reply.id);
    p.cleanup();
    if (reply.ok) p.resolve(reply.result);
    else {
      const e = peerError('DF_SUPERNODE_ERROR', `${reply.error.code}: ${reply.error.message}`);
      Object.assign(e, { remoteCode: reply.error.code, status: reply.error.status });
      p.reject(e);
    }
  }

  #onClose(): void {
    const err = peerError('DF_SUPERNODE_UNAVAILABLE', `${this.url}: connection closed`);
    for (const p of this.#pending.values()) {
      p.cleanup();
      p.reject(err);
    }
    this.#pending.clear();
    if (!this.#up) return;
    this.#up = false;
    this.emit('close');
  }
}
