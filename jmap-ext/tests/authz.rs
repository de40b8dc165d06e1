//! Authorization matrix: for every method, alice can neither read nor change bob's
//! objects, whether she names bob's account or bob's object ids in her own.
#![allow(clippy::field_reassign_with_default)]

mod common;

use common::*;
use sealpost_jmap::{AuthConfig, JmapConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_cannot_touch_bobs_objects() {
    for (backend, ks, _dir) in backends("alice_cannot_touch_bobs_objects").await {
        eprintln!("backend: {backend}");
        let (alice_id, bob_id) = users(&ks).await;
        let server = start(ks.clone(), JmapConfig::default(), AuthConfig::default()).await;
        let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
        let bob = Client::new(&server, "bob@example.org", "bob-login-pw");
        let k = keys();
        let bob_fpr = fpr(&k.bob);

        // Bob stores a public key, its protected private key and an escrow.
        let r = bob
            .calls(json!([
                ["PublicKey/set", {"accountId": bob_id, "create": {"k": {"armored": public(&k.bob)}}}, "a"],
                ["PrivateKey/set", {"accountId": bob_id, "create": {"p": {"armored": secret(&k.bob), "publicKeyId": "#k"}}}, "b"],
                ["Escrow/set", {"accountId": bob_id, "create": {"e": {"privateKeyId": "#p", "armored": escrow_to(&k.officer, "bob-key-pass")}}}, "c"],
                ["KeySettings/set", {"accountId": bob_id, "update": {"singleton": {"protectSubject": true}}}, "d"],
            ]))
            .await;
        for (i, resp) in r.iter().enumerate() {
            assert_ne!(resp[0], "error", "bob's call {i}: {resp}");
            assert!(
                resp[1]["notCreated"].is_null() && resp[1]["notUpdated"].is_null(),
                "{resp}"
            );
        }
        let audit_before = ks.audit_rows(Some("bob@example.org")).await.unwrap().len();

        // 1. Bob's account id: accountNotFound for every method.
        let with_bob = |extra: serde_json::Value| {
            let mut a = json!({"accountId": bob_id});
            a.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            a
        };
        let calls = vec![
            ("Keystore/get", json!({})),
            ("Keystore/set", json!({"destroy": [bob_fpr]})),
            ("PublicKey/get", json!({})),
            (
                "PublicKey/set",
                json!({"update": {bob_fpr.clone(): {"isActive": false}}}),
            ),
            ("PublicKey/changes", json!({"sinceState": "0"})),
            ("PrivateKey/get", json!({"properties": ["armored"]})),
            ("PrivateKey/set", json!({"destroy": [bob_fpr]})),
            ("PrivateKey/changes", json!({"sinceState": "0"})),
            ("Escrow/get", json!({"properties": ["armored"]})),
            ("Escrow/set", json!({"destroy": [bob_fpr]})),
            ("Escrow/changes", json!({"sinceState": "0"})),
            ("KeySettings/get", json!({})),
            (
                "KeySettings/set",
                json!({"update": {"singleton": {"encryptIncoming": false}}}),
            ),
            ("KeyPair/generate", json!({})),
        ];
        for (name, extra) in &calls {
            let e = alice.call_err(name, with_bob(extra.clone())).await;
            assert_eq!(e["type"], "accountNotFound", "{name}: {e}");
            assert!(!e.to_string().contains("bob"), "{name} leaks: {e}");
        }

        // 2. Her own account, bob's ids: nothing found, nothing changed.
        for name in [
            "Keystore/get",
            "PublicKey/get",
            "PrivateKey/get",
            "Escrow/get",
        ] {
            let r = alice
                .call(name, json!({"accountId": alice_id, "ids": [bob_fpr]}))
                .await;
            assert_eq!(r["list"], json!([]), "{name}");
            assert_eq!(r["notFound"], json!([bob_fpr]), "{name}");
        }
        let r = alice
            .call("PublicKey/get", json!({"accountId": alice_id}))
            .await;
        assert_eq!(r["list"], json!([]));
        for name in [
            "Keystore/set",
            "PublicKey/set",
            "PrivateKey/set",
            "Escrow/set",
        ] {
            let r = alice
                .call(name, json!({"accountId": alice_id, "destroy": [bob_fpr]}))
                .await;
            assert_eq!(
                r["notDestroyed"][&bob_fpr]["type"], "notFound",
                "{name}: {r}"
            );
        }
        for (name, patch) in [
            ("Keystore/set", json!({"key": public(&k.bob)})),
            ("PublicKey/set", json!({"isActive": false})),
            ("PrivateKey/set", json!({"label": "mine now"})),
            ("Escrow/set", json!({"armored": escrow_to(&k.officer, "x")})),
        ] {
            let r = alice
                .call(
                    name,
                    json!({"accountId": alice_id, "update": {bob_fpr.clone(): patch}}),
                )
                .await;
            assert_eq!(r["notUpdated"][&bob_fpr]["type"], "notFound", "{name}: {r}");
        }
        // Creating objects that point at bob's keys.
        let r = alice
            .call(
                "Keystore/set",
                json!({"accountId": alice_id, "create": {"k": {"key": public(&k.bob)}}}),
            )
            .await;
        assert_eq!(r["notCreated"]["k"]["type"], "invalidProperties", "{r}");
        let r = alice
            .call(
                "PrivateKey/set",
                json!({"accountId": alice_id, "create": {"p": {"armored": secret(&k.bob), "publicKeyId": bob_fpr}}}),
            )
            .await;
        assert_eq!(r["notCreated"]["p"]["type"], "invalidProperties", "{r}");
        let r = alice
            .call(
                "Escrow/set",
                json!({"accountId": alice_id, "create": {"e": {"privateKeyId": bob_fpr, "armored": escrow_to(&k.officer, "x")}}}),
            )
            .await;
        assert_eq!(r["notCreated"]["e"]["type"], "invalidProperties", "{r}");
        // Her changes and settings are her own.
        for name in ["PublicKey/changes", "PrivateKey/changes", "Escrow/changes"] {
            let r = alice
                .call(name, json!({"accountId": alice_id, "sinceState": "0"}))
                .await;
            assert_eq!(r["created"], json!([]), "{name}");
        }
        let r = alice
            .call("KeySettings/get", json!({"accountId": alice_id}))
            .await;
        assert_eq!(r["list"][0]["protectSubject"], json!(null));

        // Bob's objects are intact and no audit row was written for his account.
        let r = bob
            .call(
                "Escrow/get",
                json!({"accountId": bob_id, "properties": ["armored"]}),
            )
            .await;
        assert_eq!(r["list"].as_array().unwrap().len(), 1);
        let r = bob
            .call("PublicKey/get", json!({"accountId": bob_id}))
            .await;
        assert_eq!(r["list"][0]["isActive"], true);
        let r = bob
            .call("PrivateKey/get", json!({"accountId": bob_id}))
            .await;
        assert_eq!(r["list"][0]["label"], json!(null));
        assert_eq!(
            ks.audit_rows(Some("bob@example.org")).await.unwrap().len(),
            audit_before
        );
        let _ = alice_id;
    }
}
