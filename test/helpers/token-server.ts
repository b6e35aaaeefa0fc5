/**
 * A registry token service, as Docker Hub, GHCR or Harbor run one: `GET /token?service=…&scope=repository:<name>:pull`
 * with Basic credentials answers a JWT (RS256, its certificate in the `x5c` header) granting what the user may do;
 * anonymous callers get a token that grants nothing. The registry trusts tokens signed by the certificate it is given.
 */
import { execFileSync } from 'node:child_process';
import { createSign, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** The signing certificate (PEM file): the registry's rootcertbundle. */
  cert: string;
  /** Tokens handed out so far, by who asked (`anonymous` or the user). */
  issued: string[];
  close(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export async function startTokenServer(dir: string, users: Record<string, string>): Promise<TokenServer> {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'token.key', '-out', 'token.pem', '-days', '2', '-subj', '/CN=damselfly test token issuer'], { cwd: dir, stdio: 'pipe' });
  const key = readFileSync(join(dir, 'token.key'));
  const der = Buffer.from(readFileSync(join(dir, 'token.pem'), 'utf8').replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const service = 'damselfly-test-registry';
  const issuer = 'damselfly-test-issuer';
  const issued: string[] = [];
  const server: Server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    let user = 'anonymous';
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    if (basic) {
      const [name, pass] = Buffer.from(basic[1]!, 'base64').toString().split(':');
      if (users[name!] !== pass) return void res.writeHead(401).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      user = name!;
    }
    issued.push(user);
    const access = [];
    for (const scope of u.searchParams.getAll('scope')) {
      const [type, name] = scope.split(':');
      if (type === 'repository' && user !== 'anonymous') access.push({ type, name, actions: ['pull', 'push'] });
    }
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c: [der.toString('base64')] }));
    const claims = b64url(JSON.stringify({ iss: issuer, sub: user, aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access }));
    const signature = createSign('RSA-SHA256').update(`${header}.${claims}`).sign(key);
    const token = `${header}.${claims}.${b64url(signature)}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    cert: join(dir, 'token.pem'),
    issued,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
