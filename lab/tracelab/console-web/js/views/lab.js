// Lab view (#/lab): the live service map from recent traces, each service's
// health and span export counters, the one-shot actions (each answers with
// a link to its trace), the load generator and the notification
// dead-letter queue.
import { h, mount, fmtMs } from '../dom.js';
import { t } from '../i18n.js';
import { get, post, del, search, fetchTrace } from '../api.js';
import { buildTrace } from '../model.js';
import { serviceGraph, drawGraph } from '../servicemap.js';
import { dlqPanel } from './dlq.js';

const MAP_TRACES = 25;
const MAP_WINDOW_SECS = 300;
const REFRESH_MS = 5000;

export function render(main) {
  const mapBox = h('div', { class: 'map-box' }, h('p', { class: 'muted' }, t('loading')));
  const mapNote = h('p', { class: 'muted map-note' });
  const health = h('div', { class: 'health' }, h('p', { class: 'muted' }, t('loading')));
  const actionOut = h('div', { class: 'action-out', role: 'status', 'aria-live': 'polite' });
  const loadBox = h('div', { class: 'load' });
  const dlqBox = h('div', { class: 'dlq' });
  mount(main,
    h('h1', {}, t('nav.lab')),
    h('section', { class: 'actions', 'aria-labelledby': 'actions-h' },
      h('h2', { id: 'actions-h' }, t('lab.actions')),
      h('p', { class: 'muted' }, t('lab.actionsIntro')),
      h('div', { class: 'buttons' },
        actionButton('checkout', t('lab.checkout'), actionOut, soon),
        actionButton('declined-checkout', t('lab.declined'), actionOut, soon),
        actionButton('search', t('lab.search'), actionOut, soon),
        actionButton('burst', t('lab.burst'), actionOut, soon)),
      actionOut),
    h('section', { 'aria-labelledby': 'map-h' },
      h('h2', { id: 'map-h' }, t('lab.map')), mapBox, mapNote),
    h('div', { class: 'two' },
      h('section', { 'aria-labelledby': 'health-h' }, h('h2', { id: 'health-h' }, t('lab.health')), health),
      h('section', { 'aria-labelledby': 'load-h' }, h('h2', { id: 'load-h' }, t('lab.load')), loadBox)),
    h('section', { 'aria-labelledby': 'dlq-h' }, h('h2', { id: 'dlq-h' }, t('dlq.title')), dlqBox));

  let stopped = false;
  let timer = null;
  // After an action, its trace joins the map as soon as it reached the collector.
  let pending = null;
  function soon() {
    clearTimeout(pending);
    pending = setTimeout(() => { if (!stopped) drawMap(mapBox, mapNote); }, 1500);
  }
  const loadUi = loadPanel(loadBox);
  const dlqUi = dlqPanel(dlqBox);
  const tick = async () => {
    await Promise.all([drawHealth(health), drawMap(mapBox, mapNote), loadUi.refresh(), dlqUi.refresh()]);
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); clearTimeout(pending); };
}

function actionButton(action, label, out, after) {
  const btn = h('button', { type: 'button', class: 'action', dataset: { action } }, label);
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    mount(out, h('p', { class: 'muted' }, t('lab.sending')));
    try {
      const a = await post(`/api/actions/${action}`, {});
      mount(out, action === 'burst' ? burstResult(a) : actionResult(a));
      out.querySelector('a')?.focus();
      after();
    } catch (e) {
      mount(out, h('p', { class: 'error', role: 'alert' }, `${t('error')}: ${e.message}`));
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

function actionResult(a) {
  return h('p', { class: 'action-result', dataset: { traceId: a.trace_id || '' } },
    h('code', {}, a.route), ' → ', h('strong', { class: a.status >= 400 ? 'error' : '' }, String(a.status)), ' ',
    a.link ? h('a', { href: a.link, class: 'trace-link' }, t('lab.openTrace'), ' ', h('code', {}, a.trace_id)) : t('lab.noTrace'));
}

function burstResult(b) {
  return h('div', {}, h('p', {}, t('lab.burstDone', { sent: b.sent, ok: b.ok })),
    h('ul', { class: 'burst' }, (b.actions || []).slice(0, 10).map((a) => h('li', {}, actionResult(a)))));
}

async function drawHealth(box) {
  let lab;
  try {
    lab = await get('/api/lab');
  } catch (e) {
    mount(box, h('p', { class: 'error' }, `${t('error')}: ${e.message}`));
    return;
  }
  // Kept open, and focused, across the 5 s refresh: a learner reading a
  // breakdown, or tabbing through the table, keeps their place.
  const open = new Set([...box.querySelectorAll('details[open]')].map((d) => d.dataset.service));
  const focused = box.contains(document.activeElement) ? document.activeElement.closest('details')?.dataset.service : null;
  mount(box,
    h('p', { class: 'muted' }, t('lab.mode', { mode: lab.mode })),
    h('table', { class: 'health-table' },
      h('thead', {}, h('tr', {}, ['lab.service', 'lab.status', 'lab.checks', 'lab.exported', 'lab.dropped', 'lab.process', 'lab.restarts', 'lab.memory'].map((k) => h('th', { scope: 'col' }, t(k))))),
      h('tbody', {}, (lab.services || []).map((s) => {
        const ok = s.health_status === 200;
        // The services' /health carries their exporter's counters (spans_exported,
        // spans_failed, spans_dropped_by_fault, ...): every counter that lost
        // spans adds to "dropped"; the cell opens (click, Enter or Space) on
        // the full list.
        const tel = s.health?.telemetry || {};
        const exported = tel.spans_exported ?? tel.exported;
        const lost = Object.entries(tel).filter(([k, v]) => /dropped|failed/.test(k) && typeof v === 'number');
        const dropped = lost.length ? lost.reduce((n, [, v]) => n + v, 0) : undefined;
        const counters = Object.entries(tel);
        const checks = Object.entries(s.health?.checks || {}).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', ');
        const p = s.process;
        return h('tr', { class: ok ? '' : 'is-err', dataset: { service: s.name } },
          h('th', { scope: 'row' }, s.name),
          h('td', { class: ok ? 'ok' : 'error' }, ok ? `✓ ${t('lab.up')}` : `✕ ${s.error || s.health_status || t('lab.down')}`),
          h('td', {}, checks),
          h('td', { class: 'num exported' }, exported ?? '–'),
          h('td', { class: `num dropped${dropped ? ' error' : ''}` }, counters.length
            ? h('details', { dataset: { service: s.name }, open: open.has(s.name) }, h('summary', { 'aria-label': t('lab.droppedOpen', { n: dropped ?? 0 }) }, dropped ?? '–'),
              h('dl', { class: 'counters' }, counters.map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))])))
            : (dropped ?? '–')),
          h('td', { class: 'process', dataset: { state: p?.state || '' } }, p
            ? [`${p.running ? '▶' : '■'} ${t(`state.${p.state}`)}${p.pid ? ` · ${p.pid}` : ''}`, p.exit ? h('div', { class: 'muted exit' }, t('lab.lastExit', { exit: p.exit })) : null]
            : '–'),
          h('td', { class: `num restarts${p?.restarts ? ' error' : ''}` }, p ? String(p.restarts) : '–'),
          h('td', { class: 'num memory' }, p?.memory_kib != null ? mib(p.memory_kib) : '–'));
      }))),
    lab.memory ? h('p', { class: 'muted memory-total' }, t('lab.memoryTotal', {
      total: mib(lab.memory.total_kib), services: mib(lab.memory.services_kib),
      collector: lab.memory.collector_kib != null ? mib(lab.memory.collector_kib) : '–', up: mib(lab.memory.console_kib),
    })) : null);
  if (focused) box.querySelector(`details[data-service="${CSS.escape(focused)}"] summary`)?.focus();
}

// KiB as MiB with one decimal, as `tracelab status` prints it.
function mib(kib) {
  return `${(kib / 1024).toFixed(1)} MiB`;
}

async function drawMap(box, note) {
  const end = Math.ceil(Date.now() / 1000);
  let found;
  try {
    found = await search({ q: '{ }', start: end - MAP_WINDOW_SECS, end, limit: MAP_TRACES });
  } catch (e) {
    mount(box, h('p', { class: 'error' }, `${t('error')}: ${e.message}`));
    return;
  }
  const ids = (found.traces || []).map((tr) => tr.traceID);
  const bodies = await Promise.all(ids.map((id) => fetchTrace(id).catch(() => null)));
  const traces = bodies.map((b) => b && buildTrace(b)).filter(Boolean);
  if (!traces.length) {
    mount(box, h('p', { class: 'muted' }, t('lab.mapEmpty')));
    note.textContent = '';
    return;
  }
  const graph = serviceGraph(traces);
  const fmt = { rate: (r) => (r >= 1 ? `${r.toFixed(1)}/s` : `${(r * 60).toFixed(1)}/min`), ms: fmtMs };
  mount(box, drawGraph(graph, fmt));
  note.textContent = t('lab.mapNote', { n: graph.traces, secs: Math.round(graph.window) });
}

function loadPanel(box) {
  const rate = h('input', { id: 'load-rate', type: 'number', min: '0.1', max: '200', step: '0.1', value: '2', inputmode: 'decimal' });
  // As `tracelab load --mix checkout=1,order=2` and `--duration 30s` take them; empty: the API's default.
  const mix = h('input', { id: 'load-mix', type: 'text', spellcheck: 'false', placeholder: 'checkout=1,search=5,login=1,order=0', size: '28' });
  const duration = h('input', { id: 'load-duration', type: 'text', spellcheck: 'false', placeholder: t('lab.untilStopped'), size: '8' });
  const status = h('div', { class: 'load-status', 'aria-live': 'polite' });
  const start = h('button', { type: 'button', class: 'primary', dataset: { load: 'start' } }, t('lab.loadStart'));
  const stopBtn = h('button', { type: 'button', dataset: { load: 'stop' } }, t('lab.loadStop'));
  const show = (s) => {
    const routes = s?.summary?.routes || [];
    stopBtn.disabled = !s?.running;
    mount(status,
      h('p', { class: s?.running ? 'ok' : 'muted', dataset: { running: String(!!s?.running) } },
        s?.running ? `▶ ${t('lab.loadOn', { rate: s.config?.rate ?? '?', mix: s.config?.mix ?? '' })}${s.config?.duration ? ` · ${t('lab.loadFor', { duration: s.config.duration })}` : ''}` : `■ ${t('lab.loadOff')}`),
      routes.length ? h('table', {},
        h('thead', {}, h('tr', {}, ['lab.route', 'lab.sent', 'lab.ok', 'lab.errors', 'p50', 'p90', 'p99'].map((k) => h('th', { scope: 'col' }, /^p\d/.test(k) ? k : t(k))))),
        h('tbody', {}, routes.map((r) => h('tr', { dataset: { route: r.route } }, h('td', {}, r.route), h('td', { class: 'num' }, r.sent), h('td', { class: 'num' }, r.ok),
          h('td', { class: `num${r.errors ? ' error' : ''}` }, r.errors), [r.latency?.p50_ms, r.latency?.p90_ms, r.latency?.p99_ms].map((ms) => h('td', { class: 'num' }, r.count ? fmtMs(ms) : '–')))))) : null);
  };
  const fail = (e) => mount(status, h('p', { class: 'error', role: 'alert' }, `${t('error')}: ${e.message}`));
  start.addEventListener('click', () => {
    const body = { rate: Number(rate.value) };
    if (mix.value.trim()) body.mix = mix.value.trim();
    if (duration.value.trim()) body.duration = duration.value.trim();
    post('/api/load', body).then(show, fail);
  });
  stopBtn.addEventListener('click', () => del('/api/load').then(show, (e) => (e.code === 'no_load' ? show(null) : fail(e))));
  mount(box, h('div', { class: 'grid-form' },
    h('label', { for: 'load-rate' }, t('lab.rate')), rate,
    h('label', { for: 'load-mix' }, t('lab.mix')), mix,
    h('label', { for: 'load-duration' }, t('lab.duration')), duration),
  h('div', { class: 'row' }, start, stopBtn), status);
  return { refresh: () => get('/api/load').then(show, () => null) };
}
