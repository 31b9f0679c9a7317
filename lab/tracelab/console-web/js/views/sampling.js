// Sampling (#/sampling): the head rules each service applies and the
// collector's tail policies in force, live kept/dropped counts per tail
// policy, and the switch between the lab's policy (sampling.yaml) and the
// lesson's (sampling.lesson.yaml), applied without a restart.
import { h, mount, fmtTime } from '../dom.js';
import { t } from '../i18n.js';
import { get, put, post } from '../api.js';

const REFRESH_MS = 2000;
const BURST = 50;

export function render(main) {
  const switchBox = h('div', { class: 'sampling-switch' });
  const msg = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const headBox = h('div', { class: 'sampling-head' }, h('p', { class: 'muted' }, t('loading')));
  const tailBox = h('div', { class: 'sampling-tail' }, h('p', { class: 'muted' }, t('loading')));
  const burst = h('button', { type: 'button', class: 'action', dataset: { action: 'burst' } }, t('sampling.burst', { n: BURST }));
  burst.addEventListener('click', async () => {
    burst.disabled = true;
    msg.className = 'status muted';
    msg.textContent = t('lab.sending');
    try {
      const b = await post('/api/actions/burst', { count: BURST });
      msg.className = 'status';
      msg.textContent = t('lab.burstDone', { sent: b.sent, ok: b.ok });
      refresh();
    } catch (e) { showError(e); } finally { burst.disabled = false; }
  });
  mount(main,
    h('h1', {}, t('nav.sampling')),
    h('p', { class: 'lead' }, t('sampling.intro')),
    h('section', { 'aria-labelledby': 'switch-h' },
      h('h2', { id: 'switch-h' }, t('sampling.switch')), switchBox,
      h('div', { class: 'row' }, burst, h('span', { class: 'muted' }, t('sampling.burstWhy'))), msg),
    h('div', { class: 'two' },
      h('section', { 'aria-labelledby': 'head-h' },
        h('h2', { id: 'head-h' }, t('sampling.head')), h('p', { class: 'muted' }, t('sampling.headIntro')), headBox),
      h('section', { 'aria-labelledby': 'tail-h' },
        h('h2', { id: 'tail-h' }, t('sampling.tail')), h('p', { class: 'muted' }, t('sampling.tailIntro')), tailBox)));

  function showError(e) {
    msg.className = 'status error';
    msg.textContent = `${t('error')}: ${e.message}`;
  }
  let stopped = false;
  let timer = null;
  let busy = false;
  async function choose(name) {
    if (busy) return;
    busy = true;
    for (const b of switchBox.querySelectorAll('button')) b.disabled = true;
    msg.className = 'status muted';
    msg.textContent = t('sampling.switching');
    try {
      const a = await put('/api/sampling', { policy: name });
      msg.className = 'status';
      msg.textContent = t('sampling.switched', { policy: t(`sampling.name.${name}`), n: a.applied.length });
      draw(a.sampling);
    } catch (e) {
      showError(e);
      refresh();
    } finally { busy = false; }
  }
  function draw(v) {
    drawSwitch(switchBox, v, choose);
    drawHead(headBox, v);
    drawTail(tailBox, v);
  }
  async function refresh() {
    try {
      const v = await get('/api/sampling');
      if (!stopped && !busy) draw(v);
    } catch (e) {
      if (!stopped) showError(e);
    }
  }
  const loop = async () => { await refresh(); if (!stopped) timer = setTimeout(loop, REFRESH_MS); };
  loop();
  return () => { stopped = true; clearTimeout(timer); };
}

function pct(rate) {
  return `${Math.round(rate * 10000) / 100}%`;
}

/** One line per named policy: what it keeps, and the button that applies it. */
function drawSwitch(box, v, choose) {
  const current = v.policy;
  mount(box,
    h('p', {}, t('sampling.inForce'), ' ', h('strong', { class: 'policy-now', dataset: { policy: current } }, t(`sampling.name.${current}`))),
    h('div', { class: 'buttons', role: 'group', 'aria-label': t('sampling.switch') },
      (v.policies || []).map((p) => h('button', {
        type: 'button', class: 'policy-button', dataset: { policy: p.name }, 'aria-pressed': String(p.name === current),
        onclick: () => choose(p.name),
      }, t(`sampling.name.${p.name}`), h('span', { class: 'muted' }, ` (${p.file})`)))),
    h('ul', { class: 'policy-notes' }, (v.policies || []).map((p) => h('li', {}, h('strong', {}, t(`sampling.name.${p.name}`)), ': ', t(`sampling.about.${p.name}`)))));
}

function drawHead(box, v) {
  const rows = v.head.services.map((s) => {
    const r = s.report;
    if (!r) {
      return h('tr', { dataset: { service: s.service } }, h('td', { class: 'svc' }, s.service),
        h('td', { colspan: '4', class: 'error' }, s.error || t('lab.down')));
    }
    return h('tr', { dataset: { service: s.service } },
      h('td', { class: 'svc' }, s.service),
      h('td', { class: 'num' }, pct(r.service_rate)),
      h('td', { class: 'num sampled' }, String(r.counts.sampled)),
      h('td', { class: 'num not-sampled' }, String(r.counts.not_sampled)),
      h('td', {}, t(`sampling.name.${s.policy}`)));
  });
  const c = v.head.counts;
  mount(box, h('table', { class: 'head-table' },
    h('thead', {}, h('tr', {}, ['lab.service', 'sampling.rate', 'sampling.sampled', 'sampling.notSampled', 'sampling.policy']
      .map((k, i) => h('th', { scope: 'col', class: i > 0 && i < 4 ? 'num' : null }, t(k))))),
    h('tbody', {}, rows),
    h('tfoot', {}, h('tr', { class: 'total' }, h('th', { scope: 'row' }, t('sampling.total')), h('td'),
      h('td', { class: 'num', dataset: { sampled: String(c.sampled) } }, String(c.sampled)),
      h('td', { class: 'num', dataset: { notSampled: String(c.not_sampled) } }, String(c.not_sampled)), h('td')))),
    routeRules(v));
}

/** The per_route rules of the policy in force, when it has any. */
function routeRules(v) {
  const s = v.head.services.find((x) => x.report);
  const routes = Object.entries(s?.report.head_based.per_route || {});
  if (!routes.length) return null;
  return h('p', { class: 'muted' }, t('sampling.perRoute'), ' ',
    routes.map(([route, rate], i) => [i ? ', ' : '', h('code', {}, route), ` ${pct(rate)}`]));
}

/** A tail policy's rule in words: status ERROR, 2000 ms or longer, 5%. */
function ruleText(p) {
  switch (p.type) {
    case 'status_code': return t('sampling.rule.status', { codes: p.status_code.status_codes.join(', ') });
    case 'latency': return t('sampling.rule.latency', { ms: p.latency.threshold_ms });
    case 'probabilistic': return t('sampling.rule.share', { pct: p.probabilistic.sampling_percentage });
    case 'always_sample': return t('sampling.rule.always');
    default: return p.type;
  }
}

function drawTail(box, v) {
  const tail = v.tail;
  if (!tail.live) {
    mount(box, h('p', { class: 'note', dataset: { live: 'false' } },
      v.mode === 'compose' ? t('sampling.composeNote') : tail.note));
    return;
  }
  const r = tail.report;
  if (!r) {
    mount(box, h('p', { class: 'error' }, tail.note || t('error')));
    return;
  }
  const rules = new Map((r.tail_based.policies || []).map((p) => [p.name, p]));
  mount(box,
    h('p', {}, t('sampling.since', { time: fmtTime(Date.parse(r.since)), wait: r.tail_based.decision_wait_ms / 1000 })),
    h('dl', { class: 'summary tail-totals' },
      h('div', {}, h('dt', {}, t('sampling.kept')), h('dd', { dataset: { kept: String(r.kept) } }, String(r.kept))),
      h('div', {}, h('dt', {}, t('sampling.dropped')), h('dd', { dataset: { dropped: String(r.dropped) } }, String(r.dropped))),
      h('div', {}, h('dt', {}, t('sampling.pending')), h('dd', { dataset: { pending: String(r.pending) } }, String(r.pending)))),
    h('table', { class: 'tail-table' },
      h('thead', {}, h('tr', {}, ['sampling.tailPolicy', 'sampling.rule', 'sampling.keptBy', 'sampling.notKeptBy']
        .map((k, i) => h('th', { scope: 'col', class: i > 1 ? 'num' : null }, t(k))))),
      h('tbody', {}, r.policies.map((p) => h('tr', { dataset: { policy: p.name } },
        h('th', { scope: 'row' }, h('code', {}, p.name)),
        h('td', {}, rules.has(p.name) ? ruleText(rules.get(p.name)) : p.type),
        h('td', { class: 'num kept', dataset: { kept: String(p.kept) } }, String(p.kept)),
        h('td', { class: 'num not-kept', dataset: { notKept: String(p.not_kept) } }, String(p.not_kept)))))),
    h('p', { class: 'muted' }, t('sampling.votes')));
}
