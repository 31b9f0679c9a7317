// Compare (#/compare?a=<id>&b=<id>): two traces side by side, a good and a
// bad checkout say. Spans are matched by their path from the root (service
// and name at each level, and the order among equal siblings); a span only
// in one trace differs in shape, a span whose status or duration (more than
// 1.5 times and 5 ms apart) differs is highlighted.
import { h, mount, fmtMs } from '../dom.js';
import { t } from '../i18n.js';
import { fetchTrace } from '../api.js';
import { buildTrace } from '../model.js';
import { waterfall } from './waterfall.js';
import { spanDetail } from './trace.js';

export function pathKeys(trace) {
  const keys = new Map();
  const walk = (sp, prefix) => {
    const seen = new Map();
    for (const c of sp.children) {
      const base = `${prefix}/${c.service}:${c.name}`;
      const n = seen.get(base) || 0;
      seen.set(base, n + 1);
      const key = `${base}#${n}`;
      keys.set(c.spanId, key);
      walk(c, key);
    }
  };
  trace.roots.forEach((r, i) => {
    const key = `${r.service}:${r.name}#${i}`;
    keys.set(r.spanId, key);
    walk(r, key);
  });
  return keys;
}

/** The differences between traces a and b: {marksA, marksB, rows}. */
export function diff(a, b) {
  const ka = pathKeys(a);
  const kb = pathKeys(b);
  const byKeyB = new Map([...kb].map(([id, k]) => [k, b.byId.get(id)]));
  const byKeyA = new Map([...ka].map(([id, k]) => [k, a.byId.get(id)]));
  const marksA = new Map();
  const marksB = new Map();
  const rows = [];
  for (const sp of a.spans) {
    const other = byKeyB.get(ka.get(sp.spanId));
    if (!other) { marksA.set(sp.spanId, 'diff-shape'); rows.push({ what: 'shape', a: sp, b: null }); continue; }
    if (sp.status.error !== other.status.error) {
      marksA.set(sp.spanId, 'diff-status'); marksB.set(other.spanId, 'diff-status'); rows.push({ what: 'status', a: sp, b: other });
    } else {
      const [lo, hi] = [Math.min(sp.duration, other.duration), Math.max(sp.duration, other.duration)];
      if (hi - lo > 5 && hi > lo * 1.5) {
        marksA.set(sp.spanId, 'diff-time'); marksB.set(other.spanId, 'diff-time'); rows.push({ what: 'duration', a: sp, b: other });
      }
    }
  }
  for (const sp of b.spans) {
    if (!byKeyA.get(kb.get(sp.spanId))) { marksB.set(sp.spanId, 'diff-shape'); rows.push({ what: 'shape', a: null, b: sp }); }
  }
  return { marksA, marksB, rows };
}

export function render(main, route) {
  const ia = h('input', { id: 'cmp-a', type: 'text', value: route.query.get('a') || '', spellcheck: 'false', size: '34' });
  const ib = h('input', { id: 'cmp-b', type: 'text', value: route.query.get('b') || '', spellcheck: 'false', size: '34' });
  const out = h('div', { class: 'compare-out', 'aria-live': 'polite' });
  mount(main, h('h1', {}, t('nav.compare')),
    h('p', { class: 'muted' }, t('compare.intro')),
    h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); location.hash = `#/compare?a=${encodeURIComponent(ia.value.trim())}&b=${encodeURIComponent(ib.value.trim())}`; } },
      h('label', { for: 'cmp-a' }, 'A'), ia, h('label', { for: 'cmp-b' }, 'B'), ib, h('button', { type: 'submit', class: 'primary' }, t('compare.go'))),
    out);
  const a = route.query.get('a');
  const b = route.query.get('b');
  if (!a || !b) {
    mount(out, h('p', { class: 'muted' }, t('compare.pick'), ' ', h('a', { href: '#/traces' }, t('nav.traces'))));
    return null;
  }
  let stopped = false;
  Promise.all([fetchTrace(a), fetchTrace(b)]).then(([ba, bb]) => {
    if (stopped) return;
    const ta = ba && buildTrace(ba);
    const tb = bb && buildTrace(bb);
    if (!ta || !tb) { mount(out, h('p', { class: 'error' }, t('trace.notFound'))); return; }
    const d = diff(ta, tb);
    const detail = h('aside', { class: 'detail' }, h('p', { class: 'muted' }, t('trace.pickSpan')));
    const pick = (m) => (sp) => mount(detail, spanDetail(m, sp));
    mount(out,
      h('p', { class: 'diff-count', dataset: { count: String(d.rows.length) } }, t('compare.count', { n: d.rows.length })),
      h('div', { class: 'compare-grid' },
        h('div', {}, h('h2', {}, 'A ', h('a', { href: `#/trace/${ta.traceId}` }, h('code', {}, ta.traceId)), ` ${fmtMs(ta.duration)}`), waterfall(ta, { marks: d.marksA, onSelect: pick(ta) })),
        h('div', {}, h('h2', {}, 'B ', h('a', { href: `#/trace/${tb.traceId}` }, h('code', {}, tb.traceId)), ` ${fmtMs(tb.duration)}`), waterfall(tb, { marks: d.marksB, onSelect: pick(tb) }))),
      d.rows.length ? h('table', { class: 'diffs' },
        h('thead', {}, h('tr', {}, ['compare.what', 'trace.span', 'A', 'B'].map((k) => h('th', { scope: 'col' }, k.length === 1 ? k : t(k))))),
        h('tbody', {}, d.rows.map((r) => {
          const sp = r.a || r.b;
          const cell = (x) => (x ? `${fmtMs(x.duration)}${x.status.error ? ' ✕' : ''}` : t('compare.absent'));
          return h('tr', { class: `diff-${r.what}` }, h('td', {}, t(`compare.${r.what}`)), h('td', {}, `${sp.service} ${sp.name}`), h('td', {}, cell(r.a)), h('td', {}, cell(r.b)));
        }))) : null,
      detail);
  }, (e) => mount(out, h('p', { class: 'error' }, e.message)));
  return () => { stopped = true; };
}
