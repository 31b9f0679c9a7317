// The page's two languages. Every visible text goes through t(key) (the
// static page's through data-i18n, applied by app.js); the choice is
// remembered in localStorage. The terms are the lesson's, listed at the
// top of messages.js.
import { MESSAGES } from './messages.js';

const KEY = 'tracelab.lang';
let lang = initial();

function initial() {
  let saved = null;
  try { saved = localStorage.getItem(KEY); } catch { /* storage off: fall back */ }
  if (saved === 'ja' || saved === 'en') return saved;
  return (navigator.language || '').toLowerCase().startsWith('ja') ? 'ja' : 'en';
}

export function getLang() { return lang; }

export function setLang(l) {
  lang = l === 'ja' ? 'ja' : 'en';
  try { localStorage.setItem(KEY, lang); } catch { /* not remembered, still switched */ }
  document.documentElement.lang = lang;
}

/** The text for `key` in the current language; {name} placeholders filled from vars. */
export function t(key, vars) {
  const text = MESSAGES[lang][key] ?? MESSAGES.en[key] ?? key;
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
}

/** A bilingual text from the API ({en, ja}) in the current language. */
export function tx(text) {
  if (text === null || text === undefined) return '';
  if (typeof text === 'string') return text;
  return text[lang] || text.en || text.ja || '';
}
