/**
 * A malicious peer: joins the swarm over the real control channel, claims to hold every piece, and serves garbage
 * from its upload server. Used to prove corrupt data is caught, reported and blacklisted.
 */
import { createServer, type Server } from 'node:http';
import WebSocket from 'ws';
import { PROTOCOL_VERSION, WS_PATH, type TaskInfo } from '@damselfly/shared';

export interface BadPeer {
  peerId: string;
  /** Piece requests it answered (with garbage). */
  served: number;
  close(): Promise<void>;
}

export async function startBadPeer(supernodeUrl: string, blobUrl: string): Promise<BadPeer> {
  const state = { served: 0 };
  const server: Server = createServer((req, res) => {
    state.served++;
    const body = Buffer.alloc(4 * 1024 * 1024, 0x42);
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const uploadUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const ws = new WebSocket(supernodeUrl.replace(/^http/, 'ws') + WS_PATH);
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
  const peerId = 'evil-peer';
  await call({ type: 'peer:hello', peerId, uploadUrl, version: PROTOCOL_VERSION });
  const info = await call<TaskInfo>({ type: 'task:register', url: blobUrl });
  // Lie: claim every piece arrived fine.
  for (let n = 0; n < info.pieceCount; n++) ws.send(JSON.stringify({ type: 'piece:result', taskId: info.taskId, piece: n, from: 'supernode', ok: true }));
  await new Promise((r) => setTimeout(r, 100));
  return {
    peerId,
    get served() {
      return state.served;
    },
    close: async () => {
      ws.terminate();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
