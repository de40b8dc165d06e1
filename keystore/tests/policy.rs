//! The key policy against keys made by gpg, sq and sequoia (v6).

use std::time::SystemTime;

use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use sealpost_keystore::policy::{self, PolicyConfig, PolicyError};
use sealpost_keystore::Address;
use sealpost_test_support::fixture;
use sequoia_openpgp as openpgp;

fn key(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("keys/{name}"))).unwrap()
}

fn check(name: &str, addr: &str) -> Result<policy::CertInfo, PolicyError> {
    check_bytes(&key(name), addr, &PolicyConfig::default())
}

fn check_bytes(
    bytes: &[u8],
    addr: &str,
    cfg: &PolicyConfig,
) -> Result<policy::CertInfo, PolicyError> {
    let a = Address::parse(addr).unwrap();
    policy::accept_public_key(bytes, &[a], SystemTime::now(), cfg).map(|(_, i)| i)
}

#[test]
fn accepts_gpg_rsa_with_encryption_subkey() {
    let info = check("gpg-rsa3072.asc", "rsa@example.org").unwrap();
    assert_eq!(info.algorithm, "RSA3072");
    assert_eq!(info.fingerprint.len(), 40);
    assert!(info
        .fingerprint
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    assert_eq!(info.encryption_subkeys.len(), 1);
    assert_ne!(
        info.encryption_subkeys[0], info.fingerprint,
        "the subkey, not the primary"
    );
    assert!(info.expires.is_some());
    assert_eq!(
        info.user_ids,
        vec!["RSA User <rsa@example.org>".to_string()]
    );
}

#[test]
fn accepts_gpg_ed25519_cv25519() {
    let info = check("gpg-ed25519.asc", "ed@example.org").unwrap();
    assert!(info.algorithm.starts_with("EdDSA"), "{}", info.algorithm);
    assert!(info.algorithm.contains("ECDH"), "{}", info.algorithm);
    assert_eq!(info.version, 4);
}

#[test]
fn accepts_sq_keys() {
    check("sq-cv25519.asc", "sq@example.org").unwrap();
    let rsa = check("sq-rsa3k.asc", "sqrsa@example.org").unwrap();
    assert!(rsa.algorithm.starts_with("RSA3072"));
}

#[test]
fn domain_is_case_insensitive_for_uid_match() {
    check("gpg-ed25519.asc", "ed@EXAMPLE.org").unwrap();
}

#[test]
fn refuses_sign_only() {
    assert_eq!(
        check("gpg-sign-only.asc", "signonly@example.org").unwrap_err(),
        PolicyError::NoEncryptionSubkey
    );
}

#[test]
fn refuses_expired() {
    let e = check("gpg-expired.asc", "expired@example.org").unwrap_err();
    assert!(
        matches!(e, PolicyError::Expired(ref t) if t.starts_with("2020-01-02")),
        "{e}"
    );
}

#[test]
fn refuses_revoked() {
    assert_eq!(
        check("gpg-revoked.asc", "revoked@example.org").unwrap_err(),
        PolicyError::Revoked
    );
}

#[test]
fn refuses_wrong_uid_unless_relaxed() {
    let e = check("gpg-ed25519.asc", "alice@example.org").unwrap_err();
    assert_eq!(e, PolicyError::NoMatchingUserId("alice@example.org".into()));
    assert!(e.to_string().contains("alice@example.org"));
    let relaxed = PolicyConfig {
        require_uid_match: false,
        ..PolicyConfig::default()
    };
    check_bytes(&key("gpg-ed25519.asc"), "alice@example.org", &relaxed).unwrap();
}

#[test]
fn refuses_secret_keys() {
    for name in ["gpg-ed25519-secret.asc", "sq-cv25519-secret.pgp"] {
        let e = check(name, "ed@example.org").unwrap_err();
        assert_eq!(e, PolicyError::SecretKey, "{name}");
        assert!(e.to_string().contains("nothing was stored"));
    }
    // Binary (unarmored) secret key material is caught by the parser, not only the armor.
    let cert = openpgp::Cert::from_bytes(&key("sq-cv25519-secret.pgp")).unwrap();
    let binary = cert.as_tsk().to_vec().unwrap();
    assert_eq!(
        check_bytes(&binary, "sq@example.org", &PolicyConfig::default()).unwrap_err(),
        PolicyError::SecretKey
    );
}

#[test]
fn refuses_two_certificates_garbage_and_empty() {
    assert_eq!(
        check("gpg-two-certs.asc", "ed@example.org").unwrap_err(),
        PolicyError::SeveralCerts(2)
    );
    assert_eq!(
        check_bytes(b"", "ed@example.org", &PolicyConfig::default()).unwrap_err(),
        PolicyError::Empty
    );
    let e = check_bytes(
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64 at all\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "ed@example.org",
        &PolicyConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, PolicyError::Unparsable(_)), "{e}");
}

#[test]
fn accepts_v6_rfc9580_keys() {
    use openpgp::cert::{CertBuilder, CipherSuite};
    use openpgp::Profile;
    for suite in [CipherSuite::Cv25519, CipherSuite::RSA3k] {
        let (cert, _) = CertBuilder::general_purpose(Some("V6 <v6@example.org>"))
            .set_profile(Profile::RFC9580)
            .unwrap()
            .set_cipher_suite(suite)
            .generate()
            .unwrap();
        let armored = cert.armored().to_vec().unwrap();
        let info = check_bytes(&armored, "v6@example.org", &PolicyConfig::default()).unwrap();
        assert_eq!(info.version, 6);
        assert_eq!(info.fingerprint.len(), 64);
        assert!(!info.encryption_subkeys.is_empty());
    }
}

#[test]
fn refuses_rsa_below_the_configured_minimum() {
    let strict = PolicyConfig {
        min_rsa_bits: 4096,
        ..PolicyConfig::default()
    };
    assert_eq!(
        check_bytes(&key("gpg-rsa3072.asc"), "rsa@example.org", &strict).unwrap_err(),
        PolicyError::WeakRsa {
            bits: 3072,
            min: 4096
        }
    );
}

#[test]
fn encryption_keys_picks_the_subkey_of_a_sign_capable_primary() {
    let cert = openpgp::Cert::from_bytes(&key("gpg-rsa3072.asc")).unwrap();
    let keys = policy::encryption_keys(&cert, SystemTime::now());
    assert_eq!(keys.len(), 1);
    assert_ne!(keys[0].fingerprint(), cert.fingerprint());
    let signonly = openpgp::Cert::from_bytes(&key("gpg-sign-only.asc")).unwrap();
    assert!(policy::encryption_keys(&signonly, SystemTime::now()).is_empty());
}
