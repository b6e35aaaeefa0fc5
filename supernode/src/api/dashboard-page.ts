/**
 * The swarm view served at `/dashboard`: one self-contained page (no build step, no external assets) that polls
 * `/api/v1/dashboard` every second. Every value from the swarm (peer ids, labels, origins) is untrusted and goes into
 * the page as text nodes only, never as markup. The operator token (`dfctl token`) is taken from the URL fragment
 * (`#token=…`, never sent to the server in the URL) or typed in, and kept for the tab only (sessionStorage).
 */
export const DASHBOARD_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Damselfly swarm</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 13px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #1d2330; background: #fafbfc; }
  h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 20px 0 6px; }
  .stats span { margin-right: 18px; } .muted { color: #6a7282; }
  table { border-collapse: collapse; background: #fff; } th, td { padding: 3px 10px; border-bottom: 1px solid #e3e6ea; text-align: left; }
  th { font-weight: 600; background: #f0f2f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .bad { color: #b3261e; font-weight: 600; } .ok { color: #1b7f3b; }
  .map { margin: 6px 0 14px; } .map canvas { border: 1px solid #e3e6ea; background: #fff; }
  .legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; vertical-align: -1px; }
  #auth { display: none; padding: 10px; background: #fff4e5; border: 1px solid #f0c36d; margin: 10px 0; }
  code { font-size: 12px; }
</style>
</head>
<body>
<h1>Damselfly swarm</h1>
<div class="stats" id="stats" data-testid="stats"></div>
<div id="auth" data-testid="auth">
  This supernode needs its operator token (<code>dfctl token</code> prints it):
  <input id="token" type="password" size="40" autocomplete="off"> <button id="save">Show the swarm</button>
  <div class="muted" id="authwhy"></div>
</div>
<h2>Bytes over time <span class="muted">(per second, last 5 minutes)</span></h2>
<svg id="chart" data-testid="chart" width="760" height="200" role="img" aria-label="origin egress, supernode and peer bytes per second"></svg>
<div class="legend"><i style="background:#d9480f"></i>origin egress<i style="background:#1c7ed6"></i>served by the supernode<i style="background:#2b8a3e"></i>peer to peer</div>
<h2>Tasks</h2>
<table data-testid="tasks"><thead><tr><th>task</th><th>origin</th><th>size</th><th>pieces seeded</th><th>peers</th><th>in flight</th><th>from supernode</th><th>from peers</th><th>digest</th></tr></thead><tbody id="tasks"></tbody></table>
<div id="maps"></div>
<h2>Peers</h2>
<table data-testid="peers"><thead><tr><th>peer</th><th>upload address</th><th>labels</th><th>upload</th><th>download</th><th>uploads / slots</th><th>tasks</th><th>blacklisted in</th></tr></thead><tbody id="peers"></tbody></table>
<p class="muted" id="updated"></p>
<script>
(() => {
  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  const bytes = (n) => {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + ' ' + u[i];
  };
  const rate = (n) => bytes(n) + '/s';
  let token = sessionStorage.getItem('damselfly-token') || '';
  function tokenFromHash() {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
    if (!fromHash) return;
    token = fromHash;
    sessionStorage.setItem('damselfly-token', token);
    history.replaceState(null, '', location.pathname);
  }
  tokenFromHash();
  window.addEventListener('hashchange', () => { tokenFromHash(); tick(); });
  $('save').onclick = () => { token = $('token').value; sessionStorage.setItem('damselfly-token', token); tick(); };

  function chart(points) {
    const svg = $('chart'), W = 760, H = 200, L = 64, B = 24, T = 8, R = 8;
    while (svg.firstChild) svg.firstChild.remove();
    const ns = 'http://www.w3.org/2000/svg';
    const add = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; svg.append(e); return e; };
    const max = Math.max(1, ...points.flatMap((p) => [p.origin, p.supernode, p.peers]));
    const t0 = points.length ? points[0].t : 0, t1 = points.length ? points[points.length - 1].t : 1;
    const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      add('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e3e6ea' });
      add('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#6a7282' }, rate(v));
    }
    add('text', { x: L, y: H - 6, 'font-size': 11, fill: '#6a7282' }, points.length ? '-' + (t1 - t0) + ' s' : 'no data yet');
    add('text', { x: W - R, y: H - 6, 'text-anchor': 'end', 'font-size': 11, fill: '#6a7282' }, 'now');
    for (const [key, color] of [['origin', '#d9480f'], ['supernode', '#1c7ed6'], ['peers', '#2b8a3e']]) {
      if (points.length < 2) continue;
      add('polyline', { fill: 'none', stroke: color, 'stroke-width': 2, points: points.map((p) => x(p.t) + ',' + y(p[key])).join(' '), 'data-series': key });
    }
  }

  function pieceMap(task) {
    const rows = [['supernode', task.supernodeMap], ...Object.entries(task.holders)];
    const cols = task.pieceCount, cell = Math.max(2, Math.min(12, Math.floor(600 / Math.max(1, cols)))), label = 160;
    const c = el('canvas', { width: label + cols * cell + 2, height: rows.length * (cell + 2) + 2, 'data-map': task.taskId });
    const g = c.getContext('2d');
    g.font = '11px system-ui'; g.textBaseline = 'middle';
    rows.forEach(([id, map], r) => {
      const top = 1 + r * (cell + 2);
      g.fillStyle = task.blacklisted[id] ? '#b3261e' : '#1d2330';
      g.fillText(id.length > 24 ? id.slice(0, 23) + '…' : id, 2, top + cell / 2);
      for (let p = 0; p < cols; p++) { g.fillStyle = map[p] === '1' ? (r === 0 ? '#1c7ed6' : '#2b8a3e') : '#e9ecef'; g.fillRect(label + p * cell, top, cell - 1, cell); }
    });
    return el('div', { class: 'map' }, el('div', {}, 'piece map of ', el('code', {}, task.taskId.slice(0, 12)), ' (', String(cols), ' pieces of ', bytes(task.pieceSize), '; blue: the supernode has it, green: a peer holds it)'), c);
  }

  function render(d) {
    const s = d.supernode;
    $('stats').replaceChildren(
      el('span', { 'data-testid': 'peer-count' }, s.peers + ' peers'), el('span', {}, s.tasks + ' tasks'),
      el('span', {}, 'serving ' + s.load + ' of ' + s.slots + ' slots'), el('span', {}, 'sending ' + rate(s.servedRate)));
    chart(d.history);
    $('tasks').replaceChildren(...d.tasks.map((t) => el('tr', { 'data-task': t.taskId },
      el('td', {}, el('code', { title: t.taskId }, t.taskId.slice(0, 12))), el('td', {}, t.origin),
      el('td', { class: 'num' }, bytes(t.size)), el('td', { class: 'num', 'data-col': 'seeded' }, t.seeded + ' / ' + t.pieceCount),
      el('td', { class: 'num', 'data-col': 'peers' }, String(t.peers)), el('td', { class: 'num' }, String(t.inflight)),
      el('td', { class: 'num', 'data-col': 'from-supernode' }, bytes(t.bytes.supernode)), el('td', { class: 'num', 'data-col': 'from-peers' }, bytes(t.bytes.peers)),
      el('td', { class: t.verified ? 'ok' : 'muted' }, t.verified ? 'verified' : 'pending'))));
    $('maps').replaceChildren(...d.tasks.filter((t) => t.peers > 0 || t.seeded > 0).slice(0, 10).map(pieceMap));
    $('peers').replaceChildren(...d.peers.map((p) => el('tr', { 'data-peer': p.id },
      el('td', {}, p.id), el('td', {}, p.address || (p.uploads ? '' : 'does not upload')),
      el('td', { 'data-col': 'labels' }, Object.entries(p.labels).map(([k, v]) => k + '=' + v).join(', ')),
      el('td', { class: 'num' }, rate(p.up)), el('td', { class: 'num' }, rate(p.down)),
      el('td', { class: 'num' }, p.load + ' / ' + p.slots), el('td', { class: 'num' }, String(p.tasks)),
      el('td', { class: p.blacklistedIn.length ? 'bad' : '' }, p.blacklistedIn.map((id) => id.slice(0, 12)).join(', ')))));
    $('updated').textContent = 'updated ' + new Date(d.at).toLocaleTimeString();
  }

  async function tick() {
    try {
      const res = await fetch('/api/v1/dashboard', { headers: token ? { authorization: 'Bearer ' + token } : {}, cache: 'no-store' });
      if (res.status === 401 || res.status === 403) {
        $('auth').style.display = 'block';
        $('authwhy').textContent = token ? 'The token was refused.' : '';
        return;
      }
      $('auth').style.display = 'none';
      if (res.ok) render(await res.json());
    } catch (err) {
      $('updated').textContent = 'supernode unreachable: ' + err;
    }
  }
  tick();
  setInterval(tick, 1000);
})();
</script>
</body>
</html>
`;
