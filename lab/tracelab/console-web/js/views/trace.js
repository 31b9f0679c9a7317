// Trace view (#/trace/<id>): the waterfall, the span detail, the hops
// between services with their traceparent. A trace still arriving (spans
// are exported in batches, service by service) is fetched again until its
// span count stops changing.
import { h, mount, fmtMs, fmtTime } from '../dom.js';
import { t } from '../i18n.js';
import { fetchTrace } from '../api.js';
import { buildTrace, traceparentOf } from '../model.js';
import { waterfall, legend, kindBadge, serviceChip, esc, chipHtml, kindHtml, colourDots } from './waterfall.js';

const POLL_MS = 250;
const STABLE_POLLS = 6; // unchanged this many times in a row: complete
const FIND_FOR_MS = 30000;
const GROW_FOR_MS = 20000;

export function render(main, route) {
  const id = (route.args[0] || '').trim().toLowerCase();
  let timer = null;
  let stopped = false;
  let selected = route.query.get('span');
  let model = null;
  const status = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' }, t('trace.loading'));
  const body = h('div', { class: 'trace-body' });
  const detail = h('aside', { class: 'detail', 'aria-label': t('trace.detail'), tabindex: '-1' }, h('p', { class: 'muted' }, t('trace.pickSpan')));
  mount(main,
    h('h1', {}, t('nav.trace'), ' ', h('code', { class: 'trace-id' }, id)),
    status,
    h('div', { class: 'trace-layout' }, body, detail));
  if (!/^[0-9a-f]{1,32}$/.test(id)) {
    status.textContent = t('trace.badId');
    status.classList.add('error');
    return null;
  }
  const began = performance.now();
  let lastCount = -1;
  let stable = 0;

  const select = (sp) => {
    selected = sp.spanId;
    for (const r of body.querySelectorAll('.wf-row')) r.setAttribute('aria-selected', r.dataset.spanId === selected ? 'true' : 'false');
    mount(detail, spanDetail(model, sp));
  };

  let hopsTimer = null;
  const draw = () => {
    // The hops table (below the waterfall, hundreds of rows in a big trace)
    // follows in a task of its own, so the waterfall is on screen first.
    const hops = h('div', { class: 'hops-slot' });
    mount(body,
      summary(model),
      legend(model),
      waterfall(model, { onSelect: select, selected }),
      hops);
    const drawn = model;
    clearTimeout(hopsTimer);
    hopsTimer = setTimeout(() => { if (!stopped) mount(hops, hopsTable(drawn)); }, 0);
    const sp = selected && model.byId.get(selected);
    if (sp) mount(detail, spanDetail(model, sp));
  };

  const poll = async () => {
    if (stopped) return;
    let answer;
    try {
      answer = await fetchTrace(id);
    } catch (e) {
      status.textContent = `${t('error')}: ${e.message}`;
      status.classList.add('error');
      return;
    }
    if (stopped) return;
    const elapsed = performance.now() - began;
    const next = answer ? buildTrace(answer) : null;
    if (!next) {
      if (elapsed > FIND_FOR_MS) {
        status.textContent = t('trace.notFound');
        status.classList.add('error');
        return;
      }
      status.textContent = t('trace.waiting');
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    if (next.spans.length !== lastCount) {
      lastCount = next.spans.length;
      stable = 0;
      model = next;
      // The drawing's cost, for scripts and the browser's performance panel:
      // model (buildTrace above) excluded, the waterfall's DOM built and laid
      // out included (the hops table comes after).
      const t0 = performance.now();
      draw();
      void body.offsetHeight;
      performance.measure('tracelab.trace.draw', { start: t0, end: performance.now(), detail: { spans: model.spans.length } });
    } else {
      stable += 1;
    }
    const done = stable >= STABLE_POLLS || elapsed > GROW_FOR_MS;
    main.dataset.complete = done ? 'true' : 'false';
    status.textContent = done ? t('trace.complete', { n: model.spans.length }) : t('trace.arriving', { n: model.spans.length });
    if (!done) timer = setTimeout(poll, POLL_MS);
  };
  poll();
  return () => { stopped = true; clearTimeout(timer); clearTimeout(hopsTimer); };
}

function summary(m) {
  const root = m.root;
  const startMs = Number(BigInt(m.startNs) / 1000000n);
  return h('dl', { class: 'summary' },
    h('div', {}, h('dt', {}, t('trace.root')), h('dd', {}, serviceChip(root.service), ' ', root.name)),
    h('div', {}, h('dt', {}, t('trace.start')), h('dd', {}, fmtTime(startMs))),
    h('div', {}, h('dt', {}, t('trace.duration')), h('dd', {}, fmtMs(m.duration))),
    h('div', {}, h('dt', {}, t('trace.spans')), h('dd', { class: 'span-count' }, String(m.spans.length))),
    h('div', {}, h('dt', {}, t('trace.services')), h('dd', {}, String(m.services.length))),
    h('div', {}, h('dt', {}, t('trace.errors')), h('dd', { class: m.errors ? 'error' : '' }, String(m.errors))),
    h('div', {}, h('dt', {}, t('trace.compare')), h('dd', {}, h('a', { href: `#/compare?a=${m.traceId}` }, t('trace.compareWith')))));
}

function hopsTable(m) {
  if (!m.hops.length) return null;
  // One HTML string, as the waterfall's rows: a trace can have hundreds of hops.
  const tbody = h('tbody');
  tbody.innerHTML = m.hops.map((hp) => `<tr data-to="${esc(hp.to.spanId)}">`
    + `<td>${chipHtml(hp.from.service)} ${esc(hp.from.name)} ${kindHtml(hp.from.kind)}</td>`
    + `<td>${chipHtml(hp.to.service)} ${esc(hp.to.name)} ${kindHtml(hp.to.kind)}</td>`
    + `<td>${esc(hp.via === 'amqp' ? t('trace.viaAmqp') : t('trace.viaHttp'))}</td>`
    + `<td><code class="traceparent">${esc(hp.traceparent)}</code></td>`
    + `<td>${hp.wait === null ? '' : fmtMs(hp.wait)}</td></tr>`).join('');
  colourDots(tbody);
  return h('section', { class: 'hops' },
    h('h2', {}, t('trace.hops')),
    h('p', { class: 'muted' }, t('trace.hopsIntro')),
    h('table', {},
      h('thead', {}, h('tr', {}, ['trace.from', 'trace.to', 'trace.via', 'traceparent', 'trace.queueWaitCol'].map((k) => h('th', { scope: 'col' }, k === 'traceparent' ? 'traceparent' : t(k))))),
      tbody));
}

function kvTable(obj, cls) {
  const keys = Object.keys(obj);
  if (!keys.length) return h('p', { class: 'muted' }, t('trace.none'));
  return h('table', { class: `kv ${cls || ''}` }, h('tbody', {}, keys.map((k) => h('tr', { dataset: { key: k } },
    h('th', { scope: 'row' }, k),
    h('td', {}, typeof obj[k] === 'object' ? JSON.stringify(obj[k]) : String(obj[k]))))));
}

/** The detail of one span: ids, timing, status, attributes, resource, events, links. */
export function spanDetail(m, sp) {
  const parent = sp.parent;
  const out = sp.kind === 'client' || sp.kind === 'producer' ? traceparentOf(sp) : null;
  const hop = m.hops.find((hp) => hp.to === sp);
  return h('div', { class: 'span-detail', dataset: { spanId: sp.spanId } },
    h('h2', {}, sp.label ? h('span', { class: 'lesson' }, sp.label) : null, ' ', sp.name),
    h('p', {}, serviceChip(sp.service), ' ', kindBadge(sp.kind), ' ', t(`kind.${sp.kind}`)),
    h('dl', { class: 'facts' },
      h('dt', {}, t('detail.status')), h('dd', { class: sp.status.error ? 'error' : '' },
        sp.status.error ? `✕ ${t('status.error')}${sp.status.message ? `: ${sp.status.message}` : ''}` : t(sp.status.code === 'STATUS_CODE_OK' || sp.status.code === 1 ? 'status.ok' : 'status.unset')),
      h('dt', {}, t('detail.start')), h('dd', {}, `+${fmtMs(sp.start)}`),
      h('dt', {}, t('trace.duration')), h('dd', {}, fmtMs(sp.duration)),
      h('dt', {}, t('detail.self')), h('dd', { class: 'self-time' }, fmtMs(sp.selfTime)),
      h('dt', {}, t('detail.critical')), h('dd', {}, sp.critical ? t('yes') : t('no')),
      h('dt', {}, 'Trace ID'), h('dd', {}, h('code', {}, sp.traceId)),
      h('dt', {}, 'Span ID'), h('dd', {}, h('code', { class: 'span-id' }, sp.spanId)),
      h('dt', {}, 'Parent Span ID'), h('dd', {}, sp.parentId
        ? (parent ? h('a', { href: '#', class: 'parent-link', onclick: (e) => { e.preventDefault(); document.querySelector(`.wf-row[data-span-id="${parent.spanId}"]`)?.click(); } }, h('code', {}, sp.parentId), ` (${parent.service} ${parent.name})`)
          : h('span', {}, h('code', {}, sp.parentId), ` ${t('detail.parentMissing')}`))
        : t('detail.root')),
      hop ? [h('dt', {}, t('detail.carriedBy')), h('dd', {}, h('code', { class: 'traceparent' }, hop.traceparent))] : null,
      out ? [h('dt', {}, t('detail.sends')), h('dd', {}, h('code', { class: 'traceparent' }, out))] : null),
    h('h3', {}, t('detail.attributes')), kvTable(sp.attributes, 'attributes'),
    h('h3', {}, t('detail.events')), sp.events.length ? h('ol', { class: 'events' }, sp.events.map((ev) => h('li', { class: ev.name === 'exception' ? 'exception' : '' },
      h('strong', {}, ev.name), ` +${fmtMs(ev.at)}`,
      ev.name === 'exception' && ev.attributes['exception.message'] ? h('p', { class: 'error' }, `${ev.attributes['exception.type'] || ''} ${ev.attributes['exception.message']}`) : null,
      kvTable(ev.attributes)))) : h('p', { class: 'muted' }, t('trace.none')),
    h('h3', {}, t('detail.links')), sp.links.length ? h('ul', {}, sp.links.map((l) => h('li', {}, h('a', { href: `#/trace/${l.traceId}` }, h('code', {}, l.traceId)), ' / ', h('code', {}, l.spanId)))) : h('p', { class: 'muted' }, t('trace.none')),
    h('h3', {}, t('detail.resource')), kvTable(sp.resource, 'resource'),
    sp.scope ? h('p', { class: 'muted' }, `${t('detail.scope')}: ${sp.scope.name || ''} ${sp.scope.version || ''}`) : null);
}
