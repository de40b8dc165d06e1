// The OpenPGP.js versions the interop scripts use, side by side (package.json pins them):
// `openpgp` is OpenPGP.js 6, `openpgp-v5` an npm alias for OpenPGP.js 5.

import { readFileSync } from 'node:fs';
import * as openpgp6 from 'openpgp';
import * as openpgp5 from 'openpgp-v5';

export const LIBS = { openpgp: openpgp6, 'openpgp-v5': openpgp5 };

function installedVersion(pkg) {
  const url = new URL(`./node_modules/${pkg}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, 'utf8')).version;
}

export const VERSIONS = Object.fromEntries(Object.keys(LIBS).map((k) => [k, installedVersion(k)]));

export function lib(name) {
  const o = LIBS[name];
  if (!o) throw new Error(`unknown library ${name}; known: ${Object.keys(LIBS).join(', ')}`);
  return o;
}
