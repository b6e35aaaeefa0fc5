/**
 * One WebSocket per peer: validates every frame, answers requests, applies reports to the scheduler. A malformed
 * frame gets an error reply (or is dropped if it has no usable id); it never takes the supernode down.
 */
import type { WebSocket } from 'ws';
import {
  PROTOCOL_VERSION,
  describeError,
  parseHttpUrl,
  parsePeerMessage,
  peerPiecePath,
  supernodePiecePath,
  type Assignment,
  type Logger,
  type PeerMessage,
  type Reply,
  type ScheduleResult,
  type TaskInfo,
  type WireError,
} from '@damselfly/shared';
import type { Scheduler } from '../scheduling/scheduler.js';
import { SUPERNODE } from '../scheduling/policy.js';
import type { Seeder } from '../seed/seeder.js';
import type { TaskStore } from '../resource/task-store.js';
import type { SupernodeMetrics } from '../metrics.js';
import { snError } from '../errors.js';

export interface ChannelComponents {
  scheduler: Scheduler;
  seeder: Seeder;
  store: TaskStore;
  metrics: SupernodeMetrics;
  log: Logger;
  /** Base URL peers use for supernode pieces. */
  selfUrl: () => string;
  /** Upload URL of a connected peer. */
  peerUrls: Map<string, string>;
}

export function handlePeerSocket(ws: WebSocket, c: ChannelComponents): void {
  let peerId: string | undefined;
  const ac = new AbortController();

  const send = (reply: Reply) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(reply));
  };
  const fail = (id: number, err: unknown) => {
    const e = err as { code?: string; status?: number; message?: string };
    const error: WireError = { code: e.code ?? 'SN_INTERNAL', message: e.message ?? String(err), status: e.status ?? 500 };
    send({ id, ok: false, error });
  };

  ws.on('message', (data, isBinary) => {
    let msg: PeerMessage;
    try {
      if (isBinary) throw snError('SN_NOT_HELLO', 'a binary frame');
      msg = parsePeerMessage(data.toString());
    } catch (err) {
      c.log.warn({ peerId, err: describeError(err) }, 'peer:bad-message');
      const id = tryId(data.toString());
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
    ac.abort();
    if (!peerId) return;
    c.scheduler.peerLeft(peerId);
    c.peerUrls.delete(peerId);
    c.metrics.peers.set(c.scheduler.peerCount);
    c.log.info({ peerId }, 'peer:left');
  });
  ws.on('error', (err) => c.log.warn({ peerId, err: describeError(err) }, 'peer:socket-error'));

  async function handle(msg: PeerMessage): Promise<void> {
    switch (msg.type) {
      case 'peer:hello': {
        peerId = msg.peerId;
        if (msg.uploadUrl) {
          parseHttpUrl(msg.uploadUrl);
          c.peerUrls.set(peerId, msg.uploadUrl.replace(/\/$/, ''));
        }
        c.scheduler.peerJoined(peerId, !!msg.uploadUrl, msg.labels);
        c.metrics.peers.set(c.scheduler.peerCount);
        c.log.info({ peerId, uploadUrl: msg.uploadUrl, labels: msg.labels }, 'peer:joined');
        send({ id: msg.id, ok: true, result: { version: PROTOCOL_VERSION } });
        return;
      }
      case 'task:register': {
        const meta = await c.seeder.register(parseHttpUrl(msg.url), msg.digest, msg.headers ?? {}, { signal: ac.signal });
        // Only pieces whose hash the supernode recorded can be offered to others: peers' own claims are not trusted.
        const have = (msg.have ?? []).filter((n) => c.store.pieceSha(meta.taskId, n) !== undefined);
        c.scheduler.taskJoined(peerId!, meta.taskId, have);
        const info: TaskInfo = { taskId: meta.taskId, contentLength: meta.contentLength, pieceSize: meta.pieceSize, pieceCount: meta.pieceCount, digest: meta.digest };
        send({ id: msg.id, ok: true, result: info });
        return;
      }
      case 'pieces:schedule': {
        const end = c.metrics.scheduleSeconds.startTimer();
        const meta = c.store.get(msg.taskId);
        if (!meta) throw snError('SN_TASK_NOT_FOUND', msg.taskId);
        const want = msg.want.filter((n) => n < meta.pieceCount);
        const choices = c.scheduler.schedule(msg.taskId, peerId!, want, msg.max);
        const assignments: Assignment[] = choices.map(({ piece, from }) => ({
          piece,
          from,
          url: (from === SUPERNODE ? c.selfUrl() + supernodePiecePath(msg.taskId, piece) : c.peerUrls.get(from)! + peerPiecePath(msg.taskId, piece)),
          sha256: c.store.pieceSha(msg.taskId, piece),
        }));
        const result: ScheduleResult = assignments.length ? { assignments } : { assignments, retryAfterMs: 100 };
        end();
        send({ id: msg.id, ok: true, result });
        return;
      }
      case 'piece:result':
        // A peer can only become a source for pieces whose hash the supernode recorded: those are the ones it can
        // have fetched and verified, and the only ones a downloader can check.
        if (msg.ok && c.store.pieceSha(msg.taskId, msg.piece) === undefined) {
          c.scheduler.release(msg.taskId, peerId!, msg.piece);
          return;
        }
        c.scheduler.pieceResult(msg.taskId, peerId!, msg.piece, msg.from, msg.ok, msg.reason);
        if (!msg.ok && msg.reason !== 'cancelled') c.log.warn({ peerId, taskId: msg.taskId, piece: msg.piece, from: msg.from, reason: msg.reason }, 'piece:failed');
        return;
      case 'task:leave':
        c.scheduler.taskLeft(peerId!, msg.taskId);
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
