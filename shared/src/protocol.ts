/**
 * The supernode <-> peer control channel (WebSocket, JSON text frames). Requests carry an `id` and get exactly one
 * reply with the same `id`; notifications (`piece:result`, `task:leave`) get none. The supernode pushes messages of
 * its own with no `id`: `PiecesAssigned` (sources for pieces a peer wants) and `TaskPreheat`. Bulk data never goes over it: pieces travel over plain HTTP (see
 * `pieceUrl` below).
 */
import { sharedError } from './errors.js';
import { TASK_ID_RE } from './task-id.js';

export const WS_PATH = '/api/v1/peers/ws';
/**
 * 3: 256 KiB blocks (block hashes and framed bodies of version 2 were per MiB); 2: assignments are pushed
 * (`pieces:want`, `pieces:assigned`, `pieces:endgame`); 1 asked for them (`pieces:schedule`).
 */
export const PROTOCOL_VERSION = 3;

export interface HelloRequest {
  type: 'peer:hello';
  id: number;
  peerId: string;
  /**
   * Base of the peer's upload server, `scheme://host:port` and nothing more (absent for peers that do not upload,
   * like a one-shot dfget). The supernode accepts it only if the host is the session's own address (or in an
   * operator-allowed range); downloaders append the piece path themselves.
   */
  uploadUrl?: string;
  /** Topology labels (zone, rack, ...); peers sharing more labels are preferred as sources. */
  labels?: Record<string, string>;
  /** The peer's upload limit in bytes/s (absent or 0 = none): a capped peer is given fewer uploads at once. */
  uploadRate?: number;
  version: number;
}

export interface RegisterRequest {
  type: 'task:register';
  id: number;
  url: string;
  /** Expected OCI digest of the whole blob (`sha256:...`), when known. */
  digest?: string;
  /** Headers for the origin (Authorization, ...). Kept in memory only, never logged or persisted. */
  headers?: Record<string, string>;
  /** Pieces this peer already holds verified (after a restart). */
  have?: number[];
  /**
   * Their sha256s, in the same order: the supernode lists the peer as a holder only of pieces whose hash is the one it
   * recorded (a piece fetched from the origin directly is not vouched for by anyone).
   */
  haveSha?: string[];
  /**
   * A Range reader waits on bytes [start, end] of the blob (inclusive; clamped to its end): the supernode takes the
   * pieces covering them (the first 64) as this peer's wants, as a `pieces:want` with `max` and the first piece's block
   * as a reader would, and answers with what it could assign at once (`RegisterReply.wanted`). The peer, which does not
   * know the blob's size or piece size before this answer, saves the round trip of a separate `pieces:want` before its
   * reader's first block. A supernode that does not know the field ignores it, and the peer then says its wants
   * itself.
   */
  want?: { start: number; end: number; max: number };
}

/** The reply to `task:register`. */
export interface RegisterReply extends TaskInfo {
  /** With a `want` in the request: the pieces now stated as wanted, the `max` stated, and the assignments made. */
  wanted?: WantResult & { pieces: number[]; max: number };
}

/** Most pieces a registration's `want` states (the rest are said by the peer's own `pieces:want`, as usual). */
export const REGISTER_WANT_PIECES = 64;

/**
 * What the peer needs in a task and how much it can take; replaces what it said before. The reply carries the
 * assignments possible at once; every later one is pushed (`PiecesAssigned`) as sources free up or appear, so a
 * peer never asks again on a timer. A failed piece stays wanted (the supernode assigns it again, elsewhere); a peer
 * re-sends this only when its wants grow (a new Range read) or its in-flight limit changes, and with `want: []`
 * when it stops.
 */
export interface WantRequest {
  type: 'pieces:want';
  id: number;
  taskId: string;
  /** Missing pieces not in flight, in the order the peer would like them. */
  want: number[];
  /** Most pieces the peer wants in flight at once in this task (its measured capacity); 0 with an empty `want`. */
  max: number;
  /**
   * Wanted pieces a reader (a Range client) is waiting on, and the block it needs first. When the supernode answers
   * with itself as the source of one it has not seeded, it starts the origin fetch there at once instead of when the
   * peer's piece request arrives: a Range read's first block then costs the origin's round trip, not that plus this
   * one.
   */
  readers?: { piece: number; block: number }[];
}

/**
 * Endgame: the peer's last pieces are all in flight and some come slowly; it asks for a second source for these
 * (pieces it is fetching). The reply carries what the supernode can give now (`WantResult`); the first transfer of a
 * piece to finish wins and the peer cancels the other (`piece:result` with reason `cancelled`).
 */
export interface EndgameRequest {
  type: 'pieces:endgame';
  id: number;
  taskId: string;
  pieces: number[];
}

export interface PieceResult {
  type: 'piece:result';
  taskId: string;
  piece: number;
  /**
   * Source the report is about (`supernode` or a peer id). Optional: the supernode takes the source from its own
   * record of the assignment, and ignores a report whose `from` contradicts it.
   */
  from?: string;
  ok: boolean;
  /** `cancelled`: the downloader gave up on its own (shutdown, task failed elsewhere); no fault of the source. */
  reason?: 'corrupt' | 'timeout' | 'error' | 'cancelled';
  /** With `ok`: bytes/s the transfer achieved (the scheduler learns each source's capacity from these). */
  rate?: number;
}

export interface LeaveTask {
  type: 'task:leave';
  taskId: string;
}

/** The peer no longer holds a piece (it failed verification on disk): stop sending others to it for that piece. */
export interface PieceDropped {
  type: 'piece:dropped';
  taskId: string;
  piece: number;
}

/** Asks whether the supernode has verified the task's whole blob against its digest (answer: `TaskStatus`). */
export interface StatusRequest {
  type: 'task:status';
  id: number;
  taskId: string;
}

export interface TaskStatus {
  /** The supernode read the whole blob back in order and it matched the digest. */
  verified: boolean;
}

export type PeerMessage = HelloRequest | RegisterRequest | WantRequest | EndgameRequest | PieceResult | LeaveTask | PieceDropped | StatusRequest;

export interface TaskInfo {
  taskId: string;
  contentLength: number;
  pieceSize: number;
  pieceCount: number;
  /** Digest of the whole blob when known (from the URL or the register request). */
  digest?: string;
  /**
   * True when the origin serves the object to anybody (checked anonymously by the supernode when the task was
   * created). When false, every client must prove its own access to the origin before it gets a byte.
   */
  public?: boolean;
  /**
   * Without a digest: the version of the object the task's pieces are, the origin's strong ETag when the task's record
   * was made (absent when it sent none). Pieces a node kept of another version are not built on (nothing else would
   * tell the two apart), and a client's `If-Range` is held to it.
   */
  validator?: string;
  /**
   * In the reply to the registration that created the task only: the supernode's size probe, made with the headers of
   * that very request, was answered with the object, so the origin gives it to those headers and the peer need not
   * ask again for its client. Never stored with the task: it is about one client's headers, not the task.
   */
  accessChecked?: boolean;
}

export interface Assignment {
  piece: number;
  /** `supernode` or the source peer's id. */
  from: string;
  /**
   * `scheme://host:port` of the source peer's upload server. The downloader builds the piece URL itself from this and
   * the piece path, so a peer can never make others fetch a URL of its choosing. Empty for the supernode: its pieces
   * are fetched where the downloader connected to it (its framed block hashes are trusted for coming from there).
   */
  base: string;
  /** Grant for this piece (send as `x-damselfly-grant`); absent when the cluster has no secret. */
  grant?: string;
  /** The piece's identity (sha256 over its block hashes) when the supernode has seeded it. */
  sha256?: string;
  /**
   * The supernode's sha256 (hex) of each block (BLOCK_SIZE) of the piece, in order: always present when the source is a
   * peer (a peer can only be a source of pieces the supernode recorded). From the supernode itself the hashes come
   * framed in its body instead, block by block, so it can stream a piece it is still seeding.
   */
  blocks?: string[];
  /**
   * The source is still fetching the piece and passes each block on as it lands: it cannot be faster than its own
   * source, so the downloader does not cut it for being slow (the relay's own fetch is guarded, and a relay whose
   * fetch ends without the piece says so at once).
   */
  relay?: boolean;
}

/**
 * Pushed by the supernode when it assigns sources to pieces a peer wants (`pieces:want`): a slot freed, a peer got a
 * piece, the supernode recorded one. The peer starts them at once and reports each with `piece:result`.
 */
export interface PiecesAssigned {
  type: 'pieces:assigned';
  taskId: string;
  assignments: Assignment[];
}

/**
 * Pushed by the supernode to every connected dfdaemon when an operator preheats an image with scope `all-peers`:
 * fetch these blobs (through the supernode, which has seeded them) into the local cache.
 */
export interface TaskPreheat {
  type: 'task:preheat';
  blobs: { url: string; digest: string }[];
}

/** The reply to `pieces:want`: what could be assigned at once (the rest comes as `pieces:assigned` pushes). */
export interface WantResult {
  assignments: Assignment[];
}

export interface WireError {
  code: string;
  message: string;
  status: number;
}

export type Reply<T = unknown> = { id: number; ok: true; result: T } | { id: number; ok: false; error: WireError };

/** Header on framed piece responses: the block size the body is cut into (a downloader refuses any other). */
export const BLOCK_SIZE_HEADER = 'x-damselfly-block-size';
/**
 * Header on framed piece responses: the block the body starts at (it then wraps around to block 0). A downloader asks
 * for it with `?from=<block>` when a reader needs a block in the middle of the piece first.
 */
export const FIRST_BLOCK_HEADER = 'x-damselfly-first-block';

/**
 * On a dfdaemon's whole-blob answer: the digest the dfdaemon itself checked the body against before its last block
 * went out (a mismatch cuts the body instead). Set by the dfdaemon only, never relayed from an upstream: unlike the
 * registry's own `Docker-Content-Digest`, which an origin (or whoever answers in its place) can simply assert, a
 * client may take this as the digest check done.
 */
export const VERIFIED_HEADER = 'x-damselfly-verified';

/**
 * Sent `link` by a client on the dfdaemon's own host (dfget writing a file) with a whole-blob GET, and set `link` by
 * the dfdaemon on its answer when it takes that up: the body is then not the blob but lines of JSON (`LinkLine`), the
 * last of which names the task's complete, verified data file for the client to link as its output, so the blob is
 * not sent and written a second time. Like every `x-damselfly-` header it never travels to or from an upstream, so an
 * answer carrying it is the dfdaemon's own. Any other answer is the blob as usual.
 */
export const OUTPUT_HEADER = 'x-damselfly-output';

/**
 * One line of a link answer (see OUTPUT_HEADER), in order: `file` once, `bytes` now and then, `done` or `error`
 * last.
 */
export type LinkLine =
  /** Where the data file is and how big the blob is: the client checks it could link it at all. */
  | { file: string; size: number }
  /** Bytes verified so far (whole pieces), for a progress bar. */
  | { bytes: number }
  /**
   * The file is complete and verified: device, inode, mtime (decimal strings) and size pin it, and `verified` is the
   * digest the dfdaemon checked it against (none for an object without one). The dfdaemon keeps the file until the
   * client closes the answer.
   */
  | { done: true; path: string; dev: string; ino: string; size: number; mtimeNs: string; verified?: string }
  /**
   * The download failed: the status and `{code, message}` an error answer would have carried, and whether asking
   * again for the bytes may get them (`again`, the dfdaemon's call: false only for bytes found not to be their
   * digest, which a new run would fetch all over again to find the same). A client asks again when it may, as it
   * resumes a cut transfer, and otherwise reports the error.
   */
  | { error: { status: number; code: string; message: string }; again: boolean };

/**
 * The `?from=<block>` of a piece request, for a piece of `blockCount` blocks: the block to start at, 0 when absent or
 * past the piece's end, `'bad'` when it is not a block number at all (the server decides whether that is an error).
 */
export function firstBlockParam(raw: string | undefined, blockCount: number): number | 'bad' {
  if (raw === undefined) return 0;
  if (!/^\d{1,4}$/.test(raw)) return 'bad';
  const b = Number(raw);
  return b < blockCount ? b : 0;
}

export function supernodePiecePath(taskId: string, piece: number): string {
  return `/api/v1/tasks/${taskId}/pieces/${piece}`;
}

export function peerPiecePath(taskId: string, piece: number): string {
  return `/pieces/${taskId}/${piece}`;
}

/** `scheme://host:port` of an http(s) URL with nothing else in it, or undefined. */
export function uploadBase(raw: string): string | undefined {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return undefined;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
  if (u.username || u.password || u.search || u.hash || (u.pathname !== '/' && u.pathname !== '')) return undefined;
  if (!/^[a-z]+:\/\/[^/?#@]+\/?$/i.test(raw)) return undefined;
  return `${u.protocol}//${u.host}`;
}

// ---- validation -------------------------------------------------------------------------------------------------

type Obj = Record<string, unknown>;

function bad(what: string): never {
  throw sharedError('BAD_MESSAGE', what);
}
function str(o: Obj, k: string, max = 8192): string {
  const v = o[k];
  if (typeof v !== 'string' || v.length === 0 || v.length > max) bad(`${k} must be a non-empty string`);
  return v;
}
function optStr(o: Obj, k: string): string | undefined {
  return o[k] === undefined ? undefined : str(o, k);
}
function int(o: Obj, k: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(`${k} must be an integer in [${min}, ${max}]`);
  return v;
}
function intList(o: Obj, k: string, maxLen = 1 << 16): number[] {
  const v = o[k];
  if (!Array.isArray(v) || v.length > maxLen || !v.every((x) => Number.isInteger(x) && x >= 0)) {
    bad(`${k} must be a list of piece numbers`);
  }
  return v as number[];
}
function readerList(o: Obj): { piece: number; block: number }[] | undefined {
  const v = o.readers;
  if (v === undefined) return undefined;
  const isInt = (x: unknown) => Number.isInteger(x) && (x as number) >= 0;
  if (!Array.isArray(v) || v.length > 64 || !v.every((r) => typeof r === 'object' && r !== null && isInt((r as Obj).piece) && isInt((r as Obj).block))) {
    bad('readers must be a list of { piece, block }');
  }
  return (v as Obj[]).map((r) => ({ piece: r.piece as number, block: r.block as number }));
}
function registerWant(o: Obj): { start: number; end: number; max: number } | undefined {
  const v = o.want;
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad('want must be { start, end, max }');
  const w = v as Obj;
  const start = int(w, 'start');
  return { start, end: int(w, 'end', start), max: int(w, 'max', 1, 256) };
}
function shaList(o: Obj, k: string): string[] {
  const v = o[k];
  if (!Array.isArray(v) || v.length > 1 << 16 || !v.every((x) => typeof x === 'string' && /^[a-f0-9]{64}$/.test(x))) bad(`${k} must be a list of sha256 hex`);
  return v as string[];
}

/**
 * An object of strings, at most `maxBytes` of names and values together: what a supernode keeps of it (a client's
 * origin headers for as long as its task runs, a peer's labels for its session) stays small whatever a member sends.
 */
function strMap(o: Obj, k: string, maxBytes: number): Record<string, string> | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`${k} must be an object of strings`);
  const entries = Object.entries(v);
  if (entries.length > 64) bad(`${k} has too many entries`);
  let total = 0;
  for (const [key, x] of entries) {
    if (typeof x !== 'string' || key.length > 256) bad(`${k} must be an object of strings with short names`);
    total += key.length + x.length;
  }
  if (total > maxBytes) bad(`${k} are ${total} characters in all, more than ${maxBytes}`);
  return v as Record<string, string>;
}

/** Origin headers of one registration: as much as Node's HTTP server takes of a client's request headers in all. */
export const MAX_HEADER_CHARS = 16 * 1024;
/** Topology labels of one peer. */
export const MAX_LABEL_CHARS = 4 * 1024;
function taskId(o: Obj): string {
  const v = str(o, 'taskId', 64);
  if (!TASK_ID_RE.test(v)) bad('taskId must be 64 hex characters');
  return v;
}

/** Parses and validates one frame from a peer; throws BAD_MESSAGE (never crashes on junk). */
export function parsePeerMessage(raw: string): PeerMessage {
  let o: unknown;
  try {
    o = JSON.parse(raw);
  } catch {
    bad('not JSON');
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) bad('not an object');
  const m = o as Obj;
  switch (m.type) {
    case 'peer:hello':
      return {
        type: 'peer:hello',
        id: int(m, 'id'),
        peerId: str(m, 'peerId', 256),
        uploadUrl: optStr(m, 'uploadUrl'),
        labels: strMap(m, 'labels', MAX_LABEL_CHARS),
        uploadRate: m.uploadRate === undefined ? undefined : int(m, 'uploadRate'),
        version: int(m, 'version'),
      };
    case 'task:register':
      return {
        type: 'task:register',
        id: int(m, 'id'),
        url: str(m, 'url'),
        digest: optStr(m, 'digest'),
        headers: strMap(m, 'headers', MAX_HEADER_CHARS),
        have: m.have === undefined ? undefined : intList(m, 'have'),
        haveSha: m.haveSha === undefined ? undefined : shaList(m, 'haveSha'),
        want: registerWant(m),
      };
    case 'pieces:want': {
      const want = intList(m, 'want');
      return { type: 'pieces:want', id: int(m, 'id'), taskId: taskId(m), want, max: int(m, 'max', want.length ? 1 : 0, 256), readers: readerList(m) };
    }
    case 'pieces:endgame':
      return { type: 'pieces:endgame', id: int(m, 'id'), taskId: taskId(m), pieces: intList(m, 'pieces', 64) };
    case 'piece:result': {
      const reason = m.reason;
      if (reason !== undefined && reason !== 'corrupt' && reason !== 'timeout' && reason !== 'error' && reason !== 'cancelled') bad('bad reason');
      if (typeof m.ok !== 'boolean') bad('ok must be a boolean');
      return { type: 'piece:result', taskId: taskId(m), piece: int(m, 'piece'), from: m.from === undefined ? undefined : str(m, 'from', 256), ok: m.ok, reason, rate: m.rate === undefined ? undefined : int(m, 'rate', 0, 1e11) };
    }
    case 'task:leave':
      return { type: 'task:leave', taskId: taskId(m) };
    case 'piece:dropped':
      return { type: 'piece:dropped', taskId: taskId(m), piece: int(m, 'piece') };
    case 'task:status':
      return { type: 'task:status', id: int(m, 'id'), taskId: taskId(m) };
    default:
      bad(`unknown type ${JSON.stringify(m.type)}`);
  }
}
