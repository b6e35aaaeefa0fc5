#!/usr/bin/env node
// What one message between two processes costs on this machine, busy and idle: a 1-byte TCP ping-pong over loopback,
// back to back and with a pause before each round (the other process asleep in epoll, its CPU possibly idle). A P2P
// Range read crosses processes several times where a direct read crosses once; on a VM whose idle vCPUs halt, each
// crossing after a pause costs a wake-up this measures.
//   node bench/wake.mjs [--rounds 200] [--gaps 0,20,200]
import net from 'node:net';
import { fork } from 'node:child_process';
import { parseArgs } from 'node:util';

if (process.argv[2] === 'echo') {
  net.createServer((s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
  }).listen(0, '127.0.0.1', function () {
    process.send(this.address().port);
  });
} else {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '200' }, gaps: { type: 'string', default: '0,20,200' } } });
  const rounds = Number(values.rounds);
  const child = fork(process.argv[1], ['echo']);
  const port = await new Promise((r) => child.once('message', r));
  const s = net.connect(port, '127.0.0.1');
  s.setNoDelay(true);
  await new Promise((r) => s.once('connect', r));
  const q = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
  console.log(`round trip of 1 byte between two processes over loopback, ${rounds} rounds each:`);
  for (const gap of values.gaps.split(',').map(Number)) {
    const rtts = [];
    for (let i = 0; i < rounds; i++) {
      if (gap) await new Promise((r) => setTimeout(r, gap));
      const t0 = performance.now();
      s.write('x');
      await new Promise((r) => s.once('data', r));
      rtts.push(performance.now() - t0);
    }
    rtts.sort((a, b) => a - b);
    console.log(`  ${gap ? `after ${gap} ms idle` : 'back to back'}`.padEnd(24) + `median ${q(rtts, 0.5).toFixed(3)} ms, p90 ${q(rtts, 0.9).toFixed(3)} ms`);
  }
  s.destroy();
  child.kill();
}
