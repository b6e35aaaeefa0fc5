// An emulated network of hosts on one machine: each host is a Linux network namespace with one interface on a shared
// bridge (itself in a namespace of its own, so the machine's own networking is left alone), its egress capped with
// `tc tbf`; downlinks are uncapped. The machine reaches every host over a control link to the bridge (uncapped, used
// only to set things up and read counters). Needs root and iproute2.
import { execFileSync, spawn, spawnSync } from 'node:child_process';

function ip(...args) {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/**
 * Kills every process in a namespace, then removes it: deleting a namespace does not end what runs in it (registry,
 * hooks, anything started outside spawn()).
 */
function removeNs(name) {
  const pids = spawnSync('ip', ['netns', 'pids', name]).stdout?.toString().split('\n').filter(Boolean) ?? [];
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {}
  }
  spawnSync('ip', ['netns', 'del', name]);
}

/** Namespaces of this prefix, e.g. left by an earlier run that was killed with -9 before it could clean up. */
export function listNamespaces(prefix) {
  return ip('netns', 'list').split('\n').map((l) => l.split(' ')[0]).filter((n) => n?.startsWith(`${prefix}-`));
}

export function removeStale(prefix) {
  const names = listNamespaces(prefix);
  for (const n of names) removeNs(n);
  spawnSync('ip', ['link', 'del', `${prefix}-ctl`], { stdio: 'ignore' });
  return names;
}

/**
 * Creates hosts `${prefix}-h0` … with addresses `${subnet}.1` … (a /24; `.254` is the machine's control address);
 * `capsMbit[i]` caps host i's egress (0 = uncapped). Returns the network; `destroy()` kills every process in it and
 * removes every namespace (also run on exit and on SIGINT/SIGTERM/SIGHUP).
 */
export function createNetwork(prefix, capsMbit, subnet = '10.213.77') {
  removeStale(prefix);
  const hub = `${prefix}-hub`;
  const hosts = capsMbit.map((cap, i) => ({ ns: `${prefix}-h${i}`, addr: `${subnet}.${i + 1}`, port: `h${i}`, capMbit: cap }));
  const children = new Set();
  let destroyed = false;
  const cleanups = [];
  const destroy = () => {
    if (destroyed) return;
    destroyed = true;
    for (const c of children) {
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {}
    }
    for (const h of hosts) removeNs(h.ns);
    removeNs(hub);
    spawnSync('ip', ['link', 'del', `${prefix}-ctl`], { stdio: 'ignore' });
    // Last, once nothing runs any more: removing files under processes still writing them can fail (ENOTEMPTY), and a
    // cleanup that throws must not stop the others.
    for (const fn of cleanups) {
      try {
        fn();
      } catch (err) {
        console.error(`cleanup: ${err.message}`);
      }
    }
  };
  process.on('exit', destroy);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => (destroy(), process.exit(130)));
  process.once('uncaughtException', (err) => {
    console.error(err);
    destroy();
    process.exit(1);
  });
  try {
    ip('netns', 'add', hub);
    ip('-n', hub, 'link', 'set', 'lo', 'up');
    ip('-n', hub, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', hub, 'link', 'set', 'br0', 'up');
    ip('link', 'add', `${prefix}-ctl`, 'type', 'veth', 'peer', 'name', 'ctl', 'netns', hub);
    ip('-n', hub, 'link', 'set', 'ctl', 'master', 'br0', 'up');
    ip('addr', 'add', `${subnet}.254/24`, 'dev', `${prefix}-ctl`);
    ip('link', 'set', `${prefix}-ctl`, 'up');
    for (const h of hosts) {
      ip('netns', 'add', h.ns);
      ip('-n', hub, 'link', 'add', h.port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns);
      ip('-n', hub, 'link', 'set', h.port, 'master', 'br0', 'up');
      ip('-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', 'eth0');
      ip('-n', h.ns, 'link', 'set', 'eth0', 'up');
      ip('-n', h.ns, 'link', 'set', 'lo', 'up');
      // burst ≥ the largest (GSO) packet the veth hands over, so none is dropped for size; a 100 ms queue keeps
      // TCP's view of the link close to a real 50 Mbit/s uplink.
      if (h.capMbit > 0) execFileSync('tc', ['-n', h.ns, 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', `${h.capMbit}mbit`, 'burst', '128kb', 'latency', '100ms']);
    }
  } catch (err) {
    destroy();
    throw err;
  }
  return {
    hosts,
    /** Bytes each host has sent so far (read on the bridge side: what its capped uplink carried). */
    txBytes() {
      const links = JSON.parse(ip('-n', hub, '-s', '-j', 'link', 'show'));
      const rx = new Map(links.map((l) => [l.ifname, l.stats64?.rx?.bytes ?? 0]));
      return hosts.map((h) => rx.get(h.port) ?? 0);
    },
    /** Starts `cmd args` inside host i; the process (group) is killed by destroy(). */
    spawn(i, cmd, args, opts = {}) {
      const child = spawn('ip', ['netns', 'exec', hosts[i].ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts });
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    /** Runs `fn` (synchronously) when the network is destroyed, whatever the cause. */
    onDestroy(fn) {
      cleanups.push(fn);
    },
    destroy,
  };
}
