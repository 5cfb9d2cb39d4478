// The message tables (one per language, shared with the console at /i18n/) and the
// language switch. Simplified Chinese unless the member chose English on this device.

import zh from '/i18n/zh-CN.js';
import en from '/i18n/en.js';

const TABLES = { 'zh-CN': zh, en };
const KEY = 'patrol.lang';

let lang = TABLES[localStorage.getItem(KEY)] ? localStorage.getItem(KEY) : 'zh-CN';

/** The language in use: 'zh-CN' or 'en'. */
export function language() {
  return lang;
}

/** The message `key` with `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  const text = TABLES[lang][key] ?? TABLES['zh-CN'][key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** Writes the messages into every element marked with `data-i18n`. */
export function translate(root = document) {
  document.documentElement.lang = lang;
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll('[data-i18n-label]')) node.setAttribute('aria-label', t(node.dataset.i18nLabel));
  document.title = t('app.name');
}

/** Switches to the other language and remembers the choice on this device. */
export function toggle() {
  lang = lang === 'zh-CN' ? 'en' : 'zh-CN';
  localStorage.setItem(KEY, lang);
  translate();
  return lang;
}
