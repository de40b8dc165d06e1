// Reads PGP/MIME messages as a webmail on OpenPGP.js does: takes the armored
// application/octet-stream part of the multipart/encrypted message, unlocks the protected
// private key with its passphrase, and decrypts.
//
//   node tests/js/decrypt.mjs JOB.json
//
// JOB.json: { "lib": "openpgp" | "openpgp-v5", "key": "KEY.sec.asc", "passphrase": "…",
//             "messages": [ { "name": "…", "path": "IN.eml", "out": "OUT.payload" } ] }
//
// Writes each decrypted payload, byte for byte, to its `out` file and prints one JSON report
// on stdout: the library version, the key's version and fingerprint, and per message the
// PKESK and SEIPD packet versions or the error. The private key is unlocked once for all
// messages (Argon2 is deliberately slow).

import { readFileSync, writeFileSync } from 'node:fs';
import { lib, VERSIONS } from './lib.mjs';

const CRLF_OR_LF = /\r?\n/;

// Splits an entity into its header fields (unfolded, as [lower-case name, value]) and body.
function splitEntity(text) {
  const m = /\r?\n\r?\n/.exec(text);
  const head = m ? text.slice(0, m.index) : text;
  const body = m ? text.slice(m.index + m[0].length) : '';
  const fields = [];
  for (const line of head.split(CRLF_OR_LF)) {
    if (/^[ \t]/.test(line) && fields.length) {
      fields[fields.length - 1][1] += ' ' + line.trim();
    } else {
      const colon = line.indexOf(':');
      if (colon > 0) fields.push([line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]);
    }
  }
  return { fields, body };
}

function header(fields, name) {
  const f = fields.find(([n]) => n === name);
  return f ? f[1] : undefined;
}

function mediaType(contentType) {
  return (contentType ?? 'text/plain').split(';')[0].trim().toLowerCase();
}

function param(contentType, name) {
  const re = new RegExp(`;\\s*${name}\\s*=\\s*(?:"([^"]*)"|([^;\\s]+))`, 'i');
  const m = re.exec(contentType ?? '');
  return m ? (m[1] ?? m[2]) : undefined;
}

// The armored OpenPGP message of an RFC 3156 multipart/encrypted message.
export function armoredPart(eml) {
  const outer = splitEntity(eml);
  const ct = header(outer.fields, 'content-type');
  if (mediaType(ct) !== 'multipart/encrypted') throw new Error(`not multipart/encrypted: ${ct}`);
  if ((param(ct, 'protocol') ?? '').toLowerCase() !== 'application/pgp-encrypted') {
    throw new Error(`wrong protocol parameter: ${ct}`);
  }
  const boundary = param(ct, 'boundary');
  if (!boundary) throw new Error('no boundary');
  const lines = outer.body.split(CRLF_OR_LF);
  const parts = [];
  let current = null;
  for (const line of lines) {
    const t = line.replace(/[ \t]+$/, '');
    if (t === `--${boundary}--`) {
      if (current) parts.push(current);
      current = null;
      break;
    }
    if (t === `--${boundary}`) {
      if (current) parts.push(current);
      current = [];
    } else if (current) {
      current.push(line);
    }
  }
  if (current) throw new Error('no closing boundary');
  if (parts.length !== 2) throw new Error(`expected 2 parts, found ${parts.length}`);
  const [control, data] = parts.map((p) => splitEntity(p.join('\r\n')));
  if (mediaType(header(control.fields, 'content-type')) !== 'application/pgp-encrypted') {
    throw new Error('first part is not application/pgp-encrypted');
  }
  if (!/^Version: 1\s*$/m.test(control.body)) throw new Error('no "Version: 1" in the control part');
  if (mediaType(header(data.fields, 'content-type')) !== 'application/octet-stream') {
    throw new Error('second part is not application/octet-stream');
  }
  return data.body;
}

async function main() {
  const jobFile = process.argv[2];
  if (!jobFile) {
    console.error('usage: node decrypt.mjs JOB.json');
    process.exit(2);
  }
  const job = JSON.parse(readFileSync(jobFile, 'utf8'));
  const o = lib(job.lib);
  const locked = await o.readPrivateKey({ armoredKey: readFileSync(job.key, 'utf8') });
  if (locked.isDecrypted()) throw new Error('the private key is not protected');
  const privateKey = await o.decryptKey({ privateKey: locked, passphrase: job.passphrase });
  const report = {
    library: `${job.lib}@${VERSIONS[job.lib]}`,
    key_version: privateKey.keyPacket.version,
    fingerprint: privateKey.getFingerprint().toUpperCase(),
    results: [],
  };
  const tags = o.enums.packet;
  for (const m of job.messages) {
    const r = { name: m.name };
    try {
      // The message is 7-bit (armor and MIME framing); latin1 keeps any byte as it is.
      const armored = armoredPart(readFileSync(m.path, 'latin1'));
      const message = await o.readMessage({ armoredMessage: armored });
      r.pkesk_versions = message.packets.filterByTag(tags.publicKeyEncryptedSessionKey).map((p) => p.version);
      r.seipd_versions = message.packets
        .filterByTag(tags.symEncryptedIntegrityProtectedData)
        .map((p) => p.version);
      const { data } = await o.decrypt({ message, decryptionKeys: privateKey, format: 'binary' });
      writeFileSync(m.out, data);
      r.ok = true;
    } catch (e) {
      r.ok = false;
      r.error = e.message;
    }
    report.results.push(r);
  }
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().catch((e) => {
  console.error(`decrypt: ${e.message}`);
  process.exit(1);
});
