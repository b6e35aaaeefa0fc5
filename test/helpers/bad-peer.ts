/**
 * A malicious cluster member (it holds the cluster secret: a compromised node): joins the swarm over the real control
 * channel, takes assignments for every piece and reports them fetched without fetching anything, so the supernode
 * lists it as a holder, then serves garbage from its upload server. Used to prove corrupt data is caught, reported and
 * blacklisted.
 */
import { createServer, type Server } from 'node:http';
import WebSocket from 'ws';
import { AUTH_HEADER, BLOCK_SIZE, GRANT_HEADER, PROTOCOL_VERSION, WS_PATH, pieceSizeFor, sessionProof, type Assignment, type TaskInfo, type WantResult } from '@damselfly/shared';

export interface BadPeer {
  peerId: string;
  /** Piece requests it answered (with garbage). */
  served: number;
  /** Who asked it for which piece (the requester as the supernode's grant names it), one entry per request. */
  requests: { piece: number; requester: string }[];
  close(): Promise<void>;
}

/**
 * How it misbehaves: garbage bytes, no answer at all, the right headers and then one byte a second, or (`tail`) the
 * right first 1 MiB block of the piece followed by garbage (needs `blob`).
 */
export type BadMode = 'garbage' | 'silent' | 'drip' | 'tail';

export async function startBadPeer(
  supernodeUrl: string,
  blobUrl: string,
  secret = process.env.DAMSELFLY_CLUSTER_SECRET!,
  peerId = 'evil-peer',
  mode: BadMode = 'garbage',
  blob?: Buffer,
): Promise<BadPeer> {
  const state = { served: 0, requests: [] as { piece: number; requester: string }[] };
  const drips = new Set<NodeJS.Timeout>();
  const server: Server = createServer((req, res) => {
    state.served++;
    const grant = String(req.headers[GRANT_HEADER] ?? '');
    state.requests.push({ piece: Number(new URL(req.url!, 'http://x').pathname.split('/').pop()), requester: Buffer.from(grant.split('.')[1] ?? '', 'base64url').toString() });
    if (mode === 'silent') return;
    if (mode === 'drip') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 4 * 1024 * 1024 });
      const timer = setInterval(() => res.write(Buffer.from([0x42])), 1000);
      drips.add(timer);
      res.on('close', () => (clearInterval(timer), drips.delete(timer)));
      return;
    }
    const size = blob ? pieceSizeFor(blob.length) : 4 * 1024 * 1024;
    const body = Buffer.alloc(size, 0x42);
    if (mode === 'tail') {
      // The first block of piece n is honest, the rest is not.
      const n = Number(req.url!.split('/').pop());
      blob!.copy(body, 0, n * size, n * size + BLOCK_SIZE);
    }
    // Framed as a real upload server frames it, so what is tested is the bytes, not the framing (an unframed answer
    // is refused before any byte is read: see the bulk client's tests).
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const uploadUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const ws = new WebSocket(supernodeUrl.replace(/^http/, 'ws') + WS_PATH, { headers: { [AUTH_HEADER]: sessionProof(Buffer.from(secret), peerId) } });
  await new Promise((r, j) => ws.once('open', r).once('error', j));
  let id = 0;
  const call = <T>(msg: object) =>
    new Promise<T>((resolve, reject) => {
      const my = ++id;
      const onMsg = (d: WebSocket.RawData) => {
        const r = JSON.parse(d.toString());
        if (r.id !== my) return;
        ws.off('message', onMsg);
        if (r.ok) resolve(r.result as T);
        else reject(new Error(r.error.message));
      };
      ws.on('message', onMsg);
      ws.send(JSON.stringify({ ...msg, id: my }));
    });
  await call({ type: 'peer:hello', peerId, uploadUrl, version: PROTOCOL_VERSION });
  const info = await call<TaskInfo>({ type: 'task:register', url: blobUrl });
  // Lie: take an assignment for every piece and claim each arrived fine, without fetching a byte.
  const missing = new Set(Array.from({ length: info.pieceCount }, (_, n) => n));
  const lie = (list: Assignment[]) => {
    for (const a of list) {
      ws.send(JSON.stringify({ type: 'piece:result', taskId: info.taskId, piece: a.piece, ok: true }));
      missing.delete(a.piece);
    }
  };
  // The rest of the assignments are pushed as each lie frees a slot.
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString()) as { type?: string; taskId?: string; assignments?: Assignment[] };
    if (m.type === 'pieces:assigned' && m.taskId === info.taskId) lie(m.assignments ?? []);
  });
  lie((await call<WantResult>({ type: 'pieces:want', taskId: info.taskId, want: [...missing], max: 8 })).assignments);
  for (let i = 0; missing.size && i < 200; i++) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100));
  return {
    peerId,
    get served() {
      return state.served;
    },
    requests: state.requests,
    close: async () => {
      for (const d of drips) clearInterval(d);
      ws.terminate();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
