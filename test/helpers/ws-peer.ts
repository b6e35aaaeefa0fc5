/**
 * A raw control-channel client for attack tests: speaks the wire protocol directly, with whatever identity and
 * messages a test (or an attacker) chooses.
 */
import WebSocket from 'ws';
import { AUTH_HEADER, WS_PATH, sessionProof, type Reply } from '@damselfly/shared';

export interface RawPeer {
  ws: WebSocket;
  /** Sends a request and resolves with its reply (ok or error). */
  call<T = unknown>(msg: Record<string, unknown>): Promise<Reply<T>>;
  /** Sends a notification (no reply). */
  send(msg: Record<string, unknown>): void;
  close(): void;
}

export interface Rejected {
  status: number;
}

/**
 * Opens a session as `peerId`, with a proof made from `secret` (none if undefined). Rejects with the upgrade status.
 * `deaf`: the socket never answers pings, as one whose host lost the network without closing it.
 */
export function rawPeer(supernodeUrl: string, peerId: string, secret: string | undefined, proof?: string, { deaf = false } = {}): Promise<RawPeer> {
  const headers = proof !== undefined ? { [AUTH_HEADER]: proof } : secret ? { [AUTH_HEADER]: sessionProof(Buffer.from(secret), peerId) } : {};
  const ws = new WebSocket(supernodeUrl.replace(/^http/, 'ws') + WS_PATH, { headers, autoPong: !deaf });
  let id = 0;
  const waiting = new Map<number, (r: Reply) => void>();
  ws.on('message', (d) => {
    const r = JSON.parse(d.toString()) as Reply;
    waiting.get(r.id)?.(r);
    waiting.delete(r.id);
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () =>
      resolve({
        ws,
        call: <T>(msg: Record<string, unknown>) =>
          new Promise<Reply<T>>((res) => {
            const my = ++id;
            waiting.set(my, res as (r: Reply) => void);
            ws.send(JSON.stringify({ ...msg, id: my }));
          }),
        send: (msg) => ws.send(JSON.stringify(msg)),
        close: () => ws.terminate(),
      }),
    );
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
    });
    ws.once('error', reject);
  });
}
