// Faults and scenarios (#/faults): the active faults with their expiry
// counting down (hidden while an exercise runs, unless the learner peeks,
// which is marked as a spoiler), clearing one, a service's or all, a form
// to set one at any injection point, and the scenario catalogue with
// stories, start and stop, and each scenario's spoilers behind a "show".
import { h, mount, fmtClock } from '../dom.js';
import { t, tx } from '../i18n.js';
import { get, put, del, post } from '../api.js';
import { queryLink } from './exercise.js';

/** The form's lifetime, as `tracelab fault set` (and the API when `for` is left out). */
const DEFAULT_FOR = '15m';

/** A starting value for each kind's parameters; the services validate them. */
const SAMPLE_PARAMS = {
  latency: { ms: 800 }, error: { status: 500 }, hang: {}, cpu_burn: { ms: 200 }, outage: { status: 503 },
  retry_storm: { retries: 3 }, slow_query: { ms: 900 }, lock_contention: { hold_ms: 1500 },
  pool_exhaustion: { connections: 10, hold_ms: 3000 }, consumer_stall: { ms: 5000 }, dead_letter: {},
  rate_limit: { retry_after_s: 1 }, propagation_break: {}, high_cardinality: { attribute: 'user.request_id' },
  sampling_miss: { rate: 0.1 }, slow_export: { ms: 2000 }, drop_spans: {}, clock_skew: { ms: 3000 },
};

export function render(main) {
  const active = h('div', { class: 'active-faults', 'aria-live': 'polite' }, h('p', { class: 'muted' }, t('loading')));
  const form = h('div', { class: 'fault-form' });
  const catalogue = h('div', { class: 'catalogue' }, h('p', { class: 'muted' }, t('loading')));
  const msg = h('p', { class: 'fault-msg', role: 'status', 'aria-live': 'polite' });
  const clearService = h('select', { id: 'clear-service' });
  const cleared = (a) => { msg.textContent = t('faults.clearedN', { n: a.cleared }); msg.className = 'fault-msg'; refresh(); };
  mount(main,
    h('h1', {}, t('nav.faults')),
    h('div', { class: 'two' },
      h('section', { 'aria-labelledby': 'active-h' }, h('h2', { id: 'active-h' }, t('faults.active')), active,
        h('div', { class: 'row' },
          h('button', { type: 'button', dataset: { clear: 'all' }, onclick: () => del('/api/faults').then(cleared, showError) }, t('faults.clearAll'))),
        h('div', { class: 'row' },
          h('label', { for: 'clear-service' }, t('faults.clearService')), clearService,
          h('button', { type: 'button', dataset: { clear: 'service' }, onclick: () => del(`/api/faults?service=${encodeURIComponent(clearService.value)}`).then(cleared, showError) }, t('faults.clear')))),
      h('section', { 'aria-labelledby': 'set-h' }, h('h2', { id: 'set-h' }, t('faults.set')), form, msg)),
    h('section', { 'aria-labelledby': 'cat-h' }, h('h2', { id: 'cat-h' }, t('faults.scenarios')), catalogue));

  function showError(e) {
    msg.textContent = `${t('error')}: ${e.message}`;
    msg.className = 'fault-msg error';
  }
  let faults = [];
  let stopped = false;
  let timer = null;
  let countdown = null;
  // Peeking shows an exercise's hidden faults; it lasts while the view is open.
  let peek = false;
  let peeking = false;
  async function refresh() {
    try {
      const a = await get(peek ? '/api/faults?peek=true' : '/api/faults');
      if (stopped) return;
      if (a.hidden) {
        faults = [];
        mount(active, h('p', { class: 'muted', dataset: { hidden: String(a.count) } }, t('faults.hidden', { n: a.count })),
          h('button', { type: 'button', class: 'spoiler-btn', dataset: { peek: 'on' }, onclick: () => { peek = true; refresh(); } }, t('faults.peek')));
        return;
      }
      faults = (a.services || []).flatMap((s) => (s.faults || []).map((f) => ({ service: s.service, ...f })));
      // Outside an exercise nothing is hidden: a peek ends with the exercise.
      peeking = peek && (await exerciseRunning());
      peek = peeking;
      if (stopped) return;
      drawActive();
    } catch (e) {
      if (!stopped) mount(active, h('p', { class: 'error' }, `${t('error')}: ${e.message}`));
    }
  }
  function drawActive() {
    const banner = peeking ? h('p', { class: 'spoiler', role: 'note' }, `⚠ ${t('faults.peeking')} `,
      h('button', { type: 'button', class: 'link', dataset: { peek: 'off' }, onclick: () => { peek = false; refresh(); } }, t('faults.unpeek'))) : null;
    if (!faults.length) {
      mount(active, banner, h('p', { class: 'muted', dataset: { count: '0' } }, t('faults.none')));
      return;
    }
    mount(active, banner, h('table', { class: peeking ? 'peeked' : null, dataset: { count: String(faults.length) } },
      h('thead', {}, h('tr', {}, ['lab.service', 'faults.point', 'faults.kind', 'faults.expires', ''].map((k) => h('th', { scope: 'col' }, k ? t(k) : '')))),
      h('tbody', {}, faults.map((f) => h('tr', { dataset: { point: f.point } },
        h('td', {}, f.service), h('td', {}, h('code', {}, f.point)),
        h('td', {}, `${f.kind}${f.active === false ? ` (${t('faults.off')})` : ''}`),
        h('td', { class: 'expires', dataset: { expiresAt: f.expires_at || '' } }, expiryText(f.expires_at)),
        h('td', {}, h('button', { type: 'button', class: 'clear', dataset: { clear: f.point }, onclick: () => del(`/api/faults/${encodeURIComponent(f.point)}`).then(() => { msg.textContent = t('faults.cleared', { point: f.point }); msg.className = 'fault-msg'; refresh(); }, showError) }, t('faults.clear'))))))));
  }
  countdown = setInterval(() => {
    for (const td of active.querySelectorAll('td.expires')) td.textContent = expiryText(td.dataset.expiresAt);
  }, 1000);

  get('/api/faults/points').then((a) => {
    const services = [...new Set((a.points || []).map((p) => p.service))];
    mount(clearService, services.map((n) => h('option', { value: n }, n)));
    drawForm(form, a, msg, refresh, showError);
  }, (e) => mount(form, h('p', { class: 'error' }, e.message)));
  drawCatalogue(catalogue, msg, refresh, showError);
  const loop = async () => { await refresh(); if (!stopped) timer = setTimeout(loop, 5000); };
  loop();
  return () => { stopped = true; clearTimeout(timer); clearInterval(countdown); };
}

async function exerciseRunning() {
  try { return (await get('/api/exercise')).exercise !== null; } catch { return true; }
}

/** A scenario's category (single, compound, pitfall) or pitfall in the page's language; an unknown one as it is. */
function categoryText(c, kind = 'category') {
  const key = `${kind}.${c}`;
  const text = t(key);
  return text === key ? c : text;
}

function expiryText(expiresAt) {
  if (!expiresAt) return t('faults.never');
  const left = (Date.parse(expiresAt) - Date.now()) / 1000;
  return left > 0 ? t('faults.in', { clock: fmtClock(left) }) : t('faults.expired');
}

function drawForm(box, catalogue, msg, refresh, showError) {
  const points = catalogue.points || [];
  const pointSel = h('select', { id: 'fault-point' }, points.map((p) => h('option', { value: p.point }, `${p.point} (${p.service})`)));
  const kindSel = h('select', { id: 'fault-kind' });
  const params = h('input', { id: 'fault-params', type: 'text', spellcheck: 'false' });
  const life = h('input', { id: 'fault-for', type: 'text', value: DEFAULT_FOR, size: '6', 'aria-describedby': 'fault-for-help' });
  const acts = h('p', { class: 'muted' });
  const fillKinds = () => {
    const p = points.find((x) => x.point === pointSel.value);
    const kinds = [...new Set([...(p?.kinds || []), ...((p?.kinds || []).includes('generic') ? catalogue.generic_kinds || [] : [])])].filter((k) => k !== 'generic');
    mount(kindSel, (kinds.length ? kinds : catalogue.generic_kinds || []).map((k) => h('option', { value: k }, k)));
    acts.textContent = p?.acts || '';
    fillParams();
  };
  const fillParams = () => { params.value = JSON.stringify(SAMPLE_PARAMS[kindSel.value] || {}); };
  pointSel.addEventListener('change', fillKinds);
  kindSel.addEventListener('change', fillParams);
  const submit = async (e) => {
    e.preventDefault();
    let extra;
    try { extra = params.value.trim() ? JSON.parse(params.value) : {}; } catch {
      msg.textContent = t('faults.badParams');
      msg.className = 'fault-msg error';
      return;
    }
    try {
      const a = await put('/api/faults', { ...extra, point: pointSel.value, kind: kindSel.value, for: life.value.trim() || DEFAULT_FOR });
      msg.textContent = t('faults.setDone', { point: a.fault.point, service: a.service });
      msg.className = 'fault-msg';
      refresh();
    } catch (err) { showError(err); }
  };
  mount(box, h('form', { class: 'grid-form', onsubmit: submit },
    h('label', { for: 'fault-point' }, t('faults.point')), pointSel,
    h('span'), acts,
    h('label', { for: 'fault-kind' }, t('faults.kind')), kindSel,
    h('label', { for: 'fault-params' }, t('faults.params')), params,
    h('label', { for: 'fault-for' }, t('faults.for')), h('span', {}, life, ' ', h('span', { id: 'fault-for-help', class: 'muted' }, t('faults.forHelp'))),
    h('span'), h('button', { type: 'submit', class: 'primary' }, t('faults.setButton'))));
  fillKinds();
}

async function drawCatalogue(box, msg, refresh, showError) {
  let list;
  try { list = (await get('/api/scenarios')).scenarios || []; } catch (e) {
    mount(box, h('p', { class: 'error' }, e.message));
    return;
  }
  const start = (id) => post(`/api/scenarios/${encodeURIComponent(id)}/start`, {}).then(() => { msg.textContent = t('faults.started', { id }); msg.className = 'fault-msg'; refresh(); }, showError);
  const stop = () => post('/api/scenarios/stop', {}).then((a) => { msg.textContent = a.stopped ? t('faults.stopped', { id: a.stopped }) : t('faults.nothingStopped'); msg.className = 'fault-msg'; refresh(); }, showError);
  mount(box,
    h('p', {}, h('button', { type: 'button', dataset: { scenario: 'stop' }, onclick: stop }, t('faults.stopScenario')), ' ',
      h('span', { class: 'muted' }, t('faults.exerciseTip'), ' ', h('a', { href: '#/exercise' }, t('nav.exercise')))),
    h('ul', { class: 'cards' }, list.map((s) => h('li', { class: 'card', dataset: { scenario: s.id } },
      h('h3', {}, tx(s.title)),
      h('p', { class: 'muted' }, [categoryText(s.category), s.pitfall ? categoryText(s.pitfall, 'pitfall') : null, s.difficulty ? `★${s.difficulty}` : null].filter(Boolean).join(' · '), ' · ', h('code', {}, s.id)),
      h('p', {}, tx(s.story)),
      h('p', { class: 'symptom' }, h('strong', {}, `${t('exercise.symptom')}: `), tx(s.symptom)),
      h('button', { type: 'button', onclick: () => start(s.id) }, t('faults.start')),
      spoilers(s.id)))));
}

/** A scenario's hints, revealing query, answer and explanation, fetched when first opened. */
function spoilers(id) {
  const body = h('div', { class: 'spoiler-body' }, h('p', { class: 'muted' }, t('loading')));
  const box = h('details', { class: 'spoiler', dataset: { spoiler: id } }, h('summary', {}, t('faults.show')), body);
  box.addEventListener('toggle', () => {
    if (!box.open || body.dataset.loaded) return;
    body.dataset.loaded = 'yes';
    get(`/api/scenarios/${encodeURIComponent(id)}`).then((s) => mount(body,
      h('p', { class: 'muted' }, `⚠ ${t('faults.spoilerNote')}`),
      h('h4', {}, t('exercise.hints')), h('ol', { class: 'hints' }, (s.hints || []).map((x) => h('li', {}, tx(x)))),
      s.query ? h('p', {}, h('a', { href: queryLink(s.query), class: 'query-link' }, t('exercise.runQuery')), ' ', h('code', {}, s.query)) : null,
      h('p', { class: 'answer' }, h('strong', {}, `${t('exercise.cause')}: `), `${s.answer?.service || ''}${s.answer?.operation ? ` / ${s.answer.operation}` : ''}`),
      h('p', {}, tx(s.explanation))), (e) => { delete body.dataset.loaded; mount(body, h('p', { class: 'error' }, `${t('error')}: ${e.message}`)); });
  });
  return box;
}
