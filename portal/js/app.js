// The portal's shell: routes (#/services, #/connections, …), the header
// (navigation, language, logout), and where each page is drawn.

import * as api from './api.js';
import { h, replace, announce, notice } from './dom.js';
import { t, lang, setLang, onLangChange, LANGUAGES } from './i18n.js';
import * as login from './pages/login.js';
import * as services from './pages/services.js';
import * as connections from './pages/connections.js';
import * as historyPage from './pages/history.js';
import * as grants from './pages/grants.js';
import * as users from './pages/users.js';

const ROUTES = {
  '/login': { page: login, title: 'login.title', public: true },
  '/services': { page: services, title: 'services.title', nav: 'nav.services' },
  '/connections': { page: connections, title: 'connections.title', nav: 'nav.connections' },
  '/history': { page: historyPage, title: 'history.title', nav: 'nav.history' },
  '/grants': { page: grants, title: 'grants.title', nav: 'nav.grants' },
  '/users': { page: users, title: 'nav.users', nav: 'nav.users', admin: true },
};
const HOME = '/connections';

const main = document.getElementById('main');
let expiredNotice = false;
let bootError = null;
let renderCount = 0;

/** A localized sentence for an API error. */
export function describeError(error) {
  if (!(error instanceof api.ApiError)) return t('app.error', { message: String(error?.message || error) });
  if (error.status === 0) return t('app.network');
  if (error.status === 429) return t('app.retryIn', { seconds: error.retryAfter || 60 });
  if (error.status === 403) return t('app.forbidden');
  if (error.status === 503) return t('app.unavailable');
  return t('app.error', { message: error.message });
}

function currentPath() {
  const hash = window.location.hash || '';
  const path = hash.startsWith('#/') ? hash.slice(1).split('?')[0] : '';
  return ROUTES[path] ? path : '';
}

export function navigate(path) {
  if (window.location.hash === `#${path}`) {
    render();
  } else {
    window.location.hash = `#${path}`;
  }
}

function drawHeader() {
  const user = api.currentUser();
  const path = currentPath();
  document.documentElement.lang = lang();
  document.getElementById('skip').textContent = t('app.skip');
  document.getElementById('footer-text').textContent = t('app.footer');

  const nav = document.getElementById('nav');
  nav.setAttribute('aria-label', t('app.nav'));
  nav.hidden = !user;
  const list = h('ul', {});
  for (const [route, def] of Object.entries(ROUTES)) {
    if (!def.nav || (def.admin && user?.role !== 'admin')) continue;
    list.append(h('li', {}, h('a', { href: `#${route}`, 'aria-current': route === path ? 'page' : false }, t(def.nav))));
  }
  replace(nav, list);

  const langGroup = document.getElementById('lang');
  langGroup.setAttribute('aria-label', t('app.language'));
  replace(langGroup, LANGUAGES.map(({ code, name }) =>
    h('button', {
      type: 'button', lang: code, 'aria-pressed': code === lang() ? 'true' : 'false',
      onclick: () => setLang(code),
    }, name)));

  const who = document.getElementById('who');
  who.hidden = !user;
  // The address is enough to see; screen readers hear the whole sentence.
  replace(who, user ? [h('span', { class: 'visually-hidden' }, t('app.signedInAs', { email: '' })), user.email] : []);
  const logout = document.getElementById('logout');
  logout.hidden = !user;
  logout.textContent = t('app.logout');
}

async function render() {
  const count = ++renderCount;
  let path = currentPath();
  const user = api.currentUser();
  if (!user && path !== '/login') {
    path = '/login';
    history.replaceState(null, '', `${window.location.pathname}${window.location.search}#/login`);
  } else if (user && (path === '/login' || path === '')) {
    path = HOME;
    history.replaceState(null, '', `${window.location.pathname}${window.location.search}#${HOME}`);
  }
  let route = ROUTES[path];
  if (route.admin && user?.role !== 'admin') {
    path = HOME;
    route = ROUTES[HOME];
    history.replaceState(null, '', `${window.location.pathname}#${HOME}`);
  }
  drawHeader();
  const heading = h('h1', { tabindex: '-1' }, route.page.heading ? route.page.heading(user) : t(route.title));
  const body = h('div', { class: 'page-body' }, h('p', { class: 'loading' }, t('app.loading')));
  replace(main, heading, body);
  document.title = `${heading.textContent} · Otobot`;
  // Move focus to the new page's heading, as a page load would.
  heading.focus();
  try {
    const ctx = { navigate, describeError, expired: expiredNotice, error: bootError, user, isCurrent: () => count === renderCount };
    expiredNotice = false;
    bootError = null;
    await route.page.render(body, ctx);
  } catch (error) {
    if (count !== renderCount) return;
    if (error instanceof api.ApiError && error.status === 401) return; // back to login already
    replace(body, notice('error', describeError(error)));
  }
}

api.whenExpired(() => {
  expiredNotice = true;
  navigate('/login');
});

onLangChange(() => render());
window.addEventListener('hashchange', () => render());

document.getElementById('skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.querySelector('h1')?.focus();
});
document.getElementById('logout').addEventListener('click', async () => {
  try {
    await api.logout();
  } finally {
    navigate('/login');
    announce(t('app.loggedOut'));
  }
});

async function start() {
  try {
    await api.resume();
  } catch (error) {
    // The session could not be checked (server busy or down): the sign-in
    // page, saying so, rather than a dead end.
    bootError = describeError(error);
  }
  render();
}

start();
