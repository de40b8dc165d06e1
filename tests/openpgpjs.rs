//! OpenPGP.js interop: keys made by OpenPGP.js (what webmail frontends generate) against the
//! key policy and the private-key upload check, and `sealpost encrypt` output (the milter's
//! transform) decrypted by OpenPGP.js in Node, the way a webmail reads delivered mail.
//!
//! The keys are committed under tests/fixtures/keys/openpgpjs/ (made by
//! tests/js/genkey.mjs, see make.sh there), so the policy tests need no Node; one test also
//! generates a fresh set per run. The Node side lives in tests/js/ with its package-lock.json
//! (OpenPGP.js 6, and OpenPGP.js 5 under the alias `openpgp-v5`); the first test that needs
//! it runs `npm ci` there unless node_modules already matches the lock file.
//!
//! v6 keys (RFC 9580) cannot be read by Debian's gpg 2.2, so OpenPGP.js and sequoia
//! (in-process) are their peers here; gpg reads the mail for the v4 keys with the legacy
//! Curve25519 algorithms, once the user has exported the key from the webmail.

#[path = "../milter/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sealpost_keystore::protection::{verify_private_key, ProtectionConfig};
use sealpost_test_support::{fixture, missing, run_with_input, workspace_root};
use sequoia_openpgp as openpgp;
use serde::Deserialize;

use openpgp::crypto::Password;
use openpgp::packet::Packet;
use openpgp::parse::Parse;
use openpgp::Cert;

/// One key of a set made by tests/js/genkey.mjs (its manifest.json).
#[derive(Debug, Deserialize)]
struct JsKey {
    name: String,
    library: String,
    user_id: String,
    email: String,
    passphrase: String,
    key_version: u8,
    algorithm_ids: Vec<u8>,
    s2k: Vec<String>,
    fingerprint: String,
    /// The OpenPGP.js packages (`openpgp`, `openpgp-v5`) that must read mail to this key.
    readers: Vec<String>,
}

struct KeySet {
    dir: PathBuf,
    keys: Vec<JsKey>,
}

impl KeySet {
    fn load(dir: &Path) -> KeySet {
        let manifest = std::fs::read(dir.join("manifest.json"))
            .unwrap_or_else(|e| panic!("{}/manifest.json: {e}", dir.display()));
        let keys: Vec<JsKey> = serde_json::from_slice(&manifest).expect("manifest.json");
        KeySet {
            dir: dir.to_path_buf(),
            keys,
        }
    }

    fn public(&self, k: &JsKey) -> PathBuf {
        self.dir.join(format!("{}.pub.asc", k.name))
    }

    fn secret(&self, k: &JsKey) -> PathBuf {
        self.dir.join(format!("{}.sec.asc", k.name))
    }
}

fn fixture_keys() -> KeySet {
    let set = KeySet::load(&fixture("keys/openpgpjs"));
    // The variants the interop promises to cover.
    let names: Vec<&str> = set.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "js6-v6-argon2",
            "js6-v6-iterated",
            "js6-v4",
            "js6-v4-x25519",
            "js5-v4"
        ]
    );
    set
}

fn js_dir() -> PathBuf {
    workspace_root().join("tests/js")
}

/// Whether tests/js/node_modules holds exactly what package-lock.json pins (npm's hidden
/// lock file in node_modules records what was installed).
fn node_modules_current() -> bool {
    let read = |p: PathBuf| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    };
    let (Some(lock), Some(installed)) = (
        read(js_dir().join("package-lock.json")),
        read(js_dir().join("node_modules/.package-lock.json")),
    ) else {
        return false;
    };
    let mut wanted = lock["packages"].clone();
    if let Some(m) = wanted.as_object_mut() {
        m.remove("");
    }
    wanted == installed["packages"]
}

/// Node with tests/js/node_modules installed from the lock file: `npm ci` once per test
/// binary, unless node_modules is already current (tests/browser.rs uses it too, and
/// `npm ci` replaces the whole directory).
fn node(test: &str) -> Option<PathBuf> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let node = sealpost_test_support::which("node").ok_or("`node` is not installed")?;
        let npm = sealpost_test_support::which("npm").ok_or("`npm` is not installed")?;
        if node_modules_current() {
            return Ok(node);
        }
        let out = Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
            .current_dir(js_dir())
            .output()
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`npm ci` in tests/js failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(node)
    });
    match ready {
        Ok(node) => Some(node.clone()),
        Err(why) => missing(test, why),
    }
}

fn sealpost(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
    cmd.current_dir(dir)
        .env(
            "SEALPOST_DATABASE_URL",
            format!("sqlite://{}/ks.db", dir.display()),
        )
        .env_remove("SEALPOST_CONFIG")
        .env("USER", "interop-test");
    cmd
}

fn no_panic(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what} panicked: {stderr}"
    );
}

fn succeeded(out: Output, what: &str) -> Vec<u8> {
    no_panic(&out, what);
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A protected secret key as a `Cert` with every secret unlocked by `passphrase`.
fn unlock(armored: &[u8], passphrase: &str) -> Cert {
    let cert = Cert::from_bytes(armored).expect("parse the protected key");
    let password = Password::from(passphrase);
    let mut packets: Vec<Packet> = Vec::new();
    let primary = cert.primary_key().key().clone();
    if let Ok(k) = primary.parts_into_secret() {
        assert!(!k.has_unencrypted_secret(), "primary secret is unprotected");
        packets.push(k.decrypt_secret(&password).expect("unlock primary").into());
    }
    for ka in cert.keys().subkeys().secret() {
        let k = ka.key().clone();
        assert!(!k.has_unencrypted_secret(), "subkey secret is unprotected");
        packets.push(k.decrypt_secret(&password).expect("unlock subkey").into());
    }
    cert.insert_packets(packets)
        .expect("insert unlocked keys")
        .0
}

/// `sealpost keys import` accepts every key of the set for its own address, with the facts
/// the manifest records, and refuses the protected private key and foreign addresses.
fn check_key_policy(set: &KeySet) {
    let dir = tempfile::tempdir().unwrap();
    for k in &set.keys {
        let what = format!("{} ({})", k.name, k.library);
        let public = set.public(k);
        let out = sealpost(dir.path())
            .args(["keys", "import", &k.email])
            .arg(&public)
            .arg("--json")
            .output()
            .unwrap();
        let info: serde_json::Value =
            serde_json::from_slice(&succeeded(out, &format!("keys import {what}"))).unwrap();
        assert_eq!(info["fingerprint"], k.fingerprint.as_str(), "{what}");
        assert_eq!(info["account"], k.email.as_str(), "{what}");
        assert_eq!(info["version"], k.key_version, "{what}");
        assert_eq!(info["active"], true, "{what}");
        assert_eq!(info["user_ids"], serde_json::json!([k.user_id]), "{what}");
        let algorithm = info["algorithm"].as_str().unwrap();
        let expected = if k.algorithm_ids == [22, 18] {
            "EdDSA(Ed25519)/ECDH(Curve25519)"
        } else {
            assert_eq!(k.algorithm_ids, [27, 25], "{what}: unexpected algorithms");
            "Ed25519/X25519"
        };
        assert_eq!(algorithm, expected, "{what}");

        // The library policy says the same, and names the X25519/ECDH subkey for mail.
        let bytes = std::fs::read(&public).unwrap();
        let addr = sealpost_keystore::address::Address::parse(&k.email).unwrap();
        let (_, info) = sealpost_keystore::policy::accept_public_key(
            &bytes,
            &[addr],
            std::time::SystemTime::now(),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(info.encryption_subkeys.len(), 1, "{what}");
        assert_ne!(info.encryption_subkeys[0], k.fingerprint, "{what}");

        // The protected private key is not a public key.
        let out = sealpost(dir.path())
            .args(["keys", "import", &k.email])
            .arg(set.secret(k))
            .output()
            .unwrap();
        no_panic(&out, &what);
        assert_eq!(out.status.code(), Some(1), "{what}: secret key import");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("secret key material"), "{what}: {err}");

        // Another account's address does not match the user ID.
        let out = sealpost(dir.path())
            .args(["keys", "import", "someone-else@example.org"])
            .arg(&public)
            .output()
            .unwrap();
        no_panic(&out, &what);
        assert_eq!(out.status.code(), Some(1), "{what}: foreign address");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no user ID"), "{what}: {err}");
    }
    let out = sealpost(dir.path())
        .args(["keys", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&succeeded(out, "keys list")).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        set.keys.len(),
        "refused uploads must not be stored"
    );
}

/// The protected private keys are what a webmail uploads: the server's check accepts them
/// with the S2K OpenPGP.js used, and sequoia unlocks them with the passphrase.
fn check_private_key_uploads(set: &KeySet) {
    let config = ProtectionConfig::default();
    for k in &set.keys {
        let what = format!("{} ({})", k.name, k.library);
        let secret = std::fs::read(set.secret(k)).unwrap();
        let public = std::fs::read_to_string(set.public(k)).unwrap();
        let stored = [(k.fingerprint.clone(), public)];
        let verified = verify_private_key(&secret, &stored, Some(&k.fingerprint), &config)
            .unwrap_or_else(|e| panic!("{what}: private key upload refused: {e}"));
        assert_eq!(verified.fingerprint, k.fingerprint, "{what}");
        assert_eq!(verified.protection.kind, "s2k", "{what}");
        let s2k = match k.s2k.as_slice() {
            [s] if s == "argon2" => "argon2",
            [s] if s == "iterated" => "iterated-salted",
            other => panic!("{what}: unexpected S2K {other:?}"),
        };
        assert_eq!(verified.protection.s2k, s2k, "{what}");
        // The wrong stored key, and a wrong claimed id, are refused.
        let other = set.keys.iter().find(|o| o.name != k.name).unwrap();
        let other_stored = [(
            other.fingerprint.clone(),
            std::fs::read_to_string(set.public(other)).unwrap(),
        )];
        assert!(
            verify_private_key(&secret, &other_stored, None, &config).is_err(),
            "{what}: accepted against another key"
        );

        let cert = unlock(&secret, &k.passphrase);
        assert_eq!(cert.fingerprint().to_hex(), k.fingerprint, "{what}");
        assert!(
            Cert::from_bytes(&secret)
                .unwrap()
                .primary_key()
                .key()
                .clone()
                .parts_into_secret()
                .unwrap()
                .decrypt_secret(&Password::from("not the passphrase"))
                .is_err(),
            "{what}: a wrong passphrase unlocked the key"
        );
    }
}

/// Whether the certificate's Features subpacket announces SEIPDv2 support.
fn seipdv2_announced(cert: &Cert) -> bool {
    use openpgp::cert::Preferences;
    cert.with_policy(sealpost_keystore::policy::policy(), None)
        .expect("valid key")
        .features()
        .is_some_and(|f| f.supports_seipdv2())
}

/// The messages to encrypt: every corpus message, in both line-ending variants when asked.
fn messages(both_variants: bool) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, raw) in common::corpus() {
        if both_variants {
            for (variant, bytes) in common::variants(&raw) {
                out.push((format!("{name}.{variant}"), bytes));
            }
        } else {
            out.push((name, raw));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct Report {
    library: String,
    key_version: u8,
    fingerprint: String,
    results: Vec<MessageResult>,
}

#[derive(Debug, Deserialize)]
struct MessageResult {
    name: String,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    pkesk_versions: Vec<u8>,
    #[serde(default)]
    seipd_versions: Vec<u8>,
}

/// Decrypts the PGP/MIME messages `files` (label, path) with OpenPGP.js (`reader`: the
/// `openpgp` or `openpgp-v5` package) and key `k` of `set`, as a webmail does; payloads go
/// next to each message, with the extension `READER.payload`.
fn decrypt_in_node(
    node: &Path,
    work: &Path,
    set: &KeySet,
    k: &JsKey,
    reader: &str,
    files: &[(String, PathBuf)],
) -> Report {
    let what = format!("{} ({})", k.name, k.library);
    let job_messages: Vec<serde_json::Value> = files
        .iter()
        .map(|(label, path)| {
            serde_json::json!({
                "name": label,
                "path": path,
                "out": path.with_extension(format!("{reader}.payload")),
            })
        })
        .collect();
    let job = serde_json::json!({
        "lib": reader,
        "key": set.secret(k),
        "passphrase": k.passphrase,
        "messages": job_messages,
    });
    let job_path = work.join(format!("{}-{reader}.job.json", k.name));
    std::fs::write(&job_path, serde_json::to_vec(&job).unwrap()).unwrap();
    let out = Command::new(node)
        .arg(js_dir().join("decrypt.mjs"))
        .arg(&job_path)
        .output()
        .unwrap();
    let stdout = succeeded(out, &format!("decrypt.mjs {what} with {reader}"));
    let report: Report = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: bad report from {reader}: {e}: {}",
            String::from_utf8_lossy(&stdout)
        )
    });
    assert!(report.library.starts_with(&format!("{reader}@")));
    let major = if reader == "openpgp" { "6." } else { "5." };
    assert!(
        report.library[reader.len() + 1..].starts_with(major),
        "{}",
        report.library
    );
    assert_eq!(report.key_version, k.key_version, "{what}");
    assert_eq!(report.fingerprint, k.fingerprint, "{what}");
    assert_eq!(report.results.len(), files.len(), "{what}");
    for (r, (label, _)) in report.results.iter().zip(files) {
        assert_eq!(&r.name, label, "{what}");
    }
    report
}

/// Encrypts `messages` to every key of the set with `sealpost encrypt --to`, checks the
/// outer message, decrypts with sequoia using the unlocked OpenPGP.js key, and then with each
/// OpenPGP.js version that must read it, comparing every payload byte for byte.
fn check_round_trip(set: &KeySet, messages: &[(String, Vec<u8>)], node: &Path) {
    let work = tempfile::tempdir().unwrap();
    for k in &set.keys {
        let what = format!("{} ({})", k.name, k.library);
        let secret = std::fs::read(set.secret(k)).unwrap();
        let sequoia_key = unlock(&secret, &k.passphrase);
        // SEIPDv2 when the key announces it (OpenPGP.js 6 does with AEAD protection, so
        // for its Argon2 v6 keys), else SEIPDv1, which every reader knows.
        let seipdv2 = seipdv2_announced(&sequoia_key);
        if k.name == "js6-v6-argon2" {
            assert!(seipdv2, "{what}: the Argon2 v6 key announces SEIPDv2");
        }
        let expected_seipd = if seipdv2 { 2 } else { 1 };
        let mut encrypted: Vec<(String, PathBuf, &[u8], bool)> = Vec::new();
        for (name, raw) in messages {
            // Hiding the Subject once per key, on a message that has one.
            for protect in [false, true] {
                if protect && name != "plain-ascii.eml" && name != "plain-ascii.eml.lf" {
                    continue;
                }
                let label = if protect {
                    format!("{name}.protected")
                } else {
                    name.clone()
                };
                let mut cmd = sealpost(work.path());
                cmd.args(["encrypt", "--to"]).arg(set.public(k));
                if protect {
                    cmd.arg("--protect-subject");
                }
                let out = succeeded(
                    run_with_input(&mut cmd, raw),
                    &format!("sealpost encrypt {what} {label}"),
                );
                let what_msg = format!("{what} {label}");
                common::check_outer(
                    raw,
                    &out,
                    std::slice::from_ref(&k.fingerprint),
                    protect,
                    &what_msg,
                );
                let armored = common::armored_part(&out);
                let (pkesks, seipd) = common::packet_summary(armored);
                assert_eq!(pkesks, 1, "{what_msg}: one PKESK for one encryption subkey");
                assert_eq!(seipd, expected_seipd, "{what_msg}: SEIPD version");
                // The sequoia peer, with the key as OpenPGP.js protected it.
                let payload = common::decrypt(&sequoia_key, armored);
                common::check_payload(raw, &payload, protect, &format!("{what_msg} (sequoia)"));

                let path = work.path().join(format!("{}-{label}.out.eml", k.name));
                std::fs::write(&path, &out).unwrap();
                encrypted.push((label, path, raw, protect));
            }
        }

        assert!(!k.readers.is_empty(), "{what}: no OpenPGP.js reader");
        for reader in &k.readers {
            let files: Vec<(String, PathBuf)> = encrypted
                .iter()
                .map(|(label, path, _, _)| (label.clone(), path.clone()))
                .collect();
            let report = decrypt_in_node(node, work.path(), set, k, reader, &files);
            assert_eq!(report.results.len(), encrypted.len(), "{what}");
            for (r, (label, path, raw, protect)) in report.results.iter().zip(&encrypted) {
                let what_msg = format!("{what} {label} read by {}", report.library);
                assert!(r.ok, "{what_msg}: {}", r.error.as_deref().unwrap_or("?"));
                // PKESKv6 goes with SEIPDv2, PKESKv3 with SEIPDv1 (RFC 9580, section 5.1).
                let pkesk = if seipdv2 { 6 } else { 3 };
                assert_eq!(r.pkesk_versions, [pkesk], "{what_msg}");
                assert_eq!(r.seipd_versions, [expected_seipd], "{what_msg}");
                let payload =
                    std::fs::read(path.with_extension(format!("{reader}.payload"))).unwrap();
                common::check_payload(raw, &payload, *protect, &what_msg);
            }
        }
    }
}

#[test]
fn openpgpjs_keys_are_accepted_by_the_key_policy() {
    let set = fixture_keys();
    check_key_policy(&set);
}

#[test]
fn openpgpjs_protected_private_keys_pass_the_upload_check() {
    let set = fixture_keys();
    check_private_key_uploads(&set);
}

#[test]
fn openpgpjs_decrypts_milter_output_for_its_keys() {
    let test = "openpgpjs_decrypts_milter_output_for_its_keys";
    let Some(node) = node(test) else { return };
    let set = fixture_keys();
    check_round_trip(&set, &messages(true), &node);
}

/// A fresh key set from OpenPGP.js, so the committed fixtures cannot hide a change in what
/// the pinned versions generate.
#[test]
fn freshly_generated_openpgpjs_keys_work_end_to_end() {
    let test = "freshly_generated_openpgpjs_keys_work_end_to_end";
    let Some(node) = node(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&node)
        .arg(js_dir().join("genkey.mjs"))
        .arg(dir.path())
        .output()
        .unwrap();
    succeeded(out, "genkey.mjs");
    let set = KeySet::load(dir.path());
    let fixtures = fixture_keys();
    assert_eq!(set.keys.len(), fixtures.keys.len());
    for (fresh, fixed) in set.keys.iter().zip(&fixtures.keys) {
        // Same variants, same shapes; new key material.
        assert_eq!(fresh.name, fixed.name);
        assert_eq!(fresh.key_version, fixed.key_version, "{}", fresh.name);
        assert_eq!(fresh.algorithm_ids, fixed.algorithm_ids, "{}", fresh.name);
        assert_eq!(fresh.s2k, fixed.s2k, "{}", fresh.name);
        assert_ne!(fresh.fingerprint, fixed.fingerprint, "{}", fresh.name);
    }
    check_key_policy(&set);
    check_private_key_uploads(&set);
    check_round_trip(&set, &messages(false), &node);
}

/// One message to every OpenPGP.js key at once (the milter's `mixed = "union"`, or an
/// account with several keys): one PKESK per key, SEIPDv1 because not every key announces
/// SEIPDv2, so the v6 keys get v3 PKESKs; every key still decrypts it, in every OpenPGP.js
/// version that reads it (OpenPGP.js 5 too, skipping the PKESKs it has no algorithm for).
#[test]
fn openpgpjs_decrypts_mail_encrypted_to_all_its_keys_at_once() {
    let test = "openpgpjs_decrypts_mail_encrypted_to_all_its_keys_at_once";
    let Some(node) = node(test) else { return };
    let set = fixture_keys();
    let work = tempfile::tempdir().unwrap();
    // The trace header lists the keys sorted, whatever order they were given in.
    let mut fingerprints: Vec<String> = set.keys.iter().map(|k| k.fingerprint.clone()).collect();
    fingerprints.sort();
    let mut files: Vec<(String, PathBuf, Vec<u8>)> = Vec::new();
    for (name, raw) in common::corpus() {
        if !matches!(
            name.as_str(),
            "plain-ascii.eml" | "nested-multipart.eml" | "base64-attachment.eml"
        ) {
            continue;
        }
        let mut cmd = sealpost(work.path());
        cmd.arg("encrypt");
        for k in &set.keys {
            cmd.arg("--to").arg(set.public(k));
        }
        let out = succeeded(run_with_input(&mut cmd, &raw), &format!("encrypt {name}"));
        common::check_outer(&raw, &out, &fingerprints, false, &name);
        let (pkesks, seipd) = common::packet_summary(common::armored_part(&out));
        assert_eq!(pkesks, set.keys.len(), "{name}: one PKESK per key");
        assert_eq!(seipd, 1, "{name}: SEIPDv1 for a mixed recipient set");
        let path = work.path().join(format!("all-{name}"));
        std::fs::write(&path, &out).unwrap();
        files.push((name, path, raw));
    }
    assert_eq!(files.len(), 3);
    let list: Vec<(String, PathBuf)> = files
        .iter()
        .map(|(n, p, _)| (n.clone(), p.clone()))
        .collect();
    for k in &set.keys {
        for reader in &k.readers {
            let report = decrypt_in_node(&node, work.path(), &set, k, reader, &list);
            for (r, (name, path, raw)) in report.results.iter().zip(&files) {
                let what = format!(
                    "{name} to all keys, read with {} by {}",
                    k.name, report.library
                );
                assert!(r.ok, "{what}: {}", r.error.as_deref().unwrap_or("?"));
                // OpenPGP.js 5 skips the PKESKs of the X25519 keys, which it cannot use.
                let known = if reader == "openpgp" {
                    set.keys.len()
                } else {
                    set.keys
                        .iter()
                        .filter(|k| k.algorithm_ids != [27, 25])
                        .count()
                };
                assert_eq!(r.pkesk_versions, vec![3; known], "{what}");
                assert_eq!(r.seipd_versions, [1], "{what}");
                let payload =
                    std::fs::read(path.with_extension(format!("{reader}.payload"))).unwrap();
                common::check_payload(raw, &payload, false, &what);
            }
        }
    }
}

/// A webmail user who exports their OpenPGP.js v4 key (recovery model 2) reads the same mail
/// in GnuPG: Debian's gpg imports the protected key with its passphrase and decrypts the
/// milter's output. (gpg 2.2 reads neither v6 keys nor the X25519 algorithm ids.)
#[test]
fn gpg_decrypts_milter_output_with_exported_openpgpjs_v4_keys() {
    let test = "gpg_decrypts_milter_output_with_exported_openpgpjs_v4_keys";
    let Some(gpg) = sealpost_test_support::need_program(test, "gpg") else {
        return;
    };
    let set = fixture_keys();
    let legacy: Vec<&JsKey> = set
        .keys
        .iter()
        .filter(|k| k.algorithm_ids == [22, 18])
        .collect();
    assert_eq!(legacy.len(), 2, "js6-v4 and js5-v4");
    let work = tempfile::tempdir().unwrap();
    for k in legacy {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        let run = |args: &[&str], input: &[u8]| {
            run_with_input(
                Command::new(&gpg)
                    .env("GNUPGHOME", home.path())
                    .args(["--batch", "--pinentry-mode", "loopback"])
                    .args(["--passphrase", &k.passphrase])
                    .args(args),
                input,
            )
        };
        let secret = std::fs::read(set.secret(k)).unwrap();
        let out = run(&["--import"], &secret);
        assert!(
            out.status.success(),
            "{}: gpg --import: {}",
            k.name,
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, raw) in common::corpus() {
            let what = format!("{} {name} read by gpg", k.name);
            let mut cmd = sealpost(work.path());
            cmd.args(["encrypt", "--to"]).arg(set.public(k));
            let encrypted = succeeded(run_with_input(&mut cmd, &raw), &what);
            let out = run(&["--decrypt"], common::armored_part(&encrypted));
            assert!(
                out.status.success(),
                "{what}: gpg --decrypt: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            common::check_payload(&raw, &out.stdout, false, &what);
        }
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}
