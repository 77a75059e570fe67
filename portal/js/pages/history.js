// Access history: every read of my secrets (or everything about me), newest
// first, from the audit log through row-level security.

import * as api from '../api.js';
import { h, replace, announce, field } from '../dom.js';
import { t, tOr, formatDate } from '../i18n.js';

let kind = 'reads';

function what(entry) {
  const text = tOr(`action.${entry.action}`, entry.action);
  const detail = entry.detail || {};
  const extra = [];
  if (detail.purpose === 'revocation') extra.push(t('history.forRevocation'));
  if (detail.reason) extra.push(`« ${detail.reason} »`);
  return extra.length ? `${text} (${extra.join(', ')})` : text;
}

function serviceCell(entry, names) {
  if (!entry.service) return t('history.none');
  const name = names[entry.service] || entry.service;
  const account = [entry.label, entry.accountIdentifier].filter(Boolean).join(' · ');
  return account ? [h('strong', {}, name), h('br'), h('span', { class: 'muted' }, account)] : name;
}

function grantCell(entry) {
  const grantId = entry.grantId || entry.detail?.grant_id;
  if (grantId) return h('code', { title: String(grantId) }, String(grantId).slice(0, 8));
  return entry.detail?.trusted ? t('history.trusted') : t('history.none');
}

const COLS = ['when', 'what', 'service', 'caller', 'workflow', 'grant', 'request'];

function row(entry, names) {
  const cells = {
    when: h('time', { datetime: entry.at }, formatDate(entry.at)),
    what: what(entry),
    service: serviceCell(entry, names),
    // Disconnecting reads the token to revoke it: Otobot is the reader.
    caller: entry.detail?.purpose === 'revocation' ? t('source.otobot') : tOr(`source.${entry.source}`, entry.source),
    // 0011 records the grant of every read, and its workflow, in the entry's detail.
    workflow: entry.workflow || entry.detail?.workflow || t('history.none'),
    grant: grantCell(entry),
    request: entry.requestId ? h('code', { class: 'wrap' }, entry.requestId) : t('history.none'),
  };
  return h('tr', { 'data-entry': entry.id, 'data-action': entry.action },
    COLS.map((col, i) => h(i === 0 ? 'th' : 'td', { scope: i === 0 ? 'row' : false, 'data-label': t(`history.${col}`) }, cells[col])));
}

export async function render(body, ctx) {
  const [page, catalogue] = await Promise.all([api.history({ kind }), api.services()]);
  if (!ctx.isCurrent()) return;
  const names = Object.fromEntries(catalogue.map((s) => [s.code, s.displayName || s.code]));

  const select = h('select', { name: 'kind' },
    h('option', { value: 'reads', selected: kind === 'reads' }, t('history.reads')),
    h('option', { value: 'all', selected: kind === 'all' }, t('history.all')));
  select.addEventListener('change', async () => {
    kind = select.value;
    await render(body, ctx);
    body.querySelector('select[name="kind"]')?.focus();
  });
  const toolbar = h('div', { class: 'toolbar' }, field(t('history.show'), select));
  const intro = h('p', { class: 'intro' }, t('history.intro'));

  if (!page.entries.length) {
    replace(body, intro, toolbar, h('p', { class: 'muted' }, t('history.empty')));
    return;
  }
  const tbody = h('tbody', {}, page.entries.map((e) => row(e, names)));
  const table = h('table', { class: 'list history' },
    h('caption', { class: 'visually-hidden' }, t('history.title')),
    h('thead', {}, h('tr', {}, COLS.map((col) => h('th', { scope: 'col' }, t(`history.${col}`))))),
    tbody);
  let next = page.nextBefore;
  const more = h('button', { type: 'button', class: 'secondary', hidden: !next }, t('history.more'));
  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      const older = await api.history({ kind, before: next });
      const rows = older.entries.map((e) => row(e, names));
      tbody.append(...rows);
      next = older.nextBefore;
      more.hidden = !next;
      announce(t('history.loadedMore', { count: rows.length }));
      // Keep the keyboard where the reading goes on.
      const first = rows[0]?.querySelector('th');
      if (first) {
        first.tabIndex = -1;
        first.focus();
      }
    } catch (e) {
      announce(ctx.describeError(e));
    } finally {
      more.disabled = false;
    }
  });
  replace(body, intro, toolbar, h('div', { class: 'table-wrap' }, table), h('div', { class: 'actions' }, more));
}
