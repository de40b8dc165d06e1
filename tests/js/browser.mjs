// Drives sealpost's reference web client (jmap-ext/web/, served at /web/) in Chromium with
// Playwright, for tests/browser.rs. Each phase runs in a fresh browser:
//
//   node browser.mjs setup '{"chromium":…,"url":…,"address":…,"password":…,"out":…}'
//     signs in, creates two keys in the page (OpenPGP.js), escrowing the password, deactivates
//     the first, exports the second's protected private key to OUT/exported.sec.asc.
//   node browser.mjs one-key '{…, "expectDownload": BOOL, "wrongSignIn": BOOL, "keyboard": BOOL}'
//     signs in, creates one key under the server's escrow/model policy (a download of the
//     protected key when the server keeps none).
//   node browser.mjs read '{…, "eml": FILE, "keyFile": FILE, "storedKey": BOOL, "keyPassword": PW}'
//     signs in, opens the delivered message and decrypts it with the stored key (unless
//     storedKey is false), with a wrong password, and with the key file (if given); the key
//     password is keyPassword, or else the sign-in password.
//
// Screenshots go to OUT/NN-name.png. The result is one JSON object on stdout; any failure
// exits non-zero with the reason (and a screenshot of the page at that moment).

import { chromium } from 'playwright-core';
import path from 'node:path';

const [phase, json] = process.argv.slice(2);
const opts = JSON.parse(json);
const result = { phase, screenshots: [], console: [] };

const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(60000);
page.on('console', (m) => result.console.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => result.console.push(`pageerror: ${e.message}`));

let shot = opts.shotStart ?? (phase === 'read' ? 20 : 0);
async function screenshot(name) {
  shot += 1;
  const file = path.join(opts.out, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  result.screenshots.push(file);
}

/** Waits until the status line says `text` (or fails with the page's alert). */
async function waitStatus(text) {
  const status = page.locator('#status');
  const error = page.locator('#error');
  await page.waitForFunction(
    (t) => document.getElementById('status').textContent.includes(t)
      || !document.getElementById('error').hidden,
    text,
  );
  if (await error.isVisible()) throw new Error(`the page reports: ${await error.textContent()}`);
  return status.textContent();
}

async function signIn() {
  await page.goto(opts.url);
  await page.waitForSelector('html[data-ready="true"]');
  await page.getByLabel('Mail address').fill(opts.address);
  if (opts.wrongSignIn) {
    await page.getByLabel('Password', { exact: true }).fill(`${opts.password}-wrong`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#error').waitFor({ state: 'visible' });
    result.wrongSignIn = await page.locator('#error').textContent();
    await screenshot('wrong-sign-in');
  }
  await page.getByLabel('Password', { exact: true }).fill(opts.password);
  if (phase === 'setup') await screenshot('sign-in');
  if (opts.keyboard) {
    // Keyboard only: Enter in the password field submits the form.
    await page.getByLabel('Password', { exact: true }).press('Enter');
  } else {
    await page.getByRole('button', { name: 'Sign in' }).click();
  }
  await waitStatus('Signed in as');
  result.focused = await page.evaluate(() => document.activeElement?.id || null);
}

/** The key table as [{fingerprint, status, privateKey, recovery}]. */
async function keyRows() {
  return page.locator('#keys tr').evaluateAll((rows) => rows.map((r) => ({
    fingerprint: r.dataset.fingerprint,
    status: r.cells[3].textContent.trim(),
    privateKey: r.cells[4].textContent.trim(),
    recovery: r.cells[5].textContent.trim(),
  })));
}

async function createKey(label) {
  await page.getByLabel(/Device label/).fill(label);
  await page.getByRole('button', { name: 'Create my key' }).click();
  const text = await waitStatus('is set up');
  result.statusAfterCreate = text;
}

async function setup() {
  await signIn();
  result.policy = await page.locator('#policy').innerText();
  result.escrowChoiceVisible = await page.locator('#escrow-choice').isVisible();
  await screenshot('signed-in');
  await createKey('old-laptop');
  await createKey('laptop');
  await screenshot('two-keys');
  const rows = await keyRows();
  if (rows.length !== 2) throw new Error(`expected two keys in the list, found ${rows.length}`);
  // The newest is listed first; deactivate the older one.
  const [newer, older] = rows;
  await page.getByRole('button', { name: `Deactivate key ${older.fingerprint}` }).click();
  await waitStatus('is now inactive');
  await screenshot('deactivated');
  result.keys = await keyRows();
  result.active = newer.fingerprint;
  result.inactive = older.fingerprint;
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: `Export private key ${newer.fingerprint}` }).click(),
  ]);
  result.exportName = download.suggestedFilename();
  result.exported = path.join(opts.out, 'exported.sec.asc');
  await download.saveAs(result.exported);
  await waitStatus('saved as a file');
  await screenshot('exported');
}

/** One key, under the server's policy as it is: escrow required, or keys on the device. */
async function oneKey() {
  await signIn();
  result.policy = await page.locator('#policy').innerText();
  result.escrowChoiceVisible = await page.locator('#escrow-choice').isVisible();
  result.escrowRequiredVisible = await page.locator('#escrow-required').isVisible();
  await screenshot('signed-in');
  await page.getByLabel(/Device label/).fill('phone');
  // Keyboard only: Enter in the label field submits the setup form.
  const click = opts.keyboard
    ? page.getByLabel(/Device label/).press('Enter')
    : page.getByRole('button', { name: 'Create my key' }).click();
  if (opts.expectDownload) {
    const [download] = await Promise.all([page.waitForEvent('download'), click]);
    result.exportName = download.suggestedFilename();
    result.exported = path.join(opts.out, 'downloaded.sec.asc');
    await download.saveAs(result.exported);
  } else {
    await click;
  }
  result.statusAfterCreate = await waitStatus('is set up');
  result.keys = await keyRows();
  await screenshot('key-created');
}

async function decrypt(password, keyFile) {
  await page.locator('#eml').setInputFiles(opts.eml);
  await page.locator('#keyfile').setInputFiles(keyFile ? [keyFile] : []);
  await page.getByLabel('Key password').fill(password);
  await page.evaluate(() => {
    document.getElementById('status').textContent = '';
    document.getElementById('message').hidden = true;
  });
  await page.getByRole('button', { name: 'Decrypt' }).click();
  await page.waitForFunction(() => !document.getElementById('message').hidden
    || !document.getElementById('error').hidden);
  if (await page.locator('#error').isVisible()) {
    return { error: await page.locator('#error').textContent() };
  }
  return {
    headers: await page.locator('#message-headers').innerText(),
    body: await page.locator('#message-body').textContent(),
  };
}

async function read() {
  await signIn();
  const password = opts.keyPassword ?? opts.password;
  const stored = opts.storedKey !== false;
  if (stored) {
    result.stored = await decrypt(password);
    await page.locator('#message').scrollIntoViewIfNeeded();
    await screenshot('decrypted-with-stored-key');
  }
  result.wrongPassword = await decrypt(`${password}-wrong`, stored ? undefined : opts.keyFile);
  await screenshot('wrong-password');
  if (opts.keyFile) {
    result.keyFile = await decrypt(password, opts.keyFile);
    await screenshot('decrypted-with-exported-key');
  }
}

try {
  if (phase === 'setup') await setup();
  else if (phase === 'one-key') await oneKey();
  else if (phase === 'read') await read();
  else throw new Error(`unknown phase ${phase}`);
} catch (e) {
  result.failure = e.message;
  await screenshot('failure').catch(() => {});
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(result.failure ? 1 : 0);
