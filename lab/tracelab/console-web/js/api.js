// The console's API (docs/console-api.md), the page's only server. Traces
// are read through its Tempo pass-through, /api/tempo/...
import { t } from './i18n.js';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'console_unreachable', t('api.unreachable'));
  }
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!res.ok) {
    const e = json && json.error;
    throw new ApiError(res.status, e?.code || `http_${res.status}`, e?.message || text.slice(0, 200));
  }
  return json;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body ?? {});
export const put = (path, body) => call('PUT', path, body);
export const del = (path) => call('DELETE', path);

/** A trace from Tempo's v2 API, or null while it is unknown (404). */
export async function fetchTrace(id) {
  try {
    return await get(`/api/tempo/api/v2/traces/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

/** Tempo's search: {q, tags (logfmt), minDuration, maxDuration, start, end (seconds), limit}; empty ones are left out. */
export function search(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') qs.set(k, v);
  return get(`/api/tempo/api/search?${qs}`);
}
