// Otobot's portal in a real browser (Debian's chromium, driven by
// playwright-core) against a real `otobot serve` and a real OAuth2 server.
// Started by run.sh, which passes the addresses and secrets in the
// environment. The tests run in order and build on each other: the admin
// adds Alice, Alice connects accounts, a workflow reads one, and so on.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const env = process.env;
const BASE = env.PORTAL_URL; // http://localhost:<port>, the browser's address of Otobot
const API = env.API_URL; // http://127.0.0.1:<port>, the same server, for node's own calls
const ART = env.ARTIFACTS;
const ALICE = 'alice@acme.test';
const AXE = readFileSync(new URL('./node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');
mkdirSync(ART, { recursive: true });

let browser;
const problems = []; // CSP violations and page errors, from every page
let aliceId;
// Sessions kept across tests: each login counts against the per-address
// login limit (10 attempts per 15 minutes by default).
let admin;
let alice;
let aliceGrant; // the standing grant Alice creates in the portal (its token)

before(async () => {
  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Playwright gives every launch a fresh, temporary profile directory.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
});

async function open(options = {}) {
  const context = await browser.newContext({ locale: 'en-US', ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('console', (m) => {
    if (/Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${page.url()}: ${e}`));
  return { context, page };
}

/** Waits for a page of the portal: its h1, and its data loaded. */
async function heading(page, name) {
  await page.getByRole('heading', { level: 1, name }).waitFor();
  await page.locator('main .loading').waitFor({ state: 'detached' });
}

async function shot(page, name) {
  await page.screenshot({ path: `${ART}/${name}.png`, fullPage: true });
}

/** axe-core, run in the page (evaluated through the DevTools protocol, so the page's CSP stays on). */
async function checkA11y(page, name) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] },
    });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} → ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  });
  assert.deepEqual(violations, [], `accessibility violations on ${name}`);
}

async function login(page, email, password) {
  await page.goto(`${BASE}/`);
  await heading(page, /Sign in|Connexion/);
  await page.getByLabel(/^(Email|Adresse e-mail)$/).fill(email);
  await page.getByLabel(/^(Password|Mot de passe)$/).fill(password);
  await page.getByRole('button', { name: /^(Sign in|Se connecter)$/ }).click();
  await heading(page, /My connections|Mes connexions/);
}

async function nav(page, name) {
  await page.getByRole('navigation').getByRole('link', { name }).click();
}

/** The page's own session (profile and CSRF token), read as the page would. */
async function pageSession(page) {
  return page.evaluate(() => fetch('/api/portal/session', { cache: 'no-store' }).then((r) => r.json()));
}

function psql(sql) {
  return execFileSync('psql', [env.DB_URL, '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8' }).trim();
}

test('the portal is served by otobot serve itself, with a strict Content-Security-Policy', async () => {
  const root = await fetch(`${API}/`, { redirect: 'manual' });
  assert.equal(root.status, 303);
  assert.equal(root.headers.get('location'), '/portal/');

  const index = await fetch(`${API}/portal/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /^text\/html/);
  const csp = index.headers.get('content-security-policy');
  for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"]) {
    assert.ok(csp.includes(directive), `CSP has ${directive}: ${csp}`);
  }
  assert.ok(!csp.includes('unsafe'), 'no unsafe-inline or unsafe-eval');
  assert.equal(index.headers.get('x-frame-options'), 'DENY');
  assert.equal(index.headers.get('x-content-type-options'), 'nosniff');
  const html = await index.text();
  assert.ok(!/<script>|<style|\sstyle="|\son\w+="/i.test(html), 'no inline script, style or handler in index.html');

  const js = await fetch(`${API}/portal/js/app.js`);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  const etag = js.headers.get('etag');
  const again = await fetch(`${API}/portal/js/app.js`, { headers: { 'if-none-match': etag } });
  assert.equal(again.status, 304, 'unchanged files are revalidated, not resent');
  assert.equal((await fetch(`${API}/portal/no-such-file.js`)).status, 404);
  assert.equal((await fetch(`${API}/portal/js/../../../etc/passwd`)).status, 404);
});

test('an admin signs in with the keyboard alone; a wrong password is refused first', async () => {
  const { context, page } = await open();
  await page.goto(`${BASE}/`);
  await heading(page, 'Sign in');
  assert.match(page.url(), /\/portal\/#\/login$/);
  await checkA11y(page, 'login');
  await shot(page, 'login');

  const focused = () => page.evaluate(() => document.activeElement?.getAttribute('name') || document.activeElement?.tagName);
  assert.equal(await focused(), 'H1', 'the page heading has the focus on arrival');
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'email');
  await page.keyboard.type(env.ADMIN_EMAIL);
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'password');
  await page.keyboard.type('not-the-password');
  await page.keyboard.press('Enter');
  await page.getByRole('alert').filter({ hasText: 'Wrong email or password.' }).waitFor();
  assert.equal(await focused(), 'password', 'the focus goes back to the password');
  await page.keyboard.type(env.ADMIN_PASSWORD);
  await page.keyboard.press('Enter');
  await heading(page, 'My connections');
  assert.equal(await focused(), 'H1');
  await page.getByText('You have no connection yet.').waitFor();
  await page.getByRole('navigation').getByRole('link', { name: 'Users' }).waitFor();
  await checkA11y(page, 'connections (empty)');
  admin = { context, page };
});

test('the admin adds two users of the client and deactivates one', async () => {
  const { page } = admin;
  await nav(page, 'Users');
  await heading(page, 'Users of Acme Corp');
  for (const email of [ALICE, 'bob@acme.test']) {
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Initial password').fill(env.USER_PASSWORD);
    await page.getByLabel('Role').selectOption('user');
    await page.getByRole('button', { name: 'Add the user' }).click();
    await page.locator('.page-message').getByText(`${email} added.`).waitFor();
  }
  // A password that is too short never reaches the server.
  await page.getByLabel('Email').fill('carol@acme.test');
  await page.getByLabel('Initial password').fill('short');
  await page.getByRole('button', { name: 'Add the user' }).click();
  await page.getByRole('alert').filter({ hasText: 'at least 12 characters' }).waitFor();

  await page.getByRole('button', { name: 'Deactivate bob@acme.test' }).click();
  const dialog = page.getByRole('dialog', { name: 'Deactivate bob@acme.test?' });
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel', 'the safe choice has the focus');
  await dialog.getByRole('button', { name: 'Deactivate' }).click();
  await page.locator('.page-message').getByText('bob@acme.test deactivated.').waitFor();
  const bob = page.locator('tr', { hasText: 'bob@acme.test' });
  await bob.getByText('Deactivated').waitFor();
  await page.locator('tr', { hasText: ALICE }).getByText('Active').waitFor();
  await checkA11y(page, 'users');
  await shot(page, 'users');
});

test('the session is an HttpOnly SameSite cookie that needs its CSRF header, and logging out ends it on the server', async () => {
  const { context, page } = admin;
  const cookies = await context.cookies();
  const cookie = cookies.find((c) => c.name === 'otobot_session');
  assert.ok(cookie, `session cookie set: ${cookies.map((c) => c.name)}`);
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/');
  assert.ok(!(await page.evaluate(() => document.cookie)).includes('otobot_session'), 'scripts cannot read it');
  const { csrfToken, user } = await pageSession(page);
  assert.equal(user.email, env.ADMIN_EMAIL);

  const asBrowser = (headers) => fetch(`${API}/api/tooljet/me`, { headers: { cookie: `otobot_session=${cookie.value}`, ...headers } });
  assert.equal((await asBrowser({ 'x-csrf-token': csrfToken })).status, 200, 'cookie and CSRF token');
  assert.equal((await asBrowser({})).status, 403, 'the cookie alone is refused');
  assert.equal((await asBrowser({ 'x-csrf-token': 'A'.repeat(43) })).status, 403, 'a wrong CSRF token is refused');
  const other = await fetch(`${API}/api/tooljet/me`, { headers: { authorization: `Bearer ${cookie.value}` } });
  assert.equal(other.status, 401, 'a session cookie is not a bearer token');

  await page.getByRole('button', { name: 'Log out' }).click();
  await heading(page, 'Sign in');
  await page.getByRole('status').filter({ hasText: 'You are logged out.' }).waitFor({ state: 'attached' });
  assert.equal((await asBrowser({ 'x-csrf-token': csrfToken })).status, 401, 'a logged-out cookie no longer works');
  assert.equal((await context.cookies()).filter((c) => c.name === 'otobot_session').length, 0, 'the cookie is gone');
  await context.close();
});

test('Alice connects her account through the OAuth flow of a real OAuth2 server', async () => {
  const { context, page } = await open();
  await login(page, ALICE, env.USER_PASSWORD);
  aliceId = (await pageSession(page)).user.id;
  await assert.rejects(page.getByRole('navigation').getByRole('link', { name: 'Users' }).waitFor({ timeout: 500 }),
    'a user sees no Users page');
  await nav(page, 'Services');
  await heading(page, 'Services');
  await checkA11y(page, 'services');
  await shot(page, 'services');

  await page.getByRole('button', { name: 'Connect Test IdP' }).click();
  // The provider's own pages (oidc-provider's development login and consent).
  await page.waitForURL(`${env.IDP_URL}/interaction/**`);
  await page.locator('input[name="login"]').fill('alice');
  await page.locator('input[name="password"]').fill('anything');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  await page.getByRole('button', { name: 'Continue' }).click();
  // Back in the portal, from another site: the SameSite=Strict session holds.
  await heading(page, 'My connections');
  await page.getByRole('status').filter({ hasText: 'Test IdP is connected.' }).waitFor();
  assert.ok(!page.url().includes('oauth='), 'the outcome is removed from the address');
  const row = page.locator('tr', { hasText: 'Test IdP' });
  await row.getByText('alice@example.test').waitFor();
  await row.getByText('Active').waitFor();
  await checkA11y(page, 'connections');
  alice = { context, page };
});

test('Alice adds an API key, which is never shown back', async () => {
  const { page } = alice;
  await nav(page, 'Services');
  await heading(page, 'Services');
  await page.getByRole('searchbox', { name: 'Filter services' }).fill('openai');
  const card = page.locator('li.service[data-service="openai"]');
  assert.equal(await page.locator('li.service:visible').count(), 1, 'the filter leaves one service');
  await card.locator('summary').click();
  // Opening the form moves the focus to the key (the toggle event comes after the click).
  await page.waitForFunction(() => document.activeElement?.getAttribute('name') === 'apiKey');
  await card.getByLabel('API key for OpenAI', { exact: true }).fill(env.API_KEY);
  await card.getByLabel('Label (optional)').fill('personal');
  await card.getByRole('button', { name: 'Save the key' }).click();
  await card.getByText('OpenAI: API key saved.').waitFor();
  assert.equal(await card.getByLabel('API key for OpenAI', { exact: true }).inputValue(), '', 'the field is emptied');

  await nav(page, 'My connections');
  await heading(page, 'My connections');
  const row = page.locator('tr', { hasText: 'OpenAI' });
  await row.getByText('personal').waitFor();
  await shot(page, 'connections');
  assert.ok(!(await page.content()).includes(env.API_KEY), 'the key is not in the page');
});

test('Alice creates a standing grant for a scheduled workflow; its token is shown once', async () => {
  const { page } = alice;
  await nav(page, 'Grants');
  await heading(page, 'Grants');
  await page.getByText('You have no grant.').waitFor();
  assert.equal(await page.getByRole('combobox', { name: 'Show' }).count(), 0, 'a user sees only their own grants');
  // The services she connected are offered; the others are one disclosure away.
  const form = page.locator('form', { has: page.getByRole('heading', { name: 'New standing grant' }) });
  await form.getByLabel('Test IdP').waitFor();
  await form.getByLabel('OpenAI').waitFor();
  assert.equal(await form.locator('details.other-services').getAttribute('open'), null, 'other services folded away');
  // The expiry: 90 days by default, at most a year (checked before the server).
  const expires = form.getByLabel('Expires on');
  const day = (n) => {
    const d = new Date();
    d.setHours(12, 0, 0, 0);
    d.setDate(d.getDate() + n);
    return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  };
  assert.equal(await expires.inputValue(), day(90));
  assert.equal(await expires.getAttribute('max'), day(364));
  await form.getByLabel('Workflow', { exact: true }).fill('nightly report');
  await form.getByRole('button', { name: 'Create the grant' }).click();
  await page.getByRole('alert').filter({ hasText: 'Choose at least one service.' }).waitFor();
  await form.getByLabel('Test IdP').check();
  await expires.fill(day(400));
  await form.getByRole('button', { name: 'Create the grant' }).click();
  await page.getByRole('alert').filter({ hasText: 'Choose an expiry date between tomorrow and' }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('name')), 'expires', 'the focus goes to the date');
  assert.equal(psql(`SELECT count(*) FROM otobot.grants WHERE user_id = '${aliceId}'`), '0', 'nothing reached the server');
  await expires.fill(day(90));
  await form.getByRole('button', { name: 'Create the grant' }).click();

  const once = page.locator('.page-message .notice.token-once');
  await once.getByText('Grant created. Copy its token now: it is shown only once').waitFor();
  aliceGrant = await page.getByLabel('Grant token').inputValue();
  assert.match(aliceGrant, /^otg_[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(await page.evaluate(() => {
    const el = document.activeElement;
    return [el?.classList.contains('token'), el?.selectionStart, el?.selectionEnd];
  }), [true, 0, aliceGrant.length], 'the token has the focus, selected, ready to copy');
  await once.getByRole('button', { name: 'Copy' }).waitFor();
  const row = page.locator('tr', { hasText: 'nightly report' });
  await row.getByText('Active').waitFor();
  await row.getByText('Test IdP').waitFor();
  await row.getByText('Standing').waitFor();
  await checkA11y(page, 'grants (token shown once)');
  await shot(page, 'grants');
  // The end of that day, local time: within a year of now, as the server demands.
  const expiry = psql(`SELECT expires_at > now() + interval '89 days' AND expires_at < now() + interval '91 days' FROM otobot.grants WHERE user_id = '${aliceId}'`);
  assert.equal(expiry, 't');

  // Shown once: "I have copied it" hides it for good, the list never carries
  // it, and the database keeps only its hash.
  await once.getByRole('button', { name: 'I have copied it' }).click();
  await once.waitFor({ state: 'detached' });
  assert.ok(!(await page.content()).includes(aliceGrant), 'the token is gone from the page');
  await nav(page, 'My connections');
  await heading(page, 'My connections');
  await nav(page, 'Grants');
  await heading(page, 'Grants');
  await page.locator('tr', { hasText: 'nightly report' }).waitFor();
  assert.ok(!(await page.content()).includes(aliceGrant), 'the token is not shown again');
  await shot(page, 'grants-list');
  const listed = await page.evaluate(() => fetch('/api/tooljet/grants', { headers: { accept: 'application/json' } }).then((r) => r.text()));
  assert.ok(!listed.includes('otg_'), 'the list answer carries no token');
  assert.equal(psql(`SELECT count(*) FROM otobot.grants WHERE token_hash = sha256(convert_to('${aliceGrant}', 'UTF8'))`), '1');
  await checkA11y(page, 'grants');
});

test("reads through the internal route appear in Alice's access history, with caller, workflow, grant and request id", async () => {
  const refused = await fetch(`${API}/api/internal/user/${aliceId}/credentials/testidp`, {
    headers: { 'x-internal-token': env.INTERNAL_TOKEN, 'x-request-id': 'portal-e2e-refused' },
  });
  assert.equal(refused.status, 403, 'n8n needs a grant');
  assert.equal((await refused.json()).code, 'grant_required');
  const read = await fetch(`${API}/api/internal/user/${aliceId}/credentials/testidp`, {
    headers: { 'x-internal-token': env.INTERNAL_TOKEN, 'x-otobot-grant': aliceGrant, 'x-request-id': 'portal-e2e-read-1' },
  });
  assert.equal(read.status, 200, await read.clone().text());
  assert.equal((await read.json()).hasCredentials, true);
  // The reports caller is configured trusted (run.sh): no grant.
  const other = await fetch(`${API}/api/internal/user/${aliceId}/credentials/openai`, {
    headers: { 'x-internal-token': env.REPORTS_TOKEN, 'x-request-id': 'portal-e2e-read-2' },
  });
  assert.equal(other.status, 200);

  const { page } = alice;
  await nav(page, 'Access history');
  await heading(page, 'Access history');
  const [first, second, third] = [0, 1, 2].map((i) => page.locator('tbody tr').nth(i));
  await first.getByText('portal-e2e-read-2').waitFor();
  await first.getByText('reports').waitFor();
  await first.getByText('personal', { exact: true }).waitFor();
  await first.getByText('none (trusted caller)').waitFor();
  await second.getByText('portal-e2e-read-1').waitFor();
  await second.getByText('n8n (workflows)').waitFor();
  await second.getByText('Secret read').waitFor();
  await second.getByText('alice@example.test').waitFor();
  await second.getByText('nightly report').waitFor();
  const grantId = psql(`SELECT id FROM otobot.grants WHERE token_hash = sha256(convert_to('${aliceGrant}', 'UTF8'))`);
  await second.getByText(grantId.slice(0, 8), { exact: true }).waitFor();
  assert.equal(await second.locator(`code[title="${grantId}"]`).count(), 1, 'the whole grant id on hover');
  await second.getByText('standing', { exact: true }).waitFor();
  // The refused attempt is in her history too.
  await third.getByText('portal-e2e-refused').waitFor();
  await third.getByText('Refused: no valid grant (no grant was presented)').waitFor();
  assert.equal(await page.locator('tbody tr').count(), 3, 'reads only: the two reads and the refusal');
  await checkA11y(page, 'history');
  await shot(page, 'history');

  await page.getByLabel('Show').selectOption('all');
  await page.locator('tbody tr[data-action="connection_created"]').first().waitFor();
  await page.locator('tbody tr[data-action="login_succeeded"]').first().waitFor();
  const given = page.locator('tbody tr[data-action="grant_created"]');
  await given.getByText('nightly report').waitFor();
  await given.getByText(grantId.slice(0, 8), { exact: true }).waitFor();
  assert.ok(!(await page.content()).includes(env.API_KEY), 'no secret in the history');
  assert.ok(!(await page.content()).includes(aliceGrant), 'no grant token in the history');
  // Nobody else's rows: the admin's sign-ins are not in Alice's history.
  assert.equal(await page.locator('tbody tr', { hasText: env.ADMIN_EMAIL }).count(), 0);
  await page.getByLabel('Show').selectOption('reads');
  await page.locator('tbody tr').nth(2).getByText('portal-e2e-refused').waitFor();
});

test("the admin sees every grant of the client and revokes one of Alice's; never in someone else's name", async () => {
  // A second grant of Alice's, made as the API would for her.
  psql(`SELECT otobot.create_standing_grant('${aliceId}', 'weekly digest', '{openai}', sha256('portal-e2e-weekly'),
        now() + interval '10 days', 'test', NULL)`);
  const { context, page } = await open();
  await login(page, env.ADMIN_EMAIL, env.ADMIN_PASSWORD);
  const adminId = (await pageSession(page)).user.id;
  await nav(page, 'Grants');
  await heading(page, 'Grants');
  await page.getByText('You have no grant.').waitFor();
  await page.getByLabel('Show').selectOption('client');
  await page.locator('tr', { hasText: 'nightly report' }).getByText(ALICE).waitFor();
  const weekly = page.locator('tr', { hasText: 'weekly digest' });
  await weekly.getByText(ALICE).waitFor();
  assert.equal(await page.getByRole('columnheader', { name: 'User' }).count(), 1);
  await checkA11y(page, 'grants (admin, whole client)');
  await shot(page, 'grants-admin');
  await weekly.getByRole('button', { name: `Revoke the grant of weekly digest (${ALICE})` }).click();
  const dialog = page.getByRole('dialog', { name: `Revoke the grant of weekly digest (${ALICE})?` });
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Revoke' }).click();
  await page.locator('.page-message').getByText('The grant of weekly digest is revoked.').waitFor();
  await page.locator('tr', { hasText: 'weekly digest' }).getByText('Revoked').waitFor();
  assert.equal(await page.getByLabel('Show').inputValue(), 'client', 'the view stays on the whole client');
  assert.equal(psql(`SELECT revoked_by FROM otobot.grants WHERE workflow = 'weekly digest'`), adminId);
  // A grant the admin creates is theirs, never Alice's.
  await page.getByLabel('Workflow', { exact: true }).fill('admin report');
  // No connection of their own: every service is offered, unfolded.
  assert.notEqual(await page.locator('details.other-services').getAttribute('open'), null);
  await page.getByLabel('OpenAI').check();
  await page.getByRole('button', { name: 'Create the grant' }).click();
  await page.locator('.notice.token-once').waitFor();
  assert.equal(psql(`SELECT user_id FROM otobot.grants WHERE workflow = 'admin report'`), adminId);
  await context.close();
});

test('Alice revokes her grant; the workflow holding it is refused from then on, and her history says so', async () => {
  const { page } = alice;
  await nav(page, 'Grants');
  await heading(page, 'Grants');
  assert.equal(await page.locator('tr', { hasText: 'admin report' }).count(), 0, "the admin's grant is not hers");
  await page.locator('tr', { hasText: 'weekly digest' }).getByText('Revoked').waitFor();
  const row = page.locator('tr', { hasText: 'nightly report' });
  await row.getByRole('button', { name: 'Revoke the grant of nightly report' }).click();
  const dialog = page.getByRole('dialog', { name: 'Revoke the grant of nightly report?' });
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel', 'the safe choice has the focus');
  await dialog.getByRole('button', { name: 'Revoke' }).click();
  await page.getByRole('dialog').waitFor({ state: 'detached' });
  await page.locator('.page-message').getByText('The grant of nightly report is revoked.').waitFor();
  await page.locator('tr', { hasText: 'nightly report' }).getByText('Revoked').waitFor();
  assert.equal(await page.locator('tr', { hasText: 'nightly report' }).getByRole('button').count(), 0, 'nothing left to revoke');
  assert.equal(await page.evaluate(() => document.activeElement?.closest('tr')?.textContent.includes('nightly report')), true,
    'the keyboard stays on the row');
  const after = await fetch(`${API}/api/internal/user/${aliceId}/credentials/testidp`, {
    headers: { 'x-internal-token': env.INTERNAL_TOKEN, 'x-otobot-grant': aliceGrant, 'x-request-id': 'portal-e2e-after-revoke' },
  });
  assert.equal(after.status, 403);
  const body = await after.json();
  assert.deepEqual([body.code, body.reason], ['grant_invalid', 'revoked']);

  await nav(page, 'Access history');
  await heading(page, 'Access history');
  const refusal = page.locator('tbody tr').nth(0);
  await refusal.getByText('portal-e2e-after-revoke').waitFor();
  await refusal.getByText('Refused: no valid grant (the grant was revoked)').waitFor();
  await refusal.getByText('nightly report').waitFor();
  const grantId = psql(`SELECT id FROM otobot.grants WHERE token_hash = sha256(convert_to('${aliceGrant}', 'UTF8'))`);
  await refusal.getByText(grantId.slice(0, 8), { exact: true }).waitFor();
  await shot(page, 'history-refused');
});

test('Alice disconnects her OAuth account; it is revoked at the provider', async () => {
  const { page } = alice;
  await nav(page, 'My connections');
  await heading(page, 'My connections');
  const row = page.locator('tr', { hasText: 'Test IdP' });
  await row.getByRole('button', { name: 'Disconnect Test IdP' }).click();
  await page.getByRole('dialog', { name: 'Disconnect Test IdP?' }).waitFor();
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'detached' });
  assert.equal(await row.count(), 1, 'Escape cancels');
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Disconnect Test IdP',
    'the focus returns to the button');

  await row.getByRole('button', { name: 'Disconnect Test IdP' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Disconnect' }).click();
  await page.locator('.page-message').getByText('Test IdP disconnected. The access was revoked at the provider.').waitFor();
  await row.waitFor({ state: 'detached' });
  const after = await fetch(`${API}/api/internal/user/${aliceId}/credentials/testidp`, {
    headers: { 'x-internal-token': env.REPORTS_TOKEN },
  });
  assert.equal(after.status, 404, 'workflows can no longer read it');
});

test('an expired session goes back to the login page, which says why', async () => {
  const { context, page } = alice;
  psql(`UPDATE otobot.portal_sessions SET expires_at = now() WHERE user_id = '${aliceId}' AND ended_at IS NULL`);
  await nav(page, 'Access history');
  await heading(page, 'Sign in');
  await page.getByText('Your session has ended. Sign in again.').waitFor();
  await context.close();
});

test("the French interface: from the browser's language, and a visible switch that is remembered", async () => {
  const { context, page } = await open({ locale: 'fr-FR' });
  await page.goto(`${BASE}/`);
  await heading(page, 'Connexion');
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'fr');
  await page.getByLabel('Adresse e-mail').waitFor();
  await login(page, ALICE, env.USER_PASSWORD);
  await page.getByRole('navigation', { name: 'Principale' }).getByRole('link', { name: 'Historique d’accès' }).click();
  await heading(page, 'Historique d’accès');
  await page.getByText('Secret lu').first().waitFor();
  await page.getByText('n8n (workflows)').first().waitFor();
  await checkA11y(page, 'history (fr)');
  await shot(page, 'history-fr');

  // The grants page in French, with the keyboard alone: a grant created, its token focused.
  await page.getByRole('navigation', { name: 'Principale' }).getByRole('link', { name: 'Autorisations' }).click();
  await heading(page, 'Autorisations');
  await page.locator('tr', { hasText: 'nightly report' }).getByText('Révoquée').waitFor();
  await page.locator('tr', { hasText: 'nightly report' }).getByText('Permanente').waitFor();
  const focused = () => page.evaluate(() => document.activeElement?.getAttribute('name') || document.activeElement?.tagName);
  await page.getByLabel('Workflow', { exact: true }).focus();
  await page.keyboard.type('rapport mensuel');
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'services', 'from the name to the first service');
  await page.keyboard.press('Space');
  await page.keyboard.press('Shift+Tab');
  assert.equal(await focused(), 'workflow');
  await page.keyboard.press('Enter');
  await page.getByText('Autorisation créée. Copiez son jeton maintenant : il ne s’affiche qu’une fois').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.classList.contains('token')), true, 'the token has the focus');
  assert.equal(psql(`SELECT services::text FROM otobot.grants WHERE workflow = 'rapport mensuel'`), '{openai}');
  await checkA11y(page, 'grants (fr)');
  await shot(page, 'grants-fr');

  await page.getByRole('group', { name: 'Langue' }).getByRole('button', { name: 'English' }).click();
  await heading(page, 'Grants');
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
  assert.equal(await page.locator('input.token').count(), 0, 'redrawing the page drops the token');
  await page.reload();
  await heading(page, 'Grants');
  assert.equal(await page.getByRole('button', { name: 'English' }).getAttribute('aria-pressed'), 'true');

  // Every string exists in both languages.
  const keys = await page.evaluate(async () => (await import('/portal/js/i18n.js')).keys());
  assert.deepEqual([...keys.fr].sort(), [...keys.en].sort());
  await context.close();
});

test('on a phone-sized screen every page fits without sideways scrolling', async () => {
  const { context, page } = await open({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await login(page, ALICE, env.USER_PASSWORD);
  for (const [link, title, file] of [['My connections', 'My connections', 'phone-connections'],
    ['Services', 'Services', 'phone-services'], ['Access history', 'Access history', 'phone-history'],
    ['Grants', 'Grants', 'phone-grants']]) {
    await page.getByRole('navigation').getByRole('link', { name: link }).tap();
    await heading(page, title);
    const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scroll <= width, `${title}: page ${scroll}px wide in a ${width}px screen`);
    await checkA11y(page, `${title} (phone)`);
    await shot(page, file);
  }
  await page.getByRole('button', { name: 'Log out' }).tap();
  await heading(page, 'Sign in');
  await context.close();
});

test('no page broke its Content-Security-Policy or threw an error', () => {
  assert.deepEqual(problems, []);
});
