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

/** Text for HTML: & < > " ' escaped. */
export function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function kindBadge(kind) {
  return h('span', { class: `kind kind-${kind}`, title: t(`kind.${kind}`) }, KIND_SHORT[kind] || kind);
}

/** kindBadge and serviceChip as HTML text; colourDots(el) then paints the chips. */
export function kindHtml(kind) {
  return `<span class="kind kind-${esc(kind)}" title="${esc(t(`kind.${kind}`))}">${esc(KIND_SHORT[kind] || kind)}</span>`;
}

export function chipHtml(service) {
  return `<span class="svc"><span class="dot" aria-hidden="true" data-svc="${esc(service)}"></span>${esc(service)}</span>`;
}

export function colourDots(el) {
  for (const d of el.querySelectorAll('.dot[data-svc]')) d.style.background = serviceColour(d.dataset.svc);
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
  // The rows are written as one HTML string (one parse instead of thousands
  // of createElement calls: a 500-span trace draws several times faster),
  // then positioned through the CSSOM, which the page's CSP allows (inline
  // style attributes it does not).
  const html = trace.spans.map((sp) => {
    const hop = hopTo.get(sp.spanId);
    const wait = hop && hop.wait !== null && hop.wait > 0;
    const mark = marks?.get(sp.spanId);
    const waitText = wait ? esc(t('trace.queueWait', { ms: fmtMs(hop.wait) })) : '';
    return `<div class="wf-row${sp.critical ? ' on-crit' : ''}${sp.status.error ? ' is-err' : ''}${mark ? ` ${esc(mark)}` : ''}" role="treeitem" tabindex="-1" aria-level="${sp.depth + 1}" aria-selected="${selected === sp.spanId}" data-span-id="${esc(sp.spanId)}" data-parent-id="${esc(sp.parentId || '')}" data-depth="${sp.depth}" data-service="${esc(sp.service)}" data-name="${esc(sp.name)}">`
      + '<div class="wf-label">'
      + (sp.label ? `<span class="lesson" title="${esc(t('trace.lessonSpan', { label: sp.label }))}">${sp.label}</span>` : '')
      + (sp.status.error ? `<span class="err-sign" title="${esc(t('trace.error'))}">✕</span>` : '')
      + `${chipHtml(sp.service)} <span class="name">${esc(sp.name)}</span> ${kindHtml(sp.kind)}`
      + (hop ? `<span class="hop-mark" title="${esc(t('trace.hopMark', { via: t(hop.via === 'amqp' ? 'trace.viaAmqp' : 'trace.viaHttp'), traceparent: hop.traceparent }))}">${hop.via === 'amqp' ? '⇢ AMQP' : '⇢ HTTP'}</span>` : '')
      + '</div><div class="wf-track">'
      + (wait ? `<span class="queue-wait" title="${waitText}"></span>` : '')
      + `<span class="bar${sp.status.error ? ' err' : ''}${sp.critical ? ' crit' : ''}"></span>`
      + (wait ? `<span class="wait-text">${waitText}</span>` : '')
      + `</div><div class="wf-dur">${fmtMs(sp.duration)}</div></div>`;
  }).join('');
  const tree = h('div', { class: 'wf-rows', role: 'tree', 'aria-label': t('trace.waterfall') });
  tree.innerHTML = html;
  const rows = [...tree.children];
  trace.spans.forEach((sp, i) => {
    const row = rows[i];
    const [label, track] = row.children;
    label.style.paddingLeft = `${0.3 + sp.depth * 1.1}rem`;
    const hop = hopTo.get(sp.spanId);
    const wait = hop && hop.wait !== null && hop.wait > 0;
    const bar = track.children[wait ? 1 : 0];
    bar.style.left = pct(sp.start);
    bar.style.width = `max(2px, ${pct(sp.duration)})`;
    bar.style.background = serviceColour(sp.service);
    if (wait) {
      track.children[0].style.left = pct(hop.from.start);
      track.children[0].style.width = pct(hop.wait);
      track.children[2].style.left = pct(hop.from.start);
    }
  });
  colourDots(tree);
  const byId = trace.byId;
  tree.addEventListener('click', (e) => {
    const row = e.target.closest('.wf-row');
    if (row && onSelect) onSelect(byId.get(row.dataset.spanId));
  });
  if (rows.length) rows[0].tabIndex = 0;
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
