/**
 * The supernode's swarm view, in a real headless Chromium (Debian `chromium` driven by playwright-core):
 * against a live swarm the page shows the task and the peers and follows them as they change; peer-supplied strings
 * are shown as text, never run; without the operator token it shows nothing but the token prompt. A screenshot is
 * kept in test-artifacts/.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { pieceSizeFor } from '@damselfly/shared';
import { freePort, makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { throttledRelay } from './helpers/throttle.js';
import { until } from './helpers/until.js';
import { ROOT, OPERATOR_TOKEN, TEST_SECRET, getViaProxy, startDaemon, startSupernode } from './helpers/cluster.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const CHROMIUM = '/usr/bin/chromium';

t.test('dashboard: live tasks, piece maps and peers in a real browser', { skip: existsSync(CHROMIUM) ? false : `needs ${CHROMIUM} (scripts/install.sh --test)` }, async (t) => {
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  t.teardown(() => browser.close());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(24 * MiB, 130);
  const { digest, url } = await pushBlob(reg.url, 'team/dashboard', blob);
  // Pieces leave the supernode through a 4 MB/s link, so the first pull is still going while the page looks (its
  // pieces are seeded as they are asked for: all of them about 4 s in).
  const port = await freePort();
  const slow = await throttledRelay({ host: '127.0.0.1', port }, 4e6);
  t.teardown(() => slow.close());
  const sn = await startSupernode(t, { port, advertiseUrl: slow.url });
  const a = await startDaemon(t, [sn.url], { peerId: 'node-a', labels: { zone: 'z1' } });
  // A label is the peer's own say: markup in it must come out as text.
  const b = await startDaemon(t, [sn.url], { peerId: 'node-b', labels: { zone: '<img src=x onerror="window.pwned=1">' } });

  const page: Page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));

  await t.test('without the token: only the prompt, no data', async (t) => {
    await page.goto(`${sn.url}/dashboard`);
    await page.locator('[data-testid=auth]').waitFor({ state: 'visible' });
    t.equal(await page.locator('[data-peer]').count(), 0, 'no peers shown');
    const api = await fetch(`${sn.url}/api/v1/dashboard`);
    t.equal(api.status, 401, 'the data API wants the operator token');
  });

  await t.test('with the token: the peer and its task appear, and they follow the pulls', async (t) => {
    await page.goto(`${sn.url}/dashboard#token=${encodeURIComponent(OPERATOR_TOKEN)}`);
    await until('the token to leave the address bar', async () => !page.url().includes('token'), 15_000, 100);
    await page.locator('[data-testid=auth]').waitFor({ state: 'hidden' });
    // dfdaemons join the supernode with their first task: node A's pull brings it (and the task) onto the page.
    const pullA = getViaProxy(a.proxyUrl, url);
    await page.locator('[data-peer="node-a"]').waitFor();
    const taskRow = page.locator('[data-task]');
    await taskRow.first().waitFor();
    const taskId = await taskRow.first().getAttribute('data-task');
    t.match(taskId, /^[0-9a-f]{64}$/);
    t.match(await taskRow.locator('td').nth(1).textContent(), /team\/dashboard\/blobs\/sha256:/, 'its origin');
    const seededEarly = await taskRow.locator('[data-col=seeded]').textContent();
    const count = Math.ceil(blob.length / pieceSizeFor(blob.length));
    t.match(seededEarly, new RegExp(`^\\d+ / ${count}$`), `pieces seeded while the pull runs: ${seededEarly}`);
    // Seen mid-pull (the pieces go out at 4 MB/s and are seeded as they are asked for): the page then follows it up.
    t.ok(Number(seededEarly!.split(' / ')[0]) < count, 'not yet all of them when the task first shows');
    await page.locator(`canvas[data-map="${taskId}"]`).waitFor();
    t.equal(`sha256:${sha((await pullA).body)}`, digest);
    await until('all pieces seeded on the page', async () => (await taskRow.locator('[data-col=seeded]').textContent()) === `${count} / ${count}`, 15_000, 100);
    // Bytes are credited when the downloader's report of each piece arrives, which can be a refresh after the
    // supernode recorded the piece (and after the client had its bytes).
    await until('bytes from the supernode on the page', async () => (await taskRow.locator('[data-col=from-supernode]').textContent()) !== '0 B', 15_000, 100);
    const fromSupernode = await taskRow.locator('[data-col=from-supernode]').textContent();
    t.match(fromSupernode, /^[\d.]+ (KiB|MiB)$/, `bytes from the supernode: ${fromSupernode}`);

    // The second node gets the blob from the first: the page shows the second peer, the task's second holder and
    // bytes from peers.
    t.equal(`sha256:${sha((await getViaProxy(b.proxyUrl, url)).body)}`, digest);
    await page.locator('[data-peer="node-b"]').waitFor();
    t.equal(await page.locator('[data-peer="node-b"] [data-col=labels]').textContent(), 'zone=<img src=x onerror="window.pwned=1">', 'a peer label is shown as text');
    t.notOk(await page.evaluate(() => (globalThis as { pwned?: number }).pwned), 'and never run');
    await until('the second peer in the task', async () => (await taskRow.locator('[data-col=peers]').textContent()) === '2', 15_000, 100);
    await until('bytes from peers', async () => (await taskRow.locator('[data-col=from-peers]').textContent()) !== '0 B', 15_000, 100);
    await until('the history chart', async () => (await page.locator('#chart polyline[data-series=supernode]').count()) === 1, 15_000, 100);
    t.equal(await page.locator('[data-testid=peer-count]').textContent(), '2 peers');
    const dir = join(ROOT, 'test-artifacts');
    await mkdir(dir, { recursive: true });
    await page.screenshot({ path: join(dir, 'dashboard.png'), fullPage: true });
    t.ok(existsSync(join(dir, 'dashboard.png')), 'screenshot kept in test-artifacts/dashboard.png');
  });

  t.same(errors, [], 'no script errors on the page');
});
