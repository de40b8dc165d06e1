//! Blob upload and download (RFC 8620 §6) and EventSource push (§7.3) over HTTP.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::time::Duration;

use common::*;
use sealpost_jmap::{AuthConfig, JmapConfig};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_create_by_blob_id_and_download() {
    for (backend, ks, _dir) in backends("upload_create_by_blob_id_and_download").await {
        eprintln!("backend: {backend}");
        let (alice_id, bob_id) = users(&ks).await;
        let server = start(ks.clone(), JmapConfig::default(), AuthConfig::default()).await;
        let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
        let k = keys();
        let s = alice.session().await;
        let upload_url = s["uploadUrl"]
            .as_str()
            .unwrap()
            .replace("{accountId}", &alice_id);
        let up = |body: String| {
            alice
                .http
                .post(&upload_url)
                .basic_auth("alice@example.org", Some("alice-login-pw"))
                .header("content-type", "application/pgp-keys")
                .body(body)
                .send()
        };
        let r = up(public(&k.alice)).await.unwrap();
        assert_eq!(r.status(), 201);
        let pub_blob: Value = r.json().await.unwrap();
        assert_eq!(pub_blob["type"], "application/pgp-keys");
        let r = up(secret(&k.alice)).await.unwrap();
        let sec_blob: Value = r.json().await.unwrap();
        let r = up(escrow_to(&k.officer, "alice-key-pass")).await.unwrap();
        let esc_blob: Value = r.json().await.unwrap();

        let r = alice
            .calls(json!([
                ["PublicKey/set", {"accountId": alice_id, "create": {"k": {"blobId": pub_blob["blobId"]}}}, "a"],
                ["PrivateKey/set", {"accountId": alice_id, "create": {"p": {"blobId": sec_blob["blobId"], "publicKeyId": "#k"}}}, "b"],
                ["Escrow/set", {"accountId": alice_id, "create": {"e": {"blobId": esc_blob["blobId"], "privateKeyId": "#p"}}}, "c"],
                ["PublicKey/set", {"accountId": alice_id, "create": {"x": {"blobId": "u-nonexistent"}}}, "d"],
            ]))
            .await;
        for resp in &r[..3] {
            assert!(resp[1]["notCreated"].is_null(), "{resp}");
        }
        assert_eq!(r[3][1]["notCreated"]["x"]["properties"], json!(["blobId"]));

        // Download the stored objects by their blobId.
        let r = alice
            .call(
                "PrivateKey/get",
                json!({"accountId": alice_id, "properties": ["blobId"]}),
            )
            .await;
        let blob_id = r["list"][0]["blobId"].as_str().unwrap().to_string();
        let url = s["downloadUrl"]
            .as_str()
            .unwrap()
            .replace("{accountId}", &alice_id)
            .replace("{blobId}", &blob_id)
            .replace("{name}", "alice.key.asc")
            .replace("{type}", "application/pgp-keys");
        let get = |url: String, user: &'static str, pw: &'static str| {
            alice.http.get(url).basic_auth(user, Some(pw)).send()
        };
        let r = get(url.clone(), "alice@example.org", "alice-login-pw")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/pgp-keys");
        assert!(r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("alice.key.asc"));
        assert_eq!(r.text().await.unwrap(), secret(&k.alice));
        // Bob can neither download alice's blobs nor use her uploads.
        let r = get(url.clone(), "bob@example.org", "bob-login-pw")
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let bobs_url = url.replace(&alice_id, &bob_id);
        let r = get(bobs_url, "bob@example.org", "bob-login-pw")
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let bob = Client::new(&server, "bob@example.org", "bob-login-pw");
        let r = bob
            .call(
                "PublicKey/set",
                json!({"accountId": bob_id, "create": {"k": {"blobId": pub_blob["blobId"]}}}),
            )
            .await;
        assert_eq!(r["notCreated"]["k"]["properties"], json!(["blobId"]));
        let r = bob
            .http
            .post(format!("{}/jmap/upload/{alice_id}/", server.base))
            .basic_auth("bob@example.org", Some("bob-login-pw"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        // Uploads above maxSizeUpload are refused.
        let r = up("x".repeat(300_000)).await.unwrap();
        assert_eq!(r.status(), 413);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_pushes_state_changes() {
    let (_, ks, _dir) = backends("eventsource_pushes_state_changes").await.remove(0);
    let (alice_id, _) = users(&ks).await;
    let server = start(ks.clone(), JmapConfig::default(), AuthConfig::default()).await;
    let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
    let s = alice.session().await;
    let url = s["eventSourceUrl"]
        .as_str()
        .unwrap()
        .replace("{types}", "PublicKey,KeySettings")
        .replace("{closeafter}", "state")
        .replace("{ping}", "0");
    let mut r = alice
        .http
        .get(url)
        .basic_auth("alice@example.org", Some("alice-login-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // A change made elsewhere (the CLI) is pushed.
    ks.add_public_key(&alice_id, public(&keys().alice).as_bytes(), &actor())
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, r.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: state"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["@type"], "StateChange");
    assert_eq!(v["changed"][&alice_id]["PublicKey"], "1");
    assert!(v["changed"][&alice_id].get("KeySettings").is_none());
    // closeafter=state: the stream ended after the event (the loop above finished).
}
