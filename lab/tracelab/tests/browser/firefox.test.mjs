// The web console in Firefox (Debian's firefox-esr, driven by puppeteer-core
// over WebDriver BiDi: no browser download) against a real lab, started by
// lab/tracelab/tests/console_firefox.rs, which passes its URL in
// TRACELAB_CONSOLE_URL. A smoke test: every view of the navigation loads
// and draws without a console error or an uncaught exception; "checkout" on
// the Lab view answers with a link, and the link's waterfall shows every
// span of the trace, nested as the trace API says. The full cases run in
// Chromium (console.test.mjs).
//
//   TRACELAB_CONSOLE_URL=http://127.0.0.1:7070 node firefox.test.mjs
import assert from 'node:assert/strict';
import puppeteer from 'puppeteer-core';
import { api, until, traceSpans, consoleUrl } from './harness.mjs';

export const FIREFOX = process.env.TRACELAB_FIREFOX || '/usr/bin/firefox-esr';

/** Waits for `selector` on `page`, saying what was awaited when it times out. */
async function waitFor(page, selector, what, timeout = 20000) {
  try {
    return await page.waitForSelector(selector, { timeout });
  } catch (e) {
    throw new Error(`${what}: ${selector} did not appear within ${timeout} ms (${e.message})`);
  }
}

/**
 * A fresh page whose console errors, uncaught exceptions and failed
 * requests are collected in `errors`. As in Chromium, one message is
 * expected: the 404 the trace view may get while a trace is still on its
 * way to the collector.
 */
async function openPage(browser) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1400, height: 900 });
  await page.evaluateOnNewDocument(() => {
    if (!localStorage.getItem('tracelab.lang')) localStorage.setItem('tracelab.lang', 'en');
  });
  const errors = [];
  const tempoTrace = /\/api\/tempo\/api\/v2\/traces\/[0-9a-f]{32}/;
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const where = m.location()?.url || '';
    if (/404/.test(m.text()) && (tempoTrace.test(where) || tempoTrace.test(m.text()))) return;
    errors.push(`console error: ${m.text()} (${where})`);
  });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message ?? e}`));
  page.on('requestfailed', (r) => {
    const why = r.failure()?.errorText || '';
    // A request cut short because the view was left is not a failure.
    if (!/ABORTED/i.test(why)) errors.push(`request failed: ${r.method()} ${r.url()} ${why}`);
  });
  return { page, context, errors };
}

/** Fails with every error the page logged, and with any error box a view drew. */
async function assertClean(page, errors, view) {
  const boxes = await page.$$eval('main p.error', (ps) => ps.map((p) => p.textContent));
  assert.deepEqual(boxes, [], `${view}: the view shows an error`);
  assert.deepEqual(errors, [], `${view}: the page logged errors`);
}

/** Goes to a view by its hash and waits until the router drew it. */
async function show(page, hash, path) {
  await page.goto(`${consoleUrl()}/${hash}`);
  await page.waitForFunction((p) => document.querySelector('main')?.dataset.view === p, { timeout: 10000 }, path);
}

/** What each view of the navigation draws once its data is in. */
const READY = {
  lab: '.health-table tbody tr',
  traces: '.examples button',
  compare: 'main h1',
  faults: '.active-faults [data-count]',
  exercise: '#ex-scenario option',
};

async function main() {
  const t0 = Date.now();
  let browser;
  try {
    browser = await puppeteer.launch({ browser: 'firefox', executablePath: FIREFOX, headless: true });
  } catch (e) {
    throw new Error(`cannot start Firefox at ${FIREFOX} (apt-get install -y firefox-esr, or set TRACELAB_FIREFOX): ${e.message}`);
  }
  console.log(`# ${await browser.version()} via WebDriver BiDi`);
  let passed = 0;
  const ok = (name) => { passed += 1; console.log(`ok ${passed} - ${name}`); };
  try {
    const { page, context, errors } = await openPage(browser);

    // Lab: press "checkout", follow the link to the waterfall.
    await show(page, '#/lab', 'lab');
    const lab = await api('GET', '/api/lab');
    await until('a health row per service', async () =>
      (await page.$$('.health-table tbody tr')).length === lab.services.length);
    await waitFor(page, 'button[data-action="checkout"]', 'the checkout button');
    await page.click('button[data-action="checkout"]');
    const link = await waitFor(page, '.action-out a.trace-link', 'the link to the checkout\'s trace');
    const traceId = await page.$eval('.action-result', (e) => e.dataset.traceId);
    assert.match(traceId, /^[0-9a-f]{32}$/);
    assert.equal(await link.evaluate((a) => a.getAttribute('href')), `/#/trace/${traceId}`);
    await assertClean(page, errors, 'lab');
    ok('lab: checkout answers with a link to its trace');

    await link.click();
    await page.waitForFunction(() => document.querySelector('main')?.dataset.view === 'trace', { timeout: 10000 });
    const spans = await until(`the whole checkout trace ${traceId}`, async () => {
      const s = await traceSpans(traceId);
      return s.some((x) => x.service === 'notification' && x.name === 'INSERT notifications') ? s : null;
    });
    await until(`${spans.length} span rows in the waterfall`, async () =>
      (await page.$$('.wf-rows .wf-row')).length === spans.length);
    const rows = await page.$$eval('.wf-rows .wf-row', (els) => els.map((e) => ({ ...e.dataset })));
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const depth = new Map();
    for (const r of rows) {
      const s = byId.get(r.spanId);
      assert.ok(s, `row ${r.spanId} is a span of the trace`);
      assert.equal(r.name, s.name);
      assert.equal(r.service, s.service);
      assert.equal(r.parentId, s.parentSpanId, `${s.name}: parent`);
      const want = s.parentSpanId ? depth.get(s.parentSpanId) + 1 : 0;
      assert.equal(Number(r.depth), want, `${s.service} ${s.name} is drawn one level under its parent`);
      depth.set(r.spanId, want);
    }
    await assertClean(page, errors, 'trace');
    ok(`trace: the waterfall shows all ${spans.length} spans, nested as the trace API says`);

    // Every view of the navigation, read from the page itself (a view
    // added later is loaded too).
    const declined = await api('POST', '/api/actions/declined-checkout', {});
    const views = await page.$$eval('#nav a', (as) => as.map((a) => a.getAttribute('href').replace(/^#\//, '')));
    assert.ok(views.length >= 5, `the navigation lists the views: ${views}`);
    for (const view of views) {
      const hash = view === 'compare' ? `#/compare?a=${traceId}&b=${declined.trace_id}` : `#/${view}`;
      await show(page, hash, view);
      if (view === 'compare') {
        await until('the declined checkout in Tempo', async () => (await traceSpans(declined.trace_id)).length > 0);
        await waitFor(page, '.diff-count', 'the comparison');
      } else {
        await waitFor(page, READY[view] || 'main h1', `the ${view} view`);
      }
      if (view === 'traces') {
        // The lab guide's "checkouts" query finds the checkout just made.
        const clicked = await page.$$eval('.examples button', (bs) => {
          const b = bs.find((x) => x.textContent.trim() === 'checkouts');
          b?.click();
          return Boolean(b);
        });
        assert.ok(clicked, 'the traces view offers the "checkouts" example');
        await waitFor(page, `.trace-list tr[data-trace-id="${traceId}"]`, 'the checkout in the search results');
      }
      // Let the view's first refresh run (the lab view polls).
      await new Promise((r) => setTimeout(r, 1500));
      await assertClean(page, errors, view);
      ok(`${view}: loads without errors`);
    }
    await context.close();
  } finally {
    await browser.close();
  }
  console.log(`# ${passed} passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

main().catch((e) => {
  console.error(`not ok - ${e.stack || e.message}`);
  process.exit(1);
});
