// The web console in a real browser against a real lab (started by
// lab/tracelab/tests/console_browser.rs, which passes its URL in
// TRACELAB_CONSOLE_URL). The cases run one after another on one lab, since
// faults and the exercise are lab-wide; each opens its own page and fails
// if that page logs a console error.
//
//   TRACELAB_CONSOLE_URL=http://127.0.0.1:7070 node console.test.mjs [case ...]
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { launch, openPage, api, until, traceSpans, shown, consoleUrl } from './harness.mjs';

const WEB = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'console-web');

/** The checkout's spans (service, name), as in the lesson's diagram. */
const CHECKOUT = [
  ['gateway', 'POST /api/checkout'], ['gateway', 'POST /verify'], ['auth', 'POST /verify'],
  ['gateway', 'POST /payments'], ['payment', 'POST /payments'], ['payment', 'processPayment'],
  ['payment', 'validateOrder'], ['payment', 'SELECT orders'], ['payment', 'callExternalPaymentAPI'],
  ['payment-provider', 'POST /v1/charges'], ['payment', 'savePaymentResult'], ['payment', 'INSERT payments'],
  ['payment', 'publish payment.completed'], ['notification', 'process payment.completed'],
  ['notification', 'sendEmail'], ['notification', 'INSERT notifications'],
];

async function wholeCheckout(traceId) {
  return until(`the whole checkout trace ${traceId} in Tempo`, async () => {
    const spans = await traceSpans(traceId);
    return CHECKOUT.every(([svc, name]) => spans.some((s) => s.service === svc && s.name === name)) ? spans : null;
  });
}

const rows = (page) => page.locator('.wf-rows .wf-row');

const CASES = {
  // Every text key the scripts use exists in both languages.
  async messages() {
    const { MESSAGES } = await import(join(WEB, 'js', 'messages.js'));
    assert.deepEqual(Object.keys(MESSAGES.ja).sort(), Object.keys(MESSAGES.en).sort(), 'ja and en have the same keys');
    const files = [];
    const walk = (d) => readdirSync(d).forEach((f) => (statSync(join(d, f)).isDirectory() ? walk(join(d, f)) : f.endsWith('.js') && files.push(join(d, f))));
    walk(join(WEB, 'js'));
    const used = new Set();
    for (const f of files) for (const m of readFileSync(f, 'utf8').matchAll(/\bt\('([a-zA-Z0-9_.]+)'/g)) used.add(m[1]);
    const missing = [...used].filter((k) => !(k in MESSAGES.en));
    assert.deepEqual(missing, [], 'every t(key) has a text');
    assert.ok(used.size > 100, `found only ${used.size} keys: the scan is broken`);
  },

  // Press "checkout", follow the link: the waterfall shows every span of the
  // trace, nested as the trace API says; a span's detail matches the API.
  async checkout(browser) {
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/lab`);
    await page.click('button[data-action="checkout"]');
    const link = page.locator('.action-out a.trace-link');
    await link.waitFor();
    const traceId = await page.locator('.action-result').getAttribute('data-trace-id');
    assert.match(traceId, /^[0-9a-f]{32}$/);
    assert.equal(await link.getAttribute('href'), `/#/trace/${traceId}`);
    await link.click();
    const spans = await wholeCheckout(traceId);
    await until(`${spans.length} span rows`, async () => (await rows(page).count()) === spans.length);
    const shownRows = await rows(page).evaluateAll((els) => els.map((e) => ({ ...e.dataset })));
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const seen = new Map();
    for (const [i, r] of shownRows.entries()) {
      const s = byId.get(r.spanId);
      assert.ok(s, `row ${r.spanId} is a span of the trace`);
      assert.equal(r.name, s.name);
      assert.equal(r.service, s.service);
      assert.equal(r.parentId, s.parentSpanId, `${s.name}: parent`);
      if (s.parentSpanId) {
        assert.ok(seen.has(s.parentSpanId), `${s.service} ${s.name} is drawn below its parent`);
        assert.equal(Number(r.depth), seen.get(s.parentSpanId) + 1, `${s.name} is indented one level under its parent`);
      } else {
        assert.equal(r.depth, '0');
      }
      seen.set(r.spanId, Number(r.depth));
      assert.ok(i === 0 || s.parentSpanId, 'only the first row is a root');
    }
    // The lesson's spans A-F.
    const labels = await page.locator('.wf-row .lesson').evaluateAll((els) => els.map((e) => [e.textContent, e.closest('.wf-row').dataset.name]));
    assert.deepEqual(labels.map((l) => l[0]).sort(), ['A', 'B', 'C', 'D', 'E', 'F']);
    assert.deepEqual(Object.fromEntries(labels), { A: 'POST /api/checkout', B: 'POST /verify', C: 'POST /payments', D: 'SELECT orders', E: 'callExternalPaymentAPI', F: 'process payment.completed' });

    // Open a span: its attributes and ids are the API's.
    const want = spans.find((s) => s.name === 'callExternalPaymentAPI');
    await page.click(`.wf-row[data-span-id="${want.spanId}"]`);
    const detail = page.locator(`.span-detail[data-span-id="${want.spanId}"]`);
    await detail.waitFor();
    const attrs = await detail.locator('table.attributes tr').evaluateAll((trs) => trs.map((tr) => [tr.dataset.key, tr.querySelector('td').textContent]));
    assert.deepEqual(Object.fromEntries(attrs), Object.fromEntries(want.attributes.map((a) => [a.key, shown(a.value)])));
    assert.ok(attrs.some(([k]) => k === 'payment.provider'), 'the lesson attribute payment.provider is shown');
    assert.equal(await detail.locator('.span-id').textContent(), want.spanId);
    // The traceparent it sent is the one the provider's SERVER span received.
    const sent = await detail.locator('.traceparent').first().textContent();
    assert.equal(sent, `00-${traceId}-${want.spanId}-01`);
    const server = spans.find((s) => s.service === 'payment-provider');
    assert.equal(server.parentSpanId, want.spanId);
    await page.keyboard.press('ArrowDown');
    // Keyboard: the focused row moves and Enter opens the next span.
    await page.keyboard.press('Enter');
    await page.locator(`.span-detail[data-span-id="${server.spanId}"]`).waitFor();
    // Hops: one per call between services, the queue hop included.
    const hops = spans.filter((s) => s.parentSpanId && byId.get(s.parentSpanId)?.service !== s.service).length;
    assert.ok(hops >= 4, 'a checkout crosses services at least 4 times');
    await until(`${hops} hops`, async () => (await page.locator('.hops tbody tr').count()) === hops);
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // The trace model on a hand-made trace: ids, tree, self time, the
  // critical path, the hops and their traceparent, the queue hop's wait.
  async model() {
    const { buildTrace } = await import(join(WEB, 'js', 'model.js'));
    const b64 = (hex) => Buffer.from(hex, 'hex').toString('base64');
    const tid = '0af7651916cd43dd8448eb211c80319c';
    const ms = (n) => String(1_700_000_000_000_000_000n + BigInt(Math.round(n * 1e6)));
    const span = (id, parent, name, kind, from, to, extra = {}) => ({
      traceId: b64(tid), spanId: b64(id), parentSpanId: parent ? b64(parent) : '', name, kind,
      startTimeUnixNano: ms(from), endTimeUnixNano: ms(to), flags: 257, ...extra,
    });
    const res = (service, spans) => ({ resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] }, scopeSpans: [{ spans }] });
    const m = buildTrace({ trace: { resourceSpans: [
      res('gateway', [
        span('00000000000000a1', null, 'POST /api/checkout', 'SPAN_KIND_SERVER', 0, 100),
        span('00000000000000c1', '00000000000000a1', 'POST /payments', 'SPAN_KIND_CLIENT', 10, 60),
        span('00000000000000c2', '00000000000000a1', 'POST /verify', 'SPAN_KIND_CLIENT', 5, 20, { status: { code: 'STATUS_CODE_ERROR', message: 'x' } }),
        span('00000000000000c3', '00000000000000a1', 'late', 'SPAN_KIND_INTERNAL', 70, 90),
      ]),
      res('payment', [
        span('00000000000000b1', '00000000000000c1', 'POST /payments', 'SPAN_KIND_SERVER', 12, 58),
        span('00000000000000b2', '00000000000000b1', 'publish payment.completed', 'SPAN_KIND_PRODUCER', 40, 50),
      ]),
      res('notification', [span('00000000000000d1', '00000000000000b2', 'process payment.completed', 'SPAN_KIND_CONSUMER', 80, 95)]),
    ] } });
    assert.equal(m.traceId, tid);
    assert.equal(m.spans.length, 7);
    assert.deepEqual(m.spans.map((sp) => [sp.name, sp.depth]), [
      ['POST /api/checkout', 0], ['POST /verify', 1], ['POST /payments', 1], ['POST /payments', 2],
      ['publish payment.completed', 3], ['process payment.completed', 4], ['late', 1]]);
    const by = (svc, name) => m.spans.find((sp) => sp.service === svc && sp.name === name);
    const root = by('gateway', 'POST /api/checkout');
    // Children cover 5-60 and 70-90: 75 of the root's 100 ms.
    assert.equal(Math.round(root.selfTime), 25);
    assert.equal(m.errors, 1);
    // Walking back from the root's end: late (70-90), then POST /payments (10-60), then POST /verify (5-20).
    assert.deepEqual(m.spans.filter((sp) => sp.critical).map((sp) => `${sp.service} ${sp.name}`).sort(), [
      'gateway POST /api/checkout', 'gateway POST /payments', 'gateway POST /verify', 'gateway late',
      'payment POST /payments', 'payment publish payment.completed'].sort());
    assert.deepEqual(m.hops.map((hp) => [hp.from.spanId, hp.to.spanId, hp.via, hp.traceparent]), [
      ['00000000000000c1', '00000000000000b1', 'http', `00-${tid}-00000000000000c1-01`],
      ['00000000000000b2', '00000000000000d1', 'amqp', `00-${tid}-00000000000000b2-01`]]);
    assert.equal(Math.round(m.hops[1].wait), 40, 'publish started at 40 ms, processing at 80 ms');
    assert.equal(root.label, 'A');
    assert.equal(by('payment', 'POST /payments').label, 'C');
    assert.equal(by('notification', 'process payment.completed').label, 'F');
  },

  // Names, attributes and services from a trace are text, never markup.
  async escaping(browser) {
    const otlp = process.env.TRACELAB_OTLP_URL;
    assert.ok(otlp, 'TRACELAB_OTLP_URL is set (the collector\'s OTLP/HTTP base URL)');
    const traceId = randomBytes(16).toString('hex');
    const root = randomBytes(8).toString('hex');
    const child = randomBytes(8).toString('hex');
    const now = BigInt(Date.now()) * 1000000n;
    const evil = '<img src=x onerror="window.__owned=1">"&\'';
    const span = (id, parent, name, kind) => ({
      traceId, spanId: id, parentSpanId: parent, name, kind,
      startTimeUnixNano: String(now), endTimeUnixNano: String(now + 5000000n),
      attributes: [{ key: 'note', value: { stringValue: evil } }],
    });
    const body = { resourceSpans: [
      { resource: { attributes: [{ key: 'service.name', value: { stringValue: 'svc<b>"x' } }] }, scopeSpans: [{ spans: [span(root, '', `root ${evil}`, 2)] }] },
      { resource: { attributes: [{ key: 'service.name', value: { stringValue: '<i>other</i>' } }] }, scopeSpans: [{ spans: [span(child, root, `child ${evil}`, 2)] }] },
    ] };
    const res = await fetch(`${otlp.replace(/\/$/, '')}/v1/traces`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(res.status, 200, await res.text());
    await until('the hostile trace', async () => (await traceSpans(traceId)).length === 2);
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/trace/${traceId}`);
    await until('2 rows', async () => (await rows(page).count()) === 2);
    await page.click(`.wf-row[data-span-id="${child}"]`);
    await page.locator('.span-detail').waitFor();
    assert.equal(await page.locator('.wf-row[data-span-id="' + child + '"]').getAttribute('data-name'), `child ${evil}`);
    assert.equal(await page.locator('.wf-row[data-span-id="' + child + '"] .name').textContent(), `child ${evil}`);
    assert.equal(await page.locator('.hops tbody tr td').first().locator('.svc').textContent(), 'svc<b>"x');
    assert.equal(await page.locator('main img, main b, main i').count(), 0, 'no markup from the trace');
    assert.equal(await page.evaluate(() => window.__owned), undefined);
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // The language toggle switches every text and is remembered.
  async language(browser) {
    const { page, errors } = await openPage(browser, { lang: 'en' });
    await page.goto(`${consoleUrl()}/#/traces`);
    await page.locator('nav a[href="#/lab"]', { hasText: 'Lab' }).waitFor();
    await page.click('#lang');
    await page.locator('nav a[href="#/lab"]', { hasText: 'ラボ' }).waitFor();
    await page.locator('h1', { hasText: 'トレース検索' }).waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.lang), 'ja');
    assert.equal(await page.locator('a.skip').textContent(), '本文へ移動');
    assert.equal(await page.locator('#nav').getAttribute('aria-label'), '画面');
    await page.reload();
    await page.locator('nav a[href="#/traces"]', { hasText: 'トレース検索' }).waitFor();
    await page.click('#lang');
    await page.locator('nav a[href="#/traces"]', { hasText: 'Traces' }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem('tracelab.lang')), 'en');
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // A lesson query from the examples finds the checkouts.
  async traces(browser) {
    const a = await api('POST', '/api/actions/checkout', {});
    await wholeCheckout(a.trace_id);
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/traces`);
    await page.locator('.examples button', { hasText: /^checkouts$/ }).click();
    await page.locator(`.trace-list tr[data-trace-id="${a.trace_id}"]`).waitFor();
    const row = page.locator(`.trace-list tr[data-trace-id="${a.trace_id}"] td`);
    assert.match(await row.nth(0).textContent(), /gateway.*POST \/api\/checkout/);
    assert.ok(Number(await row.nth(3).textContent()) >= CHECKOUT.length, 'span count');
    assert.equal(await row.nth(4).textContent(), '0');
    assert.ok(page.url().includes('q=%7B'), 'the query is in the address, so it can be shared');
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // The service map shows the services, Postgres, RabbitMQ and the provider.
  async map(browser) {
    const a = await api('POST', '/api/actions/checkout', {});
    await wholeCheckout(a.trace_id);
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/lab`);
    for (const n of ['gateway', 'auth', 'payment', 'payment-provider', 'postgresql', 'rabbitmq', 'notification']) {
      await page.locator(`svg.map .node[data-node="${n}"]`).waitFor();
    }
    for (const [from, to] of [['gateway', 'auth'], ['gateway', 'payment'], ['payment', 'payment-provider'], ['payment', 'postgresql'], ['payment', 'rabbitmq'], ['rabbitmq', 'notification']]) {
      await page.locator(`svg.map .edge[data-from="${from}"][data-to="${to}"]`).waitFor();
    }
    const lab = await api('GET', '/api/lab');
    await until('a health row per service', async () => (await page.locator('.health-table tbody tr').count()) === lab.services.length);
    assert.equal(await page.locator('.health-table td.ok').count(), lab.services.length, 'every service healthy');
    // Natively every process's resident memory is shown, and their sum.
    assert.ok(lab.memory && lab.memory.total_kib > lab.memory.services_kib && lab.memory.services_kib > 0, JSON.stringify(lab.memory));
    assert.equal(await page.locator('.health-table td.memory', { hasText: /^\d+\.\d MiB$/ }).count(), lab.services.length, 'a memory figure per service');
    assert.match(await page.locator('.memory-total').textContent(), /^Resident memory: \d+\.\d MiB in all \(services \d+\.\d MiB, collector \d+\.\d MiB, tracelab up \d+\.\d MiB\)\.$/);
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // A good and a declined checkout side by side: the differences are marked.
  async compare(browser) {
    const good = await api('POST', '/api/actions/checkout', {});
    const bad = await api('POST', '/api/actions/declined-checkout', {});
    await wholeCheckout(good.trace_id);
    // Whole: the provider's answer, the error it became, and the gateway's root.
    const isError = (x) => x.status?.code === 'STATUS_CODE_ERROR' || x.status?.code === 2;
    await until('the whole declined checkout', async () => {
      const s = await traceSpans(bad.trace_id);
      return s.some((x) => x.service === 'payment-provider') && s.some(isError) && s.some((x) => !x.parentSpanId) ? s : null;
    });
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/compare?a=${good.trace_id}&b=${bad.trace_id}`);
    const count = page.locator('.diff-count');
    await count.waitFor();
    assert.ok(Number(await count.getAttribute('data-count')) > 0, 'a declined checkout differs');
    assert.ok(await page.locator('.compare-grid .wf-row.diff-status, .compare-grid .wf-row.diff-shape').count() > 0);
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // Set a fault from the page, see it counting down, clear it.
  async faults(browser) {
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/faults`);
    await page.selectOption('#fault-point', 'payment.provider_call');
    await page.selectOption('#fault-kind', 'latency');
    await page.fill('#fault-params', '{"ms": 700}');
    await page.fill('#fault-for', '2m');
    await page.click('.fault-form button[type="submit"]');
    const row = page.locator('.active-faults tr[data-point="payment.provider_call"]');
    await row.waitFor();
    assert.match(await row.locator('td.expires').textContent(), /^in [12]:\d\d$/);
    const held = await api('GET', '/api/faults');
    const fault = held.services.flatMap((s) => s.faults).find((f) => f.point === 'payment.provider_call');
    assert.equal(fault.kind, 'latency');
    assert.equal(fault.ms, 700);
    await row.locator('button.clear').click();
    await page.locator('.active-faults [data-count="0"]').waitFor();
    const after = await api('GET', '/api/faults');
    assert.equal(after.services.flatMap((s) => s.faults).length, 0);
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // Start an exercise from the page, answer wrongly, then rightly.
  async exercise(browser) {
    const id = 'provider-slow';
    const scenario = await api('GET', `/api/scenarios/${id}`);
    const a = await api('POST', '/api/actions/checkout', {});
    await wholeCheckout(a.trace_id);
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/exercise`);
    await page.locator(`#ex-scenario option[value="${id}"]`).waitFor({ state: 'attached' });
    await page.selectOption('#ex-scenario', id);
    await page.fill('#ex-rate', '0');
    await page.click('button[data-exercise="start"]');
    await page.locator('.timer').waitFor();
    await page.locator('.symptom p').first().waitFor();
    await page.click('button[data-exercise="hint"]');
    await page.locator('.hints li').first().waitFor();
    await page.locator(`#ans-service option[value="${scenario.answer.service}"]`).waitFor({ state: 'attached' });
    const wrong = scenario.answer.service === 'auth' ? 'search' : 'auth';
    await page.selectOption('#ans-service', wrong);
    await page.click('button[data-exercise="answer"]');
    await page.locator('.grade [data-grade="wrong"]').waitFor();
    await page.selectOption('#ans-service', scenario.answer.service);
    await page.fill('#ans-operation', scenario.answer.operation);
    await page.fill('#ans-trace', a.trace_id);
    await page.click('button[data-exercise="answer"]');
    await page.locator('.solution [data-grade="correct"]').waitFor();
    const href = await page.locator('.solution a.query-link').getAttribute('href');
    assert.equal(href, `#/traces?q=${encodeURIComponent(scenario.query)}&range=1h`);
    await page.locator('.history table[data-count]').waitFor();
    const status = await api('GET', '/api/exercise');
    assert.equal(status.exercise, null, 'the exercise ended when solved');
    await page.click('.solution a.query-link');
    await page.locator('.results .result-count').waitFor();
    assert.equal(await page.inputValue('#traceql'), scenario.query);
    assert.deepEqual(errors, []);
    await page.context().close();
  },
  // The trace-id box opens a trace, and says what is wrong with a malformed
  // id; the tag search (logfmt tags, a duration window) finds a checkout
  // and the result count is text on the page.
  async traceSearch(browser) {
    const a = await api('POST', '/api/actions/checkout', {});
    await wholeCheckout(a.trace_id);
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/traces`);
    await page.fill('#open-trace', 'not-a-trace-id');
    await page.press('#open-trace', 'Enter');
    await page.locator('#open-trace-msg', { hasText: 'A trace id is 32 hexadecimal digits.' }).waitFor();
    assert.ok(page.url().endsWith('#/traces'), 'a malformed id opens nothing');
    for (const title of ['errors below a server span', 'the deepest error of each cascade', 'calls repeated in one trace']) {
      await page.locator('.examples button', { hasText: title }).waitFor();
    }
    assert.deepEqual(await page.locator('#range option').evaluateAll((os) => os.map((o) => o.value)), ['2m', '5m', '15m', '1h', '6h', '24h']);
    await page.selectOption('#range', '2m');
    await page.selectOption('#limit', '500');
    await page.fill('#tags', 'service.name=payment-provider');
    await page.fill('#minDuration', '1ms');
    await page.fill('#maxDuration', '60s');
    await page.click('form.search button[type="submit"]');
    await page.locator(`.trace-list tr[data-trace-id="${a.trace_id}"]`).waitFor();
    assert.match(page.url(), /tags=service\.name%3Dpayment-provider&minDuration=1ms&maxDuration=60s&range=2m&limit=500$/);
    const shownCount = Number(await page.locator('.result-count').getAttribute('data-count'));
    assert.equal(await page.locator('.trace-list tbody tr').count(), shownCount);
    assert.match(await page.locator('.result-count').textContent(), new RegExp(`^${shownCount} traces found`));
    // Only traces through the provider: a search has none.
    const s = await api('POST', '/api/actions/search', {});
    await until('the search trace', async () => (await traceSpans(s.trace_id)).length > 0);
    await page.click('form.search button[type="submit"]');
    await page.locator(`.trace-list tr[data-trace-id="${a.trace_id}"]`).waitFor();
    assert.equal(await page.locator(`.trace-list tr[data-trace-id="${s.trace_id}"]`).count(), 0, 'the tag filters');
    await page.fill('#open-trace', ` ${a.trace_id.toUpperCase()} `);
    await page.press('#open-trace', 'Enter');
    await until('the trace view', async () => page.url().endsWith(`#/trace/${a.trace_id}`));
    await page.locator(`.wf-row[data-span-id]`).first().waitFor();
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // The dead-letter queue on the Lab view: a checkout's event parked by a
  // real fault is listed with its reason and order; "replay all" keeps the
  // poison message; replaying it by its button, once the fault is cleared,
  // empties the queue and notification processes it.
  async dlq(browser) {
    await api('PUT', '/api/faults', { point: 'notification.consume', kind: 'dead_letter', for: '2m' });
    const a = await api('POST', '/api/actions/checkout', {});
    const parked = await until('the parked event', async () => {
      const d = await api('GET', '/api/dlq');
      return d.messages.find((m) => m.event?.order_id === a.body.order_id);
    });
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/lab`);
    const row = page.locator(`.dlq-table tr[data-message-id="${parked.message_id}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), new RegExp(a.body.order_id));
    assert.match(await row.textContent(), /template failed to render/);
    assert.equal(await row.locator('a.trace-link').getAttribute('href'), `#/trace/${a.trace_id}`);
    await page.click('button[data-dlq="replay-all"]');
    await page.locator('.dlq-msg', { hasText: 'Replayed 0; left in the queue: 1 poison' }).waitFor();
    await api('DELETE', '/api/faults');
    const before = (await api('GET', '/api/lab')).services.find((x) => x.name === 'notification').health.processed;
    await row.locator(`button[data-replay="${parked.message_id}"]`).click();
    await page.locator('.dlq-msg', { hasText: 'Replayed 1;' }).waitFor();
    await page.locator('.dlq-count[data-count="0"]').waitFor();
    assert.equal((await api('GET', '/api/dlq')).count, 0);
    await until('notification processed the replayed event', async () =>
      (await api('GET', '/api/lab')).services.find((x) => x.name === 'notification').health.processed > before);
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // The load panel sends mix and duration; the health table shows a
  // restarted service and, by keyboard, the export counters behind "dropped".
  async labPanels(browser) {
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/lab`);
    await page.fill('#load-rate', '1');
    await page.fill('#load-mix', 'checkout=1,order=2');
    await page.fill('#load-duration', '30s');
    await page.click('button[data-load="start"]');
    await page.locator('.load-status [data-running="true"]').waitFor();
    const load = await api('GET', '/api/load');
    assert.equal(load.config.duration, '30s');
    assert.match(load.config.mix, /order=2/);
    assert.match(await page.locator('.load-status [data-running="true"]').textContent(), /order=2.*for 30s/);
    await page.click('button[data-load="stop"]');
    await page.locator('.load-status [data-running="false"]').waitFor();

    const summary = page.locator('.health-table tr[data-service="payment"] td.dropped summary');
    const counters = page.locator('.health-table tr[data-service="payment"] td.dropped dl.counters');
    assert.equal(await counters.isVisible(), false, 'closed at first');
    await summary.focus();
    await page.keyboard.press('Enter');
    await counters.waitFor({ state: 'visible' });
    // Still open, and still focused, after the table's next refresh.
    const drawn = await page.locator('.health-table').elementHandle();
    await until('the health table redrawn', async () => !(await drawn.evaluate((el) => el.isConnected)), 15000);
    assert.equal(await counters.isVisible(), true);
    assert.equal(await page.evaluate(() => document.activeElement?.closest('tr')?.dataset.service), 'payment');
    const tel = (await api('GET', '/api/lab')).services.find((x) => x.name === 'payment').health.telemetry;
    assert.deepEqual(await counters.locator('dt').allTextContents(), Object.keys(tel));

    const lab = await api('GET', '/api/lab');
    const search = lab.services.find((x) => x.name === 'search');
    assert.equal(search.process.restarts, 0);
    await page.locator('.health-table tr[data-service="search"] td.restarts', { hasText: /^0$/ }).waitFor();
    process.kill(search.process.pid, 'SIGKILL');
    const restarted = await until('search restarted', async () => {
      const s = (await api('GET', '/api/lab')).services.find((x) => x.name === 'search');
      return s.process.restarts === 1 && s.process.running && s.health_status === 200 ? s : null;
    }, 30000);
    const cell = page.locator('.health-table tr[data-service="search"] td.restarts', { hasText: /^1$/ });
    await cell.waitFor();
    assert.match(await page.locator('.health-table tr[data-service="search"] td.process').textContent(), new RegExp(`${restarted.process.pid}`));
    assert.match(await page.locator('.health-table tr[data-service="search"] td.process .exit').textContent(), /^last exit: /);
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // An exercise driven from elsewhere (the API, as the CLI does) shows on
  // the open page: a hint, an answer, and the reveal. Every lab service can
  // be answered, and the faults view peeks at the hidden faults only behind
  // a spoiler label.
  async exerciseElsewhere(browser) {
    const id = 'incident-invisible-search';
    const scenario = await api('GET', `/api/scenarios/${id}`);
    await api('POST', '/api/exercise', { scenario: id, load: false });
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/exercise`);
    await page.locator('.timer').waitFor();
    const services = (await api('GET', '/api/lab')).services.map((x) => x.name);
    for (const name of services) await page.locator(`#ans-service option[value="${name}"]`).waitFor({ state: 'attached' });
    assert.equal(await page.locator('#ans-operation').getAttribute('list'), 'ans-operations', 'the operation can be typed or chosen');
    assert.equal(await page.locator('.hints li').count(), 0);
    await api('POST', '/api/exercise/hint');
    await page.locator('.hints li').first().waitFor();
    assert.equal(await page.locator('.hints li').first().textContent(), scenario.hints[0].en);
    const wrong = scenario.answer.service === 'auth' ? 'gateway' : 'auth';
    await api('POST', '/api/exercise/answer', { service: wrong });
    await page.locator('.attempts li[data-grade="wrong"]').waitFor();

    // The faults view: hidden, then peeked at behind a spoiler banner.
    const faults = await openPage(browser);
    await faults.page.goto(`${consoleUrl()}/#/faults`);
    await faults.page.locator('.active-faults [data-hidden]').waitFor();
    await faults.page.click('button[data-peek="on"]');
    await faults.page.locator('.active-faults .spoiler').waitFor();
    const peeked = await api('GET', '/api/faults?peek=true');
    assert.equal(await faults.page.locator('.active-faults table.peeked tbody tr').count(), peeked.count);
    assert.deepEqual(faults.errors, []);
    await faults.page.context().close();

    await api('POST', '/api/exercise/reveal');
    const ended = page.locator('.ended-elsewhere .solution');
    await ended.waitFor();
    const cause = `Cause: ${scenario.answer.service}${scenario.answer.operation ? ` / ${scenario.answer.operation}` : ''}`;
    assert.equal(await ended.locator('p', { hasText: /^Cause: / }).textContent(), cause);
    assert.equal(await ended.locator('a.query-link').getAttribute('href'), `#/traces?q=${encodeURIComponent(scenario.query)}&range=1h`);
    await page.locator('button[data-exercise="start"]').waitFor();
    // A seed picks the exercise: the same seed, the same scenario.
    await page.fill('#ex-seed', '42');
    await page.fill('#ex-rate', '0');
    await page.click('button[data-exercise="start"]');
    await page.locator('.running', { hasText: 'seed 42' }).waitFor();
    assert.equal((await api('GET', '/api/exercise')).exercise.seed, 42);
    await api('POST', '/api/exercise/reveal');
    await page.locator('.ended-elsewhere .solution').waitFor();
    assert.deepEqual(errors, []);
    await page.context().close();
  },

  // The faults form's lifetime defaults to the CLI's 15m; clearing one
  // service's faults leaves the others'; a scenario card shows its
  // spoilers behind a "show".
  async faultsMore(browser) {
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/faults`);
    assert.equal(await page.inputValue('#fault-for'), '15m');
    await api('PUT', '/api/faults', { point: 'payment.provider_call', kind: 'latency', ms: 300, for: '2m' });
    await api('PUT', '/api/faults', { point: 'auth.verify', kind: 'latency', ms: 300, for: '2m' });
    await page.locator('.active-faults table[data-count="2"]').waitFor();
    await page.locator('#clear-service option[value="payment"]').waitFor({ state: 'attached' });
    await page.selectOption('#clear-service', 'payment');
    await page.click('button[data-clear="service"]');
    await page.locator('.active-faults table[data-count="1"]').waitFor();
    const left = (await api('GET', '/api/faults')).services.flatMap((x) => x.faults.map((f) => f.point));
    assert.deepEqual(left, ['auth.verify']);
    await api('DELETE', '/api/faults');

    const id = 'provider-slow';
    const scenario = await api('GET', `/api/scenarios/${id}`);
    const card = page.locator(`.card[data-scenario="${id}"]`);
    assert.equal(await card.locator('.spoiler-body').isVisible(), false, 'closed until asked');
    await card.locator('details.spoiler summary').click();
    await card.locator('.spoiler-body .answer').waitFor();
    assert.match(await card.locator('.spoiler-body .answer').textContent(), new RegExp(`${scenario.answer.service} / ${scenario.answer.operation}`));
    assert.equal(await card.locator('.spoiler-body li').count(), scenario.hints.length);
    const link = card.locator('.spoiler-body a.query-link');
    assert.equal(await link.getAttribute('href'), `#/traces?q=${encodeURIComponent(scenario.query)}&range=1h`);
    await link.click();
    await page.locator('.results .result-count').waitFor();
    assert.equal(await page.inputValue('#traceql'), scenario.query);
    assert.deepEqual(errors, []);
    await page.context().close();
  },
  // Switch to the lesson's sampling policy from the page, send traffic:
  // the head counts show dropped roots and the collector's tail counts show
  // dropped traces once their decision wait is over; switch back.
  async sampling(browser) {
    const { page, errors } = await openPage(browser);
    await page.goto(`${consoleUrl()}/#/sampling`);
    await page.locator('.policy-now[data-policy="lab"]').waitFor();
    await page.locator('.tail-table').waitFor();
    const num = async (sel, attr) => Number(await page.locator(sel).getAttribute(attr));
    try {
      await page.click('button.policy-button[data-policy="lesson"]');
      await page.locator('.policy-now[data-policy="lesson"]').waitFor();
      assert.equal(await page.locator('button.policy-button[data-policy="lesson"]').getAttribute('aria-pressed'), 'true');
      const view = await api('GET', '/api/sampling');
      assert.equal(view.policy, 'lesson');
      assert.ok(view.head.services.every((s) => s.report.head_based.rate === 0.1), 'every service has the 10% head rate');
      assert.equal(view.tail.report.tail_based.policies.find((p) => p.name === 'default').probabilistic.sampling_percentage, 5);
      // The tail counts start again with the new policy.
      await page.locator('.tail-totals [data-dropped="0"]').waitFor();
      const notSampledBefore = await num('tfoot [data-not-sampled]', 'data-not-sampled');
      // Two bursts: about 130 roots at the gateway, so some pass the 10% head rate.
      for (let i = 0; i < 2; i++) {
        // Cleared first, so the wait below is for this burst's answer.
        await page.evaluate(() => { document.querySelector('p.status').textContent = ''; });
        await page.click('button[data-action="burst"]');
        await page.locator('p.status', { hasText: 'succeeded' }).waitFor({ timeout: 60000 });
      }
      await page.waitForFunction((before) => Number(document.querySelector('tfoot [data-not-sampled]')?.dataset.notSampled) > before,
        notSampledBefore, { timeout: 20000 });
      const notSampled = await num('tfoot [data-not-sampled]', 'data-not-sampled');
      const sampled = await num('tfoot [data-sampled]', 'data-sampled');
      assert.ok(notSampled > notSampledBefore, 'roots dropped by head sampling');
      // A drop is decided decision_wait_ms (10 s) after a trace's first span.
      await page.waitForFunction(() => Number(document.querySelector('.tail-totals [data-dropped]')?.dataset.dropped) > 0
        && Number(document.querySelector('.tail-table tr[data-policy="default"] [data-not-kept]')?.dataset.notKept) > 0, null, { timeout: 40000 });
      const dropped = await num('.tail-totals [data-dropped]', 'data-dropped');
      const kept = await num('.tail-totals [data-kept]', 'data-kept');
      const defaultNotKept = await num('.tail-table tr[data-policy="default"] [data-not-kept]', 'data-not-kept');
      assert.ok(dropped > 0 && defaultNotKept >= dropped, `dropped ${dropped}, default did not keep ${defaultNotKept}`);
      console.log(`     lesson policy: head roots kept ${sampled}, dropped ${notSampled}; tail traces kept ${kept}, dropped ${dropped}`);
      // And back to the lab's policy: every trace kept, counts from zero.
      await page.click('button.policy-button[data-policy="lab"]');
      await page.locator('.policy-now[data-policy="lab"]').waitFor();
      await page.locator('.tail-totals [data-dropped="0"]').waitFor();
      assert.equal((await api('GET', '/api/sampling')).policy, 'lab');
    } finally {
      // Whatever happened above, the other cases need the lab's policy.
      await api('PUT', '/api/sampling', { policy: 'lab' });
    }
    assert.deepEqual(errors, []);
    await page.context().close();
  },
};

const wanted = process.argv.slice(2);
const names = wanted.length ? wanted : Object.keys(CASES);
const browser = await launch();
let failed = 0;
for (const name of names) {
  const started = Date.now();
  try {
    if (!CASES[name]) throw new Error(`no case ${name}`);
    await CASES[name](browser);
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name} (${Date.now() - started} ms)\n${e.stack || e}`);
  }
}
await browser.close();
console.log(`${names.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
