// Shared by the console's browser scripts: Debian's Chromium through
// playwright-core and a page that records its console errors (the Chromium
// scripts), and small helpers to ask the console's API what the page should
// show (the Firefox script, which drives Firefox with puppeteer-core, uses
// these too).
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.TRACELAB_CHROMIUM || '/usr/bin/chromium';
export const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--disable-background-networking', '--disable-component-update', '--no-first-run'];

export function consoleUrl() {
  const url = process.env.TRACELAB_CONSOLE_URL;
  if (!url) throw new Error('TRACELAB_CONSOLE_URL is not set (the console to test, e.g. http://127.0.0.1:7070)');
  return url.replace(/\/$/, '');
}

export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS });
}

/**
 * A fresh page (its own context: no localStorage from another case) whose
 * console errors and uncaught exceptions are collected in `errors`.
 *
 * One kind of message is expected, and only for one URL: while a trace is
 * still on its way to the collector, the trace view asks Tempo for it and
 * gets 404 (Chromium logs every failed request as a console error). Any
 * other failed request or error fails the case.
 */
export async function openPage(browser, { lang = 'en', viewport = { width: 1400, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport, locale: lang === 'ja' ? 'ja-JP' : 'en-US' });
  await context.addInitScript((l) => { if (!localStorage.getItem('tracelab.lang')) localStorage.setItem('tracelab.lang', l); }, lang);
  const page = await context.newPage();
  const errors = [];
  const expected404 = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const where = m.location()?.url || '';
    if (/status of 404/.test(m.text()) && /\/api\/tempo\/api\/v2\/traces\/[0-9a-f]{32}$/.test(where)) {
      expected404.push(where);
      return;
    }
    errors.push(`console error: ${m.text()} (${where})`);
  });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  // A request cut short because the view was left (net::ERR_ABORTED) is not a failure.
  page.on('requestfailed', (r) => {
    if (r.failure()?.errorText !== 'net::ERR_ABORTED') errors.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  return { page, context, errors, expected404 };
}

export async function api(method, path, body) {
  const res = await fetch(`${consoleUrl()}${path}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
  return json;
}

/** Polls `fn` until it returns a truthy value (returned), or fails after `ms` saying `what`. */
export async function until(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await fn(); } catch (e) { last = e; }
    if (last && !(last instanceof Error)) return last;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Base64 (Tempo's JSON) or hex id as hex. */
export function hex(id) {
  if (!id) return '';
  if (/^[0-9a-f]+$/i.test(id) && (id.length === 16 || id.length === 32)) return id.toLowerCase();
  return Buffer.from(id, 'base64').toString('hex');
}

/** The spans of a trace from the console's Tempo pass-through, flattened with hex ids. */
export async function traceSpans(traceId) {
  const body = await api('GET', `/api/tempo/api/v2/traces/${traceId}`);
  const out = [];
  for (const rs of body.trace?.resourceSpans || []) {
    const service = (rs.resource?.attributes || []).find((a) => a.key === 'service.name')?.value?.stringValue;
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) out.push({ ...s, service, spanId: hex(s.spanId), parentSpanId: hex(s.parentSpanId) });
    }
  }
  return out;
}

/** An OTLP AnyValue as the page prints it. */
export function shown(v) {
  if ('stringValue' in v) return v.stringValue;
  if ('intValue' in v) return String(Number(v.intValue));
  if ('doubleValue' in v) return String(Number(v.doubleValue));
  if ('boolValue' in v) return String(v.boolValue);
  return JSON.stringify(v);
}
