//! Benchmark (not a test): requests per second and p50/p99 latency of `Keystore/get` for
//! one key through the whole JMAP service (HTTP, Basic auth, request parsing, keystore on
//! SQLite; with the default read cache and with `cache_ms = 0`), next to a bare axum
//! handler returning the same JSON, measured in the same run with the same client.
//!
//!     cargo bench -p sealpost-jmap --bench jmap [-- SECONDS CONNECTIONS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sealpost_jmap::{AuthConfig, JmapConfig, JmapState};
use sealpost_keystore::{Actor, Address, DatabaseConfig, Keystore, LookupConfig, PolicyConfig};
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::serialize::SerializeInto;
use serde_json::{json, Value};

struct Result {
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Result {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `conns` clients posting `body` in a loop for `secs` seconds.
async fn drive(url: &str, body: &Value, secs: u64, conns: usize) -> Result {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .unwrap();
    let body = Arc::new(serde_json::to_vec(body).unwrap());
    // Warm-up (connections, caches, the first password verification).
    for _ in 0..conns {
        let r = client
            .post(url)
            .basic_auth("alice@example.org", Some("bench-login-pw"))
            .header("content-type", "application/json")
            .body(body.as_ref().clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.bytes().await.unwrap();
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let client = client.clone();
        let body = body.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .basic_auth("alice@example.org", Some("bench-login-pw"))
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Result {
        requests: all.len(),
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let conns: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(secs, conns));
}

async fn run(secs: u64, conns: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseConfig {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        ..DatabaseConfig::default()
    };
    let ks = Keystore::open(&db, LookupConfig::default(), PolicyConfig::default())
        .await
        .unwrap();
    let actor = Actor("bench".into());
    let alice = Address::parse("alice@example.org").unwrap();
    let acc = ks.add_account(&alice, &[], &actor).await.unwrap();
    ks.set_password(&alice, "bench-login-pw", &actor)
        .await
        .unwrap();
    let (cert, _) = CertBuilder::general_purpose(Some("<alice@example.org>"))
        .generate()
        .unwrap();
    let armored = String::from_utf8(cert.armored().to_vec().unwrap()).unwrap();
    ks.add_public_key(&acc.id, armored.as_bytes(), &actor)
        .await
        .unwrap();
    let fpr = cert.fingerprint().to_hex();

    // The JMAP service with a concurrency limit above the benchmark's: with the default
    // read cache ([jmap] cache_ms = 1000), and without it (every call reads the database).
    let mut urls = Vec::new();
    for cache_ms in [1000, 0] {
        let mut cfg = JmapConfig::default();
        cfg.limits.max_concurrent_requests = 1024;
        cfg.cache_ms = cache_ms;
        let state = JmapState::new(ks.clone(), cfg, AuthConfig::default()).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}/jmap", l.local_addr().unwrap()));
        tokio::spawn(sealpost_jmap::serve(l, state, std::future::pending()));
    }
    let (jmap_url, uncached_url) = (urls[0].clone(), urls[1].clone());
    let request = json!({
        "using": ["urn:ietf:params:jmap:core", "com:linagora:params:jmap:pgp"],
        "methodCalls": [["Keystore/get", {"accountId": acc.id, "ids": [fpr]}, "0"]],
    });

    // The same response from a bare axum JSON handler.
    let probe = reqwest::Client::new()
        .post(&jmap_url)
        .basic_auth("alice@example.org", Some("bench-login-pw"))
        .json(&request)
        .send()
        .await
        .unwrap();
    let canned: Value = probe.json().await.unwrap();
    assert_eq!(canned["methodResponses"][0][0], "Keystore/get", "{canned}");
    let canned = Arc::new(canned);
    let app = axum::Router::new().route(
        "/bare",
        axum::routing::post(move |body: axum::body::Bytes| {
            let c = canned.clone();
            async move {
                let _req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                axum::Json(c.as_ref().clone())
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_url = format!("http://{}/bare", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });

    println!("Keystore/get of one key, {conns} connections, {secs} s per run, SQLite keystore, static auth");
    let mut rows = Vec::new();
    // Alternate, twice each, so drift on a shared machine affects both sides alike.
    for round in 0..2 {
        for (name, url) in [
            ("bare axum JSON", &bare_url),
            ("JMAP Keystore/get", &jmap_url),
            ("JMAP, cache off", &uncached_url),
        ] {
            let r = drive(url, &request, secs, conns).await;
            println!(
                "  round {} {name:<18} {:>8.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests)",
                round + 1,
                r.rps(),
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.requests
            );
            rows.push((name, r));
        }
    }
    let sum = |n: &str| -> f64 {
        rows.iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, r)| r.rps())
            .sum::<f64>()
            / 2.0
    };
    let bare = sum("bare axum JSON");
    let jmap = sum("JMAP Keystore/get");
    let uncached = sum("JMAP, cache off");
    println!(
        "mean: bare {bare:.0} req/s; JMAP {jmap:.0} req/s, ratio {:.2} (target >= 0.5); \
         JMAP with cache_ms = 0 {uncached:.0} req/s, ratio {:.2}",
        jmap / bare,
        uncached / bare
    );
}
