// Services: connect with OAuth, or store an API key.

import * as api from '../api.js';
import { h, replace, field, announce, notice, id } from '../dom.js';
import { t } from '../i18n.js';

function card(service, connectedCount, ctx) {
  const name = service.displayName || service.code;
  const headingId = id('svc');
  const parts = [
    h('h2', { id: headingId }, name),
    connectedCount ? h('p', { class: 'badge ok' }, t('services.connected', { count: connectedCount })) : null,
  ];
  const message = h('div', { class: 'card-message' });

  if (service.oauthConfigured) {
    const button = h('button', { type: 'button', class: 'primary', 'aria-label': t('services.connect', { service: name }) },
      t('services.connectShort'));
    button.addEventListener('click', async () => {
      button.disabled = true;
      announce(t('services.connecting', { service: name }));
      try {
        const url = await api.authorize(service.code);
        window.location.assign(url);
      } catch (e) {
        button.disabled = false;
        replace(message, notice('error', ctx.describeError(e)));
      }
    });
    parts.push(h('p', { class: 'method' }, t('services.oauth')), h('div', { class: 'actions' }, button));
  }

  if (service.acceptsApiKey) {
    const key = h('input', { type: 'password', name: 'apiKey', autocomplete: 'off', required: true, spellcheck: 'false' });
    const label = h('input', { type: 'text', name: 'label', maxlength: '100', autocomplete: 'off' });
    const save = h('button', { type: 'submit', class: 'primary' }, t('services.saveKey'));
    const form = h('form', { class: 'api-key', novalidate: true },
      field(t('services.keyLabel', { service: name }), key, t('services.keyHint')),
      field(t('services.labelLabel'), label, t('services.labelHint')),
      h('div', { class: 'actions' }, save));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      replace(message);
      if (!key.value.trim()) {
        replace(message, notice('error', t('services.keyRequired')));
        key.focus();
        return;
      }
      save.disabled = true;
      try {
        await api.saveApiKey(service.code, key.value.trim(), label.value.trim() || undefined);
        key.value = '';
        label.value = '';
        const text = t('services.keySaved', { service: name });
        replace(message, notice('success', text));
        announce(text);
      } catch (e) {
        replace(message, notice('error', ctx.describeError(e)));
      } finally {
        save.disabled = false;
      }
    });
    // Closed until asked for: most people connect with the provider.
    const details = h('details', { class: 'api-key' },
      h('summary', { 'aria-label': t('services.useKeyLabel', { service: name }) }, t('services.useKey')), form);
    details.addEventListener('toggle', () => {
      if (details.open) key.focus();
    });
    parts.push(details);
  }

  parts.push(message);
  return h('li', { class: 'card service', 'data-service': service.code, 'aria-labelledby': headingId }, parts);
}

export async function render(body, ctx) {
  const [list, mine] = await Promise.all([api.services(), api.connections()]);
  if (!ctx.isCurrent()) return;
  const counts = {};
  for (const c of mine) counts[c.service_name] = (counts[c.service_name] || 0) + 1;
  const byName = (a, b) => (a.displayName || a.code).localeCompare(b.displayName || b.code);
  // Sign-in with the provider first, then API keys; what this server cannot
  // connect is listed apart.
  const usable = list.filter((s) => s.configured)
    .sort((a, b) => (b.oauthConfigured - a.oauthConfigured) || byName(a, b));
  const unusable = list.filter((s) => !s.configured).sort(byName);

  const grid = h('ul', { class: 'cards', role: 'list' }, usable.map((s) => card(s, counts[s.code], ctx)));
  const none = h('p', { class: 'muted', hidden: true }, t('services.none'));
  const filter = h('input', { type: 'search', autocomplete: 'off' });
  filter.addEventListener('input', () => {
    const q = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const li of grid.children) {
      const title = li.querySelector('h2').textContent.toLowerCase();
      const match = !q || title.includes(q) || li.dataset.service.includes(q);
      li.hidden = !match;
      if (match) shown += 1;
    }
    none.hidden = shown > 0;
  });
  const others = unusable.length
    ? h('details', { class: 'unavailable' },
      h('summary', {}, t('services.unavailable', { count: unusable.length })),
      h('p', { class: 'muted' }, t('services.notConfigured')),
      h('ul', { class: 'names' }, unusable.map((s) => h('li', {}, s.displayName || s.code))))
    : null;
  replace(body,
    h('p', { class: 'intro' }, t('services.intro')),
    h('div', { class: 'toolbar', role: 'search' }, field(t('services.filter'), filter)),
    grid, none, others);
}
