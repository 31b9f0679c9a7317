// Traces view (#/traces?q=...&tags=...&minDuration=...&maxDuration=...&range=...&limit=...):
// a box that opens a trace by id, a TraceQL box with the lesson's and the
// scenarios' queries as examples, Tempo's tag search (logfmt tags and a
// duration window, Jaeger-style), a time range, and the result list.
import { h, mount, fmtMs, fmtTime } from '../dom.js';
import { t, tx } from '../i18n.js';
import { get, search } from '../api.js';
import { serviceChip } from './waterfall.js';

/** The lab guide's queries (docs/lab-guide.md); the scenarios add theirs from /api/scenarios. */
const GUIDE_QUERIES = [
  ['q.all', '{ }'],
  ['q.errors', '{ status = error }'],
  ['q.checkout', '{ resource.service.name = "gateway" && name = "POST /api/checkout" }'],
  ['q.slowProvider', '{ resource.service.name = "payment" && name = "callExternalPaymentAPI" && duration > 300ms }'],
  ['q.providerErrors', '{ span.payment.provider = "stripe-mock" && status = error }'],
  ['q.slowTraces', '{ traceDuration > 2s }'],
  ['q.queue', '{ kind = consumer }'],
  ['q.belowServer', '{ kind = server } >> { status = error }'],
  ['q.deepest', '{ status = error } !< { status = error }'],
  ['q.repeated', '{ name = "POST /payments" && kind = client } | count() > 1'],
];

const RANGES = [['2m', 120], ['5m', 300], ['15m', 900], ['1h', 3600], ['6h', 21600], ['24h', 86400]];
const LIMITS = ['20', '50', '100', '200', '500'];
const TRACE_ID = /^[0-9a-f]{32}$/;

/** The trace-id box: opens #/trace/<id>, or says what a trace id looks like. */
function openById() {
  const input = h('input', { id: 'open-trace', type: 'text', spellcheck: 'false', autocomplete: 'off', size: '36', placeholder: t('exercise.traceIdHint'), 'aria-describedby': 'open-trace-msg' });
  const msg = h('span', { id: 'open-trace-msg', class: 'error', role: 'alert' });
  return h('form', { class: 'row open-trace', onsubmit: (e) => {
    e.preventDefault();
    const id = input.value.trim().toLowerCase();
    if (!TRACE_ID.test(id)) {
      msg.textContent = t('trace.badId');
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    msg.textContent = '';
    location.hash = `#/trace/${id}`;
  } }, h('label', { for: 'open-trace' }, t('traces.openId')), input, h('button', { type: 'submit' }, t('traces.open')), msg);
}

export function render(main, route) {
  const q = route.query.get('q') ?? '{ }';
  const range = route.query.get('range') || '15m';
  const input = h('textarea', { id: 'traceql', name: 'q', rows: '2', spellcheck: 'false', 'aria-describedby': 'traceql-help' }, q);
  const rangeSel = h('select', { id: 'range', name: 'range' }, RANGES.map(([k]) => h('option', { value: k, selected: k === range }, t(`range.${k}`))));
  const limit = h('select', { id: 'limit', name: 'limit' }, LIMITS.map((n) => h('option', { value: n, selected: n === (route.query.get('limit') || '20') }, n)));
  const field = (id, size, placeholder) => h('input', { id, name: id, type: 'text', spellcheck: 'false', size, placeholder, value: route.query.get(id) || '' });
  const tags = field('tags', '30', 'service.name=payment http.response.status_code=500');
  const minDur = field('minDuration', '7', '300ms');
  const maxDur = field('maxDuration', '7', '5s');
  const examples = h('ul', { class: 'examples' }, GUIDE_QUERIES.map(([k, query]) => exampleItem(t(k), query, input)));
  const result = h('div', { class: 'results', 'aria-live': 'polite' });
  const form = h('form', { class: 'search', onsubmit: (e) => {
    e.preventDefault();
    const extra = [tags, minDur, maxDur].filter((f) => f.value.trim()).map((f) => `&${f.id}=${encodeURIComponent(f.value.trim())}`).join('');
    const next = `#/traces?q=${encodeURIComponent(input.value)}${extra}&range=${rangeSel.value}&limit=${limit.value}`;
    if (location.hash === next) run(); else location.hash = next;
  } },
  h('label', { for: 'traceql' }, 'TraceQL'),
  input,
  h('p', { id: 'traceql-help', class: 'muted' }, t('traces.help')),
  h('fieldset', { class: 'tag-search' }, h('legend', {}, t('traces.tagSearch')),
    h('div', { class: 'row' },
      h('label', { for: 'tags' }, t('traces.tags')), tags,
      h('label', { for: 'minDuration' }, t('traces.minDuration')), minDur,
      h('label', { for: 'maxDuration' }, t('traces.maxDuration')), maxDur),
    h('p', { class: 'muted' }, t('traces.tagHelp'))),
  h('div', { class: 'row' },
    h('label', { for: 'range' }, t('traces.range')), rangeSel,
    h('label', { for: 'limit' }, t('traces.limit')), limit,
    h('button', { type: 'submit', class: 'primary' }, t('traces.search'))));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  mount(main,
    h('h1', {}, t('nav.traces')),
    openById(),
    h('div', { class: 'traces-layout' },
      h('div', {}, form, result),
      h('aside', { class: 'examples-box' }, h('h2', {}, t('traces.examples')), examples, h('details', {}, h('summary', {}, t('traces.scenarioQueries')), scenarioExamples(input)))));

  let stopped = false;
  async function run() {
    mount(result, h('p', { class: 'muted' }, t('loading')));
    const secs = RANGES.find(([k]) => k === rangeSel.value)?.[1] || 900;
    const end = Math.ceil(Date.now() / 1000);
    try {
      const answer = await search({ q: input.value.trim(), tags: tags.value.trim(), minDuration: minDur.value.trim(), maxDuration: maxDur.value.trim(), start: end - secs, end, limit: limit.value });
      const found = answer.traces || [];
      if (!stopped) {
        mount(result, h('p', { class: 'result-count', dataset: { count: String(found.length) } },
          t(found.length >= Number(limit.value) ? 'traces.countLimit' : 'traces.count', { n: found.length })), table(found));
      }
    } catch (e) {
      if (!stopped) mount(result, h('p', { class: 'error', role: 'alert' }, `${t('error')}: ${e.message}`));
    }
  }
  run();
  return () => { stopped = true; };
}

function exampleItem(title, query, input) {
  return h('li', {}, h('button', { type: 'button', class: 'link', title: query, onclick: () => { input.value = query; input.form.requestSubmit(); } }, title),
    h('code', {}, query));
}

function scenarioExamples(input) {
  const list = h('ul', { class: 'examples' }, h('li', { class: 'muted' }, t('loading')));
  get('/api/scenarios').then((a) => {
    // A scenario's revealing query is its spoiler; the summary carries the title only,
    // so the queries come from each scenario's own page.
    const items = (a.scenarios || []).map((s) => s.id);
    return Promise.all(items.map((id) => get(`/api/scenarios/${encodeURIComponent(id)}`).catch(() => null)));
  }).then((all) => {
    const found = all.filter((s) => s && s.query);
    mount(list, found.length ? found.map((s) => exampleItem(tx(s.title) || s.id, s.query, input)) : h('li', { class: 'muted' }, t('trace.none')));
  }).catch(() => mount(list, h('li', { class: 'muted' }, t('traces.noScenarios'))));
  return list;
}

function table(traces) {
  if (!traces.length) return h('p', { class: 'muted', dataset: { count: '0' } }, t('traces.nothing'));
  return h('table', { class: 'trace-list', dataset: { count: String(traces.length) } },
    h('thead', {}, h('tr', {}, ['traces.root', 'traces.start', 'trace.duration', 'trace.spans', 'trace.errors', 'traces.id'].map((k) => h('th', { scope: 'col' }, t(k))))),
    h('tbody', {}, traces.map((tr) => {
      const stats = Object.values(tr.serviceStats || {});
      const spans = stats.reduce((n, s) => n + (s.spanCount || 0), 0);
      const errors = stats.reduce((n, s) => n + (s.errorCount || 0), 0);
      const start = Number(BigInt(tr.startTimeUnixNano || 0) / 1000000n);
      return h('tr', { class: errors ? 'is-err' : '', dataset: { traceId: tr.traceID } },
        h('td', {}, h('a', { href: `#/trace/${tr.traceID}` }, serviceChip(tr.rootServiceName || '?'), ' ', tr.rootTraceName || t('traces.rootMissing'))),
        h('td', {}, fmtTime(start)),
        h('td', { class: 'num' }, tr.durationMs === undefined ? '<1ms' : fmtMs(tr.durationMs)),
        h('td', { class: 'num' }, stats.length ? String(spans) : '–'),
        h('td', { class: `num${errors ? ' error' : ''}` }, errors ? `✕ ${errors}` : '0'),
        h('td', {}, h('code', {}, tr.traceID.slice(0, 12))));
    })));
}
