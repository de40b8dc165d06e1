//! X.509 certificates for S/MIME: what an upload is, which certificates sealpost encrypts
//! to, and the checks on PKCS#12 bundles (S/MIME private keys) uploaded for safekeeping.
//!
//! The keystore stores an accepted certificate as PEM text in the `armored` column of
//! `public_keys`, with kind `x509` and the upper-case hex SHA-256 of its DER encoding as
//! id. For a certificate, [`CertInfo::encryption_subkeys`] is empty: mail is encrypted to
//! the certificate itself, whose id is the fingerprint.

use std::path::Path;
use std::time::SystemTime;

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{Id, PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{
    X509ExtendedKeyUsage, X509KeyUsage, X509PurposeId, X509Ref, X509StoreContext, X509,
};
use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::policy::{format_time, unix, CertInfo, KeyKind, PolicyConfig, PolicyError};

/// What an uploaded file is, judged from its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// OpenPGP armor or binary OpenPGP packets.
    OpenPgp,
    /// An X.509 certificate, PEM or DER.
    X509,
    /// A PKCS#12 (PFX) bundle, DER or PEM with the label `PKCS12`.
    Pkcs12,
    /// A private key (PKCS#1, SEC1, PKCS#8, encrypted or not), PEM or DER.
    PrivateKey,
    Unknown,
}

const PRIVATE_KEY_LABELS: [&str; 4] = [
    "-----BEGIN PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN EC PRIVATE KEY-----",
    "-----BEGIN ENCRYPTED PRIVATE KEY-----",
];

/// Tells what `bytes` hold. A PEM file holding a certificate and a private key counts as
/// a private key, so it is never taken for a certificate.
pub fn detect(bytes: &[u8]) -> Detected {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let body = &bytes[start..];
    if body.is_empty() {
        return Detected::Unknown;
    }
    if body.starts_with(b"-----BEGIN PGP ") {
        return Detected::OpenPgp;
    }
    if PRIVATE_KEY_LABELS
        .iter()
        .any(|l| contains(body, l.as_bytes()))
    {
        return Detected::PrivateKey;
    }
    if contains(body, b"-----BEGIN PKCS12-----") {
        return Detected::Pkcs12;
    }
    if contains(body, b"-----BEGIN CERTIFICATE-----")
        || contains(body, b"-----BEGIN X509 CERTIFICATE-----")
        || contains(body, b"-----BEGIN TRUSTED CERTIFICATE-----")
    {
        return Detected::X509;
    }
    if contains(body, b"-----BEGIN PGP ") {
        return Detected::OpenPgp;
    }
    match body[0] {
        // A DER SEQUENCE.
        0x30 => {
            if X509::from_der(body).is_ok() {
                Detected::X509
            } else if is_pfx(body) {
                Detected::Pkcs12
            } else if PKey::private_key_from_der(body).is_ok() || is_encrypted_pkcs8(body) {
                Detected::PrivateKey
            } else {
                Detected::Unknown
            }
        }
        // An OpenPGP packet header always has the high bit set; DER never starts so here.
        b if b & 0x80 != 0 => Detected::OpenPgp,
        _ => Detected::Unknown,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo, macData OPTIONAL }.
fn is_pfx(der: &[u8]) -> bool {
    let Ok(pfx) = AnyRef::from_der(der) else {
        return false;
    };
    let Ok(items) = children(&pfx, Tag::Sequence) else {
        return false;
    };
    items.len() >= 2
        && items[0].decode_as::<u64>().ok() == Some(3)
        && children(&items[1], Tag::Sequence)
            .ok()
            .and_then(|ci| ci.first().map(oid))
            .is_some_and(|o| o.is_ok())
}

/// EncryptedPrivateKeyInfo ::= SEQUENCE { AlgorithmIdentifier, OCTET STRING }.
fn is_encrypted_pkcs8(der: &[u8]) -> bool {
    let Ok(any) = AnyRef::from_der(der) else {
        return false;
    };
    let Ok(items) = children(&any, Tag::Sequence) else {
        return false;
    };
    items.len() == 2
        && items[0].tag() == Tag::Sequence
        && items[1].tag() == Tag::OctetString
        && children(&items[0], Tag::Sequence)
            .ok()
            .and_then(|a| a.first().map(oid))
            .is_some_and(|o| o.is_ok())
}

/// Upper-case hex SHA-256 of the certificate's DER encoding: its id in the keystore.
pub fn certificate_id(cert: &X509Ref) -> String {
    let der = cert.to_der().unwrap_or_default();
    hex::encode_upper(Sha256::digest(&der))
}

/// The certificate as PEM text, the form the keystore stores.
pub fn to_pem(cert: &X509Ref) -> String {
    String::from_utf8(cert.to_pem().unwrap_or_default()).expect("PEM is ASCII")
}

/// Reads a certificate the keystore stored (PEM).
pub fn parse_stored(pem: &str) -> Result<X509, PolicyError> {
    X509::from_pem(pem.as_bytes()).map_err(|e| PolicyError::NotCertificate(openssl_reason(&e)))
}

/// Whether mail can be encrypted to the certificate at `now`: within its validity period.
/// (Everything else was checked when it was accepted.)
pub fn usable_now(cert: &X509Ref, now: SystemTime) -> bool {
    let t = unix(now);
    asn1_unix(cert.not_before()).is_some_and(|nb| nb <= t)
        && asn1_unix(cert.not_after()).is_some_and(|na| t <= na)
}

/// Exactly one certificate from PEM or DER bytes. Refuses PKCS#12 bundles and private
/// keys with a message telling what to upload instead.
pub fn parse_certificate(bytes: &[u8]) -> Result<X509, PolicyError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(PolicyError::Empty);
    }
    match detect(bytes) {
        Detected::Pkcs12 => return Err(PolicyError::Pkcs12Bundle),
        Detected::PrivateKey => return Err(PolicyError::PrivateKey),
        Detected::OpenPgp => {
            return Err(PolicyError::NotCertificate(
                "the file is an OpenPGP key".into(),
            ))
        }
        _ => {}
    }
    if bytes.first() == Some(&0x30) {
        return X509::from_der(bytes).map_err(|e| PolicyError::NotCertificate(openssl_reason(&e)));
    }
    let mut certs =
        X509::stack_from_pem(bytes).map_err(|e| PolicyError::NotCertificate(openssl_reason(&e)))?;
    match certs.len() {
        0 => Err(PolicyError::NotCertificate(
            "no certificate found in the input".into(),
        )),
        1 => Ok(certs.pop().expect("one certificate")),
        n => Err(PolicyError::SeveralCerts(n)),
    }
}

/// Parses and checks an uploaded certificate for an account with the given addresses.
///
/// Accepts exactly one certificate, PEM or DER, that is valid at `now`, has an RSA key of
/// at least `config.min_rsa_bits` bits or an EC key on P-256 or P-384, whose keyUsage (when
/// present) allows keyEncipherment (RSA) or keyAgreement (EC), whose extendedKeyUsage (when
/// present) includes emailProtection or anyExtendedKeyUsage, that is not a CA certificate,
/// and (with `require_uid_match`) names one of the account's addresses. With
/// `config.smime_ca_file` the certificate must also verify against that bundle.
pub fn accept_certificate(
    bytes: &[u8],
    addresses: &[Address],
    now: SystemTime,
    config: &PolicyConfig,
) -> Result<(X509, CertInfo), PolicyError> {
    let cert = parse_certificate(bytes)?;
    let info = check_certificate(&cert, addresses, now, config)?;
    Ok((cert, info))
}

/// The policy checks of [`accept_certificate`] on a parsed certificate.
pub fn check_certificate(
    cert: &X509Ref,
    addresses: &[Address],
    now: SystemTime,
    config: &PolicyConfig,
) -> Result<CertInfo, PolicyError> {
    let t = unix(now);
    let not_before = asn1_unix(cert.not_before())
        .ok_or_else(|| PolicyError::NotCertificate("unreadable notBefore".into()))?;
    let not_after = asn1_unix(cert.not_after())
        .ok_or_else(|| PolicyError::NotCertificate("unreadable notAfter".into()))?;
    if t < not_before {
        return Err(PolicyError::CertNotYetValid(format_time(not_before)));
    }
    if t > not_after {
        return Err(PolicyError::CertExpired(format_time(not_after)));
    }

    let der = cert
        .to_der()
        .map_err(|e| PolicyError::NotCertificate(openssl_reason(&e)))?;
    // `openssl req -x509` marks a self-made certificate cA=true by default; such a
    // certificate is still the mailbox's own when it is self-signed and its keyUsage does
    // not allow signing certificates. Anything else with cA=true is a CA.
    let own_self_signed = cert.issuer_name().try_cmp(cert.subject_name()).ok()
        == Some(std::cmp::Ordering::Equal)
        && cert
            .key_usage()
            .is_some_and(|ku| !ku.contains(X509KeyUsage::KEY_CERT_SIGN));
    if is_ca(&der) && !own_self_signed {
        return Err(PolicyError::CertIsCa);
    }

    let key = cert
        .public_key()
        .map_err(|e| PolicyError::NotCertificate(openssl_reason(&e)))?;
    let (algorithm, rsa) = match key.id() {
        Id::RSA => {
            let bits = key.bits() as usize;
            if bits < config.min_rsa_bits {
                return Err(PolicyError::WeakRsa {
                    bits,
                    min: config.min_rsa_bits,
                });
            }
            (format!("RSA{bits}"), true)
        }
        Id::EC => {
            let curve = key.ec_key().ok().and_then(|k| k.group().curve_name());
            match curve {
                Some(Nid::X9_62_PRIME256V1) => ("ECDH(P-256)".to_string(), false),
                Some(Nid::SECP384R1) => ("ECDH(P-384)".to_string(), false),
                Some(n) => {
                    return Err(PolicyError::CertAlgorithm(format!(
                        "EC on the curve {}",
                        n.short_name().unwrap_or("unknown")
                    )))
                }
                None => {
                    return Err(PolicyError::CertAlgorithm(
                        "EC with explicit curve parameters".into(),
                    ))
                }
            }
        }
        other => return Err(PolicyError::CertAlgorithm(key_type_name(other))),
    };

    if let Some(ku) = cert.key_usage() {
        let (need, need_name) = if rsa {
            (X509KeyUsage::KEY_ENCIPHERMENT, "keyEncipherment")
        } else {
            (X509KeyUsage::KEY_AGREEMENT, "keyAgreement")
        };
        if !ku.contains(need) {
            return Err(PolicyError::CertKeyUsage {
                has: key_usage_names(ku),
                key: if rsa { "an RSA" } else { "an EC" },
                needs: need_name,
            });
        }
    }
    if let Some(eku) = cert.extended_key_usage() {
        if !eku.intersects(X509ExtendedKeyUsage::SMIME | X509ExtendedKeyUsage::ANYEKU) {
            return Err(PolicyError::CertExtendedKeyUsage(eku_names(eku)));
        }
    }

    let emails = certificate_emails(cert);
    if config.require_uid_match {
        if emails.is_empty() {
            return Err(PolicyError::CertNoAddress);
        }
        let matches = emails
            .iter()
            .filter_map(|e| Address::parse(e).ok())
            .any(|a| addresses.iter().any(|b| b.same_mailbox(&a)));
        if !matches {
            return Err(PolicyError::NoMatchingCertAddress {
                cert: emails.join(", "),
                account: addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }

    if let Some(ca_file) = &config.smime_ca_file {
        verify_chain(cert, ca_file, now, rsa)?;
    }

    Ok(CertInfo {
        kind: KeyKind::X509,
        fingerprint: hex::encode_upper(Sha256::digest(&der)),
        user_ids: emails,
        algorithm,
        version: 3,
        created: not_before,
        expires: Some(not_after),
        encryption_subkeys: Vec::new(),
    })
}

/// The certificate's email addresses: the subjectAltName rfc822Names, or, when it has
/// none, the subject's emailAddress attributes.
pub fn certificate_emails(cert: &X509Ref) -> Vec<String> {
    let mut out: Vec<String> = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.email().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if out.is_empty() {
        out = cert
            .subject_name()
            .entries_by_nid(Nid::PKCS9_EMAILADDRESS)
            .filter_map(|e| e.data().to_string().ok())
            .collect();
    }
    out.dedup();
    out
}

fn verify_chain(
    cert: &X509Ref,
    ca_file: &Path,
    now: SystemTime,
    rsa: bool,
) -> Result<(), PolicyError> {
    let ca_error = |e: String| PolicyError::CaFile(format!("{}: {e}", ca_file.display()));
    let pem = std::fs::read(ca_file).map_err(|e| ca_error(e.to_string()))?;
    let cas = X509::stack_from_pem(&pem).map_err(|e| ca_error(openssl_reason(&e)))?;
    if cas.is_empty() {
        return Err(ca_error("no certificate in the file".into()));
    }
    let setup = || -> Result<_, openssl::error::ErrorStack> {
        let mut store = X509StoreBuilder::new()?;
        for ca in cas {
            store.add_cert(ca)?;
        }
        let mut param = X509VerifyParam::new()?;
        param.set_time(unix(now) as _);
        // OpenSSL's S/MIME encryption purpose demands keyEncipherment, which an EC key
        // (keyAgreement) does not have; its key usage was checked above either way.
        param.set_purpose(if rsa {
            X509PurposeId::SMIME_ENCRYPT
        } else {
            X509PurposeId::ANY
        })?;
        store.set_param(&param)?;
        Ok(store.build())
    };
    let store = setup().map_err(|e| ca_error(openssl_reason(&e)))?;
    let chain = Stack::new().map_err(|e| ca_error(openssl_reason(&e)))?;
    let mut ctx = X509StoreContext::new().map_err(|e| ca_error(openssl_reason(&e)))?;
    let result = ctx
        .init(&store, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error()))
        })
        .map_err(|e| PolicyError::CertChain(openssl_reason(&e)))?;
    match result {
        (true, _) => Ok(()),
        (false, err) => Err(PolicyError::CertChain(err.error_string().to_string())),
    }
}

/// Whether the certificate's basicConstraints say cA=true.
fn is_ca(cert_der: &[u8]) -> bool {
    (|| -> Option<bool> {
        let cert = AnyRef::from_der(cert_der).ok()?;
        let tbs = children(&cert, Tag::Sequence).ok()?.into_iter().next()?;
        let fields = children(&tbs, Tag::Sequence).ok()?;
        let ext_wrapper = fields.iter().find(|f| f.tag() == context(3))?;
        let exts = AnyRef::from_der(ext_wrapper.value()).ok()?;
        for ext in children(&exts, Tag::Sequence).ok()? {
            let parts = children(&ext, Tag::Sequence).ok()?;
            if oid(parts.first()?).ok()? != OID_BASIC_CONSTRAINTS {
                continue;
            }
            let value = parts.last()?;
            let bc = AnyRef::from_der(value.value()).ok()?;
            let items = children(&bc, Tag::Sequence).ok()?;
            return Some(
                items
                    .first()
                    .filter(|i| i.tag() == Tag::Boolean)
                    .is_some_and(|i| i.decode_as::<bool>().unwrap_or(false)),
            );
        }
        Some(false)
    })()
    .unwrap_or(false)
}

fn key_type_name(id: Id) -> String {
    match id {
        Id::DSA => "DSA".into(),
        Id::DH => "DH".into(),
        Id::ED25519 => "Ed25519".into(),
        Id::ED448 => "Ed448".into(),
        Id::X25519 => "X25519".into(),
        Id::X448 => "X448".into(),
        other => Nid::from_raw(other.as_raw())
            .short_name()
            .map(str::to_string)
            .unwrap_or_else(|_| format!("algorithm {}", other.as_raw())),
    }
}

fn key_usage_names(ku: X509KeyUsage) -> String {
    let all = [
        (X509KeyUsage::DIGITAL_SIGNATURE, "digitalSignature"),
        (X509KeyUsage::NON_REPUDIATION, "nonRepudiation"),
        (X509KeyUsage::KEY_ENCIPHERMENT, "keyEncipherment"),
        (X509KeyUsage::DATA_ENCIPHERMENT, "dataEncipherment"),
        (X509KeyUsage::KEY_AGREEMENT, "keyAgreement"),
        (X509KeyUsage::KEY_CERT_SIGN, "keyCertSign"),
        (X509KeyUsage::CRL_SIGN, "cRLSign"),
        (X509KeyUsage::ENCIPHER_ONLY, "encipherOnly"),
        (X509KeyUsage::DECIPHER_ONLY, "decipherOnly"),
    ];
    flag_names(&all, |f| ku.contains(f), "nothing")
}

fn eku_names(eku: X509ExtendedKeyUsage) -> String {
    let all = [
        (X509ExtendedKeyUsage::SSL_SERVER, "serverAuth"),
        (X509ExtendedKeyUsage::SSL_CLIENT, "clientAuth"),
        (X509ExtendedKeyUsage::CODE_SIGN, "codeSigning"),
        (X509ExtendedKeyUsage::OCSP_SIGN, "OCSPSigning"),
        (X509ExtendedKeyUsage::TIMESTAMP, "timeStamping"),
        (X509ExtendedKeyUsage::DVCS, "dvcs"),
        (X509ExtendedKeyUsage::SGC, "serverGatedCrypto"),
    ];
    flag_names(&all, |f| eku.contains(f), "other purposes")
}

/// The names of the flags that are set, comma-separated, or `none` when no flag is.
fn flag_names<F: Copy>(all: &[(F, &str)], set: impl Fn(F) -> bool, none: &str) -> String {
    let names: Vec<&str> = all
        .iter()
        .filter(|(f, _)| set(*f))
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        none.into()
    } else {
        names.join(", ")
    }
}

fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

fn openssl_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason())
        .unwrap_or("unreadable input")
        .to_string()
}

// ---- PKCS#12 ------------------------------------------------------------------------

/// Why a PKCS#12 bundle was refused or could not be opened. The messages never contain
/// the password or key material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Pkcs12Error {
    #[error("not a PKCS#12 bundle: {0}")]
    Malformed(String),
    #[error("{0}")]
    Refused(String),
    #[error("wrong password for the PKCS#12 bundle")]
    WrongPassword,
    #[error("the PKCS#12 bundle cannot be opened: {0}")]
    Unreadable(String),
    #[error("cannot build the PKCS#12 bundle: {0}")]
    Build(String),
}

/// What [`check_pkcs12`] found in an acceptable bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs12Info {
    /// Upper-case hex SHA-256 of each certificate readable without the password.
    pub certificate_ids: Vec<String>,
    /// How the private key is protected, e.g. `PBES2/PBKDF2-SHA256/AES-256-CBC`.
    pub protection: String,
    /// PBKDF2 iteration count (scrypt: the cost parameter N; legacy PKCS#12 PBE: its count).
    pub iterations: u64,
}

/// Smallest PBKDF2 iteration count accepted for a PKCS#12 private key.
pub const MIN_PKCS12_ITERATIONS: u64 = 10_000;

const REEXPORT: &str = "re-export it with `openssl pkcs12 -export -keypbe AES-256-CBC -certpbe NONE -iter 100000 -macalg sha256 ...`";

const OID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const OID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const OID_KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");
const OID_SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const OID_CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
const OID_SAFE_CONTENTS_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.6");
const OID_X509_CERT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
const OID_PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const OID_PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");
const OID_SCRYPT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11591.4.11");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

fn oid_name(o: &ObjectIdentifier) -> Option<&'static str> {
    Some(match o.to_string().as_str() {
        "1.2.840.113549.1.12.1.1" => "pbeWithSHAAnd128BitRC4",
        "1.2.840.113549.1.12.1.2" => "pbeWithSHAAnd40BitRC4",
        "1.2.840.113549.1.12.1.3" => "pbeWithSHAAnd3-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.4" => "pbeWithSHAAnd2-KeyTripleDES-CBC",
        "1.2.840.113549.1.12.1.5" => "pbeWithSHAAnd128BitRC2-CBC",
        "1.2.840.113549.1.12.1.6" => "pbeWithSHAAnd40BitRC2-CBC",
        "1.2.840.113549.1.5.1" => "pbeWithMD2AndDES-CBC",
        "1.2.840.113549.1.5.3" => "pbeWithMD5AndDES-CBC",
        "1.2.840.113549.1.5.4" => "pbeWithMD2AndRC2-CBC",
        "1.2.840.113549.1.5.6" => "pbeWithMD5AndRC2-CBC",
        "1.2.840.113549.1.5.10" => "pbeWithSHA1AndDES-CBC",
        "1.2.840.113549.1.5.11" => "pbeWithSHA1AndRC2-CBC",
        "2.16.840.1.101.3.4.1.2" => "AES-128-CBC",
        "2.16.840.1.101.3.4.1.22" => "AES-192-CBC",
        "2.16.840.1.101.3.4.1.42" => "AES-256-CBC",
        "1.2.840.113549.3.7" => "DES-EDE3-CBC",
        "1.2.840.113549.3.2" => "RC2-CBC",
        "1.2.840.113549.3.4" => "RC4",
        "1.3.14.3.2.7" => "DES-CBC",
        "1.2.840.113549.2.7" => "SHA1",
        "1.2.840.113549.2.8" => "SHA224",
        "1.2.840.113549.2.9" => "SHA256",
        "1.2.840.113549.2.10" => "SHA384",
        "1.2.840.113549.2.11" => "SHA512",
        _ => return None,
    })
}

fn name_of(o: &ObjectIdentifier) -> String {
    oid_name(o)
        .map(str::to_string)
        .unwrap_or_else(|| o.to_string())
}

type P12Result<T> = Result<T, Pkcs12Error>;

fn malformed(what: &str) -> Pkcs12Error {
    Pkcs12Error::Malformed(what.to_string())
}

fn context(n: u8) -> Tag {
    Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::new(n),
    }
}

/// The elements of a constructed value with the given tag.
fn children<'a>(any: &AnyRef<'a>, tag: Tag) -> Result<Vec<AnyRef<'a>>, der::Error> {
    if any.tag() != tag {
        return Err(der::Error::from(der::ErrorKind::TagUnexpected {
            expected: Some(tag),
            actual: any.tag(),
        }));
    }
    let mut r = SliceReader::new(any.value())?;
    let mut out = Vec::new();
    while !r.is_finished() {
        out.push(r.decode::<AnyRef<'a>>()?);
    }
    Ok(out)
}

fn oid(any: &AnyRef<'_>) -> Result<ObjectIdentifier, der::Error> {
    any.decode_as::<ObjectIdentifier>()
}

fn seq<'a>(any: &AnyRef<'a>, what: &str) -> P12Result<Vec<AnyRef<'a>>> {
    children(any, Tag::Sequence).map_err(|_| malformed(what))
}

/// The inner value of an `[n] EXPLICIT` wrapper.
fn explicit<'a>(any: &AnyRef<'a>, n: u8, what: &str) -> P12Result<AnyRef<'a>> {
    if any.tag() != context(n) {
        return Err(malformed(what));
    }
    AnyRef::from_der(any.value()).map_err(|_| malformed(what))
}

/// An encryption algorithm found in the bundle.
struct Protection {
    name: String,
    iterations: u64,
}

/// Judges one AlgorithmIdentifier used to encrypt a key or a SafeContents.
fn judge_algorithm(alg: &AnyRef<'_>, allow_legacy_3des: bool, what: &str) -> P12Result<Protection> {
    let parts = seq(alg, "bad AlgorithmIdentifier")?;
    let id = oid(parts
        .first()
        .ok_or_else(|| malformed("empty AlgorithmIdentifier"))?)
    .map_err(|_| malformed("bad algorithm OID"))?;
    let id_s = id.to_string();
    if id == OID_PBES2 {
        let params = seq(
            parts
                .get(1)
                .ok_or_else(|| malformed("PBES2 without parameters"))?,
            "bad PBES2 parameters",
        )?;
        if params.len() < 2 {
            return Err(malformed("bad PBES2 parameters"));
        }
        let kdf = seq(&params[0], "bad PBES2 key derivation")?;
        let enc = seq(&params[1], "bad PBES2 encryption scheme")?;
        let kdf_oid = oid(kdf
            .first()
            .ok_or_else(|| malformed("bad PBES2 key derivation"))?)
        .map_err(|_| malformed("bad PBES2 key derivation"))?;
        let enc_oid = oid(enc
            .first()
            .ok_or_else(|| malformed("bad PBES2 encryption scheme"))?)
        .map_err(|_| malformed("bad PBES2 encryption scheme"))?;
        let cipher = name_of(&enc_oid);
        let legacy_cipher = cipher == "DES-EDE3-CBC";
        if !(cipher.starts_with("AES-") || (legacy_cipher && allow_legacy_3des)) {
            return Err(Pkcs12Error::Refused(format!(
                "{what} is encrypted with PBES2/{cipher}, which is not accepted; {REEXPORT}"
            )));
        }
        if kdf_oid == OID_PBKDF2 {
            let p = seq(
                kdf.get(1)
                    .ok_or_else(|| malformed("PBKDF2 without parameters"))?,
                "bad PBKDF2 parameters",
            )?;
            let iterations = p
                .get(1)
                .and_then(|i| i.decode_as::<u64>().ok())
                .ok_or_else(|| malformed("bad PBKDF2 iteration count"))?;
            // prf AlgorithmIdentifier DEFAULT hmacWithSHA1, after the optional keyLength.
            let prf = match p.iter().skip(2).find(|x| x.tag() == Tag::Sequence) {
                Some(a) => {
                    let ap = seq(a, "bad PBKDF2 PRF")?;
                    name_of(
                        &oid(ap.first().ok_or_else(|| malformed("bad PBKDF2 PRF"))?)
                            .map_err(|_| malformed("bad PBKDF2 PRF"))?,
                    )
                }
                None => "SHA1".to_string(),
            };
            if !matches!(prf.as_str(), "SHA256" | "SHA384" | "SHA512") {
                return Err(Pkcs12Error::Refused(format!(
                    "{what} is protected with PBKDF2 using HMAC-{prf}; HMAC-SHA256, -SHA384 or -SHA512 is required; {REEXPORT}"
                )));
            }
            if iterations < MIN_PKCS12_ITERATIONS {
                return Err(Pkcs12Error::Refused(format!(
                    "{what} is protected with only {iterations} PBKDF2 iterations; at least {MIN_PKCS12_ITERATIONS} are required; {REEXPORT}"
                )));
            }
            return Ok(Protection {
                name: format!("PBES2/PBKDF2-{prf}/{cipher}"),
                iterations,
            });
        }
        if kdf_oid == OID_SCRYPT {
            let p = seq(
                kdf.get(1)
                    .ok_or_else(|| malformed("scrypt without parameters"))?,
                "bad scrypt parameters",
            )?;
            let cost = p
                .get(1)
                .and_then(|i| i.decode_as::<u64>().ok())
                .ok_or_else(|| malformed("bad scrypt cost parameter"))?;
            return Ok(Protection {
                name: format!("PBES2/scrypt/{cipher}"),
                iterations: cost,
            });
        }
        return Err(Pkcs12Error::Refused(format!(
            "{what} uses the key derivation {}, which is not accepted (PBKDF2 or scrypt are); {REEXPORT}",
            name_of(&kdf_oid)
        )));
    }
    if id_s == "1.2.840.113549.1.12.1.3" {
        let iterations = parts
            .get(1)
            .and_then(|p| children(p, Tag::Sequence).ok())
            .and_then(|p| p.get(1).and_then(|i| i.decode_as::<u64>().ok()))
            .unwrap_or(0);
        if allow_legacy_3des {
            return Ok(Protection {
                name: "pbeWithSHAAnd3-KeyTripleDES-CBC".into(),
                iterations,
            });
        }
        return Err(Pkcs12Error::Refused(format!(
            "{what} is encrypted with the legacy pbeWithSHAAnd3-KeyTripleDES-CBC, which this server does not accept; {REEXPORT}"
        )));
    }
    Err(Pkcs12Error::Refused(format!(
        "{what} is encrypted with {}, which is never accepted; {REEXPORT}",
        name_of(&id)
    )))
}

#[derive(Default)]
struct Walk {
    cert_ids: Vec<String>,
    encrypted_cert_sets: usize,
    keys: Vec<Protection>,
}

/// Walks SafeContents ::= SEQUENCE OF SafeBag (readable without the password).
fn walk_safe_contents(
    sc: &AnyRef<'_>,
    allow_legacy_3des: bool,
    walk: &mut Walk,
    depth: u8,
) -> P12Result<()> {
    if depth > 4 {
        return Err(malformed("SafeContents nested too deep"));
    }
    for bag in seq(sc, "bad SafeContents")? {
        let parts = seq(&bag, "bad SafeBag")?;
        if parts.len() < 2 {
            return Err(malformed("bad SafeBag"));
        }
        let bag_id = oid(&parts[0]).map_err(|_| malformed("bad SafeBag type"))?;
        let value = explicit(&parts[1], 0, "bad SafeBag value")?;
        if bag_id == OID_KEY_BAG {
            return Err(Pkcs12Error::Refused(format!(
                "the private key in the PKCS#12 is not encrypted; {REEXPORT}"
            )));
        } else if bag_id == OID_SHROUDED_KEY_BAG {
            let epki = seq(&value, "bad EncryptedPrivateKeyInfo")?;
            let alg = epki
                .first()
                .ok_or_else(|| malformed("bad EncryptedPrivateKeyInfo"))?;
            walk.keys
                .push(judge_algorithm(alg, allow_legacy_3des, "the private key")?);
        } else if bag_id == OID_CERT_BAG {
            let cb = seq(&value, "bad CertBag")?;
            if cb.len() < 2 {
                return Err(malformed("bad CertBag"));
            }
            if oid(&cb[0]).ok() != Some(OID_X509_CERT) {
                continue;
            }
            let inner = explicit(&cb[1], 0, "bad CertBag value")?;
            let cert_der = inner
                .decode_as::<der::asn1::OctetStringRef<'_>>()
                .map_err(|_| malformed("bad CertBag value"))?;
            walk.cert_ids
                .push(hex::encode_upper(Sha256::digest(cert_der.as_bytes())));
        } else if bag_id == OID_SAFE_CONTENTS_BAG {
            walk_safe_contents(&value, allow_legacy_3des, walk, depth + 1)?;
        }
    }
    Ok(())
}

/// Checks a PKCS#12 bundle without its password: every private key is encrypted with an
/// accepted algorithm (PBES2 with AES and PBKDF2-HMAC-SHA256/384/512 with at least
/// [`MIN_PKCS12_ITERATIONS`] iterations, or scrypt; pbeWithSHAAnd3-KeyTripleDES-CBC only
/// with `allow_legacy_3des`), and at least one certificate is readable without the
/// password, so the server can tell whose key it is.
pub fn check_pkcs12(bytes: &[u8], allow_legacy_3des: bool) -> Result<Pkcs12Info, Pkcs12Error> {
    let pfx = AnyRef::from_der(bytes).map_err(|_| malformed("not DER"))?;
    let items = seq(&pfx, "bad PFX")?;
    if items.len() < 2 || items[0].decode_as::<u64>().ok() != Some(3) {
        return Err(malformed("not a version 3 PFX"));
    }
    let auth_safe = seq(&items[1], "bad authSafe")?;
    let ct = oid(auth_safe.first().ok_or_else(|| malformed("bad authSafe"))?)
        .map_err(|_| malformed("bad authSafe"))?;
    if ct != OID_DATA {
        return Err(Pkcs12Error::Refused(format!(
            "the bundle uses public-key integrity mode ({ct}); export it with a password MAC instead"
        )));
    }
    let content = explicit(
        auth_safe
            .get(1)
            .ok_or_else(|| malformed("empty authSafe"))?,
        0,
        "bad authSafe content",
    )?;
    let auth_der = content
        .decode_as::<der::asn1::OctetStringRef<'_>>()
        .map_err(|_| malformed("bad authSafe content"))?;
    let infos =
        AnyRef::from_der(auth_der.as_bytes()).map_err(|_| malformed("bad AuthenticatedSafe"))?;

    let mut walk = Walk::default();
    for ci in seq(&infos, "bad AuthenticatedSafe")? {
        let parts = seq(&ci, "bad ContentInfo")?;
        let ct = oid(parts.first().ok_or_else(|| malformed("bad ContentInfo"))?)
            .map_err(|_| malformed("bad ContentInfo"))?;
        let body = explicit(
            parts.get(1).ok_or_else(|| malformed("empty ContentInfo"))?,
            0,
            "bad ContentInfo content",
        )?;
        if ct == OID_DATA {
            let sc = body
                .decode_as::<der::asn1::OctetStringRef<'_>>()
                .map_err(|_| malformed("bad data ContentInfo"))?;
            let sc = AnyRef::from_der(sc.as_bytes()).map_err(|_| malformed("bad SafeContents"))?;
            walk_safe_contents(&sc, allow_legacy_3des, &mut walk, 0)?;
        } else if ct == OID_ENCRYPTED_DATA {
            // EncryptedData ::= SEQUENCE { version, EncryptedContentInfo ::= SEQUENCE {
            //   contentType, contentEncryptionAlgorithm, [0] IMPLICIT encryptedContent } }
            let ed = seq(&body, "bad EncryptedData")?;
            let eci = seq(
                ed.get(1).ok_or_else(|| malformed("bad EncryptedData"))?,
                "bad EncryptedContentInfo",
            )?;
            let alg = eci
                .get(1)
                .ok_or_else(|| malformed("bad EncryptedContentInfo"))?;
            judge_algorithm(
                alg,
                allow_legacy_3des,
                "a part of the bundle (encryptedData)",
            )?;
            walk.encrypted_cert_sets += 1;
        } else {
            return Err(Pkcs12Error::Refused(format!(
                "the bundle holds a content of type {ct} (e.g. envelopedData), which is not supported; {REEXPORT}"
            )));
        }
    }
    let Some(first) = walk.keys.first() else {
        return Err(Pkcs12Error::Refused(
            "the bundle holds no encrypted private key".into(),
        ));
    };
    if walk.cert_ids.is_empty() {
        return Err(Pkcs12Error::Refused(if walk.encrypted_cert_sets > 0 {
            "every certificate in the bundle is encrypted, so the server cannot check whose key it is; export it with the certificates in clear (`openssl pkcs12 -export -keypbe AES-256-CBC -certpbe NONE ...`)".to_string()
        } else {
            "the bundle holds no certificate; export it together with the certificate (`openssl pkcs12 -export -in CERT -inkey KEY -keypbe AES-256-CBC -certpbe NONE ...`)".to_string()
        }));
    }
    Ok(Pkcs12Info {
        certificate_ids: walk.cert_ids,
        protection: first.name.clone(),
        iterations: walk.keys.iter().map(|k| k.iterations).min().unwrap_or(0),
    })
}

/// Decrypts a PKCS#12 bundle: its private key and the certificate that goes with it.
pub fn open_pkcs12(bytes: &[u8], password: &str) -> Result<(PKey<Private>, X509), Pkcs12Error> {
    let parsed = parse_pkcs12(bytes, password)?;
    let key = parsed
        .pkey
        .ok_or_else(|| Pkcs12Error::Unreadable("the bundle holds no private key".into()))?;
    let cert = parsed
        .cert
        .ok_or_else(|| Pkcs12Error::Unreadable("the bundle holds no certificate".into()))?;
    Ok((key, cert))
}

fn parse_pkcs12(
    bytes: &[u8],
    password: &str,
) -> Result<openssl::pkcs12::ParsedPkcs12_2, Pkcs12Error> {
    let p12 = Pkcs12::from_der(bytes).map_err(|e| Pkcs12Error::Malformed(openssl_reason(&e)))?;
    p12.parse2(password).map_err(|e| {
        let reason = openssl_reason(&e);
        if reason.contains("mac verify failure") || reason.contains("bad decrypt") {
            Pkcs12Error::WrongPassword
        } else {
            Pkcs12Error::Unreadable(reason)
        }
    })
}

/// PBKDF2 iterations of the bundles [`reprotect_pkcs12`] writes.
pub const REPROTECT_ITERATIONS: u32 = 100_000;

/// Re-encrypts a PKCS#12 bundle under a new password: the key with PBES2 AES-256-CBC and
/// PBKDF2-HMAC-SHA256 ([`REPROTECT_ITERATIONS`]), the certificates unencrypted, the MAC
/// with SHA-256. The result passes [`check_pkcs12`].
pub fn reprotect_pkcs12(
    bytes: &[u8],
    old_password: &str,
    new_password: &str,
) -> Result<Vec<u8>, Pkcs12Error> {
    let parsed = parse_pkcs12(bytes, old_password)?;
    let key = parsed
        .pkey
        .ok_or_else(|| Pkcs12Error::Unreadable("the bundle holds no private key".into()))?;
    let cert = parsed
        .cert
        .ok_or_else(|| Pkcs12Error::Unreadable("the bundle holds no certificate".into()))?;
    let build = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut b = Pkcs12::builder();
        b.pkey(&key)
            .cert(&cert)
            .key_algorithm(Nid::AES_256_CBC)
            // -1: PKCS12_create leaves the certificates unencrypted.
            .cert_algorithm(Nid::from_raw(-1))
            .key_iter(REPROTECT_ITERATIONS)
            .mac_iter(REPROTECT_ITERATIONS)
            .mac_md(MessageDigest::sha256());
        if let Some(ca) = parsed.ca {
            b.ca(ca);
        }
        b.build2(new_password)?.to_der()
    };
    build().map_err(|e| Pkcs12Error::Build(openssl_reason(&e)))
}
