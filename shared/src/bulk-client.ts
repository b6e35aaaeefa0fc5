/**
 * A small HTTP/1.1 GET client for piece transfers between cluster members (a dfdaemon fetching from the supernode's
 * piece API and from other peers' upload servers). Each connection reads into buffers of its own (`net`'s `onread`),
 * and a body is handed to its consumer as views of them, valid until the consumer is done with each: no socket read
 * leaves an ArrayBuffer behind for the collector.
 *
 * Why not undici here: its socket reads are fresh 64 KiB ArrayBuffers, so a node receiving 1 GB churns 1 GB of
 * external memory. Measured on this project's 2-core test machine, receiving 1 GiB over loopback, copying it into
 * 256 KiB blocks and hashing each: undici 1.5–1.6 s of CPU and 92–112 MiB RSS, this way 0.78 s and 66 MiB.
 *
 * It accepts what Damselfly's own servers send and nothing more: a status line, headers, and a body framed by
 * Content-Length (a chunked or unframed answer is refused as a protocol error), and it never follows a redirect.
 * Origins go through it only on the supernode's fast path (`fetchOriginRange`), which hands everything but a plain
 * 206 to undici (redirects, chunked bodies, error statuses). Connections are kept alive per host and reused;
 * a request on a reused connection that the server closed meanwhile is retried once on a new one (GET is idempotent
 * and nothing of the answer was seen).
 */
import net from 'node:net';
import tls, { type ConnectionOptions } from 'node:tls';
import { errorFactory, type ErrorTable } from './errors.js';

export const BulkErrors = {
  BULK_CONNECT: { message: 'cannot connect: %s', status: 502 },
  BULK_HEADERS_TIMEOUT: { message: 'no answer in time: %s', status: 504 },
  BULK_BODY_TIMEOUT: { message: 'the body stopped arriving: %s', status: 504 },
  BULK_PROTOCOL: { message: 'malformed answer: %s', status: 502 },
  BULK_CLOSED: { message: 'connection closed: %s', status: 502 },
} as const satisfies ErrorTable<string>;

export const bulkError = errorFactory(BulkErrors);

/** A response head larger than this is refused (ours are a few hundred bytes). */
const MAX_HEAD = 16 * 1024;
/**
 * How much of one read is decoded as text while a head is awaited: heads, interim ones (103, 100) included, never
 * reach this far, and the body bytes behind them stay bytes (a 256 KiB read was all turned into a string, 0.2 ms, to
 * find a head of a few hundred bytes, on the path of every piece's first block).
 */
const HEAD_WINDOW = 4 * MAX_HEAD;
/** An HTTP header name (RFC 9110 token). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** How to reach one host: extra TLS settings and a guarded name lookup. */
export interface DialOptions {
  tls?: ConnectionOptions;
  lookup?: net.LookupFunction;
}

export interface BulkClientOptions {
  /** TLS settings for `https:` URLs (the cluster's CA, client certificate). */
  tls?: ConnectionOptions;
  /**
   * Asked before each new connection (hostname without brackets): settings for it, or a throw to refuse it (an
   * address the operator did not allow). The supernode's origin fetches go through its address policy here.
   */
  dial?: (hostname: string, port: number, secure: boolean) => DialOptions | undefined;
  /** Bytes each connection reads at once (one such buffer per open connection). */
  readBufferSize?: number;
  /** Idle connections kept per host. */
  maxIdlePerHost?: number;
  /** An idle connection is closed after this long. */
  keepAliveMs?: number;
  connectTimeoutMs?: number;
}

export interface BulkRequest {
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** From sending the request to the whole response head. */
  headersTimeoutMs?: number;
  /** Longest pause between two reads of the body (not counting time the consumer holds it back). */
  bodyTimeoutMs?: number;
}

/**
 * A response body. `forEach` hands each arriving run of bytes to `fn` as a view of the connection's read buffer: the
 * view is valid during the call and, if `fn` returns a promise, until it settles (reading waits for it meanwhile).
 */
export interface BulkBody {
  /** Content-Length. */
  readonly length: number;
  forEach(fn: (chunk: Buffer) => Promise<void> | void): Promise<void>;
  /** The body as text, up to `max` characters (the rest is not read; the connection is not reused). */
  text(max?: number): Promise<string>;
  /** Gives the body up: its connection is closed unless it was read to the end. */
  discard(): void;
}

export interface BulkResponse {
  statusCode: number;
  /** Header names in lower case; a repeated header's values joined with ", ". */
  headers: Record<string, string>;
  body: BulkBody;
}

interface Pending {
  resolve(res: BulkResponse): void;
  reject(err: Error): void;
}

/**
 * One kept-alive connection and its read buffers; serves one request at a time. Each read lands in a buffer that is
 * not held by a consumer: normally the same one again, but a TLS socket may deliver more decrypted bytes after it was
 * paused, so a read never goes into a buffer whose bytes a consumer still holds (`next` picks the buffer for the read
 * after each one; held ones come back through `giveBack`).
 */
class Conn {
  socket!: net.Socket;
  readonly key: string;
  readonly #size: number;
  readonly #spare: Buffer[] = [];
  /** Buffers the socket reads into next: called by the socket after every read. */
  readonly next = (): Buffer => this.#spare.pop() ?? Buffer.allocUnsafeSlow(this.#size);
  /** Set while a request is using it: where read bytes go. */
  #onData?: (buf: Buffer, n: number) => boolean | void;
  #onEnd?: (err: Error) => void;
  /** A response was completely read and nothing arrived after it: the connection may serve another request. */
  reusable = false;
  /** It served a request before (so a close before any answer may be the server dropping an idle connection). */
  used = false;
  closed = false;
  idleTimer?: NodeJS.Timeout;

  constructor(key: string, readBufferSize: number) {
    this.key = key;
    this.#size = readBufferSize;
  }

  /** A buffer a read landed in is free again (its bytes were consumed). A couple are kept; more are garbage. */
  giveBack(buf: Buffer): void {
    if (this.#spare.length < 2) this.#spare.push(buf);
  }

  bind(socket: net.Socket): void {
    this.socket = socket;
    socket.setNoDelay(true);
    const lost = (err?: Error) => {
      this.closed = true;
      this.reusable = false;
      const end = this.#onEnd;
      this.#onData = undefined;
      this.#onEnd = undefined;
      end?.(err ?? bulkError('BULK_CLOSED', 'by the server'));
    };
    socket.on('error', (err) => lost(err));
    socket.on('end', () => lost());
    socket.on('close', () => lost());
  }

  /** Called from the socket's onread: `false` pauses reading until `resume`. */
  data(buf: Buffer, n: number): boolean | void {
    if (this.#onData) return this.#onData(buf, n);
    // Bytes nobody asked for (after a response, on an idle connection): the stream is out of step, never reuse it.
    this.reusable = false;
    this.socket.destroy();
    this.giveBack(buf);
    return false;
  }

  attach(onData: (buf: Buffer, n: number) => boolean | void, onEnd: (err: Error) => void): void {
    this.#onData = onData;
    this.#onEnd = onEnd;
  }

  detach(): void {
    this.#onData = undefined;
    this.#onEnd = undefined;
  }
}

export class BulkClient {
  readonly #o: Required<Omit<BulkClientOptions, 'tls' | 'dial'>> & Pick<BulkClientOptions, 'tls' | 'dial'>;
  readonly #idle = new Map<string, Conn[]>();
  readonly #open = new Set<Conn>();
  /** Connects under way: `close()` ends them at once rather than leaving them to their timeout. */
  readonly #connecting = new Set<(err: Error) => void>();
  #closed = false;

  constructor(o: BulkClientOptions = {}) {
    this.#o = {
      readBufferSize: o.readBufferSize ?? 256 * 1024,
      maxIdlePerHost: o.maxIdlePerHost ?? 16,
      keepAliveMs: o.keepAliveMs ?? 10_000,
      connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
      ...(o.tls ? { tls: o.tls } : {}),
      ...(o.dial ? { dial: o.dial } : {}),
    };
  }

  /** Connections open now (in use and idle). */
  get connections(): number {
    return this.#open.size;
  }

  /** Idle connections kept for reuse, across hosts. */
  get idle(): number {
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  async get(url: string, req: BulkRequest = {}): Promise<BulkResponse> {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bulkError('BULK_CONNECT', `unsupported scheme ${u.protocol}`);
    const key = `${u.protocol}//${u.host}`;
    const head = requestHead(u, req.headers ?? {});
    for (let attempt = 0; ; attempt++) {
      req.signal?.throwIfAborted();
      // The retry goes on a new connection: the server may have closed every idle one at once.
      const conn = (attempt === 0 ? this.#takeIdle(key) : undefined) ?? (await this.#connect(u, key, req.signal));
      try {
        return await this.#exchange(conn, head, req);
      } catch (err) {
        // The server closed a kept-alive connection as it was reused: nothing was answered, so ask once more afresh.
        if (attempt === 0 && conn.used && (err as { unanswered?: boolean }).unanswered && !req.signal?.aborted) continue;
        throw err;
      }
    }
  }

  /** Closes every connection; requests in flight fail. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const fail of [...this.#connecting]) fail(new Error('the client is closed'));
    for (const c of this.#open) c.socket.destroy();
    this.#open.clear();
    this.#idle.clear();
  }

  #takeIdle(key: string): Conn | undefined {
    const list = this.#idle.get(key);
    let found: Conn | undefined;
    while (!found && list?.length) {
      const c = list.pop()!;
      clearTimeout(c.idleTimer);
      if (!c.closed && c.reusable) found = c;
    }
    if (list?.length === 0) this.#idle.delete(key);
    return found;
  }

  #forget(c: Conn): void {
    clearTimeout(c.idleTimer);
    const list = this.#idle.get(c.key);
    const i = list?.indexOf(c) ?? -1;
    if (i < 0) return;
    list!.splice(i, 1);
    if (list!.length === 0) this.#idle.delete(c.key);
  }

  #release(c: Conn): void {
    c.detach();
    c.used = true;
    const list = this.#idle.get(c.key) ?? [];
    if (this.#closed || c.closed || !c.reusable || list.length >= this.#o.maxIdlePerHost) {
      c.socket.destroy();
      return;
    }
    list.push(c);
    this.#idle.set(c.key, list);
    // Read while idle, so a server closing it is noticed (and bytes nobody asked for close it).
    c.socket.resume();
    c.idleTimer = setTimeout(() => c.socket.destroy(), this.#o.keepAliveMs);
    c.idleTimer.unref();
  }

  #connect(u: URL, key: string, signal?: AbortSignal): Promise<Conn> {
    if (this.#closed) return Promise.reject(bulkError('BULK_CONNECT', 'the client is closed'));
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
    let how: DialOptions | undefined;
    try {
      how = this.#o.dial?.(host, port, u.protocol === 'https:');
    } catch (err) {
      return Promise.reject(bulkError('BULK_CONNECT', `${key}: ${(err as Error).message}`, err));
    }
    // Read buffers of the connection's own, reused for its every read: nothing per read for the collector.
    const conn = new Conn(key, this.#o.readBufferSize);
    const onread = { buffer: conn.next, callback: (n: number, buf: Buffer) => conn.data(buf, n) !== false };
    return new Promise<Conn>((resolve, reject) => {
      const socket =
        u.protocol === 'https:'
          ? tls.connect({ ...this.#o.tls, ...how?.tls, host, port, ...(net.isIP(host) ? {} : { servername: host }), ...(how?.lookup ? { lookup: how.lookup } : {}), onread } as tls.ConnectionOptions)
          : net.connect({ host, port, ...(how?.lookup ? { lookup: how.lookup } : {}), onread });
      conn.bind(socket);
      this.#open.add(conn);
      // A connection that closed while idle (the server's keep-alive ran out, our idle timer) leaves the pool at once,
      // and with it its read buffers: a peer that went away leaves nothing behind.
      socket.once('close', () => (this.#open.delete(conn), this.#forget(conn)));
      const done = (err?: Error) => {
        this.#connecting.delete(done);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.off('error', done);
        socket.off(u.protocol === 'https:' ? 'secureConnect' : 'connect', ok);
        if (err) {
          socket.destroy();
          reject(bulkError('BULK_CONNECT', `${key}: ${err.message}`, err));
        }
      };
      const ok = () => (done(), resolve(conn));
      const onAbort = () => {
        this.#connecting.delete(done);
        socket.destroy();
        clearTimeout(timer);
        socket.off('error', done);
        reject(signal!.reason);
      };
      this.#connecting.add(done);
      const timer = setTimeout(() => done(new Error(`no connection after ${this.#o.connectTimeoutMs} ms`)), this.#o.connectTimeoutMs);
      socket.once(u.protocol === 'https:' ? 'secureConnect' : 'connect', ok);
      socket.once('error', done);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Sends one request on `conn` and resolves with the response once its head has arrived. */
  #exchange(conn: Conn, head: string, req: BulkRequest): Promise<BulkResponse> {
    conn.reusable = false;
    return new Promise<BulkResponse>((resolve, reject) => {
      const exchange = new Exchange(conn, req, { resolve, reject }, () => this.#release(conn));
      exchange.start(head);
    });
  }
}

function requestHead(u: URL, headers: Record<string, string>): string {
  let head = `GET ${u.pathname}${u.search} HTTP/1.1\r\nhost: ${u.host}\r\nconnection: keep-alive\r\n`;
  for (const [k, v] of Object.entries(headers)) {
    // Header injection through a value or a name is refused, not sent.
    if (/[\r\n]/.test(k + v) || !TOKEN.test(k)) throw bulkError('BULK_PROTOCOL', `refusing to send header ${JSON.stringify(k)}`);
    head += `${k}: ${v}\r\n`;
  }
  return head + '\r\n';
}

/** One request/response on a connection: parses the head, then passes the body on with flow control. */
class Exchange {
  readonly #conn: Conn;
  readonly #req: BulkRequest;
  #pending?: Pending;
  readonly #release: () => void;
  #head = '';
  /** Body bytes still to come; -1 until the head is parsed. */
  #left = -1;
  #length = 0;
  /** The body's consumer, once there is one. */
  #fn?: (chunk: Buffer) => Promise<void> | void;
  /** Body bytes read and not yet handed to the consumer (it is busy, or not there yet), each in a buffer of its own. */
  readonly #queue: { buf: Buffer; from: number; to: number }[] = [];
  /** The consumer is working on a chunk it was handed (it returned a promise). */
  #busy = false;
  #bodyDone?: { resolve(): void; reject(err: Error): void };
  #failed?: Error;
  /** The connection went back to the client: nothing here may touch it any more. */
  #released = false;
  #finished = false;
  /** The connection may serve another request after this one (HTTP/1.1, no `connection: close`, nothing extra). */
  #keep = false;
  #headersTimer?: NodeJS.Timeout;
  #bodyTimer?: NodeJS.Timeout;
  #lastRead = 0;
  #paused = false;
  readonly #onAbort = () => this.#fail((this.#req.signal!.reason as Error) ?? new Error('aborted'));

  constructor(conn: Conn, req: BulkRequest, pending: Pending, release: () => void) {
    this.#conn = conn;
    this.#req = req;
    this.#pending = pending;
    this.#release = release;
  }

  start(head: string): void {
    const { signal } = this.#req;
    if (signal?.aborted) return this.#fail(signal.reason as Error);
    // Closed between its connect (or its time in the pool) and now: its close event has come and gone.
    if (this.#conn.closed) return this.#fail(Object.assign(bulkError('BULK_CLOSED', 'before any answer'), { unanswered: true }));
    signal?.addEventListener('abort', this.#onAbort, { once: true });
    this.#conn.attach(
      (buf, n) => this.#data(buf, n),
      (err) => this.#fail(this.#left === -1 && this.#head.length === 0 ? Object.assign(bulkError('BULK_CLOSED', 'before any answer', err), { unanswered: true }) : err),
    );
    if (this.#req.headersTimeoutMs) this.#headersTimer = setTimeout(() => this.#fail(bulkError('BULK_HEADERS_TIMEOUT', `${this.#req.headersTimeoutMs} ms`)), this.#req.headersTimeoutMs);
    this.#conn.socket.write(head);
  }

  /** A read of `n` bytes into `buf`: `false` stops reading until the consumer catches up. */
  #data(buf: Buffer, n: number): boolean | void {
    if (this.#left === -1) {
      // The head is ASCII; latin1 keeps one character per byte, so offsets in the text are offsets in the buffer.
      let before = this.#head.length;
      const text = Math.min(n, HEAD_WINDOW);
      this.#head += buf.toString('latin1', 0, text);
      let end = this.#head.indexOf('\r\n\r\n');
      // An interim answer (103 Early Hints from a CDN, 100 Continue) has no body: the real one follows it.
      while (end >= 0 && end <= MAX_HEAD && /^HTTP\/1\.[01] 1(?!01)\d\d/.test(this.#head)) {
        this.#head = this.#head.slice(end + 4);
        before -= end + 4;
        end = this.#head.indexOf('\r\n\r\n');
      }
      if (end < 0 || end > MAX_HEAD) {
        this.#conn.giveBack(buf);
        // (Bytes of this read past the window would be lost: a head not done by then is too big anyway.)
        if (this.#head.length > MAX_HEAD || text < n) this.#fail(bulkError('BULK_PROTOCOL', `response head over ${MAX_HEAD} bytes`));
        return;
      }
      const bodyAt = end + 4 - before;
      if (!this.#parseHead(this.#head.slice(0, end))) return (this.#conn.giveBack(buf), false);
      if (bodyAt < n) return this.#body(buf, bodyAt, n);
      this.#conn.giveBack(buf);
      if (this.#length === 0) this.#finishBody();
      return;
    }
    return this.#body(buf, 0, n);
  }

  #parseHead(text: string): boolean {
    clearTimeout(this.#headersTimer);
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
    if (!m) return this.#fail(bulkError('BULK_PROTOCOL', `status line ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`)), false;
    // No prototype: a header named `__proto__` or `constructor` is just a header.
    const headers: Record<string, string> = Object.create(null) as Record<string, string>;
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      // A name is a token, with no space before the colon (RFC 9112 5.1: such a line is refused, not trimmed).
      if (i <= 0 || !TOKEN.test(line.slice(0, i))) return this.#fail(bulkError('BULK_PROTOCOL', `header line ${JSON.stringify(line.slice(0, 80))}`)), false;
      const k = line.slice(0, i).toLowerCase();
      const v = line.slice(i + 1).trim();
      headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
    }
    const length = headers['content-length'];
    if (headers['transfer-encoding'] !== undefined || length === undefined || !/^\d{1,15}$/.test(length)) {
      return this.#fail(bulkError('BULK_PROTOCOL', `the body is not framed by one Content-Length (${headers['transfer-encoding'] ?? length ?? 'none'})`)), false;
    }
    this.#length = this.#left = Number(length);
    // A server that says it will close, or speaks HTTP/1.0, does not get a second request on this connection.
    this.#keep = m[1] === '1' && !/\bclose\b/i.test(headers.connection ?? '');
    const statusCode = Number(m[2]);
    const pending = this.#pending!;
    this.#pending = undefined;
    this.#lastRead = performance.now();
    this.#armBodyTimer();
    pending.resolve({ statusCode, headers, body: this.#bodyApi() });
    return true;
  }

  #bodyApi(): BulkBody {
    return {
      length: this.#length,
      forEach: (fn) => this.#consume(fn),
      text: async (max = 64 * 1024) => {
        if (this.#length > max) {
          let text = '';
          await this.#consume((c) => {
            text += c.toString('utf8', 0, Math.min(c.length, max - text.length));
            if (text.length >= max) throw Object.assign(new Error('enough'), { enough: true });
          }).catch((err: unknown) => {
            if (!(err as { enough?: boolean }).enough) throw err;
          });
          return text;
        }
        const parts: Buffer[] = [];
        await this.#consume((c) => void parts.push(Buffer.from(c)));
        return Buffer.concat(parts).toString('utf8');
      },
      discard: () => {
        if (!this.#finished) this.#fail(bulkError('BULK_CLOSED', 'body discarded'));
        else if (!this.#fn) {
          // All of it arrived and nobody wants it: the connection is free.
          for (const q of this.#queue.splice(0)) this.#conn.giveBack(q.buf);
          this.#fn = () => {};
          this.#releaseConn();
        }
      },
    };
  }

  #consume(fn: (chunk: Buffer) => Promise<void> | void): Promise<void> {
    if (this.#fn) return Promise.reject(bulkError('BULK_PROTOCOL', 'body read twice'));
    if (this.#failed) return Promise.reject(this.#failed);
    this.#fn = fn;
    const done = new Promise<void>((resolve, reject) => (this.#bodyDone = { resolve, reject }));
    this.#pump();
    return done;
  }

  /** Body bytes [from, to) of `buf` were read: queued for the consumer; `false` stops reading meanwhile. */
  #body(buf: Buffer, from: number, to: number): boolean | void {
    this.#lastRead = performance.now();
    let end = to;
    if (to - from > this.#left) {
      // More than the body: the server is out of step; the extra bytes are dropped with the connection.
      this.#keep = false;
      end = from + this.#left;
    }
    this.#left -= end - from;
    this.#queue.push({ buf, from, to: end });
    if (this.#left === 0) this.#finishBody();
    this.#pump();
    if (this.#queue.length || this.#busy) {
      this.#pause();
      return false;
    }
  }

  /** Hands queued bytes to the consumer in order, one chunk at a time while it works on one. */
  #pump(): void {
    while (this.#fn && !this.#busy && !this.#failed && this.#queue.length) {
      const { buf, from, to } = this.#queue.shift()!;
      let r: Promise<void> | void;
      // Busy from the call on: a failure the consumer causes from inside it (an abort) waits for it too.
      this.#busy = true;
      try {
        r = this.#fn(from === 0 && to === buf.length ? buf : buf.subarray(from, to));
      } catch (err) {
        this.#busy = false;
        this.#conn.giveBack(buf);
        this.#fail(err as Error);
        this.#rejectBody();
        return;
      }
      if (r) {
        // The chunk stays valid until the consumer is done with it: its buffer is not read into meanwhile.
        r.then(
          () => {
            this.#busy = false;
            this.#conn.giveBack(buf);
            if (this.#failed) this.#rejectBody();
            else this.#pump();
          },
          (err: unknown) => {
            this.#busy = false;
            this.#fail(err as Error);
            this.#rejectBody();
          },
        );
        return;
      }
      this.#busy = false;
      this.#conn.giveBack(buf);
    }
    if (this.#failed) return void (this.#busy || this.#rejectBody());
    if (!this.#fn || this.#busy || this.#queue.length) return;
    if (this.#finished) this.#settle();
    else this.#resume();
  }

  #pause(): void {
    this.#paused = true;
    clearTimeout(this.#bodyTimer);
    this.#conn.socket.pause();
  }

  /** Reading goes on after a pause (time spent waiting for the consumer does not count against the body timeout). */
  #resume(): void {
    if (this.#failed || !this.#paused) return;
    this.#paused = false;
    this.#lastRead = performance.now();
    this.#armBodyTimer();
    this.#conn.socket.resume();
  }

  #armBodyTimer(): void {
    const ms = this.#req.bodyTimeoutMs;
    if (!ms || this.#finished) return;
    clearTimeout(this.#bodyTimer);
    this.#bodyTimer = setTimeout(() => {
      const idle = performance.now() - this.#lastRead;
      if (this.#paused || this.#finished) return;
      if (idle >= ms) this.#fail(bulkError('BULK_BODY_TIMEOUT', `nothing for ${ms} ms`));
      else this.#armBodyTimer();
    }, Math.max(1, ms - (performance.now() - this.#lastRead)));
  }

  /** All of the body has arrived (it may not all be consumed yet). */
  #finishBody(): void {
    this.#finished = true;
    clearTimeout(this.#bodyTimer);
    this.#req.signal?.removeEventListener('abort', this.#onAbort);
    this.#conn.detach();
    this.#conn.reusable = this.#keep;
    if (!this.#keep) this.#conn.socket.end();
    // A connection waiting for its consumer must be paused now: it is idle or closing, not ours to read any more.
  }

  /** The consumer took the whole body. */
  #settle(): void {
    const d = this.#bodyDone;
    this.#bodyDone = undefined;
    if (!d) return;
    this.#releaseConn();
    d.resolve();
  }

  #releaseConn(): void {
    if (this.#released) return;
    this.#released = true;
    this.#release();
  }

  #fail(err: Error): void {
    if (this.#failed || this.#released) return;
    this.#failed = err;
    clearTimeout(this.#headersTimer);
    clearTimeout(this.#bodyTimer);
    this.#req.signal?.removeEventListener('abort', this.#onAbort);
    this.#conn.detach();
    this.#conn.reusable = false;
    this.#conn.socket.destroy();
    if (this.#pending) {
      const p = this.#pending;
      this.#pending = undefined;
      p.reject(err);
    }
    // A consumer still working on a chunk hears of it when it is done with that chunk (see #pump), never while it may
    // still be acting on it: whoever awaits the body can then trust that nothing of it is still being processed.
    if (!this.#busy) this.#rejectBody();
  }

  #rejectBody(): void {
    const d = this.#bodyDone;
    this.#bodyDone = undefined;
    d?.reject(this.#failed!);
  }
}
