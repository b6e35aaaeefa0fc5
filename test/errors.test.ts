import t from 'tap';
import { SharedErrors, OriginErrors, PieceErrors } from '@damselfly/shared';
import { SupernodeErrors } from '@damselfly/supernode';
import { DaemonErrors } from '@damselfly/dfdaemon';

t.test('every error table has unique codes, messages and HTTP statuses', async (t) => {
  const tables = { SharedErrors, OriginErrors, PieceErrors, SupernodeErrors, DaemonErrors };
  const seen = new Set<string>();
  for (const [name, table] of Object.entries(tables)) {
    for (const [code, spec] of Object.entries(table)) {
      t.notOk(seen.has(code), `${name}.${code} is unique across packages`);
      seen.add(code);
      t.match(code, /^[A-Z][A-Z0-9_]+$/, `${code} is an UPPER_SNAKE code`);
      t.ok(spec.message.length > 0, `${code} has a message`);
      t.ok(spec.status >= 400 && spec.status < 600, `${code} maps to an HTTP error status`);
    }
  }
});

t.test("the proxy's error answer: a digest mismatch is DIGEST_MISMATCH however it arrived, anything else keeps its code", async (t) => {
  const { errorAnswer } = await import('@damselfly/dfdaemon');
  const { peerError } = await import('@damselfly/peer');
  const { sharedError } = await import('@damselfly/shared');
  // The supernode's refusal, as the peer's client raises it.
  const refused = Object.assign(peerError('DF_SUPERNODE_ERROR', "SN_DIGEST_MISMATCH: the origin's bytes are not sha256:11"), { remoteCode: 'SN_DIGEST_MISMATCH', status: 502 });
  t.same(errorAnswer(refused), { status: 502, code: 'DIGEST_MISMATCH', message: refused.message });
  // Under a task failure, as its cause.
  const under = peerError('DF_TASK_FAILED', 'the blob', sharedError('DIGEST_MISMATCH', 'blob is sha256:ab'));
  t.equal(errorAnswer(under).code, 'DIGEST_MISMATCH');
  // Words are not a code: another refusal that mentions a mismatch keeps its own.
  const busy = Object.assign(peerError('DF_SUPERNODE_ERROR', 'SN_BUSY: no digest mismatch here'), { remoteCode: 'SN_BUSY', status: 503 });
  t.same(errorAnswer(busy), { status: 503, code: 'DF_SUPERNODE_ERROR', message: busy.message });
  // Not an error of ours: a 502 the client can still read.
  t.same(errorAnswer('boom'), { status: 502, code: 'INTERNAL', message: 'boom' });
});
