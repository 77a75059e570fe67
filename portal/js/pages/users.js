// Users of my client (admins only): list, add, deactivate.

import * as api from '../api.js';
import { h, replace, field, announce, notice, confirmDialog } from '../dom.js';
import { t, formatDate } from '../i18n.js';

export function heading(user) {
  return t('users.title', { company: user?.companyName || '' });
}

function addForm(message, done, ctx) {
  const email = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'off', spellcheck: 'false' });
  const password = h('input', { type: 'password', name: 'password', required: true, minlength: '12', autocomplete: 'new-password' });
  const role = h('select', { name: 'role' },
    h('option', { value: 'user' }, t('users.roleUser')),
    h('option', { value: 'admin' }, t('users.roleAdmin')));
  const submit = h('button', { type: 'submit', class: 'primary' }, t('users.submit'));
  const form = h('form', { class: 'card', novalidate: true, 'aria-labelledby': 'add-user-title' },
    h('h2', { id: 'add-user-title' }, t('users.create')),
    field(t('users.email'), email),
    field(t('users.password'), password, t('users.passwordHint')),
    field(t('users.role'), role),
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    replace(message);
    if (!email.value.trim() || !email.value.includes('@')) {
      replace(message, notice('error', t('users.invalidEmail')));
      email.focus();
      return;
    }
    if ([...password.value].length < 12) {
      replace(message, notice('error', t('users.weak')));
      password.focus();
      return;
    }
    submit.disabled = true;
    try {
      await api.createUser(email.value.trim(), password.value, role.value);
      const address = email.value.trim();
      password.value = '';
      await done(t('users.created', { email: address }));
    } catch (e) {
      submit.disabled = false;
      const text = e.status === 409 ? t('users.exists')
        : e.code === 'weak_password' ? t('users.weak')
          : e.code === 'invalid_email' ? t('users.invalidEmail') : ctx.describeError(e);
      replace(message, notice('error', text));
    }
  });
  return form;
}

export async function render(body, ctx) {
  const list = await api.users();
  if (!ctx.isCurrent()) return;
  const message = h('div', { class: 'page-message' });
  const rerender = async (text) => {
    await render(body, ctx);
    replace(body.querySelector('.page-message'), notice('success', text));
    announce(text);
  };
  const rows = list.map((u) => {
    const self = u.id === ctx.user.id;
    let action = self ? h('span', { class: 'muted' }, t('users.you')) : null;
    if (!self && u.isActive) {
      action = h('button', { type: 'button', class: 'danger', 'aria-label': t('users.deactivateLabel', { email: u.email }) },
        t('users.deactivate'));
      action.addEventListener('click', async () => {
        const ok = await confirmDialog({
          title: t('users.confirmTitle', { email: u.email }),
          body: t('users.confirmBody'),
          confirm: t('users.deactivate'),
          cancel: t('connections.cancel'),
          danger: true,
        });
        if (!ok) return;
        try {
          await api.deactivateUser(u.id);
          await rerender(t('users.deactivated', { email: u.email }));
        } catch (e) {
          replace(message, notice('error', ctx.describeError(e)));
        }
      });
    }
    return h('tr', { 'data-user': u.id },
      h('th', { scope: 'row', 'data-label': t('users.email') }, u.email),
      h('td', { 'data-label': t('users.role') }, u.role === 'admin' ? t('users.roleAdmin') : t('users.roleUser')),
      h('td', { 'data-label': t('users.status') },
        h('span', { class: `badge ${u.isActive ? 'ok' : ''}` }, u.isActive ? t('users.active') : t('users.inactive'))),
      h('td', { 'data-label': t('users.createdAt') }, formatDate(u.createdAt)),
      h('td', { 'data-label': t('users.actions') }, action));
  });
  const table = h('div', { class: 'table-wrap' }, h('table', { class: 'list' },
    h('caption', { class: 'visually-hidden' }, heading(ctx.user)),
    h('thead', {}, h('tr', {}, ['email', 'role', 'status', 'createdAt', 'actions'].map((k) => h('th', { scope: 'col' }, t(`users.${k}`))))),
    h('tbody', {}, rows)));
  replace(body, h('p', { class: 'intro' }, t('users.intro')), message, table, addForm(message, rerender, ctx));
}
