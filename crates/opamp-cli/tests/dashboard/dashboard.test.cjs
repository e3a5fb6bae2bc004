// The dashboard driven through Chromium by Playwright, as an operator would use it.
// Started by crates/opamp-cli/tests/dashboard.rs, which runs the server and the supervisors
// and passes their addresses in the environment.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { chromium } = require('playwright-core');

const base = process.env.OPAMP_DASHBOARD_URL;
const agents = Number(process.env.OPAMP_DASHBOARD_AGENTS);
const shots = process.env.OPAMP_SCREENSHOTS;
const ROLLOUT_TIMEOUT = 120_000;

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

async function signIn(page, token) {
  await page.goto(`${base}/ui`);
  // Not signed in: the dashboard sends us to the sign-in form.
  assert.match(page.url(), /\/ui\/login$/);
  await page.fill('input[name=token]', token);
  await page.click('button[type=submit]');
  await page.waitForURL(`${base}/ui`);
}

// Waits (live, no reload) until the rollout page shows a finished status; returns it.
async function finalStatus(page) {
  const status = page.locator('[data-testid=rollout-status]', { hasText: /^(completed|rolled_back|failed)$/ });
  await status.waitFor({ timeout: ROLLOUT_TIMEOUT });
  return status.innerText();
}

// Opens the overview and waits, without reloading (the page updates itself over SSE), until
// every agent is healthy on `version`.
async function waitForFleet(page, version) {
  await page.goto(`${base}/ui`);
  const exactly = (text) => new RegExp(`^${String(text).replace(/\./g, '\\.')}$`);
  await page
    .locator('#fleet tbody tr')
    .filter({ has: page.locator('td:nth-child(2)', { hasText: exactly(version) }) })
    .filter({ has: page.locator('td:nth-child(3)', { hasText: exactly(agents) }) })
    .waitFor({ timeout: ROLLOUT_TIMEOUT });
}

async function startRollout(page, version, bake = '1s') {
  await page.goto(`${base}/ui/rollouts`);
  const form = page.locator('#start-rollout');
  await form.locator('select[name=package]').selectOption('otelcol');
  await form.locator('input[name=version]').fill(version);
  await form.locator('input[name=selector]').fill('env=test');
  await form.locator('input[name=canary_share]').fill('0.2');
  await form.locator('input[name=batches]').fill('1');
  await form.locator('input[name=bake_time]').fill(bake);
  await form.locator('input[name=install_timeout]').fill('60s');
  await form.locator('input[name=health_timeout]').fill('30s');
  await form.locator('button[type=submit]').click();
  await page.waitForURL(/\/ui\/rollouts\/[0-9a-f-]{36}$/);
  return page.url().split('/').pop();
}

test('an operator signs in, runs a good and a bad rollout; a read-only operator cannot write', async () => {
  const context = await chromium.launchPersistentContext(process.env.OPAMP_USER_DATA_DIR, {
    executablePath: process.env.OPAMP_CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const violations = [];
  // Script errors and CSP violations; refused requests (the wrong token's 401, the read-only
  // write's 403) are expected and checked where they happen.
  page.on('console', (message) => {
    if (message.type() === 'error' && !/Failed to load resource/.test(message.text())) {
      violations.push(message.text());
    }
  });
  page.on('pageerror', (error) => violations.push(String(error)));
  page.on('dialog', (dialog) => dialog.accept());
  try {
    // A wrong token is refused with a message.
    await page.goto(`${base}/ui/login`);
    await page.fill('input[name=token]', 'not-a-token');
    await page.click('button[type=submit]');
    assert.match(await page.locator('.error').innerText(), /not an operator/);

    // The session cookie is HttpOnly and SameSite=Strict.
    await signIn(page, 'alice-token');
    const cookie = (await context.cookies(`${base}/ui`)).find((c) => c.name === 'opamp_session');
    assert.ok(cookie, 'session cookie set');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Strict');
    const answer = await page.request.get(`${base}/ui`);
    assert.match(answer.headers()['content-security-policy'], /default-src 'none'/);

    // The overview counts every agent, all on 1.0.0.
    await page.waitForSelector('[data-testid=agents-total]');
    assert.equal(await page.locator('[data-testid=agents-total]').innerText(), String(agents));
    assert.match(await page.locator('#fleet').innerText(), /1\.0\.0/);
    await shot(page, 'overview');

    // Agents list with a label filter, then one agent's page.
    await page.goto(`${base}/ui/agents`);
    assert.equal(await page.locator('table.agents tbody tr').count(), agents);
    await page.fill('input[name=labels]', 'region=eu-west');
    await page.click('form.filters button[type=submit]');
    assert.match(await page.locator('[data-testid=agents-count]').innerText(), new RegExp(`^1 of ${agents} agents`));
    await page.selectOption('select[name=health]', 'unhealthy');
    await page.fill('input[name=labels]', '');
    await page.click('form.filters button[type=submit]');
    assert.equal(await page.locator('table.agents tbody tr').count(), 0);
    await page.goto(`${base}/ui/agents`);
    await shot(page, 'agents');
    await page.locator('table.agents tbody tr a').first().click();
    await page.waitForURL(/\/ui\/agents\/[0-9a-fA-F-]+$/);
    assert.match(await page.locator('main').innerText(), /otelcol/);
    await shot(page, 'agent');

    // The catalog shows the three versions with hex hashes.
    await page.goto(`${base}/ui/catalog`);
    const catalog = await page.locator('main').innerText();
    for (const version of ['1.0.0', '1.1.0', '1.2.0']) assert.match(catalog, new RegExp(version.replace(/\./g, '\\.')));
    assert.match(catalog, /[0-9a-f]{64}/);
    await shot(page, 'catalog');

    // A rollout with a long bake time, paused, resumed and aborted from its page.
    const stopped = await startRollout(page, '1.1.0', '1h');
    const statusBadge = page.locator('[data-testid=rollout-status]');
    // The canary installs and turns healthy, live on the page; then the hour of baking.
    await page.locator('[data-testid=rollout-status]', { hasText: 'baking' }).waitFor({ timeout: ROLLOUT_TIMEOUT });
    await page.locator('#rollout form[action$="/pause"] button').click();
    await page.waitForURL(`${base}/ui/rollouts/${stopped}`);
    await page.locator('[data-testid=rollout-status]', { hasText: 'paused' }).waitFor();
    await page.locator('#rollout form[action$="/resume"] button').click();
    await page.waitForURL(`${base}/ui/rollouts/${stopped}`);
    assert.notEqual(await statusBadge.innerText(), 'paused');
    await page.fill('#rollout form[action$="/abort"] input[name=reason]', 'stopped from the browser test');
    await page.locator('#rollout form[action$="/abort"] button').click();
    await page.waitForURL(`${base}/ui/rollouts/${stopped}`);
    assert.equal(await finalStatus(page), 'rolled_back');
    assert.match(await page.locator('[data-testid=rollout-reason]').innerText(), /stopped from the browser test/);
    assert.match(await page.locator('#rollout').innerText(), /paused[\s\S]*resumed[\s\S]*aborted/);

    // The overview follows the revert live: every agent healthy on 1.0.0 again.
    await waitForFleet(page, '1.0.0');

    // A good rollout started from the page completes, watched live (no reload).
    const good = await startRollout(page, '1.1.0');
    assert.equal(await finalStatus(page), 'completed');
    assert.equal(await page.locator('[data-testid=rollout-healthy]').innerText(), String(agents));
    assert.match(await page.locator('#rollout').innerText(), /completed/);
    await shot(page, 'rollout-completed');

    await waitForFleet(page, '1.1.0');
    await shot(page, 'overview-after-rollout');

    // The bad version: the canary crashes, the rollout aborts and rolls back, with the reason.
    const bad = await startRollout(page, '1.2.0');
    assert.notEqual(bad, good);
    assert.equal(await finalStatus(page), 'rolled_back');
    assert.equal(await page.locator('[data-testid=rollout-failed]').innerText(), '1');
    assert.match(await page.locator('[data-testid=failure-reason]').first().innerText(), /unhealthy|health/);
    assert.match(await page.locator('[data-testid=rollout-reason]').innerText(), /./);
    await shot(page, 'rollout-rolled-back');

    await page.goto(`${base}/ui/rollouts`);
    assert.equal(await page.locator('main table tbody tr').count(), 3);
    await shot(page, 'rollouts');
    await page.goto(`${base}/ui/audit`);
    assert.match(await page.locator('main').innerText(), /agent_failed/);
    await shot(page, 'audit');

    // Sign out; the read-only operator sees no control that writes, and a write is refused.
    const csrfOfAlice = await page.locator('header input[name=csrf]').inputValue();
    await page.click('header button:has-text("Log out")');
    await page.waitForURL(`${base}/ui/login`);
    await signIn(page, 'viewer-token');
    assert.match(await page.locator('header').innerText(), /read-only/);
    for (const url of [`${base}/ui/rollouts`, `${base}/ui/rollouts/${good}`, `${base}/ui/rollouts/${bad}`]) {
      await page.goto(url);
      const writeForms = await page.locator('main form[method=post]').count();
      assert.equal(writeForms, 0, `${url} offers ${writeForms} write forms to a read-only operator`);
      assert.equal(await page.locator('main button:has-text("Pause"), main button:has-text("Abort"), main button:has-text("Start rollout")').count(), 0);
    }
    await shot(page, 'read-only');
    const csrf = await page.locator('header input[name=csrf]').inputValue();
    const refused = await page.request.post(`${base}/ui/rollouts/${stopped}/abort`, {
      form: { csrf, reason: 'read-only operator tries' },
    });
    assert.equal(refused.status(), 403);
    // The old session's CSRF token is worthless: that session is gone.
    assert.notEqual(csrf, csrfOfAlice);

    assert.deepEqual(violations, [], 'no script errors or CSP violations');
  } catch (error) {
    // What the operator saw when it went wrong.
    await shot(page, 'failure').catch(() => {});
    console.error(`at ${page.url()}:\n${await page.locator('body').innerText().catch(() => '?')}`);
    throw error;
  } finally {
    await context.close();
  }
});
