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
