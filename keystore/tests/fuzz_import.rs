//! Fuzz-style tests of the key import path on stable Rust: the key policy
//! (`policy::parse_public_cert`, `policy::accept_public_key`) and the upload checks for
//! protected private keys and escrow blobs (`protection::verify_private_key`,
//! `protection::verify_escrow`).
//!
//! Inputs: random bytes, random bytes in an armor frame, byte-level mutations of real keys
//! (made by gpg, sq and OpenPGP.js; tests/fixtures/keys/), packet-level mutations (packets
//! dropped, duplicated, reordered or spliced in from another key), and the seed corpus in
//! `tests/fuzz-corpus/import/`. A deterministic PRNG drives everything; for longer runs:
//!
//! ```text
//! SEALPOST_FUZZ_ITERS=50000 SEALPOST_FUZZ_SEED=7 \
//!     cargo test --release -p sealpost-keystore --test fuzz_import
//! ```
//!
//! Properties: nothing panics; random input is refused; error messages are one line; and
//! when a damaged upload is still accepted, it is a certificate that was in the original
//! input, encrypting only to subkeys it had, holding no secret key material (public keys),
//! or with every secret key still protected (private keys), or addressed only to the
//! officer (escrow blobs).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sealpost_keystore::policy::{accept_public_key, parse_public_cert, PolicyConfig};
use sealpost_keystore::protection::{
    encrypt_to_officers, verify_escrow, verify_private_key, ProtectionConfig,
};
use sealpost_test_support::fixture;
use sequoia_openpgp as openpgp;

use openpgp::armor;
use openpgp::cert::prelude::*;
use openpgp::packet::Packet;
use openpgp::parse::Parse;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::{Cert, PacketPile};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn iters() -> u64 {
    env_u64("SEALPOST_FUZZ_ITERS", 400)
}

fn seed() -> u64 {
    env_u64("SEALPOST_FUZZ_SEED", 1)
}

fn relaxed() -> PolicyConfig {
    // The user-ID rule needs an account; every other rule applies.
    PolicyConfig {
        require_uid_match: false,
        ..PolicyConfig::default()
    }
}

/// Real keys: every fixture from gpg, sq and OpenPGP.js, armored and binary.
fn real_keys() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["keys", "keys/openpgpjs"] {
        let dir = fixture(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "asc" || x == "pgp"))
            .collect();
        files.sort();
        for p in files {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap();
            // The binary form too, so mutations hit packet headers and not only base64.
            let certs = certs_in(&bytes);
            if !certs.is_empty() {
                let mut bin = Vec::new();
                for c in &certs {
                    c.as_tsk().serialize(&mut bin).unwrap();
                }
                out.push((format!("{name} (binary)"), bin));
            }
            out.push((name, bytes));
        }
    }
    assert!(out.len() >= 20, "key fixtures missing");
    out
}

fn seed_corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/import");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("seed corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty seed corpus");
    out
}

/// Fingerprints of every certificate in the input, as a lenient reader finds them, and of
/// their keys.
fn certs_in(bytes: &[u8]) -> Vec<Cert> {
    match CertParser::from_bytes(bytes) {
        Ok(p) => p.flatten().collect(),
        Err(_) => Vec::new(),
    }
}

fn one_line(e: &dyn std::fmt::Display, what: &str) {
    let s = e.to_string();
    assert!(
        !s.is_empty() && !s.contains('\n'),
        "{what}: error message {s:?}"
    );
}

/// The public-key properties on one input, given the original it was derived from.
fn check_public(input: &[u8], originals: &[&[u8]], what: &str) {
    let now = SystemTime::now();
    let parsed = parse_public_cert(input);
    let accepted = accept_public_key(input, &[], now, &relaxed());
    match (&parsed, &accepted) {
        (Err(a), Err(b)) => {
            one_line(a, what);
            one_line(b, what);
        }
        (Ok(_), Err(b)) => one_line(b, what),
        (Err(e), Ok(_)) => panic!("{what}: accepted but does not parse: {e}"),
        (Ok(cert), Ok((accepted, info))) => {
            assert_eq!(cert.fingerprint(), accepted.fingerprint(), "{what}");
            assert!(!accepted.is_tsk(), "{what}: secret key material accepted");
            assert_eq!(info.fingerprint, accepted.fingerprint().to_hex(), "{what}");
            let originals: Vec<Cert> = originals.iter().flat_map(|o| certs_in(o)).collect();
            let orig = originals
                .iter()
                .find(|c| c.fingerprint() == accepted.fingerprint())
                .unwrap_or_else(|| {
                    panic!(
                        "{what}: accepted {} which the original input did not hold",
                        info.fingerprint
                    )
                });
            for sub in &info.encryption_subkeys {
                assert!(
                    orig.keys().any(|k| k.key().fingerprint().to_hex() == *sub),
                    "{what}: encrypts to {sub}, not a key of the original"
                );
            }
        }
    }
}

/// The private-key upload properties: `stored` is the account's public key.
fn check_private(input: &[u8], stored: &[(String, String)], what: &str) {
    let config = ProtectionConfig::default();
    match verify_private_key(input, stored, None, &config) {
        Err(e) => one_line(&e, what),
        Ok(v) => {
            assert!(
                stored.iter().any(|(f, _)| *f == v.fingerprint),
                "{what}: accepted for a key the account does not have"
            );
            let cert = Cert::from_bytes(v.armored.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: accepted text does not parse: {e}"));
            let secrets = cert.keys().secret().count();
            assert!(secrets > 0, "{what}: accepted without secret key material");
            for ka in cert.keys().secret() {
                assert!(
                    !ka.key().has_unencrypted_secret(),
                    "{what}: accepted an unprotected secret key"
                );
            }
        }
    }
}

/// Runs `f`, saving the input where a failure can be replayed from.
fn run(kind: &str, input: &[u8], what: &str, f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let h = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let path = dir.join(format!("{kind}-{h:016x}.bin"));
        std::fs::write(&path, input).unwrap();
        eprintln!(
            "{what}: failing input saved to {} (add it to tests/fuzz-corpus/import/)",
            path.display()
        );
        std::panic::resume_unwind(panic);
    }
}

fn mutate_bytes(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..rng.gen_range(1..=6) {
        let len = m.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                m[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                m[i] = rng.gen();
            }
            2 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 32));
                m.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 128));
                let copy = m[a..b].to_vec();
                let at = rng.gen_range(0..=m.len());
                m.splice(at..at, copy);
            }
            4 if len > 0 => m.truncate(rng.gen_range(0..len)),
            5 => {
                // Interesting values: lengths and tags at packet boundaries.
                let v = *[0x00u8, 0xff, 0x80, 0x7f, 0xc0, 0xc6, 0x99, 0x06]
                    .get(rng.gen_range(0..8))
                    .unwrap();
                let at = rng.gen_range(0..=len);
                m.insert(at, v);
            }
            _ if len > 0 => {
                let i = rng.gen_range(0..len);
                m[i] = m[i].wrapping_add(rng.gen_range(1..4));
            }
            _ => m.push(rng.gen()),
        }
    }
    m
}

/// Packet-level mutation: drop, duplicate, swap, or splice in packets of another key.
fn mutate_packets(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Option<Vec<u8>> {
    let mut packets: Vec<Packet> = PacketPile::from_bytes(input)
        .ok()?
        .into_children()
        .collect();
    let foreign: Vec<Packet> = PacketPile::from_bytes(other)
        .map(|p| p.into_children().collect())
        .unwrap_or_default();
    if packets.is_empty() {
        return None;
    }
    for _ in 0..rng.gen_range(1..=3) {
        let n = packets.len();
        match rng.gen_range(0..4) {
            0 if n > 1 => {
                packets.remove(rng.gen_range(0..n));
            }
            1 => {
                let p = packets[rng.gen_range(0..n)].clone();
                packets.insert(rng.gen_range(0..=n), p);
            }
            2 if n > 1 => packets.swap(rng.gen_range(0..n), rng.gen_range(0..n)),
            _ if !foreign.is_empty() => {
                let p = foreign[rng.gen_range(0..foreign.len())].clone();
                packets.insert(rng.gen_range(0..=n), p);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for p in &packets {
        p.serialize(&mut out).ok()?;
    }
    Some(out)
}

fn armor_frame(kind: armor::Kind, data: &[u8]) -> Vec<u8> {
    let mut w = armor::Writer::new(Vec::new(), kind).unwrap();
    std::io::Write::write_all(&mut w, data).unwrap();
    w.finalize().unwrap()
}

#[test]
fn real_keys_keep_their_verdicts() {
    // The unmutated fixtures: good keys pass, the known-bad ones fail.
    let now = SystemTime::now();
    for (name, bytes) in real_keys() {
        let what = format!("fixture {name}");
        run("import", &bytes, &what, || {
            check_public(&bytes, &[&bytes], &what)
        });
        let r = accept_public_key(&bytes, &[], now, &relaxed());
        let bad = [
            "expired",
            "revoked",
            "sign-only",
            "two-certs",
            "secret",
            ".sec.",
        ]
        .iter()
        .any(|b| name.contains(b));
        let verdict = r.as_ref().map(|(_, i)| &i.fingerprint);
        assert_eq!(r.is_ok(), !bad, "{what}: {verdict:?}");
    }
}

#[test]
fn seed_corpus_is_refused_without_panic() {
    for (name, bytes) in seed_corpus() {
        let what = format!("seed {name}");
        run("import", &bytes, &what, || {
            check_public(&bytes, &[&bytes], &what);
            assert!(
                parse_public_cert(&bytes).is_err(),
                "{what}: a seed is a broken key and must be refused"
            );
        });
    }
}

#[test]
fn random_bytes_are_refused() {
    let mut rng = StdRng::seed_from_u64(seed());
    for i in 0..iters() {
        let mut bytes = vec![0u8; rng.gen_range(0..1024)];
        rng.fill_bytes(&mut bytes);
        // Raw, and inside an armor frame so the parser gets past the armor.
        let framed = armor_frame(armor::Kind::PublicKey, &bytes);
        for (form, input) in [("raw", &bytes), ("armored", &framed)] {
            let what = format!("random #{i} {form} (seed {})", seed());
            run("import", input, &what, || {
                check_public(input, &[input], &what);
                let r = parse_public_cert(input);
                assert!(r.is_err(), "{what}: random bytes accepted as a key");
            });
        }
    }
}

#[test]
fn mutated_real_keys_never_panic_and_never_become_another_key() {
    let keys = real_keys();
    let mut rng = StdRng::seed_from_u64(seed().wrapping_add(0x6b6579));
    for i in 0..iters() {
        let (name, original) = &keys[rng.gen_range(0..keys.len())];
        let (_, other) = &keys[rng.gen_range(0..keys.len())];
        let (form, input) = if rng.gen_bool(0.5) {
            ("bytes", mutate_bytes(&mut rng, original))
        } else {
            match mutate_packets(&mut rng, original, other) {
                Some(m) => ("packets", m),
                None => ("bytes", mutate_bytes(&mut rng, original)),
            }
        };
        let what = format!("mutation #{i} ({form}) of {name} (seed {})", seed());
        // Packet splices bring in the other key's packets: it counts as an original then.
        run("import", &input, &what, || {
            check_public(&input, &[original, other], &what)
        });
    }
}

#[test]
fn mutated_private_keys_are_refused_or_still_protected() {
    // Protected secret keys from OpenPGP.js (Argon2 and iterated S2K, v6 and v4), each
    // with its stored public key.
    let pairs = [
        (
            "openpgpjs/js6-v6-argon2.sec.asc",
            "openpgpjs/js6-v6-argon2.pub.asc",
        ),
        (
            "openpgpjs/js6-v6-iterated.sec.asc",
            "openpgpjs/js6-v6-iterated.pub.asc",
        ),
        ("openpgpjs/js6-v4.sec.asc", "openpgpjs/js6-v4.pub.asc"),
        ("openpgpjs/js5-v4.sec.asc", "openpgpjs/js5-v4.pub.asc"),
    ];
    let mut cases = Vec::new();
    for (sec, public) in pairs {
        let sec_bytes = std::fs::read(fixture(&format!("keys/{sec}"))).unwrap();
        let public = std::fs::read_to_string(fixture(&format!("keys/{public}"))).unwrap();
        let cert = Cert::from_bytes(public.as_bytes()).unwrap();
        let stored = vec![(cert.fingerprint().to_hex(), public)];
        // The originals pass.
        verify_private_key(&sec_bytes, &stored, None, &ProtectionConfig::default())
            .unwrap_or_else(|e| panic!("{sec}: {e}"));
        let binary = Cert::from_bytes(&sec_bytes)
            .unwrap()
            .as_tsk()
            .to_vec()
            .unwrap();
        cases.push((sec, sec_bytes, stored.clone()));
        cases.push((sec, binary, stored));
    }
    let mut rng = StdRng::seed_from_u64(seed().wrapping_add(0x736563));
    // Fewer rounds: each accepted mutation costs a full parse and, for Argon2, nothing more.
    for i in 0..iters() / 2 {
        let (name, original, stored) = &cases[rng.gen_range(0..cases.len())];
        let input = if rng.gen_bool(0.6) {
            mutate_bytes(&mut rng, original)
        } else {
            let (_, other, _) = &cases[rng.gen_range(0..cases.len())];
            mutate_packets(&mut rng, original, other)
                .unwrap_or_else(|| mutate_bytes(&mut rng, original))
        };
        let what = format!("private-key mutation #{i} of {name} (seed {})", seed());
        run("private", &input, &what, || {
            check_private(&input, stored, &what);
            // Never accepted as a public key either.
            if let Ok(c) = parse_public_cert(&input) {
                assert!(!c.is_tsk(), "{what}: secret material parsed as public");
            }
        });
    }
}

fn officer_cert(uid: &str) -> Cert {
    let (cert, _) = CertBuilder::general_purpose(Some(uid))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_creation_time(SystemTime::now() - std::time::Duration::from_secs(3600))
        .generate()
        .unwrap();
    cert.strip_secret_key_material()
}

/// The checks on an accepted escrow blob: for the officer, and stored as readable armor.
fn check_escrow_accepted(
    v: &sealpost_keystore::protection::VerifiedEscrow,
    officer: &Cert,
    what: &str,
) {
    assert_eq!(
        v.officer_fingerprint,
        officer.fingerprint().to_hex(),
        "{what}"
    );
    let officer_keys: Vec<String> = officer
        .keys()
        .map(|k| k.key().fingerprint().to_hex())
        .collect();
    // Every recipient packet names an officer key.
    let pile = PacketPile::from_bytes(v.armored.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: stored text does not parse: {e}"));
    let mut pkesks = 0;
    for p in pile.descendants() {
        if let Packet::PKESK(pkesk) = p {
            pkesks += 1;
            let r = pkesk.recipient().map(|h| h.to_hex()).unwrap_or_default();
            assert!(
                !r.is_empty() && officer_keys.iter().any(|k| k.ends_with(&r)),
                "{what}: accepted a blob for {r}"
            );
        }
    }
    assert!(pkesks > 0, "{what}: stored text has no recipient");
}

/// Regression (found by the escrow fuzzing): an armored blob with a non-UTF-8 byte in its
/// armor header line was accepted and then stored armored a second time, unreadable.
#[test]
fn escrow_with_a_damaged_armor_header_is_stored_readable() {
    let officer = officer_cert("Officer <cso@example.org>");
    let blob = encrypt_to_officers(b"pw", std::slice::from_ref(&officer)).unwrap();
    let mut damaged = blob.into_bytes();
    assert!(damaged.starts_with(b"-----BEGIN PGP MESSAGE-----"));
    damaged[24] = 0xe2;
    let config = ProtectionConfig::default();
    match verify_escrow(&damaged, std::slice::from_ref(&officer), &config) {
        Ok(v) => check_escrow_accepted(&v, &officer, "damaged armor header"),
        Err(e) => one_line(&e, "damaged armor header"),
    }
}

/// Regression (found by the escrow fuzzing): an armored blob whose PKESK carried extra
/// body bytes passed the recipient check and was stored as uploaded, though it does not
/// parse as a whole. The same damage in an armored and in a binary upload is refused.
#[test]
fn escrow_with_trailing_bytes_in_a_packet_is_refused() {
    let officer = officer_cert("Officer <cso@example.org>");
    let blob = encrypt_to_officers(b"pw", std::slice::from_ref(&officer)).unwrap();
    let pile = PacketPile::from_bytes(blob.as_bytes()).unwrap();
    // Re-frame the PKESK with one more body byte than it has.
    let mut packets: Vec<Packet> = pile.into_children().collect();
    let pkesk = packets.remove(0);
    let body = {
        let mut v = Vec::new();
        pkesk.serialize(&mut v).unwrap();
        // A new-format header with a one-octet length: tag byte, length, body.
        assert_eq!(v[0], 0xc1, "a PKESK in new format");
        assert!(v[1] < 192, "one-octet length");
        v[2..].to_vec()
    };
    let mut damaged = vec![0xc1, (body.len() + 1) as u8];
    damaged.extend_from_slice(&body);
    damaged.push(0x00);
    for p in &packets {
        p.serialize(&mut damaged).unwrap();
    }
    let armored = armor_frame(armor::Kind::Message, &damaged);
    let config = ProtectionConfig::default();
    for (form, input) in [("binary", &damaged), ("armored", &armored)] {
        let r = verify_escrow(input, std::slice::from_ref(&officer), &config);
        match r {
            Ok(v) => check_escrow_accepted(&v, &officer, form),
            Err(e) => one_line(&e, form),
        }
    }
}

#[test]
fn mutated_escrow_blobs_are_refused_or_still_for_the_officer() {
    let officer = officer_cert("Officer <cso@example.org>");
    let stranger = officer_cert("Other <other@example.org>");
    let config = ProtectionConfig::default();
    let blob = encrypt_to_officers(b"the user's key password", std::slice::from_ref(&officer))
        .unwrap()
        .into_bytes();
    let foreign = encrypt_to_officers(b"x", std::slice::from_ref(&stranger))
        .unwrap()
        .into_bytes();
    let officers = [officer.clone()];
    verify_escrow(&blob, &officers, &config).expect("the original blob passes");
    assert!(verify_escrow(&foreign, &officers, &config).is_err());
    let blob_bin = PacketPile::from_bytes(&blob).unwrap().to_vec().unwrap();
    let sources = [blob, blob_bin, foreign.clone()];
    let mut rng = StdRng::seed_from_u64(seed().wrapping_add(0x657363));
    for i in 0..iters() {
        let original = &sources[rng.gen_range(0..sources.len())];
        let input = if rng.gen_bool(0.6) {
            mutate_bytes(&mut rng, original)
        } else {
            let other = &sources[rng.gen_range(0..sources.len())];
            mutate_packets(&mut rng, original, other)
                .unwrap_or_else(|| mutate_bytes(&mut rng, original))
        };
        let what = format!("escrow mutation #{i} (seed {})", seed());
        run("escrow", &input, &what, || {
            match verify_escrow(&input, &officers, &config) {
                Err(e) => one_line(&e, &what),
                Ok(v) => check_escrow_accepted(&v, &officer, &what),
            }
        });
    }
}
