// Grants: a user's consent that a workflow reads their secrets
// (api/src/routes/grants.rs). This page lists them (standing grants in every
// state, and the short-lived run grants of workflows being run right now),
// creates standing grants for scheduled workflows, and revokes them. An
// admin may also list and revoke every grant of their client
// (`?scope=client`); a grant is only ever created in one's own name.
//
// SECURITY: a new grant's token is in the creation's answer only; the page
// shows it once, keeps it nowhere else, and it is gone when the page is left
// (the server stores only its SHA-256).

import * as api from '../api.js';
import { h, replace, field, announce, notice, confirmDialog, id } from '../dom.js';
import { t, tOr, lang, formatDate } from '../i18n.js';

// Whose grants an admin is looking at: 'own' or 'client' (kept while the portal is open).
let scope = 'own';

const DEFAULT_DAYS = 90;
// The server accepts at most one year from now; a grant ends at the end of its
// last day (local time), so the last day one can choose is 364 days away.
const MAX_DAYS = 364;

/** yyyy-mm-dd of the local day `days` from today. */
function dayFromToday(days) {
  const d = new Date();
  d.setHours(12, 0, 0, 0);
  d.setDate(d.getDate() + days);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function statusOf(g) {
  const status = g.status || (g.revokedAt ? 'revoked' : new Date(g.expiresAt) <= new Date() ? 'expired' : 'active');
  return { status, text: tOr(`grants.status.${status}`, status) };
}

function createForm(known, names, message, onCreated, ctx) {
  const workflow = h('input', {
    type: 'text', name: 'workflow', required: true, maxlength: '100', autocomplete: 'off', spellcheck: 'false',
  });
  const titleId = id('grant-title');
  const box = (code) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name: 'services', value: code }), ' ', names[code] || code);
  const connected = known.connected.map(box);
  const others = known.others.map(box);
  const servicesHint = id('grant-services-hint');
  const fieldset = h('fieldset', { 'aria-describedby': servicesHint },
    h('legend', {}, t('grants.services')),
    h('p', { class: 'hint', id: servicesHint }, connected.length ? t('grants.servicesHint') : t('grants.noConnection')),
    connected.length ? h('div', { class: 'checks' }, connected) : null,
    others.length ? h('details', { class: 'other-services', open: !connected.length },
      h('summary', {}, t('grants.otherServices')), h('div', { class: 'checks' }, others)) : null);
  const expires = h('input', {
    type: 'date', name: 'expires', required: true, min: dayFromToday(1), max: dayFromToday(MAX_DAYS),
  });
  expires.value = dayFromToday(DEFAULT_DAYS);
  const submit = h('button', { type: 'submit', class: 'primary' }, t('grants.submit'));
  const form = h('form', { class: 'card', novalidate: true, 'aria-labelledby': titleId },
    h('h2', { id: titleId }, t('grants.create')),
    field(t('grants.workflow'), workflow, t('grants.workflowHint')),
    fieldset,
    field(t('grants.expires'), expires, t('grants.expiresHint', { days: DEFAULT_DAYS })),
    h('div', { class: 'actions' }, submit));

  const fail = (text, focus) => {
    replace(message, notice('error', text));
    focus?.focus();
  };
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    replace(message);
    const inputs = [...connected, ...others].map((b) => b.querySelector('input'));
    const chosen = inputs.filter((i) => i.checked).map((i) => i.value);
    const name = workflow.value.trim();
    // The server refuses control characters too.
    if (!name || /[\u0000-\u001f\u007f]/.test(name)) {
      fail(t('grants.needWorkflow'), workflow);
      return;
    }
    if (!chosen.length) {
      fail(t('grants.needService'), inputs[0]);
      return;
    }
    if (!/^\d{4}-\d{2}-\d{2}$/.test(expires.value) || expires.value < expires.min || expires.value > expires.max) {
      fail(t('grants.badExpiry', { max: formatDay(expires.max) }), expires);
      return;
    }
    submit.disabled = true;
    try {
      const created = await api.createGrant(name, chosen, new Date(`${expires.value}T23:59:59`).toISOString());
      await onCreated(created);
    } catch (e) {
      submit.disabled = false;
      const text = {
        invalid_workflow: t('grants.needWorkflow'),
        invalid_services: t('grants.needService'),
        invalid_expiry: t('grants.badExpiry', { max: formatDay(expires.max) }),
      }[e.code] || ctx.describeError(e);
      fail(text);
    }
  });
  return form;
}

function formatDay(value) {
  const date = new Date(`${value}T12:00:00`);
  return Number.isNaN(date.getTime()) ? value : new Intl.DateTimeFormat(lang(), { dateStyle: 'long' }).format(date);
}

/** The new grant's token, shown this once, with a copy button. */
function shownOnce(token, onDone) {
  const input = h('input', { type: 'text', readonly: true, value: token, class: 'token', spellcheck: 'false', autocomplete: 'off' });
  const copy = h('button', { type: 'button', class: 'secondary' }, t('grants.copy'));
  copy.addEventListener('click', async () => {
    input.focus();
    input.select();
    try {
      await navigator.clipboard.writeText(token);
      announce(t('grants.copied'));
    } catch {
      // No clipboard (permission, or not a secure context): the text is selected.
      announce(t('grants.copyByHand'));
    }
  });
  const done = h('button', { type: 'button', class: 'secondary' }, t('grants.done'));
  done.addEventListener('click', onDone);
  const box = notice('success',
    h('p', {}, h('strong', {}, t('grants.created'))),
    h('p', {}, t('grants.howToUse')),
    field(t('grants.token'), input),
    h('div', { class: 'actions' }, copy, done));
  box.classList.add('token-once');
  return { box, input };
}

function table(list, names, showUser, onRevoke) {
  const cols = ['grants.workflow', ...(showUser ? ['grants.user'] : []), 'grants.services', 'grants.kind',
    'grants.status', 'grants.expires', 'grants.createdAt', 'grants.actions'];
  const rows = list.map((g) => {
    const { status, text } = statusOf(g);
    const who = showUser ? g.userEmail || g.userId : null;
    const label = who ? t('grants.revokeLabelOf', { workflow: g.workflow, user: who }) : t('grants.revokeLabel', { workflow: g.workflow });
    const revoke = h('button', { type: 'button', class: 'danger', 'aria-label': label }, t('grants.revoke'));
    revoke.addEventListener('click', () => onRevoke(g, who));
    const cells = [
      h('th', { scope: 'row', 'data-label': t('grants.workflow') }, g.workflow),
      showUser ? h('td', { 'data-label': t('grants.user') }, who) : null,
      h('td', { 'data-label': t('grants.services') }, (g.services || []).map((s) => names[s] || s).join(', ')),
      h('td', { 'data-label': t('grants.kind') }, tOr(`grants.kind.${g.kind}`, g.kind)),
      h('td', { 'data-label': t('grants.status') }, h('span', { class: `badge ${{ active: 'ok', expired: 'warn' }[status] || ''}` }, text)),
      h('td', { 'data-label': t('grants.expires') }, h('time', { datetime: g.expiresAt }, formatDate(g.expiresAt))),
      h('td', { 'data-label': t('grants.createdAt') }, h('time', { datetime: g.createdAt }, formatDate(g.createdAt))),
      h('td', { 'data-label': t('grants.actions') }, status === 'active' ? revoke : t('grants.noAction')),
    ];
    return h('tr', { 'data-grant': g.id, 'data-status': status }, cells);
  });
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list grants' },
    h('caption', { class: 'visually-hidden' }, t('grants.title')),
    h('thead', {}, h('tr', {}, cols.map((k) => h('th', { scope: 'col' }, t(k))))),
    h('tbody', {}, rows)));
}

export async function render(body, ctx) {
  const admin = ctx.user?.role === 'admin';
  if (!admin) scope = 'own';
  let list;
  let catalogue;
  let mine;
  try {
    [list, catalogue, mine] = await Promise.all([api.grants(scope), api.services(), api.connections()]);
  } catch (e) {
    // A server older than grants (issue 11) has no such route.
    if (e.status === 404 && e.code === 'route_not_found') {
      replace(body, h('p', { class: 'intro' }, t('grants.intro')), notice('info', t('grants.unavailable')));
      return;
    }
    throw e;
  }
  if (!ctx.isCurrent()) return;
  const names = Object.fromEntries(catalogue.map((s) => [s.code, s.displayName || s.code]));
  const connectedCodes = [...new Set(mine.map((c) => c.service_name))]
    .sort((a, b) => (names[a] || a).localeCompare(names[b] || b));
  const others = catalogue.map((s) => s.code).filter((c) => !connectedCodes.includes(c))
    .sort((a, b) => (names[a] || a).localeCompare(names[b] || b));
  const message = h('div', { class: 'page-message' });

  const onRevoke = async (g, who) => {
    const ok = await confirmDialog({
      title: who ? t('grants.confirmTitleOf', { workflow: g.workflow, user: who }) : t('grants.confirmTitle', { workflow: g.workflow }),
      body: g.kind === 'run' ? t('grants.confirmBodyRun') : t('grants.confirmBody'),
      confirm: t('grants.revoke'),
      cancel: t('connections.cancel'),
      danger: true,
    });
    if (!ok) return;
    try {
      await api.revokeGrant(g.id);
      await render(body, ctx);
      replace(body.querySelector('.page-message'), notice('success', t('grants.revoked', { workflow: g.workflow })));
      // The row's button is gone: keep the keyboard on the row.
      const th = body.querySelector(`tr[data-grant="${CSS.escape(g.id)}"] th`);
      if (th) {
        th.tabIndex = -1;
        th.focus();
      }
    } catch (e) {
      replace(message, notice('error', e.status === 404 ? t('grants.gone') : ctx.describeError(e)));
    }
  };

  const parts = [h('p', { class: 'intro' }, t('grants.intro'))];
  if (admin) {
    const select = h('select', { name: 'scope' },
      h('option', { value: 'own', selected: scope === 'own' }, t('grants.scopeOwn')),
      h('option', { value: 'client', selected: scope === 'client' },
        t('grants.scopeClient', { company: ctx.user.companyName || '' })));
    select.addEventListener('change', async () => {
      scope = select.value;
      await render(body, ctx);
      body.querySelector('select[name="scope"]')?.focus();
    });
    parts.push(h('div', { class: 'toolbar' }, field(t('grants.show'), select)));
  }
  parts.push(message);
  parts.push(list.length ? table(list, names, scope === 'client', onRevoke)
    : h('p', { class: 'muted' }, scope === 'client' ? t('grants.emptyClient') : t('grants.empty')));
  parts.push(createForm({ connected: connectedCodes, others }, names, message, async (created) => {
    await render(body, ctx);
    const token = created.grant;
    const slot = body.querySelector('.page-message');
    if (!token || !slot) return;
    const { box, input } = shownOnce(token, () => {
      replace(slot);
      announce(t('grants.tokenHidden'));
      const th = body.querySelector(`tr[data-grant="${CSS.escape(created.id)}"] th`);
      if (th) {
        th.tabIndex = -1;
        th.focus();
      }
    });
    replace(slot, box);
    // The token has the focus, selected: ready to copy.
    input.focus();
    input.select();
  }, ctx));
  replace(body, parts);
}
