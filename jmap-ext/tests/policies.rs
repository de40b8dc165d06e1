//! Operator policies and key checks over HTTP: keys made by gpg (refused for the right
//! reason, gpg's default secret-key export accepted), escrow "required" and "off",
//! recovery models without private keys, and server-side key generation (model 5).
#![allow(clippy::field_reassign_with_default)]

mod common;

use common::*;
use sealpost_jmap::{AuthConfig, EscrowMode, JmapConfig};
use sealpost_test_support::fixture;
use sequoia_openpgp::crypto::Password;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::Cert;
use serde_json::json;

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("keys/{name}"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpg_keys_and_key_policy() {
    for (backend, ks, _dir) in backends("gpg_keys_and_key_policy").await {
        eprintln!("backend: {backend}");
        let (alice_id, _) = users(&ks).await;
        let ed = ks
            .add_account(
                &addr("ed@example.org"),
                &[
                    addr("signonly@example.org"),
                    addr("expired@example.org"),
                    addr("revoked@example.org"),
                ],
                &actor(),
            )
            .await
            .unwrap();
        ks.set_password(&addr("ed@example.org"), "ed-login-pw", &actor())
            .await
            .unwrap();
        let server = start(ks.clone(), JmapConfig::default(), AuthConfig::default()).await;
        let client = Client::new(&server, "ed@example.org", "ed-login-pw");
        let r = client
            .call(
                "Keystore/set",
                json!({"accountId": ed.id, "create": {
                    "good": {"key": fixture_text("gpg-ed25519.asc")},
                    "signonly": {"key": fixture_text("gpg-sign-only.asc")},
                    "expired": {"key": fixture_text("gpg-expired.asc")},
                    "revoked": {"key": fixture_text("gpg-revoked.asc")},
                    "secret": {"key": fixture_text("gpg-ed25519-secret.asc")},
                    "two": {"key": fixture_text("gpg-two-certs.asc")},
                    "empty": {"key": ""},
                }}),
            )
            .await;
        assert!(r["created"]["good"]["id"].is_string(), "{r}");
        let fpr = r["created"]["good"]["id"].as_str().unwrap().to_string();
        for (cid, words) in [
            ("signonly", "encrypt"),
            ("expired", "expired"),
            ("revoked", "revoked"),
            ("secret", "secret"),
            ("two", "certificates"),
            ("empty", "empty"),
        ] {
            let e = &r["notCreated"][cid];
            assert_eq!(e["type"], "invalidProperties", "{cid}: {e}");
            let d = e["description"].as_str().unwrap().to_lowercase();
            assert!(d.contains(words), "{cid}: {d}");
        }
        // A key whose user IDs name none of the account's addresses.
        let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
        let r = alice
            .call(
                "PublicKey/set",
                json!({"accountId": alice_id, "create": {"k": {"armored": fixture_text("gpg-ed25519.asc")}}}),
            )
            .await;
        let d = r["notCreated"]["k"]["description"].as_str().unwrap();
        assert!(d.contains("user ID"), "{d}");

        // A secret key exported by gpg without a passphrase is refused, never stored.
        let r = client
            .call(
                "PrivateKey/set",
                json!({"accountId": ed.id, "create": {"p": {"armored": fixture_text("gpg-ed25519-secret.asc")}}}),
            )
            .await;
        let d = r["notCreated"]["p"]["description"].as_str().unwrap();
        assert!(d.contains("is not encrypted"), "{d}");
        assert!(ks.private_keys_of(&ed.id).await.unwrap().is_empty());
        let _ = fpr;

        // gpg's default protected export (iterated+salted SHA-1, AES-128) is accepted.
        let jfix = |n: &str| {
            std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures")
                    .join(n),
            )
            .unwrap()
        };
        let r = alice
            .calls(json!([
                ["PublicKey/set", {"accountId": alice_id, "create": {"k": {"armored": jfix("gpg-alice.asc")}}}, "a"],
                ["PrivateKey/set", {"accountId": alice_id, "create": {"p": {"armored": jfix("gpg-alice-secret-protected.asc"), "publicKeyId": "#k"}}}, "b"],
            ]))
            .await;
        assert!(r[0][1]["created"]["k"].is_object(), "{}", r[0]);
        let prot = &r[1][1]["created"]["p"]["protection"];
        assert_eq!(prot["kind"], "s2k", "{}", r[1]);
        assert_eq!(prot["s2k"], "iterated-salted", "{prot}");
        assert_eq!(prot["cipher"], "AES-128", "{prot}");
        assert_eq!(prot["count"], 65011712, "{prot}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_required_and_off() {
    for (backend, ks, _dir) in backends("escrow_required_and_off").await {
        eprintln!("backend: {backend}");
        let (alice_id, bob_id) = users(&ks).await;
        let k = keys();
        let mut cfg = JmapConfig::default();
        cfg.keys.escrow = EscrowMode::Required;
        let server = start(ks.clone(), cfg, AuthConfig::default()).await;
        let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
        let s = alice.session().await;
        assert_eq!(s["capabilities"][KEYS]["escrow"], "required");

        // Without an escrow in the same request: refused, nothing stored.
        let r = alice
            .calls(json!([
                ["PublicKey/set", {"accountId": alice_id, "create": {"k": {"armored": public(&k.alice)}}}, "a"],
                ["PrivateKey/set", {"accountId": alice_id, "create": {"p": {"armored": secret(&k.alice)}}}, "b"],
            ]))
            .await;
        assert_eq!(r[1][1]["notCreated"]["p"]["type"], "forbidden", "{}", r[1]);
        // With an escrow to a foreign key: refused, nothing stored.
        let r = alice
            .calls(json!([
                ["PrivateKey/set", {"accountId": alice_id, "create": {"p": {"armored": secret(&k.alice)}}}, "b"],
                ["Escrow/set", {"accountId": alice_id, "create": {"e": {"privateKeyId": "#p", "armored": escrow_to(&k.not_officer, "alice-key-pass")}}}, "c"],
            ]))
            .await;
        assert_eq!(
            r[0][1]["notCreated"]["p"]["type"], "invalidProperties",
            "{}",
            r[0]
        );
        assert_eq!(
            r[1][1]["notCreated"]["e"]["type"], "invalidProperties",
            "{}",
            r[1]
        );
        assert!(ks.private_keys_of(&alice_id).await.unwrap().is_empty());
        // With the escrow referencing the creation id: both stored, in one transaction.
        let r = alice
            .calls(json!([
                ["PrivateKey/set", {"accountId": alice_id, "create": {"p": {"armored": secret(&k.alice)}}}, "b"],
                ["Escrow/set", {"accountId": alice_id, "create": {"e": {"privateKeyId": "#p", "armored": escrow_to(&k.officer, "alice-key-pass")}}}, "c"],
            ]))
            .await;
        assert_eq!(r[0][1]["created"]["p"]["id"], fpr(&k.alice), "{}", r[0]);
        assert_eq!(r[1][1]["created"]["e"]["id"], fpr(&k.alice), "{}", r[1]);
        let r = alice
            .call(
                "Escrow/changes",
                json!({"accountId": alice_id, "sinceState": "0"}),
            )
            .await;
        assert_eq!(r["created"], json!([fpr(&k.alice)]));
        // Removing the escrow alone is refused; replacing it is allowed.
        let r = alice
            .call(
                "Escrow/set",
                json!({"accountId": alice_id, "destroy": [fpr(&k.alice)]}),
            )
            .await;
        assert_eq!(r["notDestroyed"][fpr(&k.alice)]["type"], "forbidden");
        let r = alice
            .call(
                "Escrow/set",
                json!({"accountId": alice_id, "update": {fpr(&k.alice): {"armored": escrow_to(&k.officer, "alice-key-pass")}}}),
            )
            .await;
        assert!(r["updated"][fpr(&k.alice)].is_object(), "{r}");
        drop(server);

        // Escrow off; models without stored private keys.
        let mut cfg = JmapConfig::default();
        cfg.keys.escrow = EscrowMode::Off;
        cfg.keys.allowed_models = vec![1, 2];
        let server = start(ks.clone(), cfg, AuthConfig::default()).await;
        let bob = Client::new(&server, "bob@example.org", "bob-login-pw");
        let r = bob
            .calls(json!([
                ["PublicKey/set", {"accountId": bob_id, "create": {"k": {"armored": public(&k.bob)}}}, "a"],
                ["PrivateKey/set", {"accountId": bob_id, "create": {"p": {"armored": secret(&k.bob)}}}, "b"],
                ["Escrow/set", {"accountId": bob_id, "create": {"e": {"privateKeyId": fpr(&k.bob), "armored": escrow_to(&k.officer, "x")}}}, "c"],
            ]))
            .await;
        assert!(r[0][1]["created"]["k"].is_object());
        assert_eq!(r[1][1]["notCreated"]["p"]["type"], "forbidden");
        assert_eq!(r[2][1]["notCreated"]["e"]["type"], "forbidden");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_key_generation() {
    for (backend, ks, _dir) in backends("server_key_generation").await {
        eprintln!("backend: {backend}");
        let (alice_id, _) = users(&ks).await;
        let mut cfg = JmapConfig::default();
        cfg.keys.allowed_models = vec![3, 4, 5];
        cfg.keys.server_key_generation = true;
        let server = start(ks.clone(), cfg, AuthConfig::default()).await;
        let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
        assert_eq!(
            alice.session().await["capabilities"][KEYS]["serverKeyGeneration"],
            true
        );
        let e = alice
            .call_err(
                "KeyPair/generate",
                json!({"accountId": alice_id, "userId": "Mallory <mallory@example.net>"}),
            )
            .await;
        assert_eq!(e["type"], "invalidArguments");
        let r = alice
            .call(
                "KeyPair/generate",
                json!({"accountId": alice_id, "label": "webmail"}),
            )
            .await;
        let password = r["password"].as_str().unwrap().to_string();
        sealpost_test_support::register_secret(&password);
        let id = r["id"].as_str().unwrap().to_string();
        assert!(password.len() >= 32);
        assert_eq!(r["newState"]["PrivateKey"], "2", "{r}");
        // Public key active, private key and escrow stored.
        let r = alice
            .calls(json!([
                ["PublicKey/get", {"accountId": alice_id, "ids": [id]}, "a"],
                ["PrivateKey/get", {"accountId": alice_id, "ids": [id], "properties": ["armored", "label"]}, "b"],
                ["Escrow/get", {"accountId": alice_id, "ids": [id]}, "c"],
            ]))
            .await;
        assert_eq!(r[0][1]["list"][0]["isActive"], true);
        assert_eq!(r[1][1]["list"][0]["label"], "webmail");
        assert_eq!(
            r[2][1]["list"][0]["officerFingerprint"],
            fpr(&keys().officer)
        );
        // The returned password unlocks the stored key; it is stored nowhere.
        let armored = r[1][1]["list"][0]["armored"].as_str().unwrap();
        let cert = Cert::from_bytes(armored.as_bytes()).unwrap();
        for ka in cert.keys().secret() {
            ka.key()
                .clone()
                .decrypt_secret(&Password::from(password.as_str()))
                .unwrap();
        }
        let audit = serde_json::to_string(&ks.audit_rows(None).await.unwrap()).unwrap();
        assert!(!audit.contains(&password));
        assert!(!armored.contains(&password));
    }
}

/// An Autocrypt-Setup-style upload: the secret key inside a password-encrypted message.
fn skesk_message(plain: &str, password: &str) -> String {
    use sequoia_openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
    use std::io::Write;
    let mut out = Vec::new();
    let m = Message::new(&mut out);
    let m = Armorer::new(m).build().unwrap();
    let m = Encryptor::with_passwords(m, Some(Password::from(password)))
        .build()
        .unwrap();
    let mut w = LiteralWriter::new(m).build().unwrap();
    w.write_all(plain.as_bytes()).unwrap();
    w.finalize().unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skesk_uploads_and_weak_s2k() {
    for (backend, ks, _dir) in backends("skesk_uploads_and_weak_s2k").await {
        eprintln!("backend: {backend}");
        let (alice_id, bob_id) = users(&ks).await;
        let k = keys();
        // Encrypted-message uploads: accepted when they name their public key.
        let server = start(ks.clone(), JmapConfig::default(), AuthConfig::default()).await;
        let bob = Client::new(&server, "bob@example.org", "bob-login-pw");
        let setup = skesk_message(&secret(&k.bob), "1234-5678-9012");
        let r = bob
            .calls(json!([
                ["PublicKey/set", {"accountId": bob_id, "create": {"k": {"armored": public(&k.bob)}}}, "a"],
                ["PrivateKey/set", {"accountId": bob_id, "create": {
                    "anonymous": {"armored": setup},
                    "named": {"armored": setup, "publicKeyId": "#k"},
                }}, "b"],
            ]))
            .await;
        let b = &r[1][1];
        assert_eq!(b["created"]["named"]["id"], fpr(&k.bob), "{b}");
        assert_eq!(b["created"]["named"]["protection"]["kind"], "skesk");
        assert_eq!(b["notCreated"]["anonymous"]["type"], "invalidProperties");
        assert!(b["notCreated"]["anonymous"]["description"]
            .as_str()
            .unwrap()
            .contains("publicKeyId"));
        // A message that is not encrypted is not a protected key.
        let plain = {
            use sequoia_openpgp::serialize::stream::{Armorer, LiteralWriter, Message};
            use std::io::Write;
            let mut out = Vec::new();
            let m = Armorer::new(Message::new(&mut out)).build().unwrap();
            let mut w = LiteralWriter::new(m).build().unwrap();
            w.write_all(secret(&k.bob).as_bytes()).unwrap();
            w.finalize().unwrap();
            String::from_utf8(out).unwrap()
        };
        let r = bob
            .call(
                "PrivateKey/set",
                json!({"accountId": bob_id, "destroy": [fpr(&k.bob)],
                       "create": {"plain": {"armored": plain, "publicKeyId": fpr(&k.bob)}}}),
            )
            .await;
        assert_eq!(r["destroyed"], json!([fpr(&k.bob)]));
        let d = r["notCreated"]["plain"]["description"].as_str().unwrap();
        assert!(d.contains("not encrypted"), "{d}");
        assert!(!r.to_string().contains("PRIVATE KEY"));
        drop(server);

        // An operator minimum above the key's S2K count refuses it as weak.
        let mut cfg = JmapConfig::default();
        cfg.keys.min_s2k_count = 100_000_000;
        let server = start(ks.clone(), cfg, AuthConfig::default()).await;
        let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
        let r = alice
            .calls(json!([
                ["PublicKey/set", {"accountId": alice_id, "create": {"k": {"armored": public(&k.alice)}}}, "a"],
                ["PrivateKey/set", {"accountId": alice_id, "create": {"p": {"armored": secret(&k.alice)}}}, "b"],
            ]))
            .await;
        let d = r[1][1]["notCreated"]["p"]["description"].as_str().unwrap();
        assert!(d.contains("weak S2K") && d.contains("100000000"), "{d}");
        assert!(ks.private_keys_of(&alice_id).await.unwrap().is_empty());
    }
}
