// My connections: status, expiry, reconnect, disconnect.

import * as api from '../api.js';
import { h, replace, announce, notice, confirmDialog } from '../dom.js';
import { t, tOr, formatDate, formatRelative } from '../i18n.js';

/** The outcome of an OAuth flow, from the address the callback sent us to (read once). */
function oauthOutcome(names) {
  const params = new URLSearchParams(window.location.search);
  const outcome = params.get('oauth');
  if (!outcome) return null;
  // Drop it from the address, so a reload does not show it again.
  history.replaceState(null, '', `${window.location.pathname}${window.location.hash}`);
  const service = names[params.get('service')] || params.get('service') || '';
  if (outcome === 'success') {
    return notice('success', t('connections.oauthSuccess', { service }));
  }
  const code = params.get('error') || 'server_error';
  const reason = tOr(`oauthError.${code}`, code, { reason: params.get('reason') || '' });
  return notice('error', t('connections.oauthError', { reason }));
}

function statusCell(c) {
  const expired = c.status === 'expired';
  return h('span', { class: `badge ${expired ? 'warn' : c.status === 'active' ? 'ok' : ''}` },
    tOr(`status.${c.status}`, c.status));
}

function expiryCell(c) {
  if (!c.token_expires_at) return t('connections.never');
  return h('time', { datetime: c.token_expires_at, title: formatDate(c.token_expires_at) },
    formatRelative(c.token_expires_at));
}

export async function render(body, ctx) {
  const [list, catalogue] = await Promise.all([api.connections(), api.services()]);
  if (!ctx.isCurrent()) return;
  const names = Object.fromEntries(catalogue.map((s) => [s.code, s.displayName || s.code]));
  const oauthReady = new Set(catalogue.filter((s) => s.oauthConfigured).map((s) => s.code));
  const message = h('div', { class: 'page-message' }, oauthOutcome(names));

  const intro = h('p', { class: 'intro' }, t('connections.intro'));
  if (!list.length) {
    replace(body, message, intro, notice('info', t('connections.empty'), ' ',
      h('a', { href: '#/services' }, t('connections.goServices'))));
    return;
  }

  const cols = ['service', 'account', 'label', 'status', 'expiry', 'actions'];
  const rows = list.map((c) => {
    const name = names[c.service_name] || c.service_name;
    const full = c.label ? `${name} (${c.label})` : name;
    const actions = [];
    if (c.credentialType === 'oauth2' && oauthReady.has(c.service_name)) {
      const again = h('button', { type: 'button', class: 'secondary', 'aria-label': t('connections.reconnectLabel', { service: full }) },
        t('connections.reconnect'));
      again.addEventListener('click', async () => {
        again.disabled = true;
        try {
          window.location.assign(await api.authorize(c.service_name, c.label || undefined));
        } catch (e) {
          again.disabled = false;
          replace(message, notice('error', ctx.describeError(e)));
        }
      });
      actions.push(again);
    }
    const drop = h('button', { type: 'button', class: 'danger', 'aria-label': t('connections.disconnectLabel', { service: full }) },
      t('connections.disconnect'));
    drop.addEventListener('click', async () => {
      const ok = await confirmDialog({
        title: t('connections.confirmTitle', { service: full }),
        body: t('connections.confirmBody'),
        confirm: t('connections.disconnect'),
        cancel: t('connections.cancel'),
        danger: true,
      });
      if (!ok) return;
      drop.disabled = true;
      try {
        const result = await api.disconnect(c.id);
        const parts = [t('connections.disconnected', { service: full })];
        if (result?.revocation?.revoked === true) parts.push(t('connections.revoked'));
        else if (result?.revocation && result.revocation.revoked === false) {
          parts.push(t('connections.notRevoked', { reason: result.revocation.reason || '' }));
        }
        await render(body, ctx);
        replace(body.querySelector('.page-message'), notice('success', parts.join(' ')));
        announce(parts.join(' '));
      } catch (e) {
        drop.disabled = false;
        replace(message, notice('error', ctx.describeError(e)));
      }
    });
    actions.push(drop);
    const cells = {
      service: h('strong', {}, name),
      account: c.account_identifier || '—',
      label: c.label || '—',
      status: statusCell(c),
      expiry: expiryCell(c),
      actions: h('div', { class: 'row-actions' }, actions),
    };
    return h('tr', { 'data-connection': c.id },
      cols.map((col, i) => h(i === 0 ? 'th' : 'td', { scope: i === 0 ? 'row' : false, 'data-label': t(`connections.${col}`) }, cells[col])));
  });
  const table = h('table', { class: 'list' },
    h('caption', { class: 'visually-hidden' }, t('connections.title')),
    h('thead', {}, h('tr', {}, cols.map((col) => h('th', { scope: 'col' }, t(`connections.${col}`))))),
    h('tbody', {}, rows));
  replace(body, message, intro, h('div', { class: 'table-wrap' }, table));
}
