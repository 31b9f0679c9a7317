// The notification dead-letter queue on the Lab view: what is parked and
// why (poison: fails again as it is; transient: the database was down, say),
// each message's event and trace, and replaying one or all
// (GET /api/dlq, POST /api/dlq/replay; `tracelab dlq` in a terminal).
import { h, mount } from '../dom.js';
import { t } from '../i18n.js';
import { get, post } from '../api.js';

/** The trace id inside a traceparent (00-<trace id>-<span id>-<flags>), or ''. */
function traceOf(traceparent) {
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent || '');
  return m ? m[1] : '';
}

export function dlqPanel(box) {
  const list = h('div', { class: 'dlq-list' }, h('p', { class: 'muted' }, t('loading')));
  const msg = h('p', { class: 'dlq-msg', role: 'status', 'aria-live': 'polite' });
  const poison = h('input', { id: 'dlq-poison', type: 'checkbox' });
  const replay = (body) => post('/api/dlq/replay', body).then((a) => {
    msg.className = 'dlq-msg';
    msg.textContent = t('dlq.replayed', { n: a.replayed, poison: a.kept_poison, other: a.kept_other });
    return refresh();
  }, (e) => { msg.className = 'dlq-msg error'; msg.textContent = `${t('error')}: ${e.message}`; });
  const all = h('button', { type: 'button', dataset: { dlq: 'replay-all' }, onclick: () => replay({ all: true, include_poison: poison.checked }) }, t('dlq.replayAll'));
  mount(box, h('p', { class: 'muted' }, t('dlq.intro')), list,
    h('div', { class: 'row' }, all, h('label', {}, poison, ' ', t('dlq.includePoison'))), msg);

  async function refresh() {
    let a;
    try { a = await get('/api/dlq'); } catch (e) {
      mount(list, h('p', { class: 'error' }, `${t('error')}: ${e.message}`));
      return;
    }
    const messages = a.messages || [];
    all.disabled = !a.count;
    mount(list,
      h('p', { class: 'dlq-count', dataset: { count: String(a.count) } }, t('dlq.count', { n: a.count, queue: a.queue }),
        a.count > messages.length ? ` ${t('dlq.first', { n: messages.length })}` : ''),
      messages.length ? h('table', { class: 'dlq-table' },
        h('thead', {}, h('tr', {}, ['dlq.message', 'dlq.kind', 'dlq.reason', 'dlq.event', 'dlq.replays', ''].map((k) => h('th', { scope: 'col' }, k ? t(k) : '')))),
        h('tbody', {}, messages.map((m) => {
          const trace = traceOf(m.traceparent);
          const ev = m.event || {};
          return h('tr', { dataset: { messageId: m.message_id || '' } },
            h('td', {}, h('code', {}, m.message_id || '–'), trace ? h('div', {}, h('a', { href: `#/trace/${trace}`, class: 'trace-link' }, t('lab.openTrace'))) : null),
            h('td', { class: m.kind === 'poison' ? 'error' : '' }, t(`dlq.kind.${m.kind || 'unknown'}`)),
            h('td', {}, m.reason || t('dlq.byBroker')),
            h('td', { class: 'dlq-event' }, m.event ? [ev.type || '?', ev.order_id ? h('div', {}, t('dlq.order'), ' ', h('code', {}, ev.order_id)) : null,
              ev.amount !== null && ev.amount !== undefined ? h('div', {}, `${ev.amount} ${ev.currency || ''}`) : null] : t('dlq.notJson', { n: m.size })),
            h('td', { class: 'num' }, m.replays),
            h('td', {}, m.message_id ? h('button', { type: 'button', dataset: { replay: m.message_id }, onclick: () => replay({ id: m.message_id }) }, t('dlq.replay')) : null));
        }))) : null);
  }
  return { refresh };
}
