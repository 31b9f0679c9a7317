// Exercise (#/exercise): a scenario played blind. Its state lives in the
// console, so the CLI and this page see the same exercise. The answer's
// service and operation are chosen from what recent traces show.
import { h, mount, fmtClock, fmtTime } from '../dom.js';
import { t, tx } from '../i18n.js';
import { get, post, search, fetchTrace } from '../api.js';
import { buildTrace } from '../model.js';

export function render(main) {
  const box = h('div', { class: 'exercise' }, h('p', { class: 'muted' }, t('loading')));
  const history = h('div', { class: 'history' });
  mount(main, h('h1', {}, t('nav.exercise')), box, h('section', { 'aria-labelledby': 'hist-h' }, h('h2', { id: 'hist-h' }, t('exercise.history')), history));
  let stopped = false;
  let clock = null;
  const state = { ops: null };

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

  function drawIdle(result) {
    const rate = h('input', { id: 'ex-rate', type: 'number', min: '0', max: '20', step: '0.5', value: '1' });
    const pick = h('select', { id: 'ex-scenario' }, h('option', { value: '' }, t('exercise.blind')));
    get('/api/scenarios').then((a) => pick.append(...(a.scenarios || []).map((s) => h('option', { value: s.id }, `${tx(s.title)} (${s.id})`))), () => null);
    const msg = h('p', { role: 'status' });
    mount(box,
      result || null,
      h('p', {}, t('exercise.intro')),
      h('div', { class: 'row' },
        h('label', { for: 'ex-scenario' }, t('exercise.which')), pick,
        h('label', { for: 'ex-rate' }, t('exercise.loadRate')), rate,
        h('button', { type: 'button', class: 'primary', dataset: { exercise: 'start' }, onclick: async () => {
          const r = Number(rate.value);
          try {
            const body = { load: r > 0 ? { rate: r } : false };
            if (pick.value) body.scenario = pick.value;
            await post('/api/exercise', body);
            load();
          } catch (e) { msg.textContent = `${t('error')}: ${e.message}`; msg.className = 'error'; }
        } }, t('exercise.start'))),
      msg);
  }

  function drawRunning(ex) {
    const began = performance.now();
    const timer = h('span', { class: 'timer', role: 'timer', 'aria-live': 'off' }, fmtClock(ex.elapsed_secs));
    clock = setInterval(() => { timer.textContent = fmtClock(ex.elapsed_secs + (performance.now() - began) / 1000); }, 1000);
    const hints = h('ol', { class: 'hints' }, (ex.hints || []).map((x) => h('li', {}, tx(x))));
    const hintBtn = h('button', { type: 'button', dataset: { exercise: 'hint' }, disabled: (ex.hints || []).length >= ex.hints_total }, t('exercise.hint', { n: (ex.hints || []).length, total: ex.hints_total }));
    hintBtn.addEventListener('click', async () => {
      const a = await post('/api/exercise/hint').catch((e) => ({ error: e }));
      if (a.error) return;
      mount(hints, a.hints.map((x) => h('li', {}, tx(x))));
      hintBtn.textContent = t('exercise.hint', { n: a.hints.length, total: a.total });
      hintBtn.disabled = a.hints.length >= a.total;
    });
    const service = h('select', { id: 'ans-service', required: true });
    const operation = h('select', { id: 'ans-operation' });
    const traceId = h('input', { id: 'ans-trace', type: 'text', spellcheck: 'false', placeholder: t('exercise.traceIdHint'), pattern: '[0-9a-fA-F]{32}' });
    const grade = h('div', { class: 'grade', role: 'status', 'aria-live': 'polite' });
    const fillOps = () => {
      const names = [...(state.ops?.get(service.value) || [])].sort();
      mount(operation, h('option', { value: '' }, t('exercise.anyOperation')), names.map((n) => h('option', { value: n }, n)));
    };
    service.addEventListener('change', fillOps);
    const fillServices = () => {
      const names = [...(state.ops?.keys() || [])].sort();
      mount(service, names.map((n) => h('option', { value: n }, n)));
      fillOps();
    };
    const reload = () => {
      mount(service, h('option', { value: '' }, t('loading')));
      observedOperations().then((ops) => { state.ops = ops; if (!stopped) fillServices(); });
    };
    if (state.ops && state.ops.size) fillServices(); else reload();
    const again = h('button', { type: 'button', class: 'link', onclick: reload }, t('exercise.reloadLists'));
    const form = h('form', { class: 'grid-form answer', onsubmit: async (e) => {
      e.preventDefault();
      const body = { service: service.value };
      if (operation.value) body.operation = operation.value;
      if (traceId.value.trim()) body.trace_id = traceId.value.trim().toLowerCase();
      try {
        const g = await post('/api/exercise/answer', body);
        if (g.correct) {
          clearInterval(clock);
          drawIdle(solution(g.solution, g));
          drawHistory();
        } else {
          mount(grade, gradeText(g));
        }
      } catch (err) { mount(grade, h('p', { class: 'error' }, `${t('error')}: ${err.message}`)); }
    } },
    h('label', { for: 'ans-service' }, t('lab.service')), h('span', {}, service, ' ', again),
    h('label', { for: 'ans-operation' }, t('exercise.operation')), operation,
    h('label', { for: 'ans-trace' }, t('exercise.traceId')), traceId,
    h('span'), h('button', { type: 'submit', class: 'primary', dataset: { exercise: 'answer' } }, t('exercise.answer')));
    mount(box,
      h('p', { class: 'running' }, t('exercise.number', { n: ex.number }), ' · ', timer,
        ex.load?.running ? ` · ${t('exercise.loadOn', { rate: ex.load.rate })}` : ''),
      h('section', { class: 'symptom' }, h('h2', {}, t('exercise.symptom')), h('p', {}, tx(ex.symptom)), ex.story ? h('p', { class: 'muted' }, tx(ex.story)) : null),
      h('section', {}, h('h2', {}, t('exercise.hints')), hints, hintBtn),
      h('section', {}, h('h2', {}, t('exercise.yourAnswer')), h('p', { class: 'muted' }, t('exercise.answerIntro'), ' ', h('a', { href: '#/traces?q=%7B%20status%20%3D%20error%20%7D' }, t('nav.traces'))), form, grade,
        (ex.attempts || []).length ? h('ul', { class: 'attempts' }, ex.attempts.map((a) => h('li', {}, `${fmtTime(Date.parse(a.at))} ${a.service}${a.operation ? ` / ${a.operation}` : ''}: ${t(`grade.${a.grade}`)}`))) : null),
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
  return () => { stopped = true; clearInterval(clock); };
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
    graded ? gradeText(graded) : h('p', {}, t('exercise.revealed')),
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
