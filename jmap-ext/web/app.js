// sealpost reference web client: key setup, key list, export and reading a delivered
// message, against the JMAP key service (docs/jmap.md). Plain ES modules, OpenPGP.js only.
// Everything secret stays in this page: the private key is generated and protected here,
// the server only ever receives it encrypted under the user's password.

import * as openpgp from './vendor/openpgp.min.mjs';

const CORE = 'urn:ietf:params:jmap:core';
const KEYS = 'org:sealpost:params:jmap:keys';

const $ = (id) => document.getElementById(id);

/** The signed-in user: address, password, Authorization header, session, account id. */
let user = null;

// ---------------------------------------------------------------------------- UI helpers

function status(text) {
  $('status').textContent = text;
}

function showError(text) {
  const e = $('error');
  e.textContent = text;
  e.hidden = !text;
}

/** Runs `task` with the form's buttons disabled, reporting failures in the alert line. */
async function busy(form, message, task) {
  const buttons = form ? form.querySelectorAll('button') : [];
  buttons.forEach((b) => { b.disabled = true; });
  document.querySelector('main').setAttribute('aria-busy', 'true');
  showError('');
  status(message);
  try {
    await task();
  } catch (e) {
    status('');
    showError(e.message || String(e));
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    document.querySelector('main').removeAttribute('aria-busy');
  }
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

/** Offers `text` to the user as a file download. */
function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** Fingerprint in groups of four for reading aloud and comparing. */
function groups(fpr) {
  return fpr.replace(/(.{4})/g, '$1 ').trim();
}

// ---------------------------------------------------------------------------------- JMAP

function basic(address, password) {
  const bytes = new TextEncoder().encode(`${address}:${password}`);
  let bin = '';
  bytes.forEach((b) => { bin += String.fromCharCode(b); });
  return `Basic ${btoa(bin)}`;
}

async function fetchSession(auth) {
  const r = await fetch(new URL('../.well-known/jmap', location.href), {
    headers: { Authorization: auth },
    credentials: 'omit',
  });
  if (r.status === 401) throw new Error('Wrong address or password.');
  if (r.status === 429) throw new Error('Too many failed sign-ins: wait a while and try again.');
  if (!r.ok) throw new Error(`The key service answered ${r.status}.`);
  return r.json();
}

/** Sends method calls; returns the responses by call id. Method errors throw. */
async function jmap(calls) {
  const r = await fetch(user.session.apiUrl, {
    method: 'POST',
    headers: { Authorization: user.auth, 'Content-Type': 'application/json' },
    credentials: 'omit',
    body: JSON.stringify({ using: [CORE, KEYS], methodCalls: calls }),
  });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(body?.detail || `The key service answered ${r.status}.`);
  const out = {};
  for (const [name, args, id] of body.methodResponses) {
    out[id] = { name, args };
  }
  return out;
}

function ok(resp, what) {
  if (resp.name === 'error') {
    throw new Error(`${what}: ${resp.args.description || resp.args.type}`);
  }
  return resp.args;
}

/** Throws with the server's description when the create `cid` was refused. */
function created(args, cid, what) {
  const refused = args.notCreated?.[cid];
  if (refused) throw new Error(`${what} refused: ${refused.description || refused.type}`);
  const c = args.created?.[cid];
  if (!c) throw new Error(`${what}: no answer from the server`);
  return c;
}

// ---------------------------------------------------------------------------- sign in/out

async function signIn(address, password) {
  const auth = basic(address, password);
  const session = await fetchSession(auth);
  const accountId = session.primaryAccounts?.[KEYS];
  if (!accountId) throw new Error('This server does not offer key management for your account.');
  user = { address, password, auth, session, accountId, caps: session.capabilities[KEYS] };
  $('who-address').textContent = address;
  $('who').hidden = false;
  $('login-section').hidden = true;
  for (const s of ['setup-section', 'keys-section', 'read-section']) $(s).hidden = false;
  showPolicy();
  await refreshKeys();
  status(`Signed in as ${address}.`);
  $('setup-title').focus();
}

function signOut() {
  user = null;
  $('who').hidden = true;
  $('login-section').hidden = false;
  for (const s of ['setup-section', 'keys-section', 'read-section']) $(s).hidden = true;
  $('login-form').reset();
  $('address').focus();
  $('read-form').reset();
  $('message').hidden = true;
  $('keys').replaceChildren();
  status('Signed out.');
}

function showPolicy() {
  const c = user.caps;
  const escrowText = {
    off: 'not offered',
    optional: 'optional',
    required: 'required by your organisation',
  }[c.escrow] || c.escrow;
  const dl = $('policy');
  dl.replaceChildren(
    el('dt', {}, 'Private key'),
    el('dd', {}, c.storesPrivateKeys
      ? 'stored on the server, protected with your password'
      : 'kept by you: it is downloaded as a file'),
    el('dt', {}, 'Password recovery'),
    el('dd', {}, escrowText),
  );
  $('setup-intro').textContent = c.storesPrivateKeys
    ? 'Incoming mail is encrypted to your key before it is stored. The key is made here, in '
      + 'your browser; the server receives the public key and a copy of the private key '
      + 'protected with your password, so you can read your mail on any device.'
    : 'Incoming mail is encrypted to your key before it is stored. The key is made here, in '
      + 'your browser; the server receives only the public key. You get the private key as a '
      + 'file, protected with your password: without it your mail cannot be read, so keep it safe.';
  $('keyfile-hint').textContent = c.storesPrivateKeys
    ? '(optional: otherwise the key stored on the server)'
    : '(the file you saved when you created your key)';
  $('keyfile').required = !c.storesPrivateKeys;
  const escrowPossible = c.storesPrivateKeys && c.escrow !== 'off' && c.officerKeys.length > 0;
  $('escrow-choice').hidden = !(escrowPossible && c.escrow === 'optional');
  $('escrow-required').hidden = c.escrow !== 'required';
}

// ----------------------------------------------------------------------------- key setup

/** The password encrypted to every announced officer key (one PKESK each). */
async function escrowPassword(password) {
  const officerKeys = await Promise.all(
    user.caps.officerKeys.map((k) => openpgp.readKey({ armoredKey: k.armored })),
  );
  const message = await openpgp.createMessage({ binary: new TextEncoder().encode(password) });
  return openpgp.encrypt({ message, encryptionKeys: officerKeys, format: 'armored' });
}

async function createKey(label) {
  const c = user.caps;
  const withEscrow = c.storesPrivateKeys && (c.escrow === 'required'
    || (c.escrow === 'optional' && $('escrow').checked && c.officerKeys.length > 0));
  if (c.escrow === 'required' && c.officerKeys.length === 0) {
    throw new Error('Password recovery is required but no security officer key is installed: ask your administrator.');
  }
  status('Generating your key…');
  const { privateKey, publicKey } = await openpgp.generateKey({
    userIDs: [{ email: user.address }],
    passphrase: user.password,
    format: 'armored',
  });
  const fpr = (await openpgp.readKey({ armoredKey: publicKey })).getFingerprint().toUpperCase();

  const calls = [['PublicKey/set', { accountId: user.accountId, create: { pub: { armored: publicKey } } }, 'pub']];
  if (c.storesPrivateKeys) {
    const sk = { armored: privateKey, publicKeyId: '#pub' };
    if (label) sk.label = label;
    calls.push(['PrivateKey/set', { accountId: user.accountId, create: { sec: sk } }, 'sec']);
  }
  if (withEscrow) {
    status('Encrypting your password to the security officer key…');
    const armored = await escrowPassword(user.password);
    calls.push(['Escrow/set', { accountId: user.accountId, create: { esc: { privateKeyId: '#sec', armored } } }, 'esc']);
  }
  status('Uploading…');
  const r = await jmap(calls);
  created(ok(r.pub, 'Public key'), 'pub', 'The public key was');
  if (c.storesPrivateKeys) created(ok(r.sec, 'Private key'), 'sec', 'The private key was');
  if (withEscrow) created(ok(r.esc, 'Password recovery'), 'esc', 'The password escrow was');
  if (!c.storesPrivateKeys) {
    download(`sealpost-${fpr}.sec.asc`, privateKey, 'application/pgp-keys');
  }
  $('label').value = '';
  await refreshKeys();
  let done = `Your key ${groups(fpr)} is set up`;
  if (withEscrow) done += ', and the security officer can recover your password';
  if (!c.storesPrivateKeys) done += '. Your protected private key was saved as a file: keep it safe';
  status(`${done}.`);
}

// ------------------------------------------------------------------------------ key list

async function refreshKeys() {
  const a = { accountId: user.accountId, ids: null };
  const calls = [
    ['PublicKey/get', a, 'pub'],
    ['PrivateKey/get', a, 'sec'],
  ];
  if (user.caps.escrow !== 'off') calls.push(['Escrow/get', a, 'esc']);
  const r = await jmap(calls);
  const pubs = ok(r.pub, 'Listing keys').list;
  const secs = new Map(r.sec.name === 'error' ? [] : r.sec.args.list.map((k) => [k.publicKeyId, k]));
  const escrows = new Set(r.esc && r.esc.name !== 'error'
    ? r.esc.args.list.map((e) => e.privateKeyId) : []);
  const tbody = $('keys');
  tbody.replaceChildren();
  pubs.sort((x, y) => (y.created || '').localeCompare(x.created || ''));
  for (const k of pubs) {
    const sec = secs.get(k.id);
    const actions = el('td', { class: 'actions' });
    actions.append(el('button', {
      type: 'button',
      class: 'secondary',
      'aria-label': `${k.isActive ? 'Deactivate' : 'Activate'} key ${k.id}`,
      onclick: () => busy(null, 'Saving…', () => setActive(k.id, !k.isActive)),
    }, k.isActive ? 'Deactivate' : 'Activate'));
    if (sec) {
      actions.append(el('button', {
        type: 'button',
        class: 'secondary',
        'aria-label': `Export private key ${k.id}`,
        onclick: () => busy(null, 'Exporting…', () => exportKey(k.id)),
      }, 'Export'));
    }
    tbody.append(el('tr', { 'data-fingerprint': k.id },
      el('td', { class: 'fpr' }, el('code', {}, groups(k.id))),
      el('td', {}, (k.userIds || []).join(', ')),
      el('td', { class: 'date' }, (k.created || '').slice(0, 10)),
      el('td', {}, el('span', { class: k.isActive ? 'badge on' : 'badge off' }, k.isActive ? 'active' : 'inactive')),
      el('td', {}, sec ? `stored${sec.label ? ` (${sec.label})` : ''}` : 'not stored'),
      el('td', {}, escrows.has(k.id) ? 'escrowed' : '—'),
      actions,
    ));
  }
  $('keys-table').hidden = pubs.length === 0;
  $('no-keys').hidden = pubs.length !== 0;
}

async function setActive(id, active) {
  const r = await jmap([['PublicKey/set', { accountId: user.accountId, update: { [id]: { isActive: active } } }, 'u']]);
  const args = ok(r.u, 'Changing the key');
  const refused = args.notUpdated?.[id];
  if (refused) throw new Error(`The change was refused: ${refused.description || refused.type}`);
  await refreshKeys();
  status(`Key ${groups(id)} is now ${active ? 'active' : 'inactive'}.`);
}

async function storedKey(id) {
  const r = await jmap([['PrivateKey/get', { accountId: user.accountId, ids: [id], properties: ['armored'] }, 'g']]);
  const k = ok(r.g, 'Fetching the private key').list[0];
  if (!k) throw new Error('No private key is stored for this key.');
  return k.armored;
}

async function exportKey(id) {
  download(`sealpost-${id}.sec.asc`, await storedKey(id), 'application/pgp-keys');
  status('Your protected private key was saved as a file. It opens with your password: keep it safe.');
}

// ------------------------------------------------------------------ reading a message

/** Bytes as a "binary string" (one char per byte), the form MIME parsing works on. */
function binaryString(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return s;
}

function bytesOf(bin) {
  return Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
}

function decodeText(bin, charset) {
  try {
    return new TextDecoder(charset || 'utf-8').decode(bytesOf(bin));
  } catch {
    return new TextDecoder('utf-8').decode(bytesOf(bin));
  }
}

function parseEntity(bin) {
  const m = /\r?\n\r?\n/.exec(bin);
  const head = m ? bin.slice(0, m.index) : bin;
  const body = m ? bin.slice(m.index + m[0].length) : '';
  const headers = new Map();
  for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) {
      const name = line.slice(0, i).trim().toLowerCase();
      if (!headers.has(name)) headers.set(name, line.slice(i + 1).trim());
    }
  }
  return { headers, body };
}

function param(value, name) {
  const m = new RegExp(`;\\s*${name}\\s*=\\s*(?:"([^"]*)"|([^;\\s]+))`, 'i').exec(value || '');
  return m ? (m[1] ?? m[2]) : null;
}

function decodeTransfer(body, cte) {
  switch ((cte || '').toLowerCase()) {
    case 'base64':
      return atob(body.replace(/[^A-Za-z0-9+/=]/g, ''));
    case 'quoted-printable':
      return body.replace(/=\r?\n/g, '').replace(/=([0-9A-Fa-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
    default:
      return body;
  }
}

/** RFC 2047 encoded words in a header value. */
function decodeWords(value) {
  return (value || '').replace(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=(\s+(?==\?))?/g, (_, cs, enc, text) => {
    const bin = enc.toUpperCase() === 'B'
      ? atob(text)
      : text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (__, h) => String.fromCharCode(parseInt(h, 16)));
    return decodeText(bin, cs);
  });
}

/** The first text/plain part (or else the first text part) of a MIME entity, decoded. */
function textOf(entity) {
  const ctype = entity.headers.get('content-type') || 'text/plain';
  const type = ctype.split(';')[0].trim().toLowerCase();
  if (type.startsWith('multipart/')) {
    const boundary = param(ctype, 'boundary');
    if (!boundary) return null;
    const parts = entity.body.split(new RegExp(`\\r?\\n?--${boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const inner = parts.slice(1).filter((p) => !p.startsWith('--'))
      .map((p) => parseEntity(p.replace(/^[ \t]*\r?\n/, '')));
    const found = inner.map(textOf).filter((t) => t !== null);
    return found.find((t) => t.type === 'text/plain') || found[0] || null;
  }
  if (!type.startsWith('text/')) return null;
  const bin = decodeTransfer(entity.body, entity.headers.get('content-transfer-encoding'));
  return { type, text: decodeText(bin, param(ctype, 'charset')) };
}

async function readFileText(input) {
  return new Uint8Array(await input.files[0].arrayBuffer());
}

async function decryptMessage() {
  const eml = binaryString(await readFileText($('eml')));
  const armored = /-----BEGIN PGP MESSAGE-----[\s\S]*?-----END PGP MESSAGE-----/.exec(eml);
  if (!armored) throw new Error('This message is not encrypted (no OpenPGP message in it).');
  let keyText;
  if ($('keyfile').files.length) {
    keyText = new TextDecoder().decode(await readFileText($('keyfile')));
  }
  const message = await openpgp.readMessage({ armoredMessage: armored[0].replace(/\r\n/g, '\n') });
  const wanted = message.getEncryptionKeyIDs().map((id) => id.toHex().toUpperCase());
  if (!keyText) {
    // The stored key whose (sub)key the message is addressed to.
    const r = await jmap([['PrivateKey/get', { accountId: user.accountId, ids: null, properties: ['armored'] }, 'g']]);
    for (const k of ok(r.g, 'Fetching your private keys').list) {
      const key = await openpgp.readPrivateKey({ armoredKey: k.armored });
      if (key.getKeys().some((sub) => wanted.includes(sub.getKeyID().toHex().toUpperCase()))) {
        keyText = k.armored;
        break;
      }
    }
    if (!keyText) throw new Error('None of your stored private keys can read this message.');
  }
  let key;
  try {
    key = await openpgp.decryptKey({
      privateKey: await openpgp.readPrivateKey({ armoredKey: keyText }),
      passphrase: $('key-password').value,
    });
  } catch {
    throw new Error('Wrong password for the private key.');
  }
  status('Decrypting…');
  const { data } = await openpgp.decrypt({ message, decryptionKeys: key, format: 'binary' });
  const inner = parseEntity(binaryString(data));
  const outer = parseEntity(eml);
  const headers = $('message-headers');
  headers.replaceChildren();
  for (const [name, label] of [['from', 'From'], ['to', 'To'], ['date', 'Date'], ['subject', 'Subject']]) {
    const v = inner.headers.get(name) ?? outer.headers.get(name);
    if (v) headers.append(el('dt', {}, label), el('dd', {}, decodeWords(v)));
  }
  const text = textOf(inner);
  $('message-body').textContent = text ? text.text : decodeText(binaryString(data), 'utf-8');
  $('message').hidden = false;
  $('message-title').focus();
  status('Message decrypted.');
}

// --------------------------------------------------------------------------------- wiring

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy(ev.target, 'Signing in…', () => signIn($('address').value.trim(), $('password').value));
});
$('logout').addEventListener('click', signOut);
$('setup-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy(ev.target, 'Working…', () => createKey($('label').value.trim()));
});
$('refresh').addEventListener('click', () => busy(null, 'Refreshing…', async () => {
  await refreshKeys();
  status('Key list updated.');
}));
$('read-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy(ev.target, 'Reading the message…', decryptMessage);
});
document.documentElement.dataset.ready = 'true';
