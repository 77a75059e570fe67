// Grants: standing grants for scheduled workflows (list, create, revoke),
// through GET/POST/DELETE /api/tooljet/grants. The token is in the creation's
// answer only (`grant`), shown once. A server without grants answers 404 and
// the page says so.

import * as api from '../api.js';
import { h, replace, field, announce, notice, confirmDialog, id } from '../dom.js';
import { t, formatDate } from '../i18n.js';

function statusOf(g) {
  if (g.revokedAt || g.status === 'revoked') return t('grants.revokedStatus');
  if (g.expiresAt && new Date(g.expiresAt) <= new Date()) return t('grants.expiredStatus');
  return t('grants.active');
}

function createForm(serviceCodes, names, message, onCreated, ctx) {
  const workflow = h('input', { type: 'text', name: 'workflow', required: true, maxlength: '100', autocomplete: 'off' });
  const legendId = id('grant-services');
  const boxes = serviceCodes.map((code) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name: 'services', value: code }), ' ', names[code] || code));
  const expires = h('input', { type: 'date', name: 'expires', required: true });
  const in30 = new Date(Date.now() + 30 * 86400e3);
  expires.value = in30.toISOString().slice(0, 10);
  const submit = h('button', { type: 'submit', class: 'primary' }, t('grants.submit'));
  const form = h('form', { class: 'card', novalidate: true, 'aria-labelledby': `${legendId}-title` },
    h('h2', { id: `${legendId}-title` }, t('grants.create')),
    field(t('grants.workflow'), workflow, t('grants.workflowHint')),
    h('fieldset', {}, h('legend', { id: legendId }, t('grants.services')), boxes),
    field(t('grants.expires'), expires),
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const chosen = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
    if (!workflow.value.trim()) {
      workflow.focus();
      return;
    }
    if (!chosen.length) {
      replace(message, notice('error', t('grants.needService')));
      return;
    }
    submit.disabled = true;
    try {
      const created = await api.createGrant(workflow.value.trim(), chosen, new Date(`${expires.value}T23:59:59`).toISOString());
      onCreated(created);
    } catch (e) {
      replace(message, notice('error', ctx.describeError(e)));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function shownOnce(token) {
  const input = h('input', { type: 'text', readonly: true, value: token, class: 'token' });
  const copy = h('button', { type: 'button', class: 'secondary' }, t('grants.copy'));
  copy.addEventListener('click', async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(token);
    } catch {
      // The selected text can still be copied by hand.
    }
    announce(t('grants.copied'));
  });
  return notice('success', h('p', {}, t('grants.created')), field(t('grants.token'), input), copy);
}

export async function render(body, ctx) {
  let list;
  try {
    list = await api.grants();
  } catch (e) {
    if (e.status === 404 || e.status === 405) {
      replace(body, h('p', { class: 'intro' }, t('grants.intro')), notice('info', t('grants.unavailable')));
      return;
    }
    throw e;
  }
  // Run grants (one triggered run, minutes long) come and go with the runs: this page is about standing ones.
  list = list.filter((g) => g.kind !== 'run');
  const [mine, catalogue] = await Promise.all([api.connections(), api.services()]);
  if (!ctx.isCurrent()) return;
  const names = Object.fromEntries(catalogue.map((s) => [s.code, s.displayName || s.code]));
  const codes = [...new Set(mine.map((c) => c.service_name))].sort();
  const message = h('div', { class: 'page-message' });

  const rows = list.map((g) => {
    const revoke = h('button', { type: 'button', class: 'danger', 'aria-label': t('grants.revokeLabel', { workflow: g.workflow }) },
      t('grants.revoke'));
    revoke.disabled = statusOf(g) !== t('grants.active');
    revoke.addEventListener('click', async () => {
      const ok = await confirmDialog({
        title: t('grants.confirmTitle', { workflow: g.workflow }),
        body: t('grants.confirmBody'),
        confirm: t('grants.revoke'),
        cancel: t('connections.cancel'),
        danger: true,
      });
      if (!ok) return;
      try {
        await api.revokeGrant(g.id);
        await render(body, ctx);
        announce(t('grants.revoked'));
      } catch (e) {
        replace(message, notice('error', ctx.describeError(e)));
      }
    });
    const cells = [
      h('th', { scope: 'row', 'data-label': t('grants.workflow') }, g.workflow),
      h('td', { 'data-label': t('grants.services') }, (g.services || []).map((s) => names[s] || s).join(', ')),
      h('td', { 'data-label': t('grants.expires') }, formatDate(g.expiresAt)),
      h('td', { 'data-label': t('grants.status') }, statusOf(g)),
      h('td', { 'data-label': t('grants.createdAt') }, formatDate(g.createdAt)),
      h('td', { 'data-label': t('connections.actions') }, revoke),
    ];
    return h('tr', { 'data-grant': g.id }, cells);
  });
  const table = rows.length
    ? h('div', { class: 'table-wrap' }, h('table', { class: 'list' },
      h('caption', { class: 'visually-hidden' }, t('grants.title')),
      h('thead', {}, h('tr', {}, ['grants.workflow', 'grants.services', 'grants.expires', 'grants.status', 'grants.createdAt', 'connections.actions']
        .map((k) => h('th', { scope: 'col' }, t(k))))),
      h('tbody', {}, rows)))
    : h('p', { class: 'muted' }, t('grants.empty'));
  const form = createForm(codes, names, message, async (created) => {
    await render(body, ctx);
    const token = created.grant;
    if (token) replace(body.querySelector('.page-message'), shownOnce(token));
    announce(t('grants.created'));
  }, ctx);
  replace(body, h('p', { class: 'intro' }, t('grants.intro')), message, table, form);
}
