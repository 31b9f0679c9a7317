// Exercise (#/exercise): a scenario played blind. Its state lives in the
// console, so the CLI and this page see the same exercise; while the view
// is open it asks the console every POLL_MS, so a hint, an answer or a
// reveal made in a terminal shows here. The answer's service is one of the
// lab's services or one seen in recent traces (a service whose spans the
// exercise drops is still listed); the operation is typed or chosen from
// the span names recent traces show.
import { h, mount, fmtClock, fmtTime } from '../dom.js';
import { t, tx } from '../i18n.js';
import { get, post, search, fetchTrace } from '../api.js';
import { buildTrace } from '../model.js';

const POLL_MS = 2000;

export function render(main) {
  const box = h('div', { class: 'exercise' }, h('p', { class: 'muted' }, t('loading')));
  const history = h('div', { class: 'history' });
  mount(main, h('h1', {}, t('nav.exercise')), box, h('section', { 'aria-labelledby': 'hist-h' }, h('h2', { id: 'hist-h' }, t('exercise.history')), history));
  let stopped = false;
  let clock = null;
  let poll = null;
  const state = { ops: null, services: [] };
  // What is on screen: the running exercise's number, hints and answers (null: none runs).
  let shown = null;
  // The running view's updaters, set by drawRunning.
  let live = null;
  // Bumped by every redraw: a poll answered after one is stale.
  let epoch = 0;

  async function load() {
    clearInterval(clock);
    let ex;
    try { ex = (await get('/api/exercise')).exercise; } catch (e) {
      mount(box, h('p', { class: 'error' }, e.message));
      return;
    }
    if (stopped) return;
    if (!ex) drawIdle(); else drawRunning(ex);
    drawHistory();
  }

  // Another client (the CLI, a second tab) changed the exercise: show it.
  async function check() {
    const at = epoch;
    let ex;
    try { ex = (await get('/api/exercise')).exercise; } catch { return; }
    if (stopped || at !== epoch) return;
    if (!ex && shown) {
      const ended = shown.number;
      clearInterval(clock);
      const result = await endedElsewhere(ended);
      if (stopped || at !== epoch) return;
      drawIdle(result);
      drawHistory();
    } else if (ex && (!shown || shown.number !== ex.number)) {
      drawRunning(ex);
    } else if (ex && live) {
      live.update(ex);
    }
  }

  function drawIdle(result) {
    epoch += 1;
    shown = null;
    live = null;
    const rate = h('input', { id: 'ex-rate', type: 'number', min: '0', max: '20', step: '0.5', value: '1' });
    const seed = h('input', { id: 'ex-seed', type: 'number', min: '0', step: '1', inputmode: 'numeric', placeholder: t('exercise.seedHint') });
    const pick = h('select', { id: 'ex-scenario' }, h('option', { value: '' }, t('exercise.blind')));
    get('/api/scenarios').then((a) => pick.append(...(a.scenarios || []).map((s) => h('option', { value: s.id }, `${tx(s.title)} (${s.id})`))), () => null);
    const msg = h('p', { role: 'status' });
    mount(box,
      result || null,
      h('p', {}, t('exercise.intro')),
      h('div', { class: 'row' },
        h('label', { for: 'ex-scenario' }, t('exercise.which')), pick,
        h('label', { for: 'ex-seed' }, t('exercise.seed')), seed,
        h('label', { for: 'ex-rate' }, t('exercise.loadRate')), rate,
        h('button', { type: 'button', class: 'primary', dataset: { exercise: 'start' }, onclick: async () => {
          const r = Number(rate.value);
          try {
            const body = { load: r > 0 ? { rate: r } : false };
            if (pick.value) body.scenario = pick.value;
            else if (seed.value.trim()) {
              body.seed = Number(seed.value);
              // JSON numbers beyond 2^53 would reach the API rounded.
              if (!Number.isSafeInteger(body.seed) || body.seed < 0) throw new Error(t('exercise.badSeed'));
            }
            await post('/api/exercise', body);
            load();
          } catch (e) { msg.textContent = `${t('error')}: ${e.message}`; msg.className = 'error'; }
        } }, t('exercise.start'))),
      msg);
  }

  function drawRunning(ex) {
    epoch += 1;
    clearInterval(clock);
    shown = { number: ex.number, hints: (ex.hints || []).length, attempts: (ex.attempts || []).length };
    const began = performance.now();
    const timer = h('span', { class: 'timer', role: 'timer', 'aria-live': 'off' }, fmtClock(ex.elapsed_secs));
    clock = setInterval(() => { timer.textContent = fmtClock(ex.elapsed_secs + (performance.now() - began) / 1000); }, 1000);
    const hints = h('ol', { class: 'hints', 'aria-live': 'polite' });
    const hintBtn = h('button', { type: 'button', dataset: { exercise: 'hint' } });
    const showHints = (list, total) => {
      mount(hints, list.map((x) => h('li', {}, tx(x))));
      hintBtn.textContent = t('exercise.hint', { n: list.length, total });
      hintBtn.disabled = list.length >= total;
      shown.hints = list.length;
    };
    showHints(ex.hints || [], ex.hints_total);
    hintBtn.addEventListener('click', async () => {
      const a = await post('/api/exercise/hint').catch((e) => ({ error: e }));
      if (a.error) return;
      showHints(a.hints, a.total);
    });
    const attempts = h('ul', { class: 'attempts', 'aria-live': 'polite' });
    const showAttempts = (list) => {
      mount(attempts, list.map((a) => h('li', { dataset: { grade: a.grade } }, `${fmtTime(Date.parse(a.at))} ${a.service}${a.operation ? ` / ${a.operation}` : ''}: ${t(`grade.${a.grade}`)}`)));
      attempts.hidden = !list.length;
      shown.attempts = list.length;
    };
    showAttempts(ex.attempts || []);
    live = {
      update(next) {
        if ((next.hints || []).length !== shown.hints) showHints(next.hints || [], next.hints_total);
        if ((next.attempts || []).length !== shown.attempts) showAttempts(next.attempts || []);
      },
    };
    const service = h('select', { id: 'ans-service', required: true });
    // Typed or chosen: a span the traces do not show (yet) can still be named.
    const operation = h('input', { id: 'ans-operation', type: 'text', list: 'ans-operations', spellcheck: 'false', autocomplete: 'off', placeholder: t('exercise.anyOperation') });
    const opList = h('datalist', { id: 'ans-operations' });
    const traceId = h('input', { id: 'ans-trace', type: 'text', spellcheck: 'false', placeholder: t('exercise.traceIdHint'), pattern: '[0-9a-fA-F]{32}' });
    const grade = h('div', { class: 'grade', role: 'status', 'aria-live': 'polite' });
    const fillOps = () => {
      const names = [...(state.ops?.get(service.value) || [])].sort();
      mount(opList, names.map((n) => h('option', { value: n })));
    };
    service.addEventListener('change', fillOps);
    const fillServices = () => {
      const chosen = service.value;
      const names = [...new Set([...state.services, ...(state.ops?.keys() || [])])].filter(Boolean).sort();
      mount(service, names.map((n) => h('option', { value: n, selected: n === chosen }, n)));
      fillOps();
    };
    const reload = () => {
      mount(service, h('option', { value: '' }, t('loading')));
      Promise.all([labServices(), observedOperations()]).then(([names, ops]) => {
        state.services = names;
        state.ops = ops;
        if (!stopped) fillServices();
      });
    };
    if (state.ops && state.ops.size) fillServices(); else reload();
    const again = h('button', { type: 'button', class: 'link', onclick: reload }, t('exercise.reloadLists'));
    const form = h('form', { class: 'grid-form answer', onsubmit: async (e) => {
      e.preventDefault();
      const body = { service: service.value };
      if (operation.value.trim()) body.operation = operation.value.trim();
      if (traceId.value.trim()) body.trace_id = traceId.value.trim().toLowerCase();
      try {
        const g = await post('/api/exercise/answer', body);
        if (g.correct) {
          clearInterval(clock);
          drawIdle(solution(g.solution, g));
          drawHistory();
        } else {
          mount(grade, gradeText(g));
          check();
        }
      } catch (err) { mount(grade, h('p', { class: 'error' }, `${t('error')}: ${err.message}`)); }
    } },
    h('label', { for: 'ans-service' }, t('lab.service')), h('span', {}, service, ' ', again),
    h('label', { for: 'ans-operation' }, t('exercise.operation')), h('span', {}, operation, opList),
    h('label', { for: 'ans-trace' }, t('exercise.traceId')), traceId,
    h('span'), h('button', { type: 'submit', class: 'primary', dataset: { exercise: 'answer' } }, t('exercise.answer')));
    mount(box,
      h('p', { class: 'running' }, t('exercise.number', { n: ex.number }), ex.seed !== null && ex.seed !== undefined ? ` · ${t('exercise.seedShown', { seed: ex.seed })}` : '', ' · ', timer,
        ex.load?.running ? ` · ${t('exercise.loadOn', { rate: ex.load.rate })}` : ''),
      h('section', { class: 'symptom' }, h('h2', {}, t('exercise.symptom')), h('p', {}, tx(ex.symptom)), ex.story ? h('p', { class: 'muted' }, tx(ex.story)) : null),
      h('section', {}, h('h2', {}, t('exercise.hints')), hints, hintBtn),
      h('section', {}, h('h2', {}, t('exercise.yourAnswer')), h('p', { class: 'muted' }, t('exercise.answerIntro'), ' ', h('a', { href: '#/traces?q=%7B%20status%20%3D%20error%20%7D' }, t('nav.traces'))), form, grade, attempts),
      h('p', {}, h('button', { type: 'button', dataset: { exercise: 'reveal' }, onclick: async () => {
        const s = await post('/api/exercise/reveal').catch(() => null);
        if (s) { clearInterval(clock); drawIdle(solution(s, null)); drawHistory(); }
      } }, t('exercise.reveal'))));
  }

  async function drawHistory() {
    let a;
    try { a = await get('/api/exercise/history'); } catch { return; }
    if (stopped) return;
    const entries = a.entries || [];
    mount(history, entries.length ? h('table', { dataset: { count: String(entries.length) } },
      h('thead', {}, h('tr', {}, ['#', 'exercise.scenario', 'exercise.outcome', 'exercise.time', 'exercise.hintsUsed', 'exercise.attempts'].map((k) => h('th', { scope: 'col' }, k === '#' ? k : t(k))))),
      h('tbody', {}, entries.slice().reverse().map((e) => h('tr', {}, h('td', {}, e.number), h('td', {}, typeof e.scenario === 'object' ? tx(e.scenario.title) || e.scenario.id : e.scenario),
        h('td', {}, t(`outcome.${e.outcome}`)), h('td', { class: 'num' }, fmtClock(e.elapsed_secs || 0)), h('td', { class: 'num' }, e.hints_used ?? ''),
        h('td', { class: 'num' }, Array.isArray(e.attempts) ? e.attempts.length : (e.attempts ?? '')))))) : h('p', { class: 'muted' }, t('exercise.noHistory')),
    entries.length ? h('p', { class: 'muted' }, t('exercise.stats', { solved: a.solved ?? 0, mean: fmtClock(a.mean_secs || 0) })) : null);
  }

  load();
  poll = setInterval(check, POLL_MS);
  return () => { stopped = true; clearInterval(clock); clearInterval(poll); };
}

/** The solution of exercise `number`, ended by another client: its history entry and scenario. */
async function endedElsewhere(number) {
  try {
    const entry = ((await get('/api/exercise/history')).entries || []).find((e) => e.number === number);
    if (!entry) return null;
    const id = typeof entry.scenario === 'object' ? entry.scenario.id : entry.scenario;
    const s = await get(`/api/scenarios/${encodeURIComponent(id)}`);
    return h('div', { class: 'ended-elsewhere' }, h('p', { class: 'muted' }, t('exercise.endedElsewhere', { outcome: t(`outcome.${entry.outcome}`) })),
      solution({ scenario: { id, title: s.title }, answer: s.answer, explanation: s.explanation, query: s.query, outcome: entry.outcome, elapsed_secs: entry.elapsed_secs, hints_used: entry.hints_used }, null));
  } catch { return null; }
}

/** Every service of the lab (GET /api/lab), whether or not its spans reach the traces. */
async function labServices() {
  try { return ((await get('/api/lab')).services || []).map((s) => s.name); } catch { return []; }
}

function gradeText(g) {
  return h('div', { class: `grade-${g.grade}`, dataset: { grade: g.grade } },
    h('p', { class: g.correct ? 'ok' : 'error' }, `${g.correct ? '✓' : '✕'} ${t(`grade.${g.grade}`)}`),
    g.message ? h('p', {}, tx(g.message)) : null,
    g.trace ? h('p', { class: 'muted' }, g.trace.found ? (g.trace.shows_cause ? t('exercise.traceShows') : t('exercise.traceNotShows')) : t('exercise.traceNotFound')) : null);
}

/** The page's link for a solution's query: the Traces view running it. */
export function queryLink(query) {
  return `#/traces?q=${encodeURIComponent(query)}&range=1h`;
}

function solution(s, graded) {
  return h('section', { class: 'solution', dataset: { outcome: s.outcome || '' } },
    graded ? gradeText(graded) : (s.outcome === 'solved' ? null : h('p', {}, t('exercise.revealed'))),
    h('h2', {}, tx(s.scenario?.title) || s.scenario?.id),
    h('p', {}, h('strong', {}, `${t('exercise.cause')}: `), `${s.answer?.service || ''}${s.answer?.operation ? ` / ${s.answer.operation}` : ''}`),
    h('p', {}, tx(s.explanation)),
    s.query ? h('p', {}, h('a', { href: queryLink(s.query), class: 'query-link' }, t('exercise.runQuery')), ' ', h('code', {}, s.query)) : null,
    h('p', { class: 'muted' }, t('exercise.took', { clock: fmtClock(s.elapsed_secs || 0), hints: s.hints_used ?? 0 })));
}

/** service → operation names seen in recent traces. */
async function observedOperations() {
  const ops = new Map();
  const end = Math.ceil(Date.now() / 1000);
  try {
    const found = await search({ q: '{ }', start: end - 900, end, limit: 20 });
    const bodies = await Promise.all((found.traces || []).map((tr) => fetchTrace(tr.traceID).catch(() => null)));
    for (const b of bodies) {
      const m = b && buildTrace(b);
      if (!m) continue;
      for (const sp of m.spans) {
        if (!ops.has(sp.service)) ops.set(sp.service, new Set());
        ops.get(sp.service).add(sp.name);
      }
    }
  } catch { /* no traces yet: the lists stay empty */ }
  return ops;
}
