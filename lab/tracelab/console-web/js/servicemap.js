// The live service map: nodes and edges counted from recent traces. A call
// between services is a span whose parent lives in another service; a
// database call is a span carrying db.system.name; a message is a PRODUCER
// span carrying messaging.system (into the broker) and the CONSUMER span
// that follows it (out of the broker).
import { h } from './dom.js';
import { t } from './i18n.js';
import { serviceColour } from './model.js';

/** Counts edges over the trace models; `window` is the seconds they span. */
export function serviceGraph(traces) {
  const edges = new Map();
  const nodes = new Map();
  const node = (name, type) => { if (!nodes.has(name)) nodes.set(name, { name, type }); };
  const add = (from, to, durationMs, error) => {
    const key = `${from}→${to}`;
    if (!edges.has(key)) edges.set(key, { from, to, count: 0, errors: 0, durations: [] });
    const e = edges.get(key);
    e.count += 1;
    if (error) e.errors += 1;
    e.durations.push(durationMs);
  };
  let first = Infinity;
  let last = -Infinity;
  for (const tr of traces) {
    const start = Number(BigInt(tr.startNs) / 1000000n);
    first = Math.min(first, start);
    last = Math.max(last, start + tr.duration);
    for (const sp of tr.spans) {
      node(sp.service, sp.service === 'payment-provider' ? 'external' : 'service');
      const db = sp.attributes['db.system.name'] || sp.attributes['db.system'];
      const broker = sp.attributes['messaging.system'];
      if (db && sp.kind === 'client') {
        node(db, 'database');
        add(sp.service, db, sp.duration, sp.status.error);
      } else if (broker && sp.kind === 'producer') {
        node(broker, 'broker');
        add(sp.service, broker, sp.duration, sp.status.error);
      } else if (sp.kind === 'consumer' && sp.parent && sp.parent.service !== sp.service) {
        const b = sp.parent.attributes['messaging.system'] || broker || 'broker';
        node(b, 'broker');
        add(b, sp.service, sp.duration, sp.status.error);
      } else if (sp.parent && sp.parent.service !== sp.service) {
        const caller = sp.parent;
        add(caller.service, sp.service, caller.kind === 'client' ? caller.duration : sp.duration, sp.status.error || caller.status.error);
      }
    }
  }
  const window = traces.length ? Math.max(1, (last - first) / 1000) : 0;
  for (const e of edges.values()) {
    e.rate = window ? e.count / window : 0;
    e.errorRate = e.count ? e.errors / e.count : 0;
    e.p95 = percentile(e.durations, 0.95);
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()], window, traces: traces.length };
}

export function percentile(values, q) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

const COLUMN = { gateway: 0, auth: 1, search: 1, payment: 1, 'payment-provider': 2, postgresql: 2, rabbitmq: 2, notification: 3 };
// Laid out so that no two edges cross: the broker level with payment and
// notification, the database level with search.
const ROW = { gateway: 1, auth: 0, search: 2, payment: 1, 'payment-provider': 0, postgresql: 2, rabbitmq: 1, notification: 1 };
const W = 1180;
const H = 400;

/** The graph as an SVG: boxes for services, a cylinder for a database, a pipe for the broker. */
export function drawGraph(graph, fmt) {
  const pos = new Map();
  let extra = 0;
  for (const n of graph.nodes) {
    const col = COLUMN[n.name] ?? 3;
    const row = ROW[n.name] ?? (extra++ % 2 === 0 ? 0 : 1);
    pos.set(n.name, { x: 30 + col * 320, y: 40 + row * 130 });
  }
  const bw = 150;
  const bh = 44;
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, class: 'map', role: 'img', 'aria-label': t('lab.mapLabel') },
    h('svg:defs', {}, h('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '10', refY: '5', markerWidth: '8', markerHeight: '8', orient: 'auto-start-reverse' },
      h('svg:path', { d: 'M0,0 L10,5 L0,10 z', fill: '#444' }))));
  for (const e of graph.edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + bw; const y1 = a.y + bh / 2;
    const x2 = b.x; const y2 = b.y + bh / 2;
    const back = x2 <= x1;
    const d = back
      ? `M${a.x + bw / 2},${a.y + bh} C${a.x + bw / 2},${a.y + bh + 60} ${b.x + bw / 2},${b.y + bh + 60} ${b.x + bw / 2},${b.y + bh}`
      : `M${x1},${y1} C${x1 + 40},${y1} ${x2 - 40},${y2} ${x2},${y2}`;
    const bad = e.errorRate > 0;
    const mx = back ? (a.x + b.x + bw) / 2 : (x1 + x2) / 2;
    const my = back ? Math.max(a.y, b.y) + bh + 50 : (y1 + y2) / 2 - 6;
    svg.append(h('svg:g', { class: `edge${bad ? ' bad' : ''}`, dataset: { from: e.from, to: e.to } },
      h('svg:title', {}, `${e.from} → ${e.to}: ${e.count}`),
      h('svg:path', { d, fill: 'none', stroke: bad ? '#D55E00' : '#555', 'stroke-width': String(1.5 + Math.min(4, e.rate)), 'stroke-dasharray': e.to === 'rabbitmq' || e.from === 'rabbitmq' ? '6 4' : null, 'marker-end': 'url(#arrow)' }),
      h('svg:text', { x: String(mx), y: String(my - 12), 'text-anchor': 'middle', class: 'edge-label' },
        h('svg:tspan', { x: String(mx) }, fmt.rate(e.rate)),
        h('svg:tspan', { x: String(mx), dy: '13' }, `${bad ? '✕ ' : ''}${(e.errorRate * 100).toFixed(0)}% · p95 ${fmt.ms(e.p95)}`))));
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.name);
    const colour = n.type === 'service' || n.type === 'external' ? serviceColour(n.name) : '#888';
    const shape = n.type === 'database'
      ? h('svg:path', { d: `M${p.x},${p.y + 8} a${bw / 2},8 0 0,1 ${bw},0 v${bh - 16} a${bw / 2},8 0 0,1 ${-bw},0 z M${p.x},${p.y + 8} a${bw / 2},8 0 0,0 ${bw},0`, fill: '#eee', stroke: colour, 'stroke-width': '3' })
      : h('svg:rect', { x: String(p.x), y: String(p.y), width: String(bw), height: String(bh), rx: n.type === 'broker' ? '22' : '6', fill: '#fff', stroke: colour, 'stroke-width': '3', 'stroke-dasharray': n.type === 'external' ? '8 4' : null });
    svg.append(h('svg:g', { class: `node node-${n.type}`, dataset: { node: n.name } },
      shape,
      h('svg:rect', { x: String(p.x), y: String(p.y), width: '8', height: String(bh), fill: colour }),
      h('svg:text', { x: String(p.x + bw / 2 + 4), y: String(p.y + bh / 2 - 2), 'text-anchor': 'middle', class: 'node-name' }, n.name),
      h('svg:text', { x: String(p.x + bw / 2 + 4), y: String(p.y + bh / 2 + 13), 'text-anchor': 'middle', class: 'node-type' }, t(`node.${n.type}`))));
  }
  return svg;
}
