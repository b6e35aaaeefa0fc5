/**
 * One WebSocket per peer, and one peer per WebSocket: the session's identity is the peer id it authenticated with
 * (or, without a cluster secret, the one its single hello names). Every frame is validated and counted against the
 * session's budget; requests are answered, reports are applied to the scheduler only as evidence about assignments
 * it made. A malformed frame gets an error reply (or is dropped if it has no usable id); it never takes the
 * supernode down.
 */
import type { WebSocket } from 'ws';
import type { BlockList } from 'node:net';
import {
  PROTOCOL_VERSION,
  describeError,
  issueGrant,
  parseHttpUrl,
  parsePeerMessage,
  type Assignment,
  type BufferPool,
  type Logger,
  type PeerMessage,
  type RegisterReply,
  type Reply,
  type WantResult,
  BLOCK_SIZE,
  REGISTER_WANT_PIECES,
  type TaskStatus,
  type WireError,
  pieceRange,
} from '@damselfly/shared';
import type { Scheduler } from '../scheduling/scheduler.js';
import { SUPERNODE } from '../scheduling/policy.js';
import type { Seeder } from '../seed/seeder.js';
import type { TaskStore } from '../resource/task-store.js';
import type { TaskMeta } from '../resource/task-meta.js';
import type { SupernodeMetrics } from '../metrics.js';
import { snError } from '../errors.js';
import { RequestBudget } from './session-limits.js';
import { checkAdvertisedBase } from './advertise-check.js';
import type { Demands } from '../scheduling/demands.js';
import type { Choice } from '../scheduling/policy.js';
import type { Traffic } from './traffic.js';

export interface ChannelComponents {
  scheduler: Scheduler;
  seeder: Seeder;
  store: TaskStore;
  metrics: SupernodeMetrics;
  log: Logger;
  /** Live sessions: peer id → its upload base (empty for peers that do not upload). */
  sessions: Map<string, string>;
  /** Key the supernode signs piece grants with (the cluster secret, or a per-process key without one). */
  grantKey: Buffer;
  advertiseCidrs: BlockList;
  limits: { maxTasks: number; rate: number };
  /** Buffers pieces are served from (at least one per reader allowed at once). */
  pool: BufferPool;
  /** Pieces served at once, at most. */
  servingCap: number;
  /** What each peer wants: sources are pushed to it as they become possible. */
  demands: Demands;
  /** Where verified bytes came from, for the dashboard. */
  traffic?: Traffic;
  /** Live sessions that upload (dfdaemons): peer id → a push of a message to it (preheat). */
  pushers?: Map<string, (msg: object) => void>;
  /**
   * Live sessions: peer id → a liveness check of its socket (a ping; no pong in time ends that session). A hello for an
   * id a session holds asks it first: the holder may be a socket whose host went away without a FIN.
   */
  probes?: Map<string, (ms: number) => Promise<boolean>>;
}

export interface SessionInfo {
  /** Peer id the session authenticated as (absent without a cluster secret). */
  authPeer?: string;
  remoteAddress?: string;
}

/** Silence on the socket for this long (two missed pings) ends the session: its peer's pieces stop being offered. */
const PING_MS = 15_000;

/**
 * How long a session holding a peer id has to answer a ping when a new session says hello with that id. Under the
 * peer's own hello timeout (3 s), so a peer reconnecting after its host lost the network (its old socket still open
 * here, up to two ping periods) is let in at once instead of being refused for up to 30 s.
 */
export const TAKEOVER_PROBE_MS = 1_500;

/**
 * A holder heard from (a frame, a pong) within this long keeps its id without being asked: a member holding the
 * cluster secret cannot push a busy, live peer out by catching it slow to answer one ping.
 */
export const RECENTLY_HEARD_MS = 5_000;

/** A frame up to this size over the session's rate still gets its refusal (a request is a few hundred bytes). */
const SMALL_FRAME = 4096;

export function handlePeerSocket(ws: WebSocket, session: SessionInfo, c: ChannelComponents): void {
  let peerId: string | undefined;
  /**
   * A hello is being answered: it may wait on a ping of the id's holder and a lookup of the advertised name, and a
   * socket sending hellos by the thousand before its first is answered would have as many waiting (each lookup holding
   * one of libuv's few threads). One at a time; a refused hello may be followed by another.
   */
  let greeting = false;
  const tasks = new Set<string>();
  /** Registrations under way: each holds its headers until it ends, so they count toward the session's task cap. */
  let registering = 0;
  const bucket = new RequestBudget(c.limits.rate);
  /** Malformed frames this session sent (logged sparingly, see the message handler). */
  let badFrames = 0;
  let logBadAt = 1;
  /** Reports the scheduler ignored (about no assignment of this peer's), logged as sparingly. */
  let ignoredReports = 0;
  let logIgnoredAt = 1;
  const ac = new AbortController();
  let alive = true;
  /** The socket has closed and its session was cleaned up. */
  let ended = false;
  /** When the socket last showed it is there (a frame or a pong). */
  let heardAt = performance.now();
  const ping = setInterval(() => {
    if (!alive) return ws.terminate();
    alive = false;
    ws.ping();
  }, PING_MS);
  ping.unref();
  ws.on('pong', () => {
    alive = true;
    heardAt = performance.now();
  });
  /**
   * Whether this socket answers a ping within `ms`; if not, it is ended (and cleaned up) before this resolves. A socket
   * heard from lately is there without asking; hellos arriving together share one ping.
   */
  let probing: Promise<boolean> | undefined;
  const probe = (ms: number): Promise<boolean> => {
    if (ws.readyState === ws.OPEN && performance.now() - heardAt < RECENTLY_HEARD_MS) return Promise.resolve(true);
    probing ??= ping1(ms).finally(() => (probing = undefined));
    return probing;
  };
  const ping1 = (ms: number): Promise<boolean> =>
    new Promise((resolve) => {
      if (ws.readyState === ws.CLOSED) return resolve(false);
      const onPong = () => {
        clearTimeout(timer);
        ws.off('close', onClose);
        resolve(true);
      };
      // Registered after the session's own close handler: by the time this runs, the id is free.
      const onClose = () => {
        clearTimeout(timer);
        ws.off('pong', onPong);
        resolve(false);
      };
      const timer = setTimeout(() => {
        c.log.warn({ peerId }, 'peer:unresponsive');
        ws.terminate();
      }, ms);
      ws.once('pong', onPong);
      ws.once('close', onClose);
      if (ws.readyState === ws.OPEN) ws.ping();
    });

  const send = (reply: Reply) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(reply));
  };
  /** Choices made for this peer, as assignments it can use: where to fetch, the grant, the hashes to check against. */
  const assignments = (taskId: string, choices: Choice[]): Assignment[] =>
    choices.map(({ piece, from, relay }) => ({
      piece,
      from,
      ...(relay ? { relay } : {}),
      // None for the supernode's own pieces: a peer fetches them where it connected to the supernode.
      base: from === SUPERNODE ? '' : (c.sessions.get(from) ?? ''),
      grant: issueGrant(c.grantKey, { taskId, piece, requester: peerId! }),
      sha256: c.store.pieceSha(taskId, piece),
      // From a peer the downloader needs every block's hash up front; from the supernode they come framed.
      blocks: from === SUPERNODE ? undefined : c.store.pieceBlocks(taskId, piece),
    }));
  /**
   * States `want` as this peer's wants in a task (replacing what it said before) and returns what can be assigned at
   * once. A piece a reader waits on whose source is the supernode, and which it has not seeded, starts its origin
   * fetch now, from the reader's block: the peer's piece request (about to come) joins it, and a failure reaches it.
   */
  const wantPieces = (meta: TaskMeta, want: readonly number[], max: number, readers: readonly { piece: number; block: number }[], how: 'reply' | 'register'): WantResult => {
    const end = c.metrics.scheduleSeconds.startTimer({ how });
    const choices = c.demands.want(meta.taskId, peerId!, want, max);
    c.metrics.assignments.inc({ how }, choices.length);
    for (const r of readers) {
      if (choices.some((ch) => ch.piece === r.piece && ch.from === SUPERNODE) && c.store.pieceSha(meta.taskId, r.piece) === undefined) {
        c.seeder.ensurePiece(meta.taskId, r.piece, { requester: peerId!, first: r.block }).catch(() => {});
      }
    }
    const result = { assignments: assignments(meta.taskId, choices) };
    end();
    return result;
  };
  /** Sources found for this peer after its `pieces:want` was answered. */
  const push = (taskId: string, choices: Choice[]) => {
    c.metrics.assignments.inc({ how: 'pushed' }, choices.length);
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'pieces:assigned', taskId, assignments: assignments(taskId, choices) }));
  };
  const fail = (id: number, err: unknown) => {
    const e = err as { code?: string; status?: number; message?: string };
    const error: WireError = { code: e.code ?? 'SN_INTERNAL', message: e.message ?? String(err), status: e.status ?? 500 };
    send({ id, ok: false, error });
  };

  ws.on('message', (data, isBinary) => {
    alive = true;
    heardAt = performance.now();
    const raw = data.toString();
    // Every frame is charged before it is validated or logged: a flood of malformed frames is held to the session's
    // rate like any other flood, instead of costing a validation and a log line each. A frame over the rate is told so
    // only if it is small (a request's size): a big one is dropped unread, not parsed just to find its id.
    if (!bucket.take()) {
      c.metrics.rejected.inc({ why: 'rate_limited' });
      const id = raw.length <= SMALL_FRAME ? tryId(raw) : undefined;
      if (id !== undefined) fail(id, snError('SN_RATE_LIMITED', ` (over ${c.limits.rate}/s)`));
      return;
    }
    let msg: PeerMessage;
    try {
      if (isBinary) throw snError('SN_NOT_HELLO', 'a binary frame');
      msg = parsePeerMessage(raw);
    } catch (err) {
      c.metrics.rejected.inc({ why: 'bad_message' });
      // The 1st, 10th, 100th… of a session are logged, with the count: a member sending garbage by the thousand
      // says so in the log without filling it.
      if (++badFrames === logBadAt) {
        logBadAt *= 10;
        c.log.warn({ peerId, badFrames, err: describeError(err) }, 'peer:bad-message');
      }
      const id = tryId(raw);
      if (id !== undefined) fail(id, err);
      return;
    }
    if (!peerId && msg.type !== 'peer:hello') {
      if ('id' in msg) fail(msg.id, snError('SN_NOT_HELLO', msg.type));
      return;
    }
    handle(msg).catch((err) => {
      if ('id' in msg) fail(msg.id, err);
      else c.log.warn({ peerId, err: describeError(err) }, 'peer:report-failed');
    });
  });

  ws.on('close', () => {
    ended = true;
    clearInterval(ping);
    ac.abort();
    if (!peerId) return;
    c.demands.disconnect(peerId);
    c.scheduler.peerLeft(peerId);
    for (const taskId of tasks) c.seeder.forget(taskId, peerId);
    c.pushers?.delete(peerId);
    c.probes?.delete(peerId);
    c.sessions.delete(peerId);
    c.metrics.peers.set(c.scheduler.peerCount);
    c.log.info({ peerId }, 'peer:left');
  });
  ws.on('error', (err) => c.log.warn({ peerId, err: describeError(err) }, 'peer:socket-error'));

  async function hello(msg: Extract<PeerMessage, { type: 'peer:hello' }>): Promise<void> {
    if (peerId) throw snError('SN_ALREADY_HELLO', peerId);
    if (greeting) throw snError('SN_HELLO_PENDING', `peer:hello for ${JSON.stringify(msg.peerId)}`);
    greeting = true;
    try {
      await greet(msg);
    } finally {
      greeting = false;
    }
  }

  async function greet(msg: Extract<PeerMessage, { type: 'peer:hello' }>): Promise<void> {
    // A peer of another protocol would misread every assignment: it is turned away at once, and says so.
    if (msg.version !== PROTOCOL_VERSION) throw snError('SN_PROTOCOL_VERSION', `v${msg.version}, this supernode v${PROTOCOL_VERSION}`);
    if (session.authPeer !== undefined && msg.peerId !== session.authPeer) throw snError('SN_PEER_MISMATCH', JSON.stringify(msg.peerId));
    if (msg.peerId === SUPERNODE) throw snError('SN_PEER_ID_TAKEN', JSON.stringify(msg.peerId));
    // The id is held: by a live session (refused), or by one whose host went away unnoticed (it is ended, and this
    // session takes the id). Only a holder that answers keeps it.
    const holder = c.sessions.has(msg.peerId) ? c.probes?.get(msg.peerId) : undefined;
    if (c.sessions.has(msg.peerId) && (!holder || (await holder(TAKEOVER_PROBE_MS)))) throw snError('SN_PEER_ID_TAKEN', JSON.stringify(msg.peerId));
    const base = msg.uploadUrl ? await checkAdvertisedBase(msg.uploadUrl, session.remoteAddress, c.advertiseCidrs, { signal: ac.signal }) : '';
    // Re-checked after the awaits: a hello on another socket racing for this id must not win too.
    if (c.sessions.has(msg.peerId)) throw snError('SN_PEER_ID_TAKEN', JSON.stringify(msg.peerId));
    if (ws.readyState !== ws.OPEN) return;
    peerId = msg.peerId;
    c.sessions.set(peerId, base);
    c.probes?.set(peerId, probe);
    if (base) c.pushers?.set(peerId, (m) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m)));
    c.demands.connect(peerId, push);
    c.scheduler.peerJoined(peerId, base !== '', msg.labels, msg.uploadRate);
    c.metrics.peers.set(c.scheduler.peerCount);
    c.log.info({ peerId, uploadBase: base || undefined, labels: msg.labels, uploadRate: msg.uploadRate || undefined }, 'peer:joined');
    send({ id: msg.id, ok: true, result: { version: PROTOCOL_VERSION } });
  }

  async function handle(msg: PeerMessage): Promise<void> {
    switch (msg.type) {
      case 'peer:hello':
        return hello(msg);
      case 'task:register': {
        if (tasks.size + registering >= c.limits.maxTasks) throw snError('SN_TOO_MANY_TASKS', `${tasks.size} joined, ${registering} registering (leave some first)`);
        const me = peerId!;
        let probed = false;
        registering++;
        let meta: TaskMeta;
        try {
          meta = await c.seeder.register(parseHttpUrl(msg.url), msg.digest, msg.headers ?? {}, { signal: ac.signal, requester: me, onProbed: () => (probed = true) });
        } finally {
          registering--;
        }
        if (peerId !== me || ws.readyState !== ws.OPEN) {
          // This session is ending: its close handler forgets the credentials kept for it. Once it has ended, they
          // are forgotten here, unless a new session holds the id now (it took over a silent socket): then they are
          // that session's.
          if (!ended) tasks.add(meta.taskId);
          else if (!c.sessions.has(me)) c.seeder.forget(meta.taskId, me);
          return;
        }
        tasks.add(meta.taskId);
        // Only pieces whose hash the supernode recorded can be offered to others, and only when the peer's copy has
        // that hash (when it says which it has): peers' own claims are not trusted beyond that.
        const have = (msg.have ?? []).filter((n, i) => {
          const recorded = c.store.pieceSha(meta.taskId, n);
          return recorded !== undefined && (msg.haveSha === undefined || msg.haveSha[i] === recorded);
        });
        c.scheduler.taskJoined(me, meta.taskId, have);
        const info: RegisterReply = {
          taskId: meta.taskId,
          contentLength: meta.contentLength,
          pieceSize: meta.pieceSize,
          pieceCount: meta.pieceCount,
          digest: meta.digest,
          public: meta.public,
          // The version its pieces are: a peer holding pieces of another one (kept from before the object changed and
          // this record was made again) drops them rather than build on them.
          ...(meta.validator ? { validator: meta.validator } : {}),
          // The origin just answered this peer's own headers with the object: its client is known to have access.
          ...(probed && !meta.public ? { accessChecked: true } : {}),
        };
        // A Range reader's pieces, stated with the registration (see RegisterRequest.want): only when the origin gives
        // the blob to anybody, or just gave it to this very request's headers. Otherwise the peer's client proves its
        // access first and the peer says its wants after that: a client the origin refuses must not make the cluster
        // fetch a byte. Pieces the peer holds with the recorded hash are not wanted.
        if (msg.want && msg.want.start < meta.contentLength && (meta.public || probed)) {
          const { start, max } = msg.want;
          const first = Math.floor(start / meta.pieceSize);
          const last = Math.min(Math.floor(Math.min(msg.want.end, meta.contentLength - 1) / meta.pieceSize), first + REGISTER_WANT_PIECES - 1);
          const held = new Set(have);
          const pieces: number[] = [];
          for (let n = first; n <= last; n++) if (!held.has(n)) pieces.push(n);
          const reader = { piece: first, block: Math.floor((start % meta.pieceSize) / BLOCK_SIZE) };
          if (pieces.length) info.wanted = { pieces, max, ...wantPieces(meta, pieces, max, [reader], 'register') };
        }
        send({ id: msg.id, ok: true, result: info });
        return;
      }
      case 'pieces:want': {
        const meta = c.store.get(msg.taskId);
        if (!meta) {
          c.seeder.assertNotRefused(msg.taskId);
          throw snError('SN_TASK_NOT_FOUND', msg.taskId);
        }
        if (!tasks.has(msg.taskId) || !c.scheduler.inTask(peerId!, msg.taskId)) throw snError('SN_TASK_NOT_JOINED', msg.taskId);
        const want = msg.want.filter((n) => n < meta.pieceCount);
        send({ id: msg.id, ok: true, result: wantPieces(meta, want, msg.max, msg.readers ?? [], 'reply') });
        return;
      }
      case 'pieces:endgame': {
        if (!tasks.has(msg.taskId) || !c.scheduler.inTask(peerId!, msg.taskId)) throw snError('SN_TASK_NOT_JOINED', msg.taskId);
        const choices = c.scheduler.endgame(msg.taskId, peerId!, msg.pieces);
        c.metrics.assignments.inc({ how: 'endgame' }, choices.length);
        const result: WantResult = { assignments: assignments(msg.taskId, choices) };
        send({ id: msg.id, ok: true, result });
        return;
      }
      case 'piece:result': {
        // A peer can only become a source for pieces whose hash the supernode recorded: those are the ones it can
        // have fetched and verified, and the only ones a downloader can check.
        if (msg.ok && c.store.pieceSha(msg.taskId, msg.piece) === undefined) {
          c.scheduler.release(msg.taskId, peerId!, msg.piece);
          return;
        }
        const verdict = c.scheduler.pieceResult(msg.taskId, peerId!, msg.piece, msg.from, msg.ok, msg.reason, msg.rate);
        c.metrics.reports.inc({ verdict });
        // A failed piece is still wanted: the supernode looks for another source at once (the peer's own re-announce
        // comes a round trip later, and mainly tells it whether the task still exists). Also when the assignment was
        // already released (its source left, it timed out): the peer still needs the piece.
        const meta = c.store.get(msg.taskId);
        const inRange = msg.piece < (meta?.pieceCount ?? 0);
        if (!msg.ok && msg.reason !== 'cancelled' && inRange && tasks.has(msg.taskId) && !c.scheduler.fetching(msg.taskId, peerId!, msg.piece)) c.demands.failed(msg.taskId, peerId!, msg.piece);
        else if (msg.ok) c.demands.got(msg.taskId, peerId!, msg.piece);
        if (verdict === 'accepted' && msg.ok && msg.from !== undefined && c.traffic && meta) {
          const { start, end } = pieceRange(msg.piece, meta.pieceSize, meta.contentLength);
          c.traffic.delivered(msg.taskId, msg.from, peerId!, end - start + 1);
        }
        if (verdict !== 'accepted') {
          // A member can send these by the thousand: the 1st, 10th, 100th… are logged, with the count.
          if (++ignoredReports === logIgnoredAt) {
            logIgnoredAt *= 10;
            c.log.warn({ peerId, taskId: msg.taskId, piece: msg.piece, from: msg.from, verdict, ignoredReports }, 'piece:report-ignored');
          }
        }
        else if (!msg.ok && msg.reason !== 'cancelled') c.log.warn({ peerId, taskId: msg.taskId, piece: msg.piece, reason: msg.reason }, 'piece:failed');
        return;
      }
      case 'task:status': {
        const meta = c.store.get(msg.taskId);
        if (!meta) {
          c.seeder.assertNotRefused(msg.taskId);
          throw snError('SN_TASK_NOT_FOUND', msg.taskId);
        }
        const status: TaskStatus = { verified: meta.verified === true };
        send({ id: msg.id, ok: true, result: status });
        return;
      }
      case 'piece:dropped':
        c.scheduler.pieceDropped(peerId!, msg.taskId, msg.piece);
        return;
      case 'task:leave':
        tasks.delete(msg.taskId);
        c.demands.leave(msg.taskId, peerId!);
        c.scheduler.taskLeft(peerId!, msg.taskId);
        c.seeder.forget(msg.taskId, peerId!);
        return;
    }
  }
}

function tryId(raw: string): number | undefined {
  try {
    const id = (JSON.parse(raw) as { id?: unknown }).id;
    return typeof id === 'number' && Number.isInteger(id) ? id : undefined;
  } catch {
    return undefined;
  }
}
