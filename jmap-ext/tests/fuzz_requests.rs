//! Fuzz-style tests of JMAP request parsing and dispatch on stable Rust, through the
//! service's public entry point (the HTTP API on 127.0.0.1), as a webmail client reaches it.
//!
//! Inputs: the committed corpus in `tests/fuzz-corpus/requests/` (deep nesting, huge
//! numbers, duplicate keys, another account's ids, result-reference oddities, many calls,
//! invalid UTF-8 …), random bytes, random JSON, JMAP-shaped requests built from the
//! service's vocabulary (capabilities, methods, arguments, result references) with random
//! values, valid requests, and mutations of valid requests. A deterministic PRNG drives everything; for longer runs:
//!
//! ```text
//! SEALPOST_FUZZ_ITERS=5000 SEALPOST_FUZZ_SEED=7 \
//!     cargo test -p sealpost-jmap --test fuzz_requests
//! ```
//!
//! Properties: every request gets an answer (no hang, no dropped connection), never a 5xx;
//! a 200 is a JMAP Response whose method responses answer the calls in order by call id; any
//! other status is an RFC 7807 problem with a JMAP error type; no answer leaks internals
//! (panics, SQL, file paths); a successful method response only ever names the caller's own
//! account; and the service still answers a valid request afterwards.

mod common;

use std::time::Duration;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sealpost_jmap::{AuthConfig, JmapConfig};
use sealpost_keystore::{DatabaseConfig, Keystore, LookupConfig, PolicyConfig};
use serde_json::{json, Map, Value};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const CAPS: &[&str] = &[CORE, PGP, KEYS, "urn:ietf:params:jmap:mail", "", "x"];

const METHODS: &[&str] = &[
    "Core/echo",
    "Keystore/get",
    "Keystore/set",
    "PublicKey/get",
    "PublicKey/set",
    "PublicKey/changes",
    "PrivateKey/get",
    "PrivateKey/set",
    "PrivateKey/changes",
    "Escrow/get",
    "Escrow/set",
    "Escrow/changes",
    "KeySettings/get",
    "KeySettings/set",
    "KeyPair/generate",
    "Mailbox/get",
    "PublicKey/query",
    "/",
    "",
];

const ARG_NAMES: &[&str] = &[
    "accountId",
    "ids",
    "#ids",
    "properties",
    "create",
    "update",
    "destroy",
    "sinceState",
    "ifInState",
    "maxChanges",
    "key",
    "armored",
    "active",
    "publicKeyId",
    "privateKeyId",
    "blobId",
    "encryptIncoming",
    "protectSubject",
    "label",
    "password",
];

const STRINGS: &[&str] = &[
    "",
    "0",
    "-1",
    "singleton",
    "c0",
    "#c0",
    "k1",
    "#k1",
    "/ids",
    "/list/*/id",
    "/created/k1/id",
    "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----",
    "ÿ\u{0}\u{fffd}",
    "' OR 1=1 --",
    "../../etc/passwd",
];

/// A random JSON value, biased towards what the service looks at.
fn gen_value(rng: &mut StdRng, depth: u32, ctx: &Ctx) -> Value {
    let leaf = depth == 0 || rng.gen_bool(0.6);
    if leaf {
        return match rng.gen_range(0..12) {
            0 => Value::Null,
            1 => Value::Bool(rng.gen()),
            2 => json!(rng.gen::<i64>()),
            3 => json!(rng.gen_range(-3i64..10)),
            4 => json!(rng.gen::<f64>() * 1e300),
            5 => json!(u64::MAX),
            6 => Value::String(ctx.alice_id.clone()),
            7 => Value::String(ctx.bob_id.clone()),
            8 => Value::String(ctx.key_id.clone()),
            9 => Value::String(ctx.armored.clone()),
            10 => {
                let n = rng.gen_range(0..40);
                Value::String((0..n).map(|_| rng.gen::<char>()).collect())
            }
            _ => Value::String(STRINGS[rng.gen_range(0..STRINGS.len())].to_string()),
        };
    }
    if rng.gen_bool(0.5) {
        let n = rng.gen_range(0..5);
        Value::Array((0..n).map(|_| gen_value(rng, depth - 1, ctx)).collect())
    } else {
        Value::Object(gen_object(rng, depth - 1, ctx))
    }
}

fn gen_object(rng: &mut StdRng, depth: u32, ctx: &Ctx) -> Map<String, Value> {
    let mut m = Map::new();
    for _ in 0..rng.gen_range(0..6) {
        let name = if rng.gen_bool(0.85) {
            ARG_NAMES[rng.gen_range(0..ARG_NAMES.len())].to_string()
        } else {
            STRINGS[rng.gen_range(0..STRINGS.len())].to_string()
        };
        let value = match name.as_str() {
            // Mostly the right account, so the calls get past the first check.
            "accountId" if rng.gen_bool(0.7) => Value::String(ctx.alice_id.clone()),
            "#ids" => json!({
                "resultOf": STRINGS[rng.gen_range(0..STRINGS.len())],
                "name": METHODS[rng.gen_range(0..METHODS.len())],
                "path": STRINGS[rng.gen_range(0..STRINGS.len())],
            }),
            _ => gen_value(rng, depth, ctx),
        };
        m.insert(name, value);
    }
    m
}

/// A JMAP-shaped request.
fn gen_request(rng: &mut StdRng, ctx: &Ctx) -> Value {
    // Mostly the capabilities the methods need, so most requests reach them.
    let using: Vec<Value> = if rng.gen_bool(0.8) {
        vec![json!(CORE), json!(PGP), json!(KEYS)]
    } else {
        (0..rng.gen_range(0..4))
            .map(|_| json!(CAPS[rng.gen_range(0..CAPS.len())]))
            .collect()
    };
    let calls: Vec<Value> = (0..rng.gen_range(0..5))
        .map(|i| {
            let name = METHODS[rng.gen_range(0..METHODS.len())];
            let args = Value::Object(gen_object(rng, 3, ctx));
            let id = if rng.gen_bool(0.97) {
                json!(format!("c{i}"))
            } else {
                gen_value(rng, 1, ctx)
            };
            match rng.gen_range(0..40) {
                0 => json!([name, args]),
                1 => json!([name, args, id, "extra"]),
                2 => gen_value(rng, 2, ctx),
                _ => json!([name, args, id]),
            }
        })
        .collect();
    let mut req = json!({ "using": using, "methodCalls": calls });
    match rng.gen_range(0..24) {
        0 => req["createdIds"] = gen_value(rng, 2, ctx),
        1 => {
            req.as_object_mut().unwrap().remove("using");
        }
        2 => req["methodCalls"] = gen_value(rng, 2, ctx),
        _ => {}
    }
    req
}

/// Valid requests, the seeds of the mutations.
fn seeds(ctx: &Ctx) -> Vec<Value> {
    let a = &ctx.alice_id;
    let all = json!([CORE, PGP, KEYS]);
    vec![
        json!({"using": [CORE], "methodCalls": [["Core/echo", {"hello": true}, "c0"]]}),
        json!({"using": all, "methodCalls": [["PublicKey/get", {"accountId": a}, "c0"]]}),
        json!({"using": all, "methodCalls": [["Keystore/get", {"accountId": a}, "c0"]]}),
        json!({"using": all, "methodCalls": [["KeySettings/get", {"accountId": a}, "c0"]]}),
        json!({"using": all, "methodCalls": [["PrivateKey/get", {"accountId": a, "properties": ["id"]}, "c0"]]}),
        json!({"using": all, "methodCalls": [["PublicKey/changes", {"accountId": a, "sinceState": "0"}, "c0"]]}),
        json!({"using": all, "methodCalls": [
            ["PublicKey/get", {"accountId": a}, "c0"],
            ["PublicKey/get", {"accountId": a, "#ids": {"resultOf": "c0", "name": "PublicKey/get", "path": "/list/*/id"}}, "c1"]
        ]}),
        json!({"using": all, "methodCalls": [["PublicKey/set", {"accountId": a, "create": {"k1": {"armored": ctx.armored}}}, "c0"]]}),
        json!({"using": all, "methodCalls": [["PublicKey/set", {"accountId": a, "update": {ctx.key_id.clone(): {"active": false}}}, "c0"]]}),
    ]
}

/// Mutates a valid request: mostly the arguments of one call, sometimes a method name,
/// sometimes anywhere.
fn mutate_request(rng: &mut StdRng, req: &mut Value, ctx: &Ctx) {
    let pick = rng.gen_range(0..10);
    // An earlier round may have broken the shape: index only what is there.
    let call = req
        .get_mut("methodCalls")
        .and_then(Value::as_array_mut)
        .filter(|calls| !calls.is_empty())
        .map(|calls| {
            let i = rng.gen_range(0..calls.len());
            &mut calls[i]
        })
        .and_then(Value::as_array_mut)
        .filter(|call| call.len() >= 2);
    match (pick, call) {
        (0..=6, Some(call)) => {
            if let Some(args) = call[1].as_object_mut() {
                mutate_args(rng, args, ctx);
            }
        }
        (7, Some(call)) => call[0] = json!(METHODS[rng.gen_range(0..METHODS.len())]),
        _ => mutate(rng, req, ctx),
    }
}

/// Changes the arguments of a call, keeping them an object.
fn mutate_args(rng: &mut StdRng, args: &mut Map<String, Value>, ctx: &Ctx) {
    let keys: Vec<String> = args.keys().cloned().collect();
    match rng.gen_range(0..4) {
        0 if !keys.is_empty() => {
            args.remove(&keys[rng.gen_range(0..keys.len())]);
        }
        1 if !keys.is_empty() => {
            let k = &keys[rng.gen_range(0..keys.len())];
            mutate(rng, args.get_mut(k).unwrap(), ctx);
        }
        _ => {
            let name = ARG_NAMES[rng.gen_range(0..ARG_NAMES.len())].to_string();
            let value = gen_value(rng, 2, ctx);
            args.insert(name, value);
        }
    }
}

fn mutate(rng: &mut StdRng, v: &mut Value, ctx: &Ctx) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.gen_bool(0.7) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.gen_range(0..keys.len())];
            match rng.gen_range(0..4) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    m.insert(k.clone(), gen_value(rng, 2, ctx));
                }
                2 => {
                    let name = ARG_NAMES[rng.gen_range(0..ARG_NAMES.len())].to_string();
                    m.insert(name, gen_value(rng, 2, ctx));
                }
                _ => mutate(rng, m.get_mut(k).unwrap(), ctx),
            }
        }
        Value::Array(a) if !a.is_empty() && rng.gen_bool(0.7) => {
            let i = rng.gen_range(0..a.len());
            match rng.gen_range(0..4) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let dup = a[i].clone();
                    a.push(dup);
                }
                2 => a[i] = gen_value(rng, 2, ctx),
                _ => mutate(rng, &mut a[i], ctx),
            }
        }
        other => *other = gen_value(rng, 2, ctx),
    }
}

struct Ctx {
    alice_id: String,
    bob_id: String,
    key_id: String,
    armored: String,
}

/// The properties of one exchange.
/// What the answers were, to show the inputs reach the methods and not only the parser.
#[derive(Default, Debug)]
struct Tally {
    problems: u64,
    responses: u64,
    method_ok: u64,
    method_errors: u64,
}

fn check_response(
    request: &[u8],
    status: u16,
    body: &str,
    ctx: &Ctx,
    tally: &mut Tally,
    what: &str,
) {
    assert!(status < 500, "{what}: status {status}: {body}");
    for leak in [
        "panicked",
        "sqlx",
        "SQLITE",
        "/work/",
        "/tmp/",
        "RUST_BACKTRACE",
    ] {
        assert!(
            !body.contains(leak),
            "{what}: answer leaks {leak:?}: {body}"
        );
    }
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: status {status}, answer is not JSON ({e}): {body}"));
    if status != 200 {
        let kind = v["type"].as_str().unwrap_or("");
        assert!(
            kind.starts_with("urn:ietf:params:jmap:error:") || kind == "about:blank",
            "{what}: status {status} without a problem type: {body}"
        );
        assert_eq!(v["status"], status, "{what}: problem status: {body}");
        tally.problems += 1;
        return;
    }
    let responses = v["methodResponses"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no methodResponses: {body}"));
    assert!(
        v["sessionState"].is_string(),
        "{what}: sessionState: {body}"
    );
    let req: Value = serde_json::from_slice(request).expect("a 200 answers a JSON request");
    let calls = req["methodCalls"].as_array().expect("a 200 answers calls");
    let mut expected_ids = calls.iter().map(|c| c[2].clone()).peekable();
    let mut current: Option<Value> = None;
    tally.responses += 1;
    for r in responses {
        let r = r
            .as_array()
            .unwrap_or_else(|| panic!("{what}: invocation not an array: {body}"));
        assert_eq!(r.len(), 3, "{what}: invocation shape: {body}");
        let name = r[0].as_str().expect("response name");
        assert!(r[1].is_object(), "{what}: arguments: {body}");
        // Responses come in call order, at least one per call; a call may give several,
        // all with its id (RFC 8620, 3.4). Call ids need not be unique.
        if expected_ids.peek() == Some(&r[2]) {
            current = expected_ids.next();
        } else {
            assert_eq!(
                current.as_ref(),
                Some(&r[2]),
                "{what}: call ids out of order: {body}"
            );
        }
        if name == "error" {
            assert!(
                r[1]["type"].is_string(),
                "{what}: error without type: {body}"
            );
            tally.method_errors += 1;
        } else if name != "Core/echo" {
            tally.method_ok += 1;
            // Core/echo hands back whatever it got; everything else speaks for alice only.
            if let Some(acc) = r[1].get("accountId") {
                assert_eq!(acc, &json!(ctx.alice_id), "{what}: another account: {body}");
            }
        }
    }
    assert!(
        expected_ids.peek().is_none(),
        "{what}: a call got no response: {body}"
    );
    // Bob's id only appears in an answer when the request itself named it.
    let named = String::from_utf8_lossy(request).contains(&ctx.bob_id);
    assert!(
        named || !body.contains(&ctx.bob_id),
        "{what}: bob's account id in alice's answer: {body}"
    );
}

/// Posts one request as alice; the status and the answer's text.
async fn post(http: &reqwest::Client, base: &str, body: Vec<u8>, what: &str) -> (u16, String) {
    let r = http
        .post(format!("{base}/jmap"))
        .basic_auth("alice@example.org", Some("alice-login-pw"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    let status = r.status().as_u16();
    let text = r
        .text()
        .await
        .unwrap_or_else(|e| panic!("{what}: answer cut: {e}"));
    (status, text)
}

/// The committed corpus (tests/fuzz-corpus/requests/): raw request bodies in which
/// `$ALICE`, `$BOB` and `$KEY` stand for the accounts' ids and alice's key id.
fn corpus(ctx: &Ctx) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/requests");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("request corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let raw = std::fs::read(&p).unwrap();
            let mut filled = Vec::with_capacity(raw.len());
            let mut rest = &raw[..];
            'outer: while !rest.is_empty() {
                for (var, value) in [
                    (&b"$ALICE"[..], &ctx.alice_id),
                    (b"$BOB", &ctx.bob_id),
                    (b"$KEY", &ctx.key_id),
                ] {
                    if let Some(tail) = rest.strip_prefix(var) {
                        filled.extend_from_slice(value.as_bytes());
                        rest = tail;
                        continue 'outer;
                    }
                }
                filled.push(rest[0]);
                rest = &rest[1..];
            }
            (name, filled)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "request corpus incomplete");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_requests_get_well_formed_answers() {
    // SQLite only: the request parsing and dispatch are the same on both backends.
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseConfig {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        ..DatabaseConfig::default()
    };
    let ks = Keystore::open(&db, LookupConfig::default(), PolicyConfig::default())
        .await
        .unwrap();
    let (alice_id, bob_id) = users(&ks).await;
    let server = start(ks.clone(), JmapConfig::default(), AuthConfig::default()).await;
    let alice = Client::new(&server, "alice@example.org", "alice-login-pw");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // One key for alice, so ids and armored text exist.
    let armored = public(&keys().alice);
    let created = alice
        .call(
            "PublicKey/set",
            json!({"accountId": alice_id, "create": {"k1": {"armored": armored}}}),
        )
        .await;
    let key_id = created["created"]["k1"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("create: {created}"))
        .to_string();
    let ctx = Ctx {
        alice_id,
        bob_id,
        key_id,
        armored,
    };

    let iters = env_u64("SEALPOST_FUZZ_ITERS", 300);
    let seed = env_u64("SEALPOST_FUZZ_SEED", 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = seeds(&ctx);
    let mut tally = Tally::default();

    // The committed corpus first (account ids and a key id filled in).
    for (name, raw) in corpus(&ctx) {
        let what = format!("corpus {name}");
        let (status, text) = post(&http, &server.base, raw.clone(), &what).await;
        check_response(&raw, status, &text, &ctx, &mut tally, &what);
    }

    for i in 0..iters {
        let (form, body): (&str, Vec<u8>) = match rng.gen_range(0..10) {
            0 => {
                let mut b = vec![0u8; rng.gen_range(0..512)];
                rng.fill_bytes(&mut b);
                ("bytes", b)
            }
            1 => (
                "json",
                serde_json::to_vec(&gen_value(&mut rng, 4, &ctx)).unwrap(),
            ),
            2 => {
                // Byte damage to a valid request.
                let mut b = serde_json::to_vec(&seeds[rng.gen_range(0..seeds.len())]).unwrap();
                for _ in 0..rng.gen_range(1..4) {
                    let j = rng.gen_range(0..b.len());
                    b[j] = rng.gen();
                }
                ("damaged", b)
            }
            3 => (
                "valid",
                serde_json::to_vec(&seeds[rng.gen_range(0..seeds.len())]).unwrap(),
            ),
            4..=5 => (
                "request",
                serde_json::to_vec(&gen_request(&mut rng, &ctx)).unwrap(),
            ),
            _ => {
                let mut v = seeds[rng.gen_range(0..seeds.len())].clone();
                for _ in 0..rng.gen_range(1..4) {
                    mutate_request(&mut rng, &mut v, &ctx);
                }
                ("mutated", serde_json::to_vec(&v).unwrap())
            }
        };
        let what = format!(
            "#{i} ({form}, seed {seed}): {}",
            String::from_utf8_lossy(&body)
        );
        let (status, text) = post(&http, &server.base, body.clone(), &what).await;
        check_response(&body, status, &text, &ctx, &mut tally, &what);
    }

    eprintln!("fuzz_requests: {iters} requests: {tally:?}");
    // Every kind of answer was seen: request-level problems, method errors, and methods
    // that ran on alice's data.
    assert!(tally.problems > iters / 20, "{tally:?}");
    assert!(tally.method_errors > iters / 20, "{tally:?}");
    assert!(tally.method_ok > iters / 20, "{tally:?}");

    // Still serving, and alice's data is still readable.
    let echo = alice.call("Core/echo", json!({"still": "here"})).await;
    assert_eq!(echo, json!({"still": "here"}));
    alice
        .call("PublicKey/get", json!({"accountId": ctx.alice_id}))
        .await;
}
