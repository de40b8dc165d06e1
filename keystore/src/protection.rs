//! Verification of password-protected private keys and of escrow blobs, and generation of
//! server-side protected keys (recovery model 5).
//!
//! The server never sees a private key unprotected: a private-key upload is accepted only
//! when every secret key packet is encrypted with a password-based S2K that is expensive
//! to attack (iterated+salted with at least a configured count, or Argon2), or when the
//! whole upload is a password-encrypted (SKESK) message in the style of an Autocrypt Setup
//! Message. An escrow blob is accepted only when it is an encrypted message whose every
//! recipient is an encryption subkey of an active officer key.
//!
//! These functions are pure (no database); the JMAP service and the escrow commands share
//! them. Error messages describe the problem and never contain key material.

use std::time::SystemTime;

use openpgp::cert::prelude::*;
use openpgp::crypto::Password;
use openpgp::packet::key::SecretKeyMaterial;
use openpgp::packet::{Packet, PKESK, SKESK};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
use openpgp::serialize::SerializeInto;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};

use crate::policy;

/// `[protection]`-style settings for private-key uploads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectionConfig {
    /// Smallest accepted iterated+salted S2K count (bytes hashed). gpg's default export
    /// uses 65011712 (calibrated; never below 65536 on slow machines), OpenPGP.js uses
    /// 16777216, sequoia 65011712.
    pub min_s2k_count: u32,
    /// Largest accepted private-key or escrow upload, in bytes.
    pub max_blob_size: usize,
    /// Accept PKCS#12 bundles protected with the legacy pbeWithSHAAnd3-KeyTripleDES-CBC
    /// (what older Windows and macOS versions export). PBES2 with AES is always accepted.
    pub allow_legacy_pkcs12: bool,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        ProtectionConfig {
            min_s2k_count: 1_048_576,
            max_blob_size: 256 * 1024,
            allow_legacy_pkcs12: false,
        }
    }
}

/// How an accepted private key is protected (the `protection` JMAP property).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// `"s2k"`: every secret key packet is password-encrypted; `"skesk"`: the whole blob
    /// is a password-encrypted message.
    pub kind: String,
    /// `"iterated-salted"` or `"argon2"`.
    pub s2k: String,
    /// Symmetric cipher, e.g. `"AES-128"`.
    pub cipher: String,
    /// Smallest iterated+salted count found (absent for Argon2).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u32>,
}

/// Why a private-key or escrow upload was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtectionError {
    #[error("the upload is empty")]
    Empty,
    #[error("the upload is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("not an OpenPGP secret key or encrypted message: {0}")]
    Unparsable(String),
    #[error("the upload holds {0} certificates; upload exactly one secret key")]
    SeveralCerts(usize),
    #[error("the upload holds no secret key material (it is a public key)")]
    NoSecret,
    #[error("secret key {0} is not encrypted: protect it with a password before uploading (nothing was stored)")]
    Unprotected(String),
    #[error("secret key {fingerprint} is protected with a weak S2K ({what}); use iterated+salted with a count of at least {min} or Argon2")]
    WeakS2k {
        fingerprint: String,
        what: String,
        min: u32,
    },
    #[error("the PKCS#12 bundle is refused: {0}")]
    Pkcs12(String),
    #[error("the secret key {0} does not belong to a public key of this account")]
    NoMatchingPublicKey(String),
    #[error("the secret key's subkey {0} is not part of the stored public key")]
    ForeignSubkey(String),
    #[error("the encrypted message is not protected by a password (no SKESK packet)")]
    NoSkesk,
    #[error("the message is not encrypted (found a {0} packet outside an encrypted container)")]
    NotEncrypted(String),
    #[error("the encrypted message has a password packet with a weak S2K ({what}); use iterated+salted with a count of at least {min} or Argon2")]
    WeakSkesk { what: String, min: u32 },
    #[error("the escrow blob has no recipient (PKESK) packet")]
    NoRecipient,
    #[error("the escrow blob is addressed to {0}, which is not an encryption subkey of an active officer key")]
    ForeignRecipient(String),
    #[error(
        "the escrow blob has an anonymous (wildcard) recipient; address it to the officer key"
    )]
    WildcardRecipient,
    #[error("the escrow blob must be encrypted to officer keys only, not to a password")]
    EscrowWithPassword,
    #[error("there is no active officer key to escrow to")]
    NoOfficerKey,
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A private-key upload that passed verification.
#[derive(Clone, Debug)]
pub struct VerifiedPrivateKey {
    /// Upper-case hex fingerprint of the public key it belongs to (also the private key's id).
    pub fingerprint: String,
    /// `KeyKind` string of that public key: "openpgp" or "x509" (a PKCS#12 bundle).
    pub kind: String,
    pub protection: Protection,
    /// The upload as text: armored uploads are kept as uploaded, binary ones are armored.
    pub armored: String,
}

/// An escrow upload that passed verification.
#[derive(Clone, Debug)]
pub struct VerifiedEscrow {
    /// Primary fingerprint of the (first) officer key the blob is addressed to.
    pub officer_fingerprint: String,
    /// Every officer key the blob is addressed to.
    pub officer_fingerprints: Vec<String>,
    pub armored: String,
}

fn short(e: &anyhow::Error) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("unreadable input")
        .to_string()
}

fn check_size(bytes: &[u8], config: &ProtectionConfig) -> Result<(), ProtectionError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ProtectionError::Empty);
    }
    if bytes.len() > config.max_blob_size {
        return Err(ProtectionError::TooLarge {
            size: bytes.len(),
            max: config.max_blob_size,
        });
    }
    Ok(())
}

fn cipher_name(a: SymmetricAlgorithm) -> String {
    match a {
        SymmetricAlgorithm::AES128 => "AES-128".into(),
        SymmetricAlgorithm::AES192 => "AES-192".into(),
        SymmetricAlgorithm::AES256 => "AES-256".into(),
        other => other.to_string(),
    }
}

/// Classifies an S2K: `Ok((name, count))` when strong enough, else a description.
#[allow(deprecated)]
fn check_s2k(s2k: &openpgp::crypto::S2K, min: u32) -> Result<(&'static str, Option<u32>), String> {
    use openpgp::crypto::S2K;
    match s2k {
        S2K::Argon2 { .. } => Ok(("argon2", None)),
        S2K::Iterated { hash_bytes, .. } if *hash_bytes >= min => {
            Ok(("iterated-salted", Some(*hash_bytes)))
        }
        S2K::Iterated { hash_bytes, .. } => Err(format!("iterated+salted with count {hash_bytes}")),
        S2K::Salted { .. } => Err("salted without iteration".into()),
        S2K::Simple { .. } => Err("simple, unsalted".into()),
        S2K::Implicit => Err("implicit MD5".into()),
        S2K::Private { tag, .. } => Err(format!("private S2K type {tag}")),
        S2K::Unknown { tag, .. } => Err(format!("unknown S2K type {tag}")),
        _ => Err("unsupported S2K".into()),
    }
}

/// GnuPG's "gnu-dummy" stub: the secret part is not present at all (e.g. an offline
/// primary key). It holds nothing secret, so it needs no protection.
fn is_gnu_dummy(s2k: &openpgp::crypto::S2K) -> bool {
    matches!(s2k, openpgp::crypto::S2K::Private { tag: 101, parameters: Some(p) } if p.starts_with(b"GNU\x01"))
}

fn text_of(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.trim_start().starts_with("-----BEGIN PGP"))
        .map(|s| s.to_string())
}

/// Verifies a private-key upload for an account whose stored public keys are `public_keys`
/// (armored). `claimed` is the public key id the client names, required for a SKESK
/// message (whose content the server cannot read) and checked against the key otherwise.
pub fn verify_private_key(
    bytes: &[u8],
    public_keys: &[(String, String)],
    claimed: Option<&str>,
    config: &ProtectionConfig,
) -> Result<VerifiedPrivateKey, ProtectionError> {
    check_size(bytes, config)?;
    if let Some(p12) = pkcs12_der(bytes) {
        return verify_pkcs12(&p12, public_keys, claimed, config);
    }
    if looks_like_message(bytes) {
        let protection = verify_skesk_message(bytes, config)?;
        let Some(fpr) = claimed else {
            return Err(ProtectionError::NoMatchingPublicKey(
                "(an encrypted message names no key: give publicKeyId)".into(),
            ));
        };
        let fpr = fpr.to_uppercase();
        if !public_keys.iter().any(|(f, _)| *f == fpr) {
            return Err(ProtectionError::NoMatchingPublicKey(fpr));
        }
        let armored = match text_of(bytes) {
            Some(t) => {
                // Kept as uploaded, so it must parse as a whole.
                armor_message(bytes)?;
                t
            }
            None => armor_message(bytes)?,
        };
        return Ok(VerifiedPrivateKey {
            fingerprint: fpr,
            kind: "openpgp".into(),
            protection,
            armored,
        });
    }

    let parser =
        CertParser::from_bytes(bytes).map_err(|e| ProtectionError::Unparsable(short(&e)))?;
    let mut certs = Vec::new();
    for c in parser {
        certs.push(c.map_err(|e| ProtectionError::Unparsable(short(&e)))?);
    }
    let cert = match certs.len() {
        0 => {
            return Err(ProtectionError::Unparsable(
                "no key found in the input".into(),
            ))
        }
        1 => certs.pop().expect("one"),
        n => return Err(ProtectionError::SeveralCerts(n)),
    };
    let fpr = cert.fingerprint().to_hex();
    let protection = check_secret_protection(&cert, config)?;

    // The public part must be a stored public key of the account, subkeys included.
    let Some((_, stored)) = public_keys.iter().find(|(f, _)| *f == fpr) else {
        return Err(ProtectionError::NoMatchingPublicKey(fpr));
    };
    if let Some(c) = claimed {
        if !c.eq_ignore_ascii_case(&fpr) {
            return Err(ProtectionError::NoMatchingPublicKey(fpr));
        }
    }
    let stored = Cert::from_bytes(stored.as_bytes())
        .map_err(|e| ProtectionError::Unparsable(format!("stored public key: {}", short(&e))))?;
    for ka in cert.keys().secret() {
        let sub = ka.key().fingerprint();
        if !stored.keys().any(|k| k.key().fingerprint() == sub) {
            return Err(ProtectionError::ForeignSubkey(sub.to_hex()));
        }
        let a = ka.key().parts_as_public().mpis();
        let b = stored
            .keys()
            .find(|k| k.key().fingerprint() == sub)
            .map(|k| k.key().mpis().clone());
        if b.as_ref() != Some(a) {
            return Err(ProtectionError::ForeignSubkey(sub.to_hex()));
        }
    }
    let armored = match text_of(bytes) {
        Some(t) => t,
        None => String::from_utf8(
            cert.as_tsk()
                .armored()
                .to_vec()
                .map_err(|e| ProtectionError::Unparsable(short(&e)))?,
        )
        .expect("armor is ASCII"),
    };
    Ok(VerifiedPrivateKey {
        fingerprint: fpr,
        kind: "openpgp".into(),
        protection,
        armored,
    })
}

/// A PKCS#12 bundle (S/MIME private key): encrypted with a modern PBE, and holding, in
/// clear, a certificate stored for the account.
fn verify_pkcs12(
    der: &[u8],
    public_keys: &[(String, String)],
    claimed: Option<&str>,
    config: &ProtectionConfig,
) -> Result<VerifiedPrivateKey, ProtectionError> {
    let info = crate::x509::check_pkcs12(der, config.allow_legacy_pkcs12)
        .map_err(|e| ProtectionError::Pkcs12(e.to_string()))?;
    let stored = |id: &String| public_keys.iter().any(|(f, _)| f == id);
    let id = match claimed {
        Some(c) => {
            let c = c.to_uppercase();
            if !info.certificate_ids.contains(&c) || !stored(&c) {
                return Err(ProtectionError::NoMatchingPublicKey(c));
            }
            c
        }
        None => info
            .certificate_ids
            .iter()
            .find(|id| stored(id))
            .cloned()
            .ok_or_else(|| {
                ProtectionError::NoMatchingPublicKey(
                    info.certificate_ids
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "(no certificate)".into()),
                )
            })?,
    };
    Ok(VerifiedPrivateKey {
        fingerprint: id,
        kind: "x509".into(),
        protection: Protection {
            kind: "pkcs12".into(),
            // e.g. "PBES2/PBKDF2-SHA256/AES-256-CBC": the cipher is the last part.
            cipher: info
                .protection
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            s2k: info.protection.clone(),
            count: u32::try_from(info.iterations).ok(),
        },
        armored: pkcs12_pem(der),
    })
}

const PKCS12_PEM: &str = "PKCS12";

/// The DER bytes of an upload that is a PKCS#12 bundle, binary or PEM ("PKCS12").
pub fn pkcs12_der(bytes: &[u8]) -> Option<Vec<u8>> {
    use crate::x509::{detect, Detected};
    let text = std::str::from_utf8(bytes).ok().map(str::trim_start);
    if let Some(t) = text.filter(|t| t.starts_with(&format!("-----BEGIN {PKCS12_PEM}-----"))) {
        let body: String = t
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        use base64::Engine;
        return base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .ok();
    }
    (detect(bytes) == Detected::Pkcs12).then(|| bytes.to_vec())
}

/// A PKCS#12 bundle as PEM text for storage next to armored OpenPGP keys.
pub fn pkcs12_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PKCS12_PEM}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PKCS12_PEM}-----\n"));
    out
}

/// Checks that every secret key packet of `cert` is password-encrypted with a strong S2K.
pub fn check_secret_protection(
    cert: &Cert,
    config: &ProtectionConfig,
) -> Result<Protection, ProtectionError> {
    let mut found = 0;
    let mut s2k_name = "";
    let mut cipher = String::new();
    let mut min_count: Option<u32> = None;
    for ka in cert.keys().secret() {
        let key_fpr = ka.key().fingerprint().to_hex();
        match ka.key().optional_secret() {
            None => {}
            Some(SecretKeyMaterial::Unencrypted(_)) => {
                return Err(ProtectionError::Unprotected(key_fpr))
            }
            Some(SecretKeyMaterial::Encrypted(e)) => {
                if is_gnu_dummy(e.s2k()) {
                    continue;
                }
                let (name, count) = check_s2k(e.s2k(), config.min_s2k_count).map_err(|what| {
                    ProtectionError::WeakS2k {
                        fingerprint: key_fpr.clone(),
                        what,
                        min: config.min_s2k_count,
                    }
                })?;
                found += 1;
                if s2k_name.is_empty() || name == "iterated-salted" {
                    s2k_name = name;
                }
                cipher = cipher_name(e.algo());
                if let Some(c) = count {
                    min_count = Some(min_count.map_or(c, |m: u32| m.min(c)));
                }
            }
        }
    }
    if found == 0 {
        return Err(ProtectionError::NoSecret);
    }
    Ok(Protection {
        kind: "s2k".into(),
        s2k: s2k_name.into(),
        cipher,
        count: min_count,
    })
}

/// True when the bytes are (armored or binary) an OpenPGP message rather than a key.
fn looks_like_message(bytes: &[u8]) -> bool {
    if let Ok(s) = std::str::from_utf8(bytes) {
        let t = s.trim_start();
        if t.starts_with("-----BEGIN PGP MESSAGE-----") {
            return true;
        }
        if t.starts_with("-----BEGIN PGP") {
            return false;
        }
    }
    matches!(
        PacketParser::from_bytes(bytes),
        Ok(PacketParserResult::Some(ref pp))
            if matches!(pp.packet, Packet::SKESK(_) | Packet::PKESK(_) | Packet::SEIP(_))
    )
}

/// Recipients and password packets found at the top level of an encrypted message.
struct MessageShape {
    skesks: Vec<SKESK>,
    pkesks: Vec<PKESK>,
}

fn message_shape(bytes: &[u8]) -> Result<MessageShape, ProtectionError> {
    let mut shape = MessageShape {
        skesks: Vec::new(),
        pkesks: Vec::new(),
    };
    let mut containers = 0;
    let mut ppr =
        PacketParser::from_bytes(bytes).map_err(|e| ProtectionError::Unparsable(short(&e)))?;
    while let PacketParserResult::Some(pp) = ppr {
        if pp.recursion_depth() == 0 {
            match &pp.packet {
                Packet::SKESK(s) => shape.skesks.push(s.clone()),
                Packet::PKESK(p) => shape.pkesks.push(p.clone()),
                Packet::SEIP(_) => containers += 1,
                Packet::Marker(_) | Packet::Padding(_) => {}
                Packet::Unknown(u) => {
                    return Err(ProtectionError::Unparsable(format!(
                        "unreadable {} packet",
                        u.tag()
                    )))
                }
                other => return Err(ProtectionError::NotEncrypted(other.tag().to_string())),
            }
        }
        // Not decrypted, so `next` skips the container's body.
        let (_, next) = pp
            .next()
            .map_err(|e| ProtectionError::Unparsable(short(&e)))?;
        ppr = next;
    }
    if containers != 1 {
        return Err(ProtectionError::Unparsable(format!(
            "expected one encrypted data packet, found {containers}"
        )));
    }
    Ok(shape)
}

fn verify_skesk_message(
    bytes: &[u8],
    config: &ProtectionConfig,
) -> Result<Protection, ProtectionError> {
    let shape = message_shape(bytes)?;
    if shape.skesks.is_empty() {
        return Err(ProtectionError::NoSkesk);
    }
    let mut s2k_name = "";
    let mut cipher = String::new();
    let mut min_count: Option<u32> = None;
    for s in &shape.skesks {
        let (s2k, algo) = match s {
            SKESK::V4(s) => (s.s2k(), s.symmetric_algo()),
            SKESK::V6(s) => (s.s2k(), s.symmetric_algo()),
            _ => return Err(ProtectionError::Unparsable("unknown SKESK version".into())),
        };
        let (name, count) =
            check_s2k(s2k, config.min_s2k_count).map_err(|what| ProtectionError::WeakSkesk {
                what,
                min: config.min_s2k_count,
            })?;
        s2k_name = name;
        cipher = cipher_name(algo);
        if let Some(c) = count {
            min_count = Some(min_count.map_or(c, |m: u32| m.min(c)));
        }
    }
    Ok(Protection {
        kind: "skesk".into(),
        s2k: s2k_name.into(),
        cipher,
        count: min_count,
    })
}

fn armor_message(bytes: &[u8]) -> Result<String, ProtectionError> {
    // Armor the packets as parsed, not the upload's bytes: an upload the parser read as
    // armor but that is not UTF-8 text would otherwise be armored twice, and unreadable.
    let binary = openpgp::PacketPile::from_bytes(bytes)
        .and_then(|pile| pile.to_vec())
        .map_err(|e| ProtectionError::Unparsable(short(&e)))?;
    let mut out = Vec::new();
    let mut w = openpgp::armor::Writer::new(&mut out, openpgp::armor::Kind::Message)
        .map_err(|e| ProtectionError::Unparsable(e.to_string()))?;
    std::io::Write::write_all(&mut w, &binary)
        .map_err(|e| ProtectionError::Unparsable(e.to_string()))?;
    w.finalize()
        .map_err(|e| ProtectionError::Unparsable(e.to_string()))?;
    Ok(String::from_utf8(out).expect("armor is ASCII"))
}

/// Verifies an escrow upload: an encrypted message whose every recipient is an encryption
/// subkey of one of the active `officers` (valid now), with no password packet.
pub fn verify_escrow(
    bytes: &[u8],
    officers: &[Cert],
    config: &ProtectionConfig,
) -> Result<VerifiedEscrow, ProtectionError> {
    check_size(bytes, config)?;
    if officers.is_empty() {
        return Err(ProtectionError::NoOfficerKey);
    }
    let shape = message_shape(bytes)?;
    if !shape.skesks.is_empty() {
        return Err(ProtectionError::EscrowWithPassword);
    }
    if shape.pkesks.is_empty() {
        return Err(ProtectionError::NoRecipient);
    }
    let now = SystemTime::now();
    let subkeys: Vec<(String, openpgp::Fingerprint)> = officers
        .iter()
        .flat_map(|c| {
            policy::encryption_keys(c, now)
                .into_iter()
                .map(|k| (c.fingerprint().to_hex(), k.fingerprint()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut targets: Vec<String> = Vec::new();
    for p in &shape.pkesks {
        let Some(handle) = p.recipient() else {
            return Err(ProtectionError::WildcardRecipient);
        };
        let hit = subkeys.iter().find(|(_, sub)| match &handle {
            KeyHandle::Fingerprint(f) => f == sub,
            KeyHandle::KeyID(id) => *id == openpgp::KeyID::from(sub),
        });
        match hit {
            Some((officer, _)) => {
                if !targets.contains(officer) {
                    targets.push(officer.clone());
                }
            }
            None => {
                return Err(ProtectionError::ForeignRecipient(match handle {
                    KeyHandle::Fingerprint(f) => f.to_hex(),
                    KeyHandle::KeyID(id) => id.to_hex(),
                }))
            }
        }
    }
    let armored = match text_of(bytes) {
        Some(t) => {
            // Kept as uploaded, so it must parse as a whole, not only the packets looked at.
            armor_message(bytes)?;
            t
        }
        None => armor_message(bytes)?,
    };
    Ok(VerifiedEscrow {
        officer_fingerprint: targets[0].clone(),
        officer_fingerprints: targets,
        armored,
    })
}

/// Encrypts `data` to the encryption subkeys of the officer keys (valid now), armored.
pub fn encrypt_to_officers(data: &[u8], officers: &[Cert]) -> Result<String, ProtectionError> {
    let now = SystemTime::now();
    let keys: Vec<_> = officers
        .iter()
        .flat_map(|c| policy::encryption_keys(c, now))
        .collect();
    if keys.is_empty() {
        return Err(ProtectionError::NoOfficerKey);
    }
    let g = |e: anyhow::Error| ProtectionError::Generate(short(&e));
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let message = Armorer::new(message).build().map_err(g)?;
        // SEIPDv1 so every OpenPGP implementation the officers may use can decrypt.
        let recipients = keys.iter().map(|k| {
            openpgp::serialize::stream::Recipient::new(
                openpgp::types::Features::empty().set_seipdv1(),
                KeyHandle::from(k.fingerprint()),
                k,
            )
        });
        let message = Encryptor::for_recipients(message, recipients)
            .build()
            .map_err(g)?;
        let mut w = LiteralWriter::new(message).build().map_err(g)?;
        std::io::Write::write_all(&mut w, data)
            .map_err(|e| ProtectionError::Generate(e.to_string()))?;
        w.finalize().map_err(g)?;
    }
    Ok(String::from_utf8(out).expect("armor is ASCII"))
}

/// A key pair generated on the server (recovery model 5).
pub struct GeneratedKey {
    pub cert: Cert,
    /// Armored public key.
    pub public_armored: String,
    /// The verified, password-protected secret key.
    pub private: VerifiedPrivateKey,
    /// The password encrypted to the officer keys.
    pub escrow: VerifiedEscrow,
    /// The random password, to hand to the user once. Never store or log it.
    pub password: String,
}

/// Which key algorithm [`generate_protected_key`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerateAlgorithm {
    Cv25519,
    Rsa3072,
    Rsa4096,
}

/// Generates a key for `user_id`, protects it with a random high-entropy password and
/// escrows the password to the officer keys.
pub fn generate_protected_key(
    user_id: &str,
    algorithm: GenerateAlgorithm,
    officers: &[Cert],
    config: &ProtectionConfig,
) -> Result<GeneratedKey, ProtectionError> {
    if officers.is_empty() {
        return Err(ProtectionError::NoOfficerKey);
    }
    use base64_like::encode_password;
    let mut raw = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let password = encode_password(&raw);
    let suite = match algorithm {
        GenerateAlgorithm::Cv25519 => CipherSuite::Cv25519,
        GenerateAlgorithm::Rsa3072 => CipherSuite::RSA3k,
        GenerateAlgorithm::Rsa4096 => CipherSuite::RSA4k,
    };
    let g = |e: anyhow::Error| ProtectionError::Generate(short(&e));
    let (cert, _rev) = CertBuilder::general_purpose(Some(user_id))
        .set_cipher_suite(suite)
        .set_password(Some(Password::from(password.as_str())))
        .generate()
        .map_err(g)?;
    let public_armored =
        String::from_utf8(cert.armored().to_vec().map_err(g)?).expect("armor is ASCII");
    let secret = cert.as_tsk().armored().to_vec().map_err(g)?;
    let fpr = cert.fingerprint().to_hex();
    let big = ProtectionConfig {
        max_blob_size: usize::MAX,
        ..config.clone()
    };
    let private = verify_private_key(&secret, &[(fpr, public_armored.clone())], None, &big)?;
    let blob = encrypt_to_officers(password.as_bytes(), officers)?;
    let escrow = verify_escrow(blob.as_bytes(), officers, &big)?;
    Ok(GeneratedKey {
        cert,
        public_armored,
        private,
        escrow,
        password,
    })
}

mod base64_like {
    /// URL-safe base64 without padding (24 random bytes → 32 characters, 192 bits).
    pub fn encode_password(raw: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in raw.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(uid: &str, password: Option<&str>) -> Cert {
        CertBuilder::general_purpose(Some(uid))
            .set_password(password.map(Password::from))
            .generate()
            .unwrap()
            .0
    }

    fn pubs(c: &Cert) -> Vec<(String, String)> {
        vec![(
            c.fingerprint().to_hex(),
            String::from_utf8(c.armored().to_vec().unwrap()).unwrap(),
        )]
    }

    #[test]
    fn accepts_protected_refuses_unprotected() {
        let cfg = ProtectionConfig::default();
        let prot = make("a@example.org", Some("pw"));
        let tsk = prot.as_tsk().armored().to_vec().unwrap();
        let v = verify_private_key(&tsk, &pubs(&prot), None, &cfg).unwrap();
        assert_eq!(v.fingerprint, prot.fingerprint().to_hex());
        assert_eq!(v.protection.kind, "s2k");

        let open = make("a@example.org", None);
        let tsk = open.as_tsk().armored().to_vec().unwrap();
        let e = verify_private_key(&tsk, &pubs(&open), None, &cfg).unwrap_err();
        assert!(matches!(e, ProtectionError::Unprotected(_)), "{e}");

        // Protected, but the account has a different public key.
        let tsk = prot.as_tsk().armored().to_vec().unwrap();
        let e = verify_private_key(&tsk, &pubs(&open), None, &cfg).unwrap_err();
        assert!(matches!(e, ProtectionError::NoMatchingPublicKey(_)), "{e}");

        // A public key is not a private key.
        let public = prot.armored().to_vec().unwrap();
        let e = verify_private_key(&public, &pubs(&prot), None, &cfg).unwrap_err();
        assert_eq!(e, ProtectionError::NoSecret);

        assert!(matches!(
            verify_private_key(b"garbage", &pubs(&prot), None, &cfg).unwrap_err(),
            ProtectionError::Unparsable(_)
        ));
        assert_eq!(
            verify_private_key(b"", &pubs(&prot), None, &cfg).unwrap_err(),
            ProtectionError::Empty
        );
    }

    #[test]
    fn escrow_must_target_officer() {
        let cfg = ProtectionConfig::default();
        let officer = make("cso@example.org", None);
        let other = make("eve@example.org", None);
        let blob = encrypt_to_officers(b"secret", std::slice::from_ref(&officer)).unwrap();
        let v = verify_escrow(blob.as_bytes(), std::slice::from_ref(&officer), &cfg).unwrap();
        assert_eq!(v.officer_fingerprint, officer.fingerprint().to_hex());
        let blob = encrypt_to_officers(b"secret", std::slice::from_ref(&other)).unwrap();
        let e = verify_escrow(blob.as_bytes(), std::slice::from_ref(&officer), &cfg).unwrap_err();
        assert!(matches!(e, ProtectionError::ForeignRecipient(_)), "{e}");
    }

    #[test]
    fn generates_protected_escrowed_key() {
        let officer = make("cso@example.org", None);
        let g = generate_protected_key(
            "u@example.org",
            GenerateAlgorithm::Cv25519,
            std::slice::from_ref(&officer),
            &ProtectionConfig::default(),
        )
        .unwrap();
        assert!(g.password.len() >= 32);
        assert!(!g.private.armored.contains(&g.password));
        assert_eq!(g.escrow.officer_fingerprint, officer.fingerprint().to_hex());
        // The password really unlocks the key.
        let key = g
            .cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap();
        key.decrypt_secret(&Password::from(g.password.as_str()))
            .unwrap();
    }
}
