//! The OpenPGP key policy: which uploaded certificates sealpost accepts, and which of their
//! subkeys mail is encrypted to.
//!
//! Everything that decides about a certificate lives here so the milter, the JMAP service,
//! the CLI and `sealpost check` give the same answer for the same key at the same time.

use std::time::{SystemTime, UNIX_EPOCH};

use openpgp::cert::prelude::*;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::packet::Key;
use openpgp::parse::Parse;
use openpgp::policy::{Policy, StandardPolicy};
use openpgp::types::{PublicKeyAlgorithm, RevocationStatus};
use openpgp::Cert;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};

use crate::address::Address;

/// The kind of a recipient key: an OpenPGP certificate or an X.509 certificate (S/MIME).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    #[serde(rename = "openpgp")]
    OpenPgp,
    #[serde(rename = "x509")]
    X509,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::OpenPgp => "openpgp",
            KeyKind::X509 => "x509",
        }
    }

    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "openpgp" => Some(KeyKind::OpenPgp),
            "x509" => Some(KeyKind::X509),
            _ => None,
        }
    }
}

/// Operator-tunable parts of the policy (`[policy]` in the config file).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Require a user ID whose address is one of the account's addresses.
    pub require_uid_match: bool,
    /// Smallest RSA modulus accepted, in bits.
    pub min_rsa_bits: usize,
    /// PEM bundle of the CAs S/MIME certificates must chain to. Unset: self-signed and
    /// private-CA certificates are accepted.
    pub smime_ca_file: Option<std::path::PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            require_uid_match: true,
            min_rsa_bits: 2048,
            smime_ca_file: None,
        }
    }
}

/// Why a key was refused. The messages name the problem and what to do; they never contain
/// key material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the key file is empty")]
    Empty,
    #[error("not an OpenPGP public key: {0}")]
    Unparsable(String),
    #[error("the file holds secret key material; upload only the public key (gpg --export, not --export-secret-keys); nothing was stored")]
    SecretKey,
    #[error("the file holds {0} certificates; upload exactly one")]
    SeveralCerts(usize),
    #[error("the key is not valid under the OpenPGP standard policy: {0}")]
    Invalid(String),
    #[error("the key is revoked")]
    Revoked,
    #[error("the key expired on {0}")]
    Expired(String),
    #[error("the key has no valid encryption-capable subkey (it is sign-only or its encryption subkeys are expired or revoked)")]
    NoEncryptionSubkey,
    #[error("the key uses RSA with {bits} bits; at least {min} are required")]
    WeakRsa { bits: usize, min: usize },
    #[error("the key uses an unsupported public-key algorithm ({0})")]
    UnsupportedAlgorithm(String),
    #[error("no user ID of the key matches the account's addresses ({0})")]
    NoMatchingUserId(String),
    #[error("the file is a PKCS#12 bundle with a private key; upload only the certificate (openssl pkcs12 -in FILE -nokeys -clcerts); nothing was stored")]
    Pkcs12Bundle,
    #[error("the file holds a private key; upload only the certificate (openssl x509 -in FILE), never the private key; nothing was stored")]
    PrivateKey,
    #[error("not an X.509 certificate: {0}")]
    NotCertificate(String),
    #[error("the certificate expired on {0}")]
    CertExpired(String),
    #[error("the certificate is not valid before {0}")]
    CertNotYetValid(String),
    #[error(
        "the certificate's public key is {0}; S/MIME encryption needs RSA or EC on P-256 or P-384"
    )]
    CertAlgorithm(String),
    #[error("the certificate's keyUsage allows only {has}; S/MIME encryption to {key} key needs {needs}")]
    CertKeyUsage {
        has: String,
        key: &'static str,
        needs: &'static str,
    },
    #[error("the certificate's extendedKeyUsage allows only {0}; S/MIME needs emailProtection")]
    CertExtendedKeyUsage(String),
    #[error("the certificate is a CA certificate (basicConstraints cA=true, and not a self-signed certificate whose keyUsage excludes keyCertSign); upload the certificate of the mailbox itself")]
    CertIsCa,
    #[error("the certificate names no email address (subjectAltName rfc822Name or subject emailAddress)")]
    CertNoAddress,
    #[error(
        "no email address of the certificate ({cert}) matches the account's addresses ({account})"
    )]
    NoMatchingCertAddress { cert: String, account: String },
    #[error("the certificate does not verify against the configured S/MIME CA file: {0}")]
    CertChain(String),
    #[error("the S/MIME CA file cannot be used: {0}")]
    CaFile(String),
}

/// What the keystore records about an accepted certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub kind: KeyKind,
    /// Upper-case hex fingerprint of the primary key.
    pub fingerprint: String,
    pub user_ids: Vec<String>,
    /// Algorithm summary, e.g. `EdDSA/ECDH(Cv25519)` or `RSA3072/RSA3072`.
    pub algorithm: String,
    /// Key version (4 or 6).
    pub version: u8,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Expiration time of the certificate, Unix seconds, if any.
    pub expires: Option<i64>,
    /// Upper-case hex fingerprints of the subkeys mail would be encrypted to now.
    pub encryption_subkeys: Vec<String>,
}

/// The one policy object all checks use.
pub fn standard_policy() -> &'static StandardPolicy<'static> {
    static POLICY: StandardPolicy<'static> = StandardPolicy::new();
    &POLICY
}

pub fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub fn format_time(t: i64) -> String {
    // RFC 3339 in UTC without pulling in a date crate: days-from-civil inverse.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

// Howard Hinnant's civil_from_days algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses exactly one public certificate from uploaded bytes (armored or binary).
///
/// Refuses an empty input, garbage, more than one certificate, and any secret key material.
pub fn parse_public_cert(bytes: &[u8]) -> Result<Cert, PolicyError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(PolicyError::Empty);
    }
    // An armored secret key block is refused before parsing, so nothing secret is ever
    // handled further than this check.
    if contains(bytes, b"-----BEGIN PGP PRIVATE KEY BLOCK-----") {
        return Err(PolicyError::SecretKey);
    }
    match crate::x509::detect(bytes) {
        crate::x509::Detected::Pkcs12 => return Err(PolicyError::Pkcs12Bundle),
        crate::x509::Detected::PrivateKey => return Err(PolicyError::PrivateKey),
        _ => {}
    }
    let parser = CertParser::from_bytes(bytes).map_err(|e| PolicyError::Unparsable(short(&e)))?;
    let mut certs = Vec::new();
    for cert in parser {
        certs.push(cert.map_err(|e| PolicyError::Unparsable(short(&e)))?);
    }
    match certs.len() {
        0 => Err(PolicyError::Unparsable(
            "no certificate found in the input".into(),
        )),
        1 => {
            let cert = certs.pop().expect("one cert");
            if cert.is_tsk() {
                return Err(PolicyError::SecretKey);
            }
            Ok(cert)
        }
        n => {
            if certs.iter().any(|c| c.is_tsk()) {
                Err(PolicyError::SecretKey)
            } else {
                Err(PolicyError::SeveralCerts(n))
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A short, single-line error description without a backtrace or nested dumps.
fn short(e: &anyhow::Error) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or("unreadable input").to_string()
}

/// The subkeys (or primary key) mail to this certificate is encrypted to at time `now`:
/// valid under the standard policy, alive, not revoked, flagged for storage or transport
/// encryption, and of an algorithm the crypto backend supports.
///
/// This is the only place that makes this choice; the milter and the JMAP service call it.
pub fn encryption_keys(cert: &Cert, now: SystemTime) -> Vec<Key<PublicParts, UnspecifiedRole>> {
    let Ok(vc) = cert.with_policy(standard_policy(), now) else {
        return Vec::new();
    };
    if vc.alive().is_err() || matches!(vc.revocation_status(), RevocationStatus::Revoked(_)) {
        return Vec::new();
    }
    vc.keys()
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .for_transport_encryption()
        .map(|ka| ka.key().clone().role_into_unspecified())
        .collect()
}

// RSA encrypt-only and sign-only algorithm ids are deprecated but still found in old keys.
#[allow(deprecated)]
fn is_rsa(a: PublicKeyAlgorithm) -> bool {
    matches!(
        a,
        PublicKeyAlgorithm::RSAEncryptSign
            | PublicKeyAlgorithm::RSAEncrypt
            | PublicKeyAlgorithm::RSASign
    )
}

fn algo_name(key: &Key<PublicParts, UnspecifiedRole>) -> String {
    use openpgp::crypto::mpi::PublicKey as M;
    match (key.pk_algo(), key.mpis()) {
        (a, m) if is_rsa(a) => format!("RSA{}", m.bits().unwrap_or(0)),
        (PublicKeyAlgorithm::EdDSA, M::EdDSA { curve, .. }) => format!("EdDSA({curve})"),
        (PublicKeyAlgorithm::ECDH, M::ECDH { curve, .. }) => format!("ECDH({curve})"),
        (PublicKeyAlgorithm::ECDSA, M::ECDSA { curve, .. }) => format!("ECDSA({curve})"),
        (a, _) => format!("{a}"),
    }
}

/// Checks a certificate against the policy for an account with the given addresses.
pub fn check_cert(
    cert: &Cert,
    addresses: &[Address],
    now: SystemTime,
    config: &PolicyConfig,
) -> Result<CertInfo, PolicyError> {
    if cert.is_tsk() {
        return Err(PolicyError::SecretKey);
    }
    let policy = standard_policy();
    if let RevocationStatus::Revoked(_) = cert.revocation_status(policy, now) {
        return Err(PolicyError::Revoked);
    }
    let vc = cert
        .with_policy(policy, now)
        .map_err(|e| PolicyError::Invalid(short(&e)))?;
    let expires = vc.primary_key().key_expiration_time().map(unix);
    if vc.alive().is_err() {
        return match expires {
            Some(t) if t <= unix(now) => Err(PolicyError::Expired(format_time(t))),
            _ => Err(PolicyError::Invalid(
                "the primary key is not live (created in the future?)".into(),
            )),
        };
    }

    // Every key this policy considers valid must use an algorithm we accept.
    for ka in vc.keys() {
        let key = ka.key();
        match key.pk_algo() {
            a if is_rsa(a) => {
                let bits = key.mpis().bits().unwrap_or(0);
                if bits < config.min_rsa_bits {
                    return Err(PolicyError::WeakRsa {
                        bits,
                        min: config.min_rsa_bits,
                    });
                }
            }
            PublicKeyAlgorithm::EdDSA
            | PublicKeyAlgorithm::ECDH
            | PublicKeyAlgorithm::ECDSA
            | PublicKeyAlgorithm::X25519
            | PublicKeyAlgorithm::X448
            | PublicKeyAlgorithm::Ed25519
            | PublicKeyAlgorithm::Ed448 => {}
            other => return Err(PolicyError::UnsupportedAlgorithm(other.to_string())),
        }
    }

    let enc = encryption_keys(cert, now);
    if enc.is_empty() {
        return Err(PolicyError::NoEncryptionSubkey);
    }

    let user_ids: Vec<String> = vc
        .userids()
        .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
        .collect();
    if config.require_uid_match {
        let matches = vc.userids().any(|u| {
            u.userid()
                .email()
                .ok()
                .flatten()
                .and_then(|e| Address::parse(e).ok())
                .is_some_and(|a| addresses.iter().any(|b| b.same_mailbox(&a)))
        });
        if !matches {
            let list = addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(PolicyError::NoMatchingUserId(list));
        }
    }

    let primary = vc.primary_key().key().clone().role_into_unspecified();
    let mut algorithm = algo_name(&primary);
    let mut subs: Vec<String> = enc.iter().map(algo_name).collect();
    subs.dedup();
    for s in subs {
        if s != algorithm {
            algorithm.push('/');
            algorithm.push_str(&s);
        }
    }

    Ok(CertInfo {
        kind: KeyKind::OpenPgp,
        fingerprint: cert.fingerprint().to_hex(),
        user_ids,
        algorithm,
        version: primary.version(),
        created: unix(primary.creation_time()),
        expires,
        encryption_subkeys: enc.iter().map(|k| k.fingerprint().to_hex()).collect(),
    })
}

/// Parses and checks uploaded key bytes in one step.
pub fn accept_public_key(
    bytes: &[u8],
    addresses: &[Address],
    now: SystemTime,
    config: &PolicyConfig,
) -> Result<(Cert, CertInfo), PolicyError> {
    let cert = parse_public_cert(bytes)?;
    let info = check_cert(&cert, addresses, now, config)?;
    Ok((cert, info))
}

/// A key accepted by [`accept_key`].
#[derive(Clone, Debug)]
pub enum AcceptedKey {
    OpenPgp(Box<Cert>),
    X509(openssl::x509::X509),
}

/// Parses and checks uploaded key bytes of either kind: X.509 certificates (PEM or DER) go
/// through [`crate::x509::accept_certificate`], everything else through
/// [`accept_public_key`]. PKCS#12 bundles and private keys are refused.
pub fn accept_key(
    bytes: &[u8],
    addresses: &[Address],
    now: SystemTime,
    config: &PolicyConfig,
) -> Result<(AcceptedKey, CertInfo), PolicyError> {
    use crate::x509::{self, Detected};
    match x509::detect(bytes) {
        Detected::X509 => {
            let (cert, info) = x509::accept_certificate(bytes, addresses, now, config)?;
            Ok((AcceptedKey::X509(cert), info))
        }
        Detected::Pkcs12 => Err(PolicyError::Pkcs12Bundle),
        Detected::PrivateKey => Err(PolicyError::PrivateKey),
        Detected::OpenPgp | Detected::Unknown => {
            let (cert, info) = accept_public_key(bytes, addresses, now, config)?;
            Ok((AcceptedKey::OpenPgp(Box::new(cert)), info))
        }
    }
}

/// Policy used by callers that want to ask sequoia directly (e.g. the encryptor).
pub fn policy() -> &'static dyn Policy {
    standard_policy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn refuses_empty_and_garbage() {
        assert_eq!(parse_public_cert(b"").unwrap_err(), PolicyError::Empty);
        assert_eq!(parse_public_cert(b"  \n").unwrap_err(), PolicyError::Empty);
        assert!(matches!(
            parse_public_cert(b"hello world, not a key").unwrap_err(),
            PolicyError::Unparsable(_)
        ));
    }
}
