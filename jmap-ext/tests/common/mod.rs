//! Shared set-up for the JMAP service tests: a keystore per backend (SQLite always,
//! PostgreSQL when available), the service on 127.0.0.1:0, users, keys and a small JMAP
//! client over real HTTP.
#![allow(dead_code)]

pub mod docs;

use std::net::SocketAddr;
use std::sync::OnceLock;

use sealpost_jmap::{AuthConfig, JmapConfig, JmapState};
use sealpost_keystore::protection::encrypt_to_officers;
use sealpost_keystore::{Actor, Address, DatabaseConfig, Keystore, LookupConfig, PolicyConfig};
use sealpost_test_support::fresh_postgres;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::crypto::Password;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::Cert;
use serde_json::{json, Value};

pub const CORE: &str = "urn:ietf:params:jmap:core";
pub const PGP: &str = "com:linagora:params:jmap:pgp";
pub const KEYS: &str = "org:sealpost:params:jmap:keys";

pub fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

pub fn actor() -> Actor {
    Actor("test".into())
}

/// A keystore per backend, labelled.
pub async fn backends(test: &str) -> Vec<(&'static str, Keystore, Option<tempfile::TempDir>)> {
    sealpost_test_support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = DatabaseConfig {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        ..DatabaseConfig::default()
    };
    let mut out = vec![(
        "sqlite",
        Keystore::open(&sqlite, LookupConfig::default(), PolicyConfig::default())
            .await
            .unwrap(),
        Some(dir),
    )];
    if let Some(url) = fresh_postgres(test).await {
        let pg = DatabaseConfig {
            url,
            ..DatabaseConfig::default()
        };
        out.push((
            "postgres",
            Keystore::open(&pg, LookupConfig::default(), PolicyConfig::default())
                .await
                .unwrap(),
            None,
        ));
    }
    out
}

/// The running service.
pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    pub ks: Keystore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn start(ks: Keystore, config: JmapConfig, auth: AuthConfig) -> Server {
    sealpost_test_support::capture_logs();
    let state = JmapState::new(ks.clone(), config, auth).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sealpost_jmap::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        base: format!("http://{addr}"),
        ks,
        stop: Some(tx),
    }
}

/// Test keys, generated once per test binary.
pub struct Keys {
    /// alice@example.org: protected with "alice-key-pass".
    pub alice: Cert,
    /// A second alice key that stays unprotected.
    pub alice_open: Cert,
    /// bob@example.org: protected.
    pub bob: Cert,
    /// A protected key that no account has uploaded.
    pub stranger: Cert,
    /// The security officer (secret part kept only by the test).
    pub officer: Cert,
    /// Another key an escrow must not be addressed to.
    pub not_officer: Cert,
}

fn gen(uid: &str, password: Option<&str>) -> Cert {
    let cert = CertBuilder::general_purpose(Some(uid))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_password(password.map(Password::from))
        .generate()
        .unwrap()
        .0;
    sealpost_test_support::register_private_key(&secret(&cert));
    cert
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        alice: gen("Alice <alice@example.org>", Some("alice-key-pass")),
        alice_open: gen("Alice <alice@example.org>", None),
        bob: gen("Bob <bob@example.org>", Some("bob-key-pass")),
        stranger: gen("Alice <alice@example.org>", Some("x-pass")),
        officer: gen("Security Officer <cso@example.org>", None),
        not_officer: gen("Eve <eve@example.org>", None),
    })
}

pub fn public(c: &Cert) -> String {
    String::from_utf8(c.armored().to_vec().unwrap()).unwrap()
}

pub fn secret(c: &Cert) -> String {
    String::from_utf8(c.as_tsk().armored().to_vec().unwrap()).unwrap()
}

pub fn fpr(c: &Cert) -> String {
    c.fingerprint().to_hex()
}

/// A password encrypted to `to` (an escrow blob).
pub fn escrow_to(to: &Cert, password: &str) -> String {
    encrypt_to_officers(password.as_bytes(), std::slice::from_ref(to)).unwrap()
}

/// Creates alice and bob with passwords, and installs the officer key.
pub async fn users(ks: &Keystore) -> (String, String) {
    let a = ks
        .add_account(&addr("alice@example.org"), &[], &actor())
        .await
        .unwrap();
    ks.set_password(&addr("alice@example.org"), "alice-login-pw", &actor())
        .await
        .unwrap();
    let b = ks
        .add_account(&addr("bob@example.org"), &[], &actor())
        .await
        .unwrap();
    ks.set_password(&addr("bob@example.org"), "bob-login-pw", &actor())
        .await
        .unwrap();
    ks.add_officer_key(public(&keys().officer).as_bytes(), &actor())
        .await
        .unwrap();
    (a.id, b.id)
}

/// One logged exchange: title, request (or request line), status, response.
pub type Exchange = (String, Value, u16, Value);

/// A JMAP client for one user, logging every exchange when asked.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub user: String,
    pub password: String,
    /// Logged exchanges: title, request (or request line), status, response.
    pub log: Option<std::sync::Mutex<Vec<Exchange>>>,
    title: std::sync::Mutex<String>,
}

impl Client {
    pub fn new(server: &Server, user: &str, password: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            user: user.into(),
            password: password.into(),
            log: None,
            title: Default::default(),
        }
    }

    /// Titles the next logged exchange.
    pub fn note(&self, title: &str) {
        *self.title.lock().unwrap() = title.to_string();
    }

    fn record(&self, req: Value, status: u16, resp: &Value) {
        if let Some(log) = &self.log {
            let title = std::mem::take(&mut *self.title.lock().unwrap());
            if !title.is_empty() {
                log.lock().unwrap().push((title, req, status, resp.clone()));
            }
        }
    }

    pub async fn session(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/.well-known/jmap", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "session");
        let v: Value = r.json().await.unwrap();
        self.record(
            Value::String("GET /.well-known/jmap HTTP/1.1\nAuthorization: Basic …".into()),
            200,
            &v,
        );
        v
    }

    /// Posts a raw body; returns status and parsed JSON body.
    pub async fn post_raw(&self, body: Vec<u8>, content_type: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/jmap", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a request object; returns status and body.
    pub async fn request(&self, req: &Value) -> (u16, Value) {
        let (status, body) = self
            .post_raw(serde_json::to_vec(req).unwrap(), "application/json")
            .await;
        self.record(req.clone(), status, &body);
        (status, body)
    }

    /// Sends method calls with every capability; returns the methodResponses.
    pub async fn calls(&self, calls: Value) -> Vec<Value> {
        let (status, body) = self
            .request(&json!({ "using": [CORE, PGP, KEYS], "methodCalls": calls }))
            .await;
        assert_eq!(status, 200, "{body}");
        body["methodResponses"].as_array().unwrap().clone()
    }

    /// One method call; returns its response arguments, asserting it is not an error.
    pub async fn call(&self, name: &str, args: Value) -> Value {
        let r = self.calls(json!([[name, args, "c0"]])).await;
        assert_eq!(r[0][0], name, "{}", r[0]);
        r[0][1].clone()
    }

    /// One method call expected to fail; returns the error object.
    pub async fn call_err(&self, name: &str, args: Value) -> Value {
        let r = self.calls(json!([[name, args, "c0"]])).await;
        assert_eq!(r[0][0], "error", "{name} should fail: {}", r[0]);
        r[0][1].clone()
    }
}
