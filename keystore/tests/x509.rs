//! S/MIME certificates and PKCS#12 bundles: detection, the certificate policy with its
//! refusal messages, the PKCS#12 checks without the password, re-protection, and storing
//! certificates in the keystore next to OpenPGP keys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealpost_keystore::policy::{self, AcceptedKey, KeyKind, PolicyConfig, PolicyError};
use sealpost_keystore::x509::{
    accept_certificate, check_pkcs12, detect, open_pkcs12, parse_stored, reprotect_pkcs12, to_pem,
    usable_now, Detected, Pkcs12Error,
};
use sealpost_keystore::{Actor, Address, DatabaseConfig, Keystore, LookupConfig};
use sealpost_test_support::{fixture, need_program};
use sha2::{Digest, Sha256};

const P12_PASSWORD: &str = "fixture-p12-password";

fn smime(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("smime/{name}"))).unwrap()
}

fn alice() -> Vec<Address> {
    vec![Address::parse("alice@example.org").unwrap()]
}

fn accept(name: &str) -> Result<(openssl::x509::X509, policy::CertInfo), PolicyError> {
    accept_with(name, &PolicyConfig::default())
}

fn accept_with(
    name: &str,
    config: &PolicyConfig,
) -> Result<(openssl::x509::X509, policy::CertInfo), PolicyError> {
    accept_certificate(&smime(name), &alice(), SystemTime::now(), config)
}

fn refusal(name: &str) -> String {
    accept(name)
        .map(|_| ())
        .expect_err(&format!("{name} must be refused"))
        .to_string()
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "{haystack:?} does not contain {needle:?}"
    );
}

fn sha256_upper(der: &[u8]) -> String {
    hex_upper(&Sha256::digest(der))
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[test]
fn detects_each_fixture() {
    for (name, want) in [
        ("alice-rsa3072.pem", Detected::X509),
        ("alice-rsa3072.der", Detected::X509),
        ("alice-p256.pem", Detected::X509),
        ("alice-p256.der", Detected::X509),
        ("alice-p384.pem", Detected::X509),
        ("ca.pem", Detected::X509),
        ("ca-leaf.pem", Detected::X509),
        ("expired.pem", Detected::X509),
        ("alice-rsa3072.key.pem", Detected::PrivateKey),
        ("alice-p256.key.pem", Detected::PrivateKey),
        ("alice-rsa3072.key.der", Detected::PrivateKey),
        ("alice-modern.p12", Detected::Pkcs12),
        ("alice-certs-encrypted.p12", Detected::Pkcs12),
        ("alice-legacy-3des.p12", Detected::Pkcs12),
        ("alice-legacy-rc2.p12", Detected::Pkcs12),
        ("alice-unencrypted.p12", Detected::Pkcs12),
    ] {
        assert_eq!(detect(&smime(name)), want, "{name}");
    }
    let pgp = std::fs::read(fixture("keys/sq-cv25519.asc")).unwrap();
    assert_eq!(detect(&pgp), Detected::OpenPgp);
    let bin = std::fs::read(fixture("keys/sq-cv25519-secret.pgp")).unwrap();
    assert_eq!(detect(&bin), Detected::OpenPgp);
    assert_eq!(detect(b"hello"), Detected::Unknown);
    assert_eq!(detect(b""), Detected::Unknown);
    // A PEM file with a certificate and its key is a private key, never a certificate.
    let mut both = smime("alice-rsa3072.pem");
    both.extend(smime("alice-rsa3072.key.pem"));
    assert_eq!(detect(&both), Detected::PrivateKey);
}

#[test]
fn accepts_rsa_and_ec_certificates_pem_and_der() {
    for (name, algorithm) in [
        ("alice-rsa3072.pem", "RSA3072"),
        ("alice-rsa3072.der", "RSA3072"),
        ("alice-p256.pem", "ECDH(P-256)"),
        ("alice-p256.der", "ECDH(P-256)"),
        ("alice-p384.pem", "ECDH(P-384)"),
        ("ca-leaf.pem", "RSA3072"),
    ] {
        let (cert, info) = accept(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.kind, KeyKind::X509, "{name}");
        assert_eq!(info.algorithm, algorithm, "{name}");
        assert_eq!(info.version, 3);
        assert_eq!(info.user_ids, vec!["alice@example.org".to_string()]);
        assert_eq!(info.fingerprint, sha256_upper(&cert.to_der().unwrap()));
        assert!(info.encryption_subkeys.is_empty());
        assert!(info.expires.unwrap() > info.created);
    }
    // PEM and DER of one certificate give one id.
    let pem = accept("alice-rsa3072.pem").unwrap().1;
    let der = accept("alice-rsa3072.der").unwrap().1;
    assert_eq!(pem, der);
    assert_eq!(pem.fingerprint, sha256_upper(&smime("alice-rsa3072.der")));
}

#[test]
fn refuses_with_precise_reasons() {
    assert_contains(
        &refusal("expired.pem"),
        "the certificate expired on 2021-01-01",
    );
    assert_contains(
        &refusal("not-yet-valid.pem"),
        "the certificate is not valid before 2100-01-01",
    );
    assert_contains(
        &refusal("signing-only.pem"),
        "keyUsage allows only digitalSignature; S/MIME encryption to an RSA key needs keyEncipherment",
    );
    assert_contains(
        &refusal("serverauth-only.pem"),
        "extendedKeyUsage allows only serverAuth; S/MIME needs emailProtection",
    );
    assert_contains(
        &refusal("rsa1024.pem"),
        "the key uses RSA with 1024 bits; at least 2048 are required",
    );
    assert_contains(
        &refusal("wrong-address.pem"),
        "no email address of the certificate (mallory@example.net) matches the account's addresses (alice@example.org)",
    );
    assert_contains(
        &refusal("ca-as-user.pem"),
        "the certificate is a CA certificate (basicConstraints cA=true, and not a self-signed",
    );
    for p12 in ["alice-modern.p12", "alice-unencrypted.p12"] {
        assert_contains(
            &refusal(p12),
            "the file is a PKCS#12 bundle with a private key; upload only the certificate (openssl pkcs12 -in FILE -nokeys -clcerts)",
        );
    }
    for key in [
        "alice-rsa3072.key.pem",
        "alice-p256.key.pem",
        "alice-rsa3072.key.der",
    ] {
        assert_contains(&refusal(key), "the file holds a private key;");
    }
    let mut two = smime("alice-rsa3072.pem");
    two.extend(smime("alice-p256.pem"));
    let e = accept_certificate(&two, &alice(), SystemTime::now(), &PolicyConfig::default())
        .unwrap_err();
    assert_eq!(e, PolicyError::SeveralCerts(2));
    assert_eq!(
        accept_certificate(b"", &alice(), SystemTime::now(), &PolicyConfig::default()).unwrap_err(),
        PolicyError::Empty
    );
}

#[test]
fn address_match_can_be_switched_off_and_key_size_tuned() {
    let relaxed = PolicyConfig {
        require_uid_match: false,
        min_rsa_bits: 1024,
        ..PolicyConfig::default()
    };
    accept_with("wrong-address.pem", &relaxed).unwrap();
    accept_with("rsa1024.pem", &relaxed).unwrap();
    let strict = PolicyConfig {
        min_rsa_bits: 4096,
        ..PolicyConfig::default()
    };
    assert_contains(
        &accept_with("alice-rsa3072.pem", &strict)
            .unwrap_err()
            .to_string(),
        "RSA with 3072 bits; at least 4096",
    );
}

#[test]
fn time_checks_use_the_given_time() {
    let (cert, _) = accept("alice-rsa3072.pem").unwrap();
    assert!(usable_now(&cert, SystemTime::now()));
    assert!(!usable_now(&cert, UNIX_EPOCH));
    let cert = parse_stored(std::str::from_utf8(&smime("expired.pem")).unwrap()).unwrap();
    assert!(!usable_now(&cert, SystemTime::now()));
    let in_2020 = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    assert!(usable_now(&cert, in_2020));
    accept_certificate(
        &smime("expired.pem"),
        &alice(),
        in_2020,
        &PolicyConfig::default(),
    )
    .unwrap();
}

#[test]
fn stored_pem_round_trips() {
    let (cert, _) = accept("alice-rsa3072.der").unwrap();
    let pem = to_pem(&cert);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let back = parse_stored(&pem).unwrap();
    assert_eq!(back.to_der().unwrap(), smime("alice-rsa3072.der"));
    assert!(matches!(
        parse_stored("garbage"),
        Err(PolicyError::NotCertificate(_))
    ));
}

#[test]
fn ca_file_mode() {
    let with_ca = PolicyConfig {
        smime_ca_file: Some(fixture("smime/ca.pem")),
        ..PolicyConfig::default()
    };
    accept_with("ca-leaf.pem", &with_ca).unwrap();
    let e = accept_with("alice-rsa3072.pem", &with_ca)
        .unwrap_err()
        .to_string();
    assert_contains(
        &e,
        "the certificate does not verify against the configured S/MIME CA file",
    );
    let unrelated = PolicyConfig {
        smime_ca_file: Some(fixture("smime/other-ca.pem")),
        ..PolicyConfig::default()
    };
    let e = accept_with("ca-leaf.pem", &unrelated)
        .unwrap_err()
        .to_string();
    assert_contains(&e, "unable to get local issuer certificate");
    let missing = PolicyConfig {
        smime_ca_file: Some(fixture("smime/no-such-ca.pem")),
        ..PolicyConfig::default()
    };
    assert_contains(
        &accept_with("ca-leaf.pem", &missing)
            .unwrap_err()
            .to_string(),
        "the S/MIME CA file cannot be used",
    );
}

#[test]
fn policy_config_reads_the_ca_file_setting() {
    let c: PolicyConfig = serde_json::from_str(r#"{"smime_ca_file": "/etc/ca.pem"}"#).unwrap();
    assert_eq!(c.smime_ca_file.unwrap().to_str(), Some("/etc/ca.pem"));
    assert!(c.require_uid_match);
    let c: PolicyConfig = serde_json::from_str("{}").unwrap();
    assert!(c.smime_ca_file.is_none());
    assert!(serde_json::from_str::<PolicyConfig>(r#"{"smime_ca": "x"}"#).is_err());
}

#[test]
fn key_kind_strings() {
    assert_eq!(KeyKind::parse("x509"), Some(KeyKind::X509));
    assert_eq!(KeyKind::X509.as_str(), "x509");
    assert_eq!(serde_json::to_string(&KeyKind::X509).unwrap(), "\"x509\"");
    assert_eq!(KeyKind::parse("openpgp"), Some(KeyKind::OpenPgp));
}

#[test]
fn accept_key_dispatches() {
    let now = SystemTime::now();
    let c = PolicyConfig::default();
    let (k, info) = policy::accept_key(&smime("alice-p256.der"), &alice(), now, &c).unwrap();
    assert!(matches!(k, AcceptedKey::X509(_)));
    assert_eq!(info.kind, KeyKind::X509);
    let pgp = std::fs::read(fixture("keys/sq-cv25519.asc")).unwrap();
    let sq = vec![Address::parse("sq@example.org").unwrap()];
    let (k, info) = policy::accept_key(&pgp, &sq, now, &c).unwrap();
    assert!(matches!(k, AcceptedKey::OpenPgp(_)));
    assert_eq!(info.kind, KeyKind::OpenPgp);
    assert_eq!(
        policy::accept_key(&smime("alice-modern.p12"), &alice(), now, &c).unwrap_err(),
        PolicyError::Pkcs12Bundle
    );
    assert_eq!(
        policy::accept_key(&smime("alice-rsa3072.key.pem"), &alice(), now, &c).unwrap_err(),
        PolicyError::PrivateKey
    );
    // The OpenPGP entry point refuses them the same way.
    assert_eq!(
        policy::accept_public_key(&smime("alice-unencrypted.p12"), &alice(), now, &c).unwrap_err(),
        PolicyError::Pkcs12Bundle
    );
}

// ---- PKCS#12 ------------------------------------------------------------------------

fn rsa_cert_id() -> String {
    sha256_upper(&smime("alice-rsa3072.der"))
}

#[test]
fn pkcs12_modern_is_accepted() {
    let info = check_pkcs12(&smime("alice-modern.p12"), false).unwrap();
    assert_eq!(info.protection, "PBES2/PBKDF2-SHA256/AES-256-CBC");
    assert_eq!(info.iterations, 100_000);
    assert_eq!(info.certificate_ids, vec![rsa_cert_id()]);
}

#[test]
fn pkcs12_refusals() {
    let refused = |name: &str, legacy: bool| -> String {
        check_pkcs12(&smime(name), legacy)
            .expect_err(&format!("{name} must be refused"))
            .to_string()
    };
    let e = refused("alice-certs-encrypted.p12", false);
    assert_contains(&e, "every certificate in the bundle is encrypted");
    assert_contains(&e, "-certpbe NONE");
    let e = refused("alice-unencrypted.p12", false);
    assert_contains(&e, "the private key in the PKCS#12 is not encrypted");
    let e = refused("alice-legacy-3des.p12", false);
    assert_contains(&e, "pbeWithSHAAnd3-KeyTripleDES-CBC");
    assert_contains(&e, "-keypbe AES-256-CBC -certpbe NONE");
    let e = refused("alice-legacy-rc2.p12", true);
    assert_contains(&e, "pbeWithSHAAnd40BitRC2-CBC, which is never accepted");
    let e = refused("alice-low-iterations.p12", false);
    assert_contains(
        &e,
        "only 2048 PBKDF2 iterations; at least 10000 are required",
    );
    assert!(matches!(
        check_pkcs12(&smime("alice-rsa3072.der"), false),
        Err(Pkcs12Error::Malformed(_))
    ));
    assert!(matches!(
        check_pkcs12(b"garbage", false),
        Err(Pkcs12Error::Malformed(_))
    ));
}

#[test]
fn pkcs12_legacy_3des_when_allowed() {
    let info = check_pkcs12(&smime("alice-legacy-3des.p12"), true).unwrap();
    assert_eq!(info.protection, "pbeWithSHAAnd3-KeyTripleDES-CBC");
    assert_eq!(info.certificate_ids, vec![rsa_cert_id()]);
}

#[test]
fn pkcs12_open_and_reprotect() {
    let modern = smime("alice-modern.p12");
    let (key, cert) = open_pkcs12(&modern, P12_PASSWORD).unwrap();
    assert_eq!(cert.to_der().unwrap(), smime("alice-rsa3072.der"));
    assert!(key.public_eq(&cert.public_key().unwrap()));
    assert_eq!(
        open_pkcs12(&modern, "wrong").unwrap_err().to_string(),
        "wrong password for the PKCS#12 bundle"
    );

    // The OpenSSL 3 default bundle (certificates encrypted too) can be re-protected into
    // one the server accepts.
    for name in ["alice-certs-encrypted.p12", "alice-modern.p12"] {
        let old = smime(name);
        let out = reprotect_pkcs12(&old, P12_PASSWORD, "new-password").unwrap();
        assert_eq!(
            open_pkcs12(&out, P12_PASSWORD).unwrap_err(),
            Pkcs12Error::WrongPassword
        );
        let (_, cert) = open_pkcs12(&out, "new-password").unwrap();
        assert_eq!(cert.to_der().unwrap(), smime("alice-rsa3072.der"));
        let info = check_pkcs12(&out, false).unwrap();
        assert_eq!(info.protection, "PBES2/PBKDF2-SHA256/AES-256-CBC");
        assert!(info.iterations >= 10_000);
        assert_eq!(info.certificate_ids, vec![rsa_cert_id()]);

        if let Some(openssl) = need_program("pkcs12_open_and_reprotect", "openssl") {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.p12");
            std::fs::write(&path, &out).unwrap();
            let run = std::process::Command::new(openssl)
                .args(["pkcs12", "-in"])
                .arg(&path)
                .args(["-passin", "pass:new-password", "-nodes"])
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            let text = String::from_utf8_lossy(&run.stdout);
            assert!(text.contains("-----BEGIN PRIVATE KEY-----"));
            assert!(text.contains("-----BEGIN CERTIFICATE-----"));
        }
    }
    assert_eq!(
        reprotect_pkcs12(&modern, "wrong", "new").unwrap_err(),
        Pkcs12Error::WrongPassword
    );
}

// ---- keystore -----------------------------------------------------------------------

#[tokio::test]
async fn keystore_stores_certificates_next_to_openpgp_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseConfig {
        url: format!("sqlite://{}/ks.db", dir.path().display()),
        ..DatabaseConfig::default()
    };
    let ks = Keystore::open(&db, LookupConfig::default(), PolicyConfig::default())
        .await
        .unwrap();
    let actor = Actor("test".into());
    let alice = Address::parse("alice@example.org").unwrap();
    let sq = Address::parse("sq@example.org").unwrap();
    let acc = ks
        .add_account(&alice, std::slice::from_ref(&sq), &actor)
        .await
        .unwrap();

    let rec = ks
        .import_public_key(&alice, &smime("alice-rsa3072.der"), &actor, false)
        .await
        .unwrap();
    assert_eq!(rec.kind, "x509");
    assert_eq!(rec.fingerprint, rsa_cert_id());
    assert_eq!(rec.algorithm, "RSA3072");
    assert_eq!(rec.version, 3);
    assert_eq!(rec.user_ids, vec!["alice@example.org".to_string()]);
    assert!(rec.armored.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        parse_stored(&rec.armored).unwrap().to_der().unwrap(),
        smime("alice-rsa3072.der")
    );
    // Re-importing (as PEM this time) updates the same key.
    let again = ks
        .import_public_key(&alice, &smime("alice-rsa3072.pem"), &actor, false)
        .await
        .unwrap();
    assert_eq!(again.fingerprint, rec.fingerprint);

    let pgp = std::fs::read(fixture("keys/sq-cv25519.asc")).unwrap();
    let k = ks
        .import_public_key(&sq, &pgp, &actor, false)
        .await
        .unwrap();
    assert_eq!(k.kind, "openpgp");
    assert_eq!(k.account_id, acc.id);

    let keys = ks.public_keys_of(&acc.id).await.unwrap();
    let mut kinds: Vec<&str> = keys.iter().map(|k| k.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["openpgp", "x509"]);
    assert!(keys.iter().all(|k| k.active));

    // Refusals are never stored.
    for bad in ["alice-modern.p12", "expired.pem", "alice-rsa3072.key.pem"] {
        let e = ks
            .import_public_key(&alice, &smime(bad), &actor, false)
            .await
            .unwrap_err();
        assert!(
            matches!(e, sealpost_keystore::Error::Policy(_)),
            "{bad}: {e}"
        );
    }
    assert_eq!(ks.public_keys_of(&acc.id).await.unwrap().len(), 2);
}
