// Figures of the web console on a running lab (a benchmark: it prints, it
// asserts nothing). Start a lab with its console first (`tracelab up`), then
//
//   TRACELAB_CONSOLE_URL=http://127.0.0.1:7070 TRACELAB_OTLP_URL=http://127.0.0.1:4318 node bench.mjs
//
// It prints: the page's own weight (every file the page loads from the
// console, the API excluded), the first contentful paint of each view, the
// time to draw a 500-span trace (sent to the collector as one synthetic
// OTLP/JSON request), and a checkout pressed on the page to its complete
// waterfall on screen.
import { randomBytes } from 'node:crypto';
import { launch, openPage, consoleUrl, api, until, traceSpans } from './harness.mjs';

const RUNS = Number(process.env.BENCH_RUNS || 5);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (ms) => `${ms.toFixed(0)} ms`;

/** A trace of `n` spans, a few levels deep, in one OTLP/JSON request; returns its id. */
async function syntheticTrace(n) {
  const otlp = process.env.TRACELAB_OTLP_URL;
  if (!otlp) throw new Error('TRACELAB_OTLP_URL is not set (the collector\'s OTLP/HTTP base URL)');
  const traceId = randomBytes(16).toString('hex');
  const now = BigInt(Date.now()) * 1000000n;
  const services = ['gateway', 'auth', 'payment', 'payment-provider', 'notification', 'search'];
  const spans = services.map(() => []);
  const ids = [];
  for (let i = 0; i < n; i++) {
    const id = randomBytes(8).toString('hex');
    ids.push(id);
    const parent = i === 0 ? '' : ids[Math.floor((i - 1) / 4)];
    const start = now + BigInt(i) * 200000n;
    spans[i % services.length].push({
      traceId, spanId: id, parentSpanId: parent, name: `operation ${i}`, kind: i % 5 + 1,
      startTimeUnixNano: String(start), endTimeUnixNano: String(start + BigInt(1000000 + (n - i) * 150000)),
      attributes: [{ key: 'bench.index', value: { intValue: String(i) } }],
      status: i % 97 === 0 ? { code: 2, message: 'synthetic error' } : {},
    });
  }
  const body = {
    resourceSpans: services.map((s, k) => ({
      resource: { attributes: [{ key: 'service.name', value: { stringValue: s } }] },
      scopeSpans: [{ scope: { name: 'bench' }, spans: spans[k] }],
    })),
  };
  const res = await fetch(`${otlp.replace(/\/$/, '')}/v1/traces`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`OTLP export: ${res.status} ${await res.text()}`);
  await until(`the synthetic trace with ${n} spans`, async () => (await traceSpans(traceId)).length === n);
  return traceId;
}

const browser = await launch();
const base = consoleUrl();

// The page's own weight.
{
  const { page } = await openPage(browser);
  const files = new Map();
  const reads = [];
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.origin === base && !u.pathname.startsWith('/api/')) reads.push(r.body().then((b) => files.set(u.pathname, b.length), () => null));
  });
  await page.goto(`${base}/#/lab`, { waitUntil: 'networkidle' });
  for (const v of ['traces', 'faults', 'exercise', 'compare']) await page.goto(`${base}/#/${v}`, { waitUntil: 'networkidle' });
  await Promise.all(reads);
  const total = [...files.values()].reduce((a, b) => a + b, 0);
  console.log(`page weight: ${(total / 1024).toFixed(1)} KB in ${files.size} files (uncompressed)`);
  await page.context().close();
}

// First contentful paint of each view (a fresh context each run: nothing cached).
const a = await api('POST', '/api/actions/checkout', {});
await until('the checkout trace', async () => (await traceSpans(a.trace_id)).some((s) => s.name === 'INSERT notifications'));
for (const view of ['lab', 'traces', `trace/${a.trace_id}`, 'faults', 'exercise', `compare?a=${a.trace_id}&b=${a.trace_id}`]) {
  const paints = [];
  for (let i = 0; i < RUNS; i++) {
    const { page, context } = await openPage(browser);
    await page.goto(`${base}/#/${view}`);
    paints.push(await page.evaluate(() => new Promise((resolve) => {
      new PerformanceObserver((list) => {
        const fcp = list.getEntries().find((e) => e.name === 'first-contentful-paint');
        if (fcp) resolve(fcp.startTime);
      }).observe({ type: 'paint', buffered: true });
    })));
    await context.close();
  }
  console.log(`first contentful paint #/${view.split('?')[0].replace(/[0-9a-f]{32}/, '<id>')}: median ${fmt(median(paints))} (${paints.map((p) => p.toFixed(0)).join(', ')})`);
}

// A 500-span trace drawn.
{
  const id = await syntheticTrace(500);
  const draws = [];
  const toScreen = [];
  for (let i = 0; i < RUNS; i++) {
    const { page, context } = await openPage(browser);
    const t0 = Date.now();
    await page.goto(`${base}/#/trace/${id}`);
    await until('500 rows', async () => (await page.locator('.wf-rows .wf-row').count()) === 500, 30000);
    toScreen.push(Date.now() - t0);
    draws.push(await page.evaluate(() => performance.getEntriesByName('tracelab.trace.draw').pop().duration));
    await context.close();
  }
  console.log(`500-span trace: drawn (DOM built and laid out) median ${fmt(median(draws))} (${draws.map((d) => d.toFixed(0)).join(', ')}); page opened to 500 rows on screen median ${fmt(median(toScreen))}`);
}

// A checkout pressed on the page to its complete waterfall on screen.
{
  const times = [];
  const answered = [];
  const firstRows = [];
  for (let i = 0; i < RUNS; i++) {
    const { page, context } = await openPage(browser);
    await page.goto(`${base}/#/lab`);
    await page.locator('button[data-action="checkout"]').waitFor();
    const t0 = Date.now();
    await page.click('button[data-action="checkout"]');
    await page.click('.action-out a.trace-link');
    answered.push(Date.now() - t0);
    await page.locator('.wf-row').first().waitFor({ timeout: 20000 });
    firstRows.push(Date.now() - t0);
    await page.locator('.wf-row[data-name="INSERT notifications"]').waitFor({ timeout: 20000 });
    times.push(Date.now() - t0);
    const rows = await page.locator('.wf-rows .wf-row').count();
    if (rows < 17) console.log(`  (run ${i}: only ${rows} rows when the last span showed)`);
    await context.close();
  }
  console.log(`checkout pressed -> complete waterfall on screen: median ${fmt(median(times))} (${times.join(', ')}); of which the checkout's answer (link shown) median ${fmt(median(answered))}, first rows drawn median ${fmt(median(firstRows))}`);
}
await browser.close();
