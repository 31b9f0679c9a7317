// A trace as Tempo answers it (OTLP/JSON: ids in base64, times in
// nanoseconds as strings) turned into spans the views draw: hex ids, times in
// milliseconds from the trace's start, the tree, self time, the critical
// path, the hops between services with the traceparent that carried them,
// and the lesson's spans A-F.

const KINDS = {
  SPAN_KIND_INTERNAL: 'internal', SPAN_KIND_SERVER: 'server', SPAN_KIND_CLIENT: 'client',
  SPAN_KIND_PRODUCER: 'producer', SPAN_KIND_CONSUMER: 'consumer',
  1: 'internal', 2: 'server', 3: 'client', 4: 'producer', 5: 'consumer',
};

/** An OTLP id (base64 as Tempo writes it, or already hex) as lowercase hex. */
export function hexId(id, bytes) {
  if (!id) return null;
  if (id.length === bytes * 2 && /^[0-9a-fA-F]+$/.test(id)) return id.toLowerCase();
  const raw = atob(id);
  let out = '';
  for (let i = 0; i < raw.length; i++) out += raw.charCodeAt(i).toString(16).padStart(2, '0');
  return /^0*$/.test(out) ? null : out;
}

/** An OTLP AnyValue as a plain JS value (strings, numbers, booleans, arrays, objects). */
export function anyValue(v) {
  if (!v) return null;
  if ('stringValue' in v) return v.stringValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('boolValue' in v) return v.boolValue;
  if ('arrayValue' in v) return (v.arrayValue.values || []).map(anyValue);
  if ('kvlistValue' in v) return attrs(v.kvlistValue.values);
  if ('bytesValue' in v) return v.bytesValue;
  return null;
}

/** OTLP KeyValue[] as an ordered object. */
export function attrs(list) {
  const out = {};
  for (const kv of list || []) out[kv.key] = anyValue(kv.value);
  return out;
}

function isError(status) {
  return status && (status.code === 'STATUS_CODE_ERROR' || status.code === 2);
}

/**
 * Builds the model from Tempo's answer ({trace:{resourceSpans}} from v2,
 * {batches} from v1). Returns {traceId, spans, roots, byId, start, duration,
 * services, errors, hops}.
 */
export function buildTrace(body) {
  const resourceSpans = body?.trace?.resourceSpans || body?.batches || body?.resourceSpans || [];
  const raw = [];
  for (const rs of resourceSpans) {
    const resource = attrs(rs.resource?.attributes);
    const service = resource['service.name'] || 'unknown';
    for (const ss of rs.scopeSpans || rs.instrumentationLibrarySpans || []) {
      for (const s of ss.spans || []) raw.push({ s, resource, service, scope: ss.scope || null });
    }
  }
  if (raw.length === 0) return null;
  let min = null;
  let max = null;
  for (const { s } of raw) {
    const a = BigInt(s.startTimeUnixNano || 0);
    const b = BigInt(s.endTimeUnixNano || s.startTimeUnixNano || 0);
    if (min === null || a < min) min = a;
    if (max === null || b > max) max = b;
  }
  const ms = (ns) => Number(BigInt(ns || 0) - min) / 1e6;
  const spans = raw.map(({ s, resource, service, scope }) => {
    const start = ms(s.startTimeUnixNano);
    const end = Math.max(start, ms(s.endTimeUnixNano || s.startTimeUnixNano));
    return {
      traceId: hexId(s.traceId, 16),
      spanId: hexId(s.spanId, 8),
      parentId: hexId(s.parentSpanId, 8),
      name: s.name || '',
      kind: KINDS[s.kind] || 'internal',
      service,
      resource,
      scope,
      attributes: attrs(s.attributes),
      events: (s.events || []).map((e) => ({ name: e.name, at: ms(e.timeUnixNano), attributes: attrs(e.attributes) })),
      links: (s.links || []).map((l) => ({ traceId: hexId(l.traceId, 16), spanId: hexId(l.spanId, 8), attributes: attrs(l.attributes) })),
      status: { error: isError(s.status), message: s.status?.message || '', code: s.status?.code ?? 0 },
      flags: s.flags ?? null,
      startNs: String(s.startTimeUnixNano),
      start,
      end,
      duration: end - start,
      children: [],
      parent: null,
      depth: 0,
      selfTime: 0,
      critical: false,
      label: null,
    };
  });
  const byId = new Map(spans.map((sp) => [sp.spanId, sp]));
  const roots = [];
  for (const sp of spans) {
    const parent = sp.parentId ? byId.get(sp.parentId) : null;
    if (parent && parent !== sp) {
      sp.parent = parent;
      parent.children.push(sp);
    } else {
      roots.push(sp);
    }
  }
  const byStart = (a, b) => a.start - b.start || a.end - b.end;
  roots.sort(byStart);
  for (const sp of spans) sp.children.sort(byStart);
  const ordered = [];
  const walk = (sp, depth) => {
    sp.depth = depth;
    ordered.push(sp);
    for (const c of sp.children) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  for (const sp of ordered) sp.selfTime = selfTime(sp);
  const root = roots.find((r) => !r.parentId) || roots[0];
  markCritical(root);
  labelLesson(ordered);
  return {
    traceId: ordered[0].traceId,
    spans: ordered,
    roots,
    root,
    byId,
    startNs: String(min),
    duration: Number(max - min) / 1e6,
    services: [...new Set(ordered.map((s) => s.service))],
    errors: ordered.filter((s) => s.status.error).length,
    hops: hops(ordered),
  };
}

/** The span's duration minus the time covered by its children (clipped to the span). */
export function selfTime(sp) {
  const parts = sp.children
    .map((c) => [Math.max(c.start, sp.start), Math.min(c.end, sp.end)])
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  let covered = 0;
  let curA = null;
  let curB = null;
  for (const [a, b] of parts) {
    if (curB === null || a > curB) {
      if (curB !== null) covered += curB - curA;
      curA = a;
      curB = b;
    } else {
      curB = Math.max(curB, b);
    }
  }
  if (curB !== null) covered += curB - curA;
  return Math.max(0, sp.duration - covered);
}

/**
 * Marks the critical path: from the root, walking back from its end, the
 * child that finished last before the cursor is on the path, then the one
 * that finished last before that child started, and so on, recursively.
 * What is left is the span's own time on the path.
 */
export function markCritical(sp, until = Infinity) {
  if (!sp) return;
  sp.critical = true;
  let cursor = Math.min(sp.end, until);
  const pending = sp.children.filter((c) => c.start < cursor);
  for (;;) {
    let best = null;
    for (const c of pending) {
      if (c.critical || c.start >= cursor) continue;
      if (!best || Math.min(c.end, cursor) > Math.min(best.end, cursor)) best = c;
    }
    if (!best) break;
    markCritical(best, cursor);
    cursor = best.start;
  }
}

/** The W3C traceparent a CLIENT or PRODUCER span sends: version-trace id-its span id-flags. */
export function traceparentOf(sp) {
  const flags = sp.flags === null ? 1 : Number(sp.flags) & 0xff;
  return `00-${sp.traceId}-${sp.spanId}-${flags.toString(16).padStart(2, '0')}`;
}

/**
 * Every hop between two services: a span whose parent lives in another
 * service. The parent is the CLIENT (HTTP) or PRODUCER (AMQP) span whose id
 * the traceparent carried. For a message, `wait` is the queue hop: from the
 * start of the publish to the start of the processing.
 */
export function hops(spans) {
  const out = [];
  for (const sp of spans) {
    const p = sp.parent;
    if (!p || p.service === sp.service) continue;
    const viaQueue = p.kind === 'producer' || sp.kind === 'consumer';
    out.push({
      from: p,
      to: sp,
      via: viaQueue ? 'amqp' : 'http',
      traceparent: traceparentOf(p),
      wait: viaQueue ? Math.max(0, sp.start - p.start) : null,
    });
  }
  return out;
}

/**
 * The lesson's diagram names six spans of a checkout: A the gateway's root,
 * B auth, C payment, D the database query, E the external payment API, F
 * notification. They are found by service, kind and name, as the checkout
 * produces them (README.md's checkout tree).
 */
const LESSON = [
  ['A', (s) => s.service === 'gateway' && s.kind === 'server' && !s.parent && s.name === 'POST /api/checkout'],
  ['B', (s) => s.service === 'auth' && s.kind === 'server' && s.name === 'POST /verify'],
  ['C', (s) => s.service === 'payment' && s.kind === 'server' && s.name === 'POST /payments'],
  ['D', (s) => s.service === 'payment' && s.name === 'SELECT orders' && 'db.system.name' in s.attributes],
  ['E', (s) => s.service === 'payment' && s.kind === 'client' && s.name === 'callExternalPaymentAPI'],
  ['F', (s) => s.service === 'notification' && s.kind === 'consumer'],
];

function labelLesson(spans) {
  for (const [label, test] of LESSON) {
    const sp = spans.find((s) => !s.label && test(s));
    if (sp) sp.label = label;
  }
}

/** Okabe-Ito colours (safe for the common colour blindnesses), one per service. */
const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#F0E442', '#D55E00', '#999999'];
const FIXED = {
  gateway: '#0072B2', auth: '#E69F00', payment: '#009E73', 'payment-provider': '#CC79A7',
  notification: '#56B4E9', search: '#F0E442',
};

export function serviceColour(name) {
  if (FIXED[name]) return FIXED[name];
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}
