// Screenshots of each view of the web console into docs/console/ (PNG),
// taken from a running lab with its console (`tracelab up`):
//
//   TRACELAB_CONSOLE_URL=http://127.0.0.1:7070 node screenshots.mjs [name ...]
//
// With names (trace, trace-ja, traces, compare, lab, faults, exercise,
// sampling), only those are taken.
// It sends a checkout, a declined checkout and a search, and plays one
// exercise (revealed at the end, so it stays in the history).
import { mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, openPage, consoleUrl, api, until, traceSpans } from './harness.mjs';

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'docs', 'console');
mkdirSync(OUT, { recursive: true });
const base = consoleUrl();

const good = await api('POST', '/api/actions/checkout', {});
const bad = await api('POST', '/api/actions/declined-checkout', {});
await until('the checkout trace', async () => (await traceSpans(good.trace_id)).some((s) => s.name === 'INSERT notifications'));
await until('the declined checkout trace', async () => {
  const s = await traceSpans(bad.trace_id);
  return s.some((x) => x.service === 'payment-provider') && s.some((x) => !x.parentSpanId);
});
await api('POST', '/api/actions/search', {});

const browser = await launch();
const only = process.argv.slice(2);
async function shot(name, hash, { lang = 'en', ready, click, height = 900 } = {}) {
  if (only.length && !only.includes(name)) return;
  const { page, context, errors } = await openPage(browser, { lang, viewport: { width: 1400, height } });
  await page.goto(`${base}/#/${hash}`);
  if (ready) await page.locator(ready).first().waitFor();
  if (hash.startsWith('trace/')) await page.locator('main[data-complete="true"]').waitFor();
  if (click) {
    await page.locator(click).first().click();
    await page.locator('.span-detail').first().waitFor();
  }
  await page.evaluate(() => document.activeElement?.blur());
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
  if (errors.length) console.log(`${name}: ${errors.join('; ')}`);
  console.log(`docs/console/${name}.png`);
  await context.close();
}

await shot('trace', `trace/${good.trace_id}`, { ready: '.wf-row[data-name="INSERT notifications"]', click: '.wf-row[data-name="callExternalPaymentAPI"]' });
await shot('trace-ja', `trace/${bad.trace_id}`, { lang: 'ja', ready: '.wf-row[data-name="POST /v1/charges"]', click: '.wf-row.is-err[data-name="callExternalPaymentAPI"]' });
await shot('traces', 'traces?q=%7B%20resource.service.name%20%3D%20%22gateway%22%20%26%26%20name%20%3D%20%22POST%20%2Fapi%2Fcheckout%22%20%7D&range=15m', { ready: '.trace-list' });
await shot('compare', `compare?a=${good.trace_id}&b=${bad.trace_id}`, { ready: '.diff-count' });
await shot('lab', 'lab', { ready: 'svg.map .node[data-node="rabbitmq"]', height: 1000 });
await shot('faults', 'faults', { ready: '.cards .card' });
// A running exercise (blind, no load), with one hint shown; revealed afterwards.
if (!only.length || only.includes('exercise')) {
  await api('POST', '/api/exercise', { load: false });
  await api('POST', '/api/exercise/hint');
  await shot('exercise', 'exercise', { ready: '.hints li' });
  await api('POST', '/api/exercise/reveal');
}
// The lesson's sampling policy after two bursts, once drops are decided
// (10 s after a trace's first span); then the lab's policy again.
if (!only.length || only.includes('sampling')) {
  await api('PUT', '/api/sampling', { policy: 'lesson' });
  try {
    await api('POST', '/api/actions/burst', { count: 50 });
    await api('POST', '/api/actions/burst', { count: 50 });
    await until('traces dropped by the tail policy', async () => {
      const r = (await api('GET', '/api/sampling')).tail.report;
      return r && r.dropped > 0 && r.pending === 0;
    }, 40000);
    await shot('sampling', 'sampling', { ready: '.tail-totals', height: 1000 });
  } finally {
    await api('PUT', '/api/sampling', { policy: 'lab' });
  }
}
await browser.close();
