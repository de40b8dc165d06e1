//! Authentication modes over HTTP: static (argon2id) with failed-login rate limiting and
//! CORS, proxy (trusted header from allowed sources), OIDC (bearer JWTs checked against a
//! locally served JWKS).
#![allow(clippy::field_reassign_with_default)]

mod common;

use base64::Engine;
use common::*;
use sealpost_jmap::{AuthConfig, AuthMode, JmapConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_auth_rate_limits_and_cors() {
    for (backend, ks, _dir) in backends("static_auth_rate_limits_and_cors").await {
        eprintln!("backend: {backend}");
        users(&ks).await;
        let mut cfg = JmapConfig::default();
        cfg.cors_origins = vec!["https://webmail.example.org".into()];
        let mut auth = AuthConfig::default();
        auth.rate_limit.max_failures_per_user = 3;
        auth.rate_limit.max_failures_per_source = 6;
        let server = start(ks.clone(), cfg, auth).await;
        let http = reqwest::Client::new();
        let session = |user: &str, pw: &str| {
            http.get(format!("{}/jmap/session", server.base))
                .basic_auth(user, Some(pw))
                .send()
        };
        assert_eq!(
            session("alice@example.org", "alice-login-pw")
                .await
                .unwrap()
                .status(),
            200
        );
        // Per user: three failures, then even the right password is refused for a while.
        for _ in 0..3 {
            let r = session("alice@example.org", "guess").await.unwrap();
            assert_eq!(r.status(), 401);
            assert!(r.headers().contains_key("www-authenticate"));
        }
        let r = session("alice@example.org", "another-guess").await.unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.headers().contains_key("retry-after"));
        // Bob is not affected by alice's failures...
        assert_eq!(
            session("bob@example.org", "bob-login-pw")
                .await
                .unwrap()
                .status(),
            200
        );
        // ...until the source has failed too often.
        for u in ["x@example.org", "y@example.org", "z@example.org"] {
            assert_eq!(session(u, "nope").await.unwrap().status(), 401);
        }
        assert_eq!(
            session("bob@example.org", "bob-login-pw")
                .await
                .unwrap()
                .status(),
            429
        );
        // Malformed credentials: 401, nothing echoed.
        let r = http
            .get(format!("{}/jmap/session", server.base))
            .header("authorization", "Basic %%%not-base64")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "the source is still blocked");

        // CORS: the allowed origin gets the headers, another origin does not.
        let pre = |origin: &str| {
            http.request(reqwest::Method::OPTIONS, format!("{}/jmap", server.base))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .send()
        };
        let r = pre("https://webmail.example.org").await.unwrap();
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://webmail.example.org"
        );
        let r = pre("https://evil.example.net").await.unwrap();
        assert!(!r.headers().contains_key("access-control-allow-origin"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_counted_per_forwarded_client() {
    let (_, ks, _dir) = backends("failed_logins_counted_per_forwarded_client")
        .await
        .remove(0);
    users(&ks).await;
    let mut auth = AuthConfig::default();
    auth.rate_limit.max_failures_per_source = 2;
    let server = start(ks.clone(), JmapConfig::default(), auth).await;
    let http = reqwest::Client::new();
    let try_as = |client_ip: &str, user: &str, pw: &str| {
        http.get(format!("{}/jmap/session", server.base))
            .header("x-forwarded-for", format!("203.0.113.7, {client_ip}"))
            .basic_auth(user, Some(pw))
            .send()
    };
    for u in ["x@example.org", "y@example.org"] {
        assert_eq!(
            try_as("198.51.100.1", u, "nope").await.unwrap().status(),
            401
        );
    }
    // That client is blocked; another client behind the same proxy is not.
    let r = try_as("198.51.100.1", "alice@example.org", "alice-login-pw")
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = try_as("198.51.100.2", "alice@example.org", "alice-login-pw")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_auth() {
    let (_, ks, _dir) = backends("proxy_auth").await.remove(0);
    users(&ks).await;
    let mut auth = AuthConfig::default();
    auth.mode = AuthMode::Proxy;
    auth.proxy.header = "X-Remote-User".into();
    let server = start(ks.clone(), JmapConfig::default(), auth.clone()).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/.well-known/jmap", server.base))
        .header("x-remote-user", "alice@example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: serde_json::Value = r.json().await.unwrap();
    assert_eq!(s["username"], "alice@example.org");
    // A user the proxy vouches for gets an account.
    let r = http
        .get(format!("{}/.well-known/jmap", server.base))
        .header("x-remote-user", "carol@example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(ks
        .account_for_address(&addr("carol@example.org"))
        .await
        .unwrap()
        .is_some());
    let r = http
        .get(format!("{}/.well-known/jmap", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    drop(server);

    // Requests from a source that is not a trusted proxy are refused, header or not.
    auth.proxy.trusted_sources = vec!["10.0.0.0/8".into()];
    let server = start(ks.clone(), JmapConfig::default(), auth).await;
    let r = http
        .get(format!("{}/.well-known/jmap", server.base))
        .header("x-remote-user", "alice@example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// An Ed25519 signing key and its JWK.
struct Signer {
    key: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

fn signer(kid: &str) -> Signer {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Signer {
        key: jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}),
    }
}

fn token(s: &Signer, kid: &str, claims: serde_json::Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, &claims, &s.key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_auth() {
    let (_, ks, _dir) = backends("oidc_auth").await.remove(0);
    users(&ks).await;
    let good = signer("k1");
    let evil = signer("k1");
    // The identity provider's JWKS document.
    let jwks = json!({"keys": [good.jwk.clone()]});
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let j = jwks.clone();
            async move { axum::Json(j) }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });

    let mut auth = AuthConfig::default();
    auth.mode = AuthMode::Oidc;
    auth.oidc.issuer = "https://id.example.org".into();
    auth.oidc.audience = "webmail".into();
    auth.oidc.jwks_url = format!("http://{idp}/jwks");
    let server = start(ks.clone(), JmapConfig::default(), auth).await;
    let now = sealpost_keystore::now_unix();
    let claims = |aud: &str, exp: i64| {
        json!({"iss": "https://id.example.org", "aud": aud, "exp": exp, "iat": now,
               "sub": "u1", "email": "alice@example.org", "email_verified": true})
    };
    let http = reqwest::Client::new();
    let get = |t: String| {
        http.get(format!("{}/.well-known/jmap", server.base))
            .bearer_auth(t)
            .send()
    };
    let r = get(token(&good, "k1", claims("webmail", now + 300)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: serde_json::Value = r.json().await.unwrap();
    assert_eq!(s["username"], "alice@example.org");

    for (what, t, words) in [
        (
            "expired",
            token(&good, "k1", claims("webmail", now - 3600)),
            "expired",
        ),
        (
            "wrong audience",
            token(&good, "k1", claims("other-app", now + 300)),
            "audience",
        ),
        (
            "wrong signature",
            token(&evil, "k1", claims("webmail", now + 300)),
            "signature",
        ),
        (
            "unknown key",
            token(&good, "k2", claims("webmail", now + 300)),
            "key",
        ),
        ("not a JWT", "abc.def".to_string(), "JWT"),
    ] {
        let r = get(t).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains(words),
            "{what}: {body}"
        );
    }
    // A shared-secret (HS256) token is never accepted.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("webmail", now + 300),
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    assert_eq!(get(hs).await.unwrap().status(), 401);
    // Basic credentials are not a bearer token.
    let r = http
        .get(format!("{}/.well-known/jmap", server.base))
        .basic_auth("alice@example.org", Some("alice-login-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
