//! Fuzz-style tests of the S/MIME import paths on stable Rust: certificate uploads
//! (`policy::accept_key`, which detects the kind and checks X.509 certificates) and PKCS#12
//! private-key uploads (`x509::check_pkcs12`, `protection::verify_private_key`).
//!
//! Inputs: byte-level mutations (flips, truncations, insertions, length-byte changes) of the
//! certificates and bundles in tests/fixtures/smime/, DER and PEM, and random bytes. A
//! deterministic PRNG drives everything; for longer runs:
//!
//! ```text
//! SEALPOST_FUZZ_ITERS=50000 SEALPOST_FUZZ_SEED=7 \
//!     cargo test --release -p sealpost-keystore --test fuzz_x509
//! ```
//!
//! Properties: nothing panics; error messages are one line and never quote the input; a
//! mutated bundle is accepted only with an encrypted key and a certificate the account has.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sealpost_keystore::policy::{accept_key, PolicyConfig};
use sealpost_keystore::protection::{verify_private_key, ProtectionConfig};
use sealpost_keystore::{x509, Address};
use sealpost_test_support::fixture;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seeds(ext: &[&str]) -> Vec<(String, Vec<u8>)> {
    let dir = fixture("smime");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            ext.iter().any(|e| name.ends_with(e)) && !name.contains(".key.")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// One random change: flip bits, cut, insert, or rewrite a byte that may be a DER length.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        if out.is_empty() {
            break;
        }
        let at = rng.gen_range(0..out.len());
        match rng.gen_range(0..5) {
            0 => out[at] ^= 1 << rng.gen_range(0..8),
            1 => out.truncate(at),
            2 => {
                let mut extra = vec![0u8; rng.gen_range(1..16)];
                rng.fill_bytes(&mut extra);
                out.splice(at..at, extra);
            }
            3 => out[at] = [0x00, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xff][rng.gen_range(0..7)],
            _ => {
                let end = (at + rng.gen_range(1..64)).min(out.len());
                out.drain(at..end);
            }
        }
    }
    out
}

fn one_line(what: &str, e: &str) {
    assert!(!e.contains('\n'), "{what}: multi-line error {e:?}");
    assert!(e.len() < 600, "{what}: overlong error {e:?}");
}

#[test]
fn mutated_certificates_never_panic_and_are_refused_in_one_line() {
    let mut rng = StdRng::seed_from_u64(env_u64("SEALPOST_FUZZ_SEED", 1));
    let iters = env_u64("SEALPOST_FUZZ_ITERS", 400);
    let addresses = [Address::parse("alice@example.org").unwrap()];
    let config = PolicyConfig::default();
    let corpus = seeds(&[".pem", ".der"]);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..iters {
        let (name, seed) = &corpus[i as usize % corpus.len()];
        let input = if i % 10 == 9 {
            let mut r = vec![0u8; rng.gen_range(0..2048)];
            rng.fill_bytes(&mut r);
            r
        } else {
            mutate(&mut rng, seed)
        };
        let what = format!("iteration {i} ({name})");
        let r = catch_unwind(AssertUnwindSafe(|| {
            accept_key(&input, &addresses, SystemTime::now(), &config)
        }))
        .unwrap_or_else(|_| panic!("{what}: panicked"));
        match r {
            Ok((_, info)) => {
                accepted += 1;
                // Whatever survived the damage still names the account's address.
                assert!(
                    info.user_ids.iter().any(|u| u == "alice@example.org"),
                    "{what}: accepted {info:?}"
                );
            }
            Err(e) => {
                refused += 1;
                one_line(&what, &e.to_string());
            }
        }
    }
    println!("certificates: {accepted} accepted, {refused} refused of {iters}");
    assert!(refused > 0);
}

#[test]
fn mutated_pkcs12_bundles_never_panic_and_never_pass_unprotected() {
    let mut rng = StdRng::seed_from_u64(env_u64("SEALPOST_FUZZ_SEED", 1) + 1);
    let iters = env_u64("SEALPOST_FUZZ_ITERS", 400);
    let corpus = seeds(&[".p12"]);
    let cert = std::fs::read_to_string(fixture("smime/alice-rsa3072.pem")).unwrap();
    let id = x509::certificate_id(&x509::parse_stored(&cert).unwrap());
    let publics = vec![(id.clone(), cert)];
    let config = ProtectionConfig {
        max_blob_size: 1 << 20,
        ..ProtectionConfig::default()
    };
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..iters {
        let (name, seed) = &corpus[i as usize % corpus.len()];
        let input = mutate(&mut rng, seed);
        let what = format!("iteration {i} ({name})");
        let checked = catch_unwind(AssertUnwindSafe(|| x509::check_pkcs12(&input, true)))
            .unwrap_or_else(|_| panic!("{what}: check_pkcs12 panicked"));
        if let Err(e) = &checked {
            one_line(&what, &e.to_string());
        }
        let r = catch_unwind(AssertUnwindSafe(|| {
            verify_private_key(&input, &publics, None, &config)
        }))
        .unwrap_or_else(|_| panic!("{what}: verify_private_key panicked"));
        match r {
            Ok(v) => {
                accepted += 1;
                assert_eq!(v.kind, "x509", "{what}");
                assert_eq!(v.fingerprint, id, "{what}");
                assert_eq!(v.protection.kind, "pkcs12", "{what}");
                // Accepted bundles still pass the password-free check.
                let again = x509::check_pkcs12(&input, false);
                assert!(again.is_ok(), "{what}: accepted but {again:?}");
            }
            Err(e) => {
                refused += 1;
                one_line(&what, &e.to_string());
            }
        }
    }
    println!("PKCS#12: {accepted} accepted, {refused} refused of {iters}");
    assert!(refused > 0);
}
