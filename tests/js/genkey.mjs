// Generates the OpenPGP.js key set that sealpost's interop tests use, the way a webmail
// frontend makes keys: a password-protected private key and its public key per variant.
//
//   node tests/js/genkey.mjs OUTDIR [NAME...]
//
// Writes OUTDIR/NAME.pub.asc (what is uploaded as the public key), OUTDIR/NAME.sec.asc (the
// protected private key a webmail uploads), and OUTDIR/manifest.json describing every key:
// library and version, user ID, passphrase, key version, algorithms, S2K, fingerprint, and
// which OpenPGP.js major versions can read mail encrypted to it.
//
// tests/fixtures/keys/openpgpjs/ was made with this script; tests/openpgpjs.rs also runs it
// once per test run into a temporary directory.

import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lib, VERSIONS } from './lib.mjs';

// The variants a webmail on OpenPGP.js may produce.
const VARIANTS = [
  {
    // RFC 9580 v6 key (Ed25519 + X25519), secret protected with Argon2 and AEAD: what
    // OpenPGP.js 6 makes with config.v6Keys = true and s2kType = argon2.
    name: 'js6-v6-argon2',
    lib: 'openpgp',
    email: 'js6@example.org',
    options: (o) => ({
      type: 'curve25519',
      config: { v6Keys: true, s2kType: o.enums.s2k.argon2, aeadProtect: true },
    }),
    readers: ['openpgp'],
  },
  {
    // v6 key with OpenPGP.js 6's default protection (iterated+salted S2K).
    name: 'js6-v6-iterated',
    lib: 'openpgp',
    email: 'js6-iterated@example.org',
    options: () => ({ config: { v6Keys: true } }),
    readers: ['openpgp'],
  },
  {
    // OpenPGP.js 6's plain default (config.v6Keys = false): a v4 key with the legacy
    // EdDSA/ECDH Curve25519 algorithms, iterated+salted S2K.
    name: 'js6-v4',
    lib: 'openpgp',
    email: 'js6v4@example.org',
    options: () => ({}),
    readers: ['openpgp', 'openpgp-v5'],
  },
  {
    // v4 key with RFC 9580's Ed25519/X25519 algorithms (ids 27/25), which Debian's
    // gpg 2.2 cannot read.
    name: 'js6-v4-x25519',
    lib: 'openpgp',
    email: 'js6x25519@example.org',
    options: () => ({ type: 'curve25519' }),
    readers: ['openpgp'],
  },
  {
    // What webmails still on OpenPGP.js 5 generate by default.
    name: 'js5-v4',
    lib: 'openpgp-v5',
    email: 'js5@example.org',
    options: () => ({}),
    readers: ['openpgp', 'openpgp-v5'],
  },
];

const S2K_NAMES = { 3: 'iterated', 4: 'argon2' };

async function generate(variant) {
  const o = lib(variant.lib);
  const passphrase = randomBytes(12).toString('hex');
  const { privateKey, publicKey } = await o.generateKey({
    userIDs: [{ email: variant.email }],
    passphrase,
    format: 'armored',
    ...variant.options(o),
  });
  // Read the result back to describe it, with the same library.
  const key = await o.readPrivateKey({ armoredKey: privateKey });
  const packets = [key.keyPacket, ...key.subkeys.map((s) => s.keyPacket)];
  return {
    files: { pub: publicKey, sec: privateKey },
    manifest: {
      name: variant.name,
      library: `${variant.lib}@${VERSIONS[variant.lib]}`,
      lib: variant.lib,
      user_id: `<${variant.email}>`,
      email: variant.email,
      passphrase,
      key_version: key.keyPacket.version,
      algorithms: packets.map((p) => o.enums.read(o.enums.publicKey, p.algorithm)),
      algorithm_ids: packets.map((p) => o.enums.write(o.enums.publicKey, p.algorithm)),
      s2k: [...new Set(packets.map((p) => S2K_NAMES[o.enums.write(o.enums.s2k, p.s2k.type)] ?? p.s2k.type))],
      s2k_usage: [...new Set(packets.map((p) => p.s2kUsage))],
      fingerprint: key.getFingerprint().toUpperCase(),
      readers: variant.readers,
    },
  };
}

async function main() {
  const [outDir, ...names] = process.argv.slice(2);
  if (!outDir) {
    console.error('usage: node genkey.mjs OUTDIR [NAME...]');
    process.exit(2);
  }
  const chosen = names.length ? VARIANTS.filter((v) => names.includes(v.name)) : VARIANTS;
  if (chosen.length !== (names.length || VARIANTS.length)) {
    console.error(`unknown variant; known: ${VARIANTS.map((v) => v.name).join(', ')}`);
    process.exit(2);
  }
  mkdirSync(outDir, { recursive: true });
  const manifest = [];
  for (const v of chosen) {
    const k = await generate(v);
    writeFileSync(join(outDir, `${v.name}.pub.asc`), k.files.pub);
    writeFileSync(join(outDir, `${v.name}.sec.asc`), k.files.sec);
    manifest.push(k.manifest);
  }
  writeFileSync(join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
}

main().catch((e) => {
  console.error(`genkey: ${e.message}`);
  process.exit(1);
});
