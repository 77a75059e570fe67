// Sign in: email and password; the session cookie is set by the server.

import * as api from '../api.js';
import { h, replace, field, notice } from '../dom.js';
import { t } from '../i18n.js';

export async function render(body, ctx) {
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true, spellcheck: 'false' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const error = h('div', { class: 'form-error', id: 'login-error' });
  const submit = h('button', { type: 'submit', class: 'primary' }, t('login.submit'));
  const form = h('form', { class: 'card narrow', novalidate: true, 'aria-describedby': 'login-error' },
    field(t('login.email'), email),
    field(t('login.password'), password),
    error,
    h('div', { class: 'actions' }, submit));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    replace(error);
    if (!email.value.trim() || !password.value) {
      replace(error, notice('error', t('login.required')));
      (email.value.trim() ? password : email).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = t('login.busy');
    try {
      await api.login(email.value.trim(), password.value);
      password.value = '';
      ctx.navigate('/connections');
    } catch (e) {
      submit.disabled = false;
      submit.textContent = t('login.submit');
      const message = e.status === 401 ? t('login.invalid') : ctx.describeError(e);
      replace(error, notice('error', message));
      password.value = '';
      password.focus();
    }
  });

  replace(body,
    ctx.expired ? notice('info', t('login.expired')) : null,
    ctx.error ? notice('error', ctx.error) : null,
    h('p', { class: 'intro' }, t('login.intro')),
    form);
}
