// Small DOM helpers. Text always goes in as text (never as HTML), so data
// from the server cannot become markup.

/**
 * h('button', {class: 'primary', onclick: fn}, 'Save') → an element.
 * Attributes: `class`, `for`, `text`, `on<event>` handlers, booleans (true
 * sets, false/null/undefined omits), anything else as a string attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'text') {
      el.textContent = value;
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A unique id for label/input pairs. */
export function id(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form field: label, input, optional hint. */
export function field(label, input, hint) {
  const inputId = input.id || id('f');
  input.id = inputId;
  const parts = [h('label', { for: inputId }, label), input];
  if (hint) {
    const hintId = `${inputId}-hint`;
    input.setAttribute('aria-describedby', hintId);
    parts.push(h('p', { class: 'hint', id: hintId }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

/** Says `message` to screen readers (and shows it) in the status region. */
export function announce(message) {
  const region = document.getElementById('status');
  region.textContent = '';
  // A new text node on the next frame, so the same message is read again.
  requestAnimationFrame(() => {
    region.textContent = message;
  });
}

/**
 * A modal confirmation (native <dialog>: focus moves into it, Escape
 * cancels, focus returns to the opener). Resolves true when confirmed.
 */
export function confirmDialog({ title, body, confirm, cancel, danger }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const titleId = id('dlg');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId },
      h('h2', { id: titleId }, title),
      h('p', {}, body),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', value: 'cancel', onclick: () => dialog.close('cancel') }, cancel),
        h('button', { type: 'button', class: danger ? 'danger' : 'primary', value: 'ok', onclick: () => dialog.close('ok') }, confirm)));
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      dialog.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(ok);
    });
    document.body.append(dialog);
    dialog.showModal();
    // The safe choice has the focus.
    dialog.querySelector('button.secondary').focus();
  });
}

/** A notice block: kind is info, success or error. */
export function notice(kind, ...content) {
  return h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, content);
}
