// The waterfall of one trace, shaped like the lesson's diagram: one row per
// span, indented under its parent, a bar on a shared time axis in the
// service's colour, the span kind, errors marked with a sign as well as a
// colour, the critical path underlined, the queue hop's wait drawn as a
// dashed segment, and the lesson's labels A-F.
import { h, fmtMs } from '../dom.js';
import { t } from '../i18n.js';
import { serviceColour } from '../model.js';

const KIND_SHORT = { server: 'SRV', client: 'CLI', producer: 'PROD', consumer: 'CONS', internal: 'INT' };

/** Tick positions for an axis of `total` ms: about six round steps. */
export function ticks(total) {
  if (!(total > 0)) return [0];
  const raw = total / 6;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) || raw;
  const out = [];
  for (let x = 0; x <= total + 1e-9; x += step) out.push(x);
  return out;
}

export function kindBadge(kind) {
  return h('span', { class: `kind kind-${kind}`, title: t(`kind.${kind}`) }, KIND_SHORT[kind] || kind);
}

export function serviceChip(service) {
  return h('span', { class: 'svc' }, h('span', { class: 'dot', style: { background: serviceColour(service) }, 'aria-hidden': 'true' }), service);
}

/**
 * The waterfall element for `trace` (model.js). `onSelect(span)` is called
 * when a row is chosen (click, Enter or Space); `marks` maps a span id to a
 * CSS class (compare uses it).
 */
export function waterfall(trace, { onSelect, selected, marks } = {}) {
  const total = trace.duration || 1;
  const pct = (ms) => `${Math.max(0, Math.min(100, (ms / total) * 100))}%`;
  const hopTo = new Map(trace.hops.map((hp) => [hp.to.spanId, hp]));
  const axis = h('div', { class: 'wf-axis', 'aria-hidden': 'true' },
    h('div', { class: 'wf-label' }, t('trace.span')),
    h('div', { class: 'wf-track' }, ticks(total).map((x) => h('span', { class: 'tick', style: { left: pct(x) } }, fmtMs(x)))),
    h('div', { class: 'wf-dur' }, t('trace.duration')));
  const rows = trace.spans.map((sp) => {
    const hop = hopTo.get(sp.spanId);
    const bar = h('span', {
      class: `bar${sp.status.error ? ' err' : ''}${sp.critical ? ' crit' : ''}`,
      style: { left: pct(sp.start), width: `max(2px, ${pct(sp.duration)})`, background: serviceColour(sp.service) },
    });
    const wait = hop && hop.wait !== null && hop.wait > 0
      ? h('span', { class: 'queue-wait', style: { left: pct(hop.from.start), width: pct(hop.wait) }, title: t('trace.queueWait', { ms: fmtMs(hop.wait) }) })
      : null;
    const row = h('div', {
      class: `wf-row${sp.critical ? ' on-crit' : ''}${sp.status.error ? ' is-err' : ''}${marks?.get(sp.spanId) ? ` ${marks.get(sp.spanId)}` : ''}`,
      role: 'treeitem',
      tabindex: '-1',
      'aria-level': sp.depth + 1,
      'aria-selected': selected === sp.spanId ? 'true' : 'false',
      dataset: { spanId: sp.spanId, parentId: sp.parentId || '', depth: String(sp.depth), service: sp.service, name: sp.name },
    },
    h('div', { class: 'wf-label', style: { paddingLeft: `${0.3 + sp.depth * 1.1}rem` } },
      sp.label ? h('span', { class: 'lesson', title: t('trace.lessonSpan', { label: sp.label }) }, sp.label) : null,
      sp.status.error ? h('span', { class: 'err-sign', title: t('trace.error') }, '✕') : null,
      serviceChip(sp.service), ' ', h('span', { class: 'name' }, sp.name), ' ', kindBadge(sp.kind),
      hop ? h('span', { class: 'hop-mark', title: `traceparent: ${hop.traceparent}` }, hop.via === 'amqp' ? '⇢ AMQP' : '⇢ HTTP') : null),
    h('div', { class: 'wf-track' }, wait, bar,
      wait ? h('span', { class: 'wait-text', style: { left: pct(hop.from.start) } }, t('trace.queueWait', { ms: fmtMs(hop.wait) })) : null),
    h('div', { class: 'wf-dur' }, fmtMs(sp.duration)));
    row.addEventListener('click', () => onSelect && onSelect(sp));
    return row;
  });
  if (rows.length) rows[0].tabIndex = 0;
  const tree = h('div', { class: 'wf-rows', role: 'tree', 'aria-label': t('trace.waterfall') }, rows);
  tree.addEventListener('keydown', (e) => {
    const row = e.target.closest('.wf-row');
    if (!row) return;
    const i = rows.indexOf(row);
    let next = null;
    if (e.key === 'ArrowDown') next = rows[i + 1];
    else if (e.key === 'ArrowUp') next = rows[i - 1];
    else if (e.key === 'Home') next = rows[0];
    else if (e.key === 'End') next = rows[rows.length - 1];
    else if (e.key === 'ArrowLeft') next = rows.find((r) => r.dataset.spanId === row.dataset.parentId);
    else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      row.click();
      return;
    }
    if (next) {
      e.preventDefault();
      row.tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
    }
  });
  return h('div', { class: 'wf' }, axis, tree);
}

/** The legend: services in this trace, kinds, and the marks. */
export function legend(trace) {
  return h('div', { class: 'legend', 'aria-label': t('trace.legend') },
    h('span', { class: 'legend-title' }, `${t('trace.legend')}:`),
    trace.services.map((s) => serviceChip(s)),
    h('span', { class: 'sep' }),
    ['server', 'client', 'producer', 'consumer', 'internal'].map((k) => h('span', { class: 'legend-item' }, kindBadge(k), ' ', t(`kind.${k}`))),
    h('span', { class: 'sep' }),
    h('span', { class: 'legend-item' }, h('span', { class: 'err-sign' }, '✕'), h('span', { class: 'bar-sample err' }), ' ', t('trace.error')),
    h('span', { class: 'legend-item' }, h('span', { class: 'bar-sample crit' }), ' ', t('trace.critical')),
    h('span', { class: 'legend-item' }, h('span', { class: 'wait-sample' }), ' ', t('trace.queueWaitLegend')),
    h('span', { class: 'legend-item' }, h('span', { class: 'lesson' }, 'A-F'), ' ', t('trace.lessonLegend')));
}
