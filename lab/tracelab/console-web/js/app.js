// The console's shell: the navigation, the language toggle and the hash
// router (#/lab, #/traces, #/trace/<id>, #/compare, #/faults, #/exercise,
// #/sampling).
// A view is a module whose render(main, route) draws into <main> and may
// return a function that stops its timers when the view is left.
import { h, mount } from './dom.js';
import { getLang, setLang, t } from './i18n.js';
import * as lab from './views/lab.js';
import * as traces from './views/traces.js';
import * as trace from './views/trace.js';
import * as compare from './views/compare.js';
import * as faults from './views/faults.js';
import * as exercise from './views/exercise.js';
import * as sampling from './views/sampling.js';

const VIEWS = [
  { path: 'lab', view: lab, nav: 'nav.lab' },
  { path: 'traces', view: traces, nav: 'nav.traces' },
  { path: 'trace', view: trace, nav: null },
  { path: 'compare', view: compare, nav: 'nav.compare' },
  { path: 'faults', view: faults, nav: 'nav.faults' },
  { path: 'exercise', view: exercise, nav: 'nav.exercise' },
  { path: 'sampling', view: sampling, nav: 'nav.sampling' },
];

let stop = null;

/** The current hash as {path, args, query}: #/trace/abc?x=1 → {path:'trace', args:['abc'], query}. */
export function parseHash(hash) {
  const s = hash.replace(/^#\/?/, '');
  const [p, q = ''] = s.split('?');
  const [path, ...args] = p.split('/').filter(Boolean).map(decodeURIComponent);
  return { path: path || 'lab', args, query: new URLSearchParams(q) };
}

function drawNav(current) {
  const nav = document.getElementById('nav');
  mount(nav, h('ul', {}, VIEWS.filter((v) => v.nav).map((v) => h('li', {},
    h('a', { href: `#/${v.path}`, 'aria-current': v.path === current || (current === 'trace' && v.path === 'traces') ? 'page' : null }, t(v.nav))))));
  const btn = document.getElementById('lang');
  btn.textContent = getLang() === 'ja' ? 'English' : '日本語';
  btn.setAttribute('data-lang', getLang());
}

function route() {
  if (stop) { stop(); stop = null; }
  const r = parseHash(location.hash);
  const entry = VIEWS.find((v) => v.path === r.path) || VIEWS[0];
  document.documentElement.lang = getLang();
  // The static page's texts (the skip link) and labels.
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  document.getElementById('nav').setAttribute('aria-label', t('nav.label'));
  drawNav(entry.path);
  const main = document.getElementById('main');
  main.replaceChildren();
  main.dataset.view = entry.path;
  document.title = `${t(entry.nav || 'nav.trace')} · tracelab`;
  stop = entry.view.render(main, r) || null;
}

document.getElementById('lang').addEventListener('click', () => {
  setLang(getLang() === 'ja' ? 'en' : 'ja');
  route();
});
window.addEventListener('hashchange', route);
// Alt+1..6 jump between the views from anywhere.
window.addEventListener('keydown', (e) => {
  if (!e.altKey || e.ctrlKey || e.metaKey) return;
  const n = Number(e.key);
  const navs = VIEWS.filter((v) => v.nav);
  if (n >= 1 && n <= navs.length) {
    location.hash = `#/${navs[n - 1].path}`;
    e.preventDefault();
  }
});
route();
