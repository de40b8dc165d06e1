//! The webmail client flow over real HTTP, on SQLite and PostgreSQL: session, Keystore,
//! PublicKey, PrivateKey and Escrow, result references, states and limits. The example
//! exchange in docs/jmap.md is generated from this flow and checked against it.
#![allow(clippy::field_reassign_with_default)]

mod common;

use common::*;
use sealpost_jmap::{AuthConfig, JmapConfig};
use serde_json::{json, Value};

fn config() -> JmapConfig {
    let mut c = JmapConfig::default();
    c.limits.max_calls_in_request = 8;
    c.limits.max_objects_in_get = 10;
    c.limits.max_objects_in_set = 5;
    c.limits.max_size_request = 64 * 1024;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_flow() {
    for (backend, ks, _dir) in backends("client_flow").await {
        eprintln!("backend: {backend}");
        let (alice_id, _bob_id) = users(&ks).await;
        let server = start(ks.clone(), config(), AuthConfig::default()).await;
        let mut alice = Client::new(&server, "alice@example.org", "alice-login-pw");
        alice.log = Some(Default::default());
        let k = keys();
        alice.note("Fetch the session");
        let alice_fpr = fpr(&k.alice);

        // Session.
        let s = alice.session().await;
        assert_eq!(s["username"], "alice@example.org");
        assert_eq!(s["primaryAccounts"][KEYS], alice_id);
        assert_eq!(s["primaryAccounts"][PGP], alice_id);
        assert_eq!(s["accounts"][&alice_id]["isPersonal"], true);
        assert_eq!(s["apiUrl"], format!("{}/jmap", server.base));
        assert_eq!(s["capabilities"][CORE]["maxCallsInRequest"], 8);
        let kc = &s["capabilities"][KEYS];
        assert_eq!(kc["escrow"], "optional");
        assert_eq!(kc["allowedModels"], json!([1, 2, 3, 4]));
        assert_eq!(kc["serverKeyGeneration"], false);
        assert_eq!(kc["officerKeys"][0]["fingerprint"], fpr(&k.officer));
        for p in ["downloadUrl", "uploadUrl", "eventSourceUrl", "state"] {
            assert!(s[p].is_string(), "session lacks {p}");
        }

        // Keystore/set (TMail shape) then Keystore/get.
        alice.note("Upload a public key (TMail Keystore/set)");
        let r = alice
            .call(
                "Keystore/set",
                json!({"accountId": alice_id, "create": {"k1": {"key": public(&k.alice)}}}),
            )
            .await;
        assert_eq!(r["created"]["k1"]["id"], alice_fpr, "{r}");
        assert_eq!(r["oldState"], "0");
        assert_ne!(r["newState"], r["oldState"]);
        let keystore_state = r["newState"].clone();
        alice.note("List the public keys (TMail Keystore/get)");
        let r = alice
            .call("Keystore/get", json!({"accountId": alice_id, "ids": null}))
            .await;
        assert_eq!(r["state"], keystore_state);
        assert_eq!(
            r["list"],
            json!([{"id": alice_fpr, "key": public(&k.alice)}])
        );
        // Unknown ids: notFound / notDestroyed.
        alice.note("Destroying an unknown key: notDestroyed");
        let r = alice
            .call(
                "Keystore/set",
                json!({"accountId": alice_id, "destroy": ["0123456789ABCDEF0123456789ABCDEF01234567"]}),
            )
            .await;
        assert_eq!(
            r["notDestroyed"]["0123456789ABCDEF0123456789ABCDEF01234567"]["type"],
            "notFound"
        );
        assert_eq!(r["newState"], keystore_state);
        // A secret key uploaded as a public key is refused with a description.
        alice.note("A secret key is not a public key");
        let r = alice
            .call(
                "Keystore/set",
                json!({"accountId": alice_id, "create": {"s": {"key": secret(&k.alice)}}}),
            )
            .await;
        assert_eq!(r["notCreated"]["s"]["type"], "invalidProperties", "{r}");
        assert_eq!(r["notCreated"]["s"]["properties"], json!(["key"]));

        // PublicKey/changes since the start.
        alice.note("What changed since state 0");
        let r = alice
            .call(
                "PublicKey/changes",
                json!({"accountId": alice_id, "sinceState": "0"}),
            )
            .await;
        assert_eq!(r["created"], json!([alice_fpr]));
        assert_eq!(r["newState"], keystore_state);
        assert_eq!(r["hasMoreChanges"], false);
        let e = alice
            .call_err(
                "PublicKey/changes",
                json!({"accountId": alice_id, "sinceState": "999"}),
            )
            .await;
        assert_eq!(e["type"], "cannotCalculateChanges");

        // PrivateKey/set: protected accepted; unprotected, mismatched, garbage refused.
        alice.note("Store the protected private key (and three refused uploads)");
        let r = alice
            .call(
                "PrivateKey/set",
                json!({"accountId": alice_id, "create": {
                    "pk": {"armored": secret(&k.alice), "label": "laptop"},
                    "open": {"armored": secret(&k.alice_open)},
                    "other": {"armored": secret(&k.stranger)},
                    "junk": {"armored": "this is not a key"},
                }}),
            )
            .await;
        assert_eq!(r["created"]["pk"]["id"], alice_fpr, "{r}");
        assert_eq!(r["created"]["pk"]["protection"]["kind"], "s2k");
        assert_eq!(r["notCreated"]["open"]["type"], "invalidProperties");
        let d = r["notCreated"]["open"]["description"].as_str().unwrap();
        assert!(d.contains("not encrypted"), "{d}");
        let d = r["notCreated"]["other"]["description"].as_str().unwrap();
        assert!(d.contains("does not belong"), "{d}");
        assert_eq!(r["notCreated"]["junk"]["type"], "invalidProperties");
        // Nothing of the refused keys is echoed back.
        let body = r.to_string();
        assert!(!body.contains("BEGIN PGP PRIVATE KEY"), "{body}");

        // Metadata by default, the blob only when asked for.
        alice.note("Private key metadata (no blob by default)");
        let r = alice
            .call(
                "PrivateKey/get",
                json!({"accountId": alice_id, "ids": [alice_fpr]}),
            )
            .await;
        assert_eq!(r["list"][0]["label"], "laptop");
        assert!(r["list"][0].get("armored").is_none());
        alice.note("Download the protected private key");
        let r = alice
            .call(
                "PrivateKey/get",
                json!({"accountId": alice_id, "ids": [alice_fpr], "properties": ["armored"]}),
            )
            .await;
        assert_eq!(r["list"][0]["armored"], secret(&k.alice));
        assert_eq!(r["list"][0].as_object().unwrap().len(), 2);

        // Escrow/set: to another key refused, to the officer accepted.
        alice.note("An escrow not addressed to the officer key is refused");
        let r = alice
            .call(
                "Escrow/set",
                json!({"accountId": alice_id, "create": {
                    "bad": {"privateKeyId": alice_fpr, "armored": escrow_to(&k.not_officer, "alice-key-pass")},
                }}),
            )
            .await;
        assert_eq!(r["notCreated"]["bad"]["type"], "invalidProperties", "{r}");
        assert!(r["notCreated"]["bad"]["description"]
            .as_str()
            .unwrap()
            .contains("not an encryption subkey of an active officer key"));
        alice.note("Escrow the key password to the officer key (model 4)");
        let r = alice
            .call(
                "Escrow/set",
                json!({"accountId": alice_id, "create": {
                    "e1": {"privateKeyId": alice_fpr, "armored": escrow_to(&k.officer, "alice-key-pass")},
                }}),
            )
            .await;
        assert_eq!(
            r["created"]["e1"]["officerFingerprint"],
            fpr(&k.officer),
            "{r}"
        );

        // Result references: the ids /changes reported feed /get.
        alice.note("Result references: changes feed /get, /get feeds /get");
        let r = alice
            .calls(json!([
                ["PrivateKey/changes", {"accountId": alice_id, "sinceState": "0"}, "c0"],
                ["PrivateKey/get", {"accountId": alice_id,
                    "#ids": {"resultOf": "c0", "name": "PrivateKey/changes", "path": "/created"},
                    "properties": ["publicKeyId", "protection"]}, "c1"],
                ["PublicKey/get", {"accountId": alice_id,
                    "#ids": {"resultOf": "c1", "name": "PrivateKey/get", "path": "/list/*/publicKeyId"},
                    "properties": ["fingerprint", "isActive"]}, "c2"],
                ["PublicKey/get", {"accountId": alice_id,
                    "#ids": {"resultOf": "c9", "name": "PrivateKey/get", "path": "/list/*/id"}}, "c3"],
                ["PublicKey/get", {"accountId": alice_id,
                    "#ids": {"resultOf": "c1", "name": "PrivateKey/get", "path": "/nothing"}}, "c4"],
            ]))
            .await;
        assert_eq!(r[1][1]["list"][0]["publicKeyId"], alice_fpr, "{:?}", r);
        assert_eq!(r[2][1]["list"][0]["isActive"], true);
        assert_eq!(r[3][0], "error");
        assert_eq!(r[3][1]["type"], "invalidResultReference");
        assert_eq!(r[4][1]["type"], "invalidResultReference");

        // ifInState: a stale state is refused, the current one accepted.
        alice.note("A /set with a stale ifInState");
        let e = alice
            .call_err(
                "PublicKey/set",
                json!({"accountId": alice_id, "ifInState": "0",
                       "update": {alice_fpr.clone(): {"isActive": false}}}),
            )
            .await;
        assert_eq!(e["type"], "stateMismatch");
        let state = alice
            .call("PublicKey/get", json!({"accountId": alice_id, "ids": []}))
            .await["state"]
            .clone();
        alice.note("Deactivate the key, stating the current state");
        let r = alice
            .call(
                "PublicKey/set",
                json!({"accountId": alice_id, "ifInState": state,
                       "update": {alice_fpr.clone(): {"isActive": false}}}),
            )
            .await;
        assert_eq!(r["updated"][&alice_fpr]["isActive"], false, "{r}");
        assert_eq!(r["oldState"], state);
        let r = alice
            .call(
                "PublicKey/changes",
                json!({"accountId": alice_id, "sinceState": state}),
            )
            .await;
        assert_eq!(r["updated"], json!([alice_fpr]));
        // Read-only properties cannot be set.
        let r = alice
            .call(
                "PublicKey/set",
                json!({"accountId": alice_id, "update": {alice_fpr.clone(): {"fingerprint": "X"}}}),
            )
            .await;
        assert_eq!(
            r["notUpdated"][&alice_fpr]["properties"],
            json!(["fingerprint"])
        );

        // Key settings.
        let r = alice
            .call(
                "KeySettings/get",
                json!({"accountId": alice_id, "ids": null}),
            )
            .await;
        assert_eq!(r["list"][0]["id"], "singleton");
        alice.note("Key settings");
        let r = alice
            .call(
                "KeySettings/set",
                json!({"accountId": alice_id, "update": {"singleton": {"encryptIncoming": false, "protectSubject": true}}}),
            )
            .await;
        assert!(r["updated"]["singleton"].is_object(), "{r}");
        let r = alice
            .call("KeySettings/get", json!({"accountId": alice_id}))
            .await;
        assert_eq!(r["list"][0]["encryptIncoming"], false);
        assert_eq!(r["list"][0]["protectSubject"], true);

        // Every change left an audit row by the JMAP user, and the chain verifies.
        let rows = ks.audit_rows(Some("alice@example.org")).await.unwrap();
        for action in [
            "key.imported",
            "private_key.create",
            "escrow.create",
            "key.deactivate",
            "settings.update",
        ] {
            assert!(
                rows.iter()
                    .any(|r| r.action == action && r.actor == "jmap:alice@example.org"),
                "no audit row {action}"
            );
        }
        assert!(ks.audit_verify().await.unwrap().problems.is_empty());

        // Destroying the public key takes the private key and the escrow with it.
        let r = alice
            .call(
                "Keystore/set",
                json!({"accountId": alice_id, "destroy": [alice_fpr]}),
            )
            .await;
        assert_eq!(r["destroyed"], json!([alice_fpr]));
        let r = alice
            .call(
                "Escrow/changes",
                json!({"accountId": alice_id, "sinceState": "0"}),
            )
            .await;
        assert_eq!(
            r["destroyed"],
            json!([]),
            "created and destroyed within the window: {r}"
        );
        assert_eq!(r["created"], json!([]));

        if backend == "sqlite" {
            let log = alice.log.take().unwrap().into_inner().unwrap();
            let mut n = docs::Normalizer::new(&[
                (alice_id.as_str(), "A13824"),
                (server.base.as_str(), "https://mail.example.org"),
            ]);
            let entries: Vec<_> = log
                .into_iter()
                .map(|(t, req, st, resp)| (t, n.value(&req), st, n.value(&resp)))
                .collect();
            docs::check_docs(&docs::render(&entries));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_and_limits() {
    for (backend, ks, _dir) in backends("request_errors_and_limits").await {
        eprintln!("backend: {backend}");
        let (alice_id, _) = users(&ks).await;
        let server = start(ks.clone(), config(), AuthConfig::default()).await;
        let alice = Client::new(&server, "alice@example.org", "alice-login-pw");

        let (st, b) = alice
            .post_raw(b"{not json".to_vec(), "application/json")
            .await;
        assert_eq!(
            (st, b["type"].as_str()),
            (400, Some("urn:ietf:params:jmap:error:notJSON"))
        );
        let (st, b) = alice.request(&json!({"using": [CORE]})).await;
        assert_eq!(
            (st, b["type"].as_str()),
            (400, Some("urn:ietf:params:jmap:error:notRequest"))
        );
        let (st, b) = alice
            .request(&json!({"using": [CORE], "methodCalls": [["Core/echo", {}]]}))
            .await;
        assert_eq!(
            (st, b["type"].as_str()),
            (400, Some("urn:ietf:params:jmap:error:notRequest"))
        );
        let (st, b) = alice
            .request(&json!({"using": [CORE, "urn:example:nope"], "methodCalls": []}))
            .await;
        assert_eq!(
            (st, b["type"].as_str()),
            (400, Some("urn:ietf:params:jmap:error:unknownCapability"))
        );
        // maxCallsInRequest.
        let calls: Vec<Value> = (0..9)
            .map(|i| json!(["Core/echo", {}, format!("c{i}")]))
            .collect();
        let (st, b) = alice
            .request(&json!({"using": [CORE], "methodCalls": calls}))
            .await;
        assert_eq!(
            (st, b["type"].as_str()),
            (400, Some("urn:ietf:params:jmap:error:limit"))
        );
        assert_eq!(b["limit"], "maxCallsInRequest");
        // maxSizeRequest.
        let big = json!({"using": [CORE], "methodCalls": [["Core/echo", {"x": "a".repeat(70_000)}, "c0"]]});
        let (st, b) = alice.request(&big).await;
        assert_eq!((st, b["limit"].as_str()), (413, Some("maxSizeRequest")));

        // Method-level errors.
        let (_, b) = alice
            .request(&json!({"using": [CORE], "methodCalls": [
                ["Core/echo", {"hello": true}, "e"],
                ["PublicKey/get", {"accountId": alice_id}, "u"],
                ["Nope/get", {}, "n"],
            ]}))
            .await;
        let r = b["methodResponses"].as_array().unwrap();
        assert_eq!(r[0], json!(["Core/echo", {"hello": true}, "e"]));
        assert_eq!(
            r[1][1]["type"], "unknownMethod",
            "PublicKey needs its capability in using"
        );
        assert_eq!(r[2][1]["type"], "unknownMethod");
        assert!(b["sessionState"].is_string());
        let e = alice.call_err("PublicKey/get", json!({})).await;
        assert_eq!(e["type"], "invalidArguments");
        let e = alice
            .call_err("PublicKey/get", json!({"accountId": alice_id, "bogus": 1}))
            .await;
        assert_eq!(e["type"], "invalidArguments");
        let e = alice
            .call_err(
                "PublicKey/get",
                json!({"accountId": alice_id, "properties": ["nope"]}),
            )
            .await;
        assert_eq!(e["type"], "invalidArguments");
        let e = alice
            .call_err("PublicKey/get", json!({"accountId": "someone-else"}))
            .await;
        assert_eq!(e["type"], "accountNotFound");
        let ids: Vec<String> = (0..11).map(|i| format!("{i:040X}")).collect();
        let e = alice
            .call_err("PublicKey/get", json!({"accountId": alice_id, "ids": ids}))
            .await;
        assert_eq!(e["type"], "requestTooLarge");
        let destroy: Vec<String> = (0..6).map(|i| format!("{i:040X}")).collect();
        let e = alice
            .call_err(
                "PublicKey/set",
                json!({"accountId": alice_id, "destroy": destroy}),
            )
            .await;
        assert_eq!(e["type"], "requestTooLarge");
        let e = alice
            .call_err("KeyPair/generate", json!({"accountId": alice_id}))
            .await;
        assert_eq!(e["type"], "forbidden");

        // createdIds round trip.
        let (_, b) = alice
            .request(&json!({"using": [CORE], "methodCalls": [], "createdIds": {"x": "y"}}))
            .await;
        assert_eq!(b["createdIds"], json!({"x": "y"}));

        // Unauthenticated and wrongly authenticated requests.
        let http = reqwest::Client::new();
        let r = http
            .get(format!("{}/.well-known/jmap", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm="));
        let r = http
            .post(format!("{}/jmap", server.base))
            .basic_auth("alice@example.org", Some("Wr0ng-S3cret-guess"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let text = r.text().await.unwrap();
        assert!(!text.contains("Wr0ng-S3cret-guess"), "{text}");
        let r = http
            .get(format!("{}/nowhere", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_elsewhere_show_within_cache_ms() {
    for cache_ms in [0u64, 300] {
        let (_, ks, _dir) = backends("changes_made_elsewhere").await.remove(0);
        let (alice_id, _) = users(&ks).await;
        let mut cfg = config();
        cfg.cache_ms = cache_ms;
        let server = start(ks.clone(), cfg, AuthConfig::default()).await;
        let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
        let r = alice
            .call("Keystore/get", json!({"accountId": alice_id}))
            .await;
        assert_eq!(r["list"], json!([]));
        // The operator imports a key with the CLI (another process, same database).
        ks.add_public_key(&alice_id, public(&keys().alice).as_bytes(), &actor())
            .await
            .unwrap();
        if cache_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(cache_ms + 50)).await;
        }
        for name in ["Keystore/get", "PublicKey/get"] {
            let r = alice.call(name, json!({"accountId": alice_id})).await;
            assert_eq!(
                r["list"][0]["id"],
                fpr(&keys().alice),
                "{name}, cache_ms {cache_ms}"
            );
            assert_ne!(r["state"], "0");
        }
        // A write through the service is visible at once, whatever the cache.
        let r = alice
            .call(
                "PublicKey/set",
                json!({"accountId": alice_id, "update": {fpr(&keys().alice): {"isActive": false}}}),
            )
            .await;
        assert!(r["updated"].is_object(), "{r}");
        let r = alice
            .call("PublicKey/get", json!({"accountId": alice_id}))
            .await;
        assert_eq!(r["list"][0]["isActive"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_requests_enforced() {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_, ks, _dir) = backends("max_concurrent_requests_enforced").await.remove(0);
    users(&ks).await;
    let mut cfg = config();
    cfg.limits.max_concurrent_requests = 1;
    let server = start(ks.clone(), cfg, AuthConfig::default()).await;
    let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
    alice.session().await; // the login is verified (and cached) once
                           // One request in flight: its body arrives slowly.
    let body = json!({"using": [CORE], "methodCalls": [["Core/echo", {"n": 1}, "c0"]]}).to_string();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice@example.org:alice-login-pw");
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /jmap HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            &body[..10]
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, problem) = alice
        .request(&json!({"using": [CORE], "methodCalls": [["Core/echo", {}, "c0"]]}))
        .await;
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["limit"], "maxConcurrentRequests");
    // The slow request completes normally, and then there is room again.
    slow.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (status, _) = alice
        .request(&json!({"using": [CORE], "methodCalls": [["Core/echo", {}, "c0"]]}))
        .await;
    assert_eq!(status, 200);
}
