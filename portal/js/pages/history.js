// Access history: every read of my secrets, refused attempts included (or
// everything about me), newest first, from the audit log through row-level
// security; each read names its caller, workflow, grant and request.

import * as api from '../api.js';
import { h, replace, announce, field } from '../dom.js';
import { t, tOr, formatDate } from '../i18n.js';

let kind = 'reads';

function what(entry) {
  const text = tOr(`action.${entry.action}`, entry.action);
  const detail = entry.detail || {};
  const extra = [];
  if (detail.purpose === 'revocation') extra.push(t('history.forRevocation'));
  if (entry.refusal) extra.push(tOr(`refusal.${entry.refusal}`, entry.refusal));
  // A DBA's stated reason for revealing a secret (a refusal's reason is a code, said above).
  if (detail.reason && !entry.refusal) extra.push(`« ${detail.reason} »`);
  return extra.length ? `${text} (${extra.join(', ')})` : text;
}

function serviceCell(entry, names) {
  if (!entry.service) return t('history.none');
  const name = names[entry.service] || entry.service;
  const account = [entry.label, entry.accountIdentifier].filter(Boolean).join(' · ');
  return account ? [h('strong', {}, name), h('br'), h('span', { class: 'muted' }, account)] : name;
}

// The grant that allowed the read (0015: grantId, grantKind), or a trusted caller's read without one.
function grantCell(entry) {
  if (entry.grantId) {
    const kind = entry.grantKind ? tOr(`history.grantKind.${entry.grantKind}`, entry.grantKind) : null;
    const code = h('code', { title: String(entry.grantId) }, String(entry.grantId).slice(0, 8));
    return kind ? [code, h('br'), h('span', { class: 'muted' }, kind)] : code;
  }
  return entry.trusted ? t('history.trusted') : t('history.none');
}

const COLS = ['when', 'what', 'service', 'caller', 'workflow', 'grant', 'request'];

function row(entry, names) {
  const cells = {
    when: h('time', { datetime: entry.at }, formatDate(entry.at)),
    what: what(entry),
    service: serviceCell(entry, names),
    // Disconnecting reads the token to revoke it: Otobot is the reader.
    caller: entry.detail?.purpose === 'revocation' ? t('source.otobot') : tOr(`source.${entry.source}`, entry.source),
    // The workflow its grant was given to (0014 records it with each read; 0015 returns it).
    workflow: entry.workflow || t('history.none'),
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
