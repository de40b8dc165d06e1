//! Which keys an account's mail is encrypted to: its OpenPGP certificates or its S/MIME
//! certificates, never both in one message. The milter, `sealpost encrypt` and
//! `sealpost maildir encrypt` all choose through [`select`], so they agree.

use std::time::SystemTime;

use openssl::x509::X509;
use sequoia_openpgp::Cert;
use serde::{Deserialize, Serialize};

use crate::policy::{self, KeyKind};
use crate::store::PublicKeyRecord;
use crate::x509;

/// The message format an account receives (`KeySettings.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFormat {
    /// RFC 3156 PGP/MIME to OpenPGP certificates.
    #[serde(rename = "openpgp")]
    OpenPgp,
    /// RFC 8551 S/MIME enveloped data to X.509 certificates.
    #[serde(rename = "smime")]
    Smime,
}

impl KeyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyFormat::OpenPgp => "openpgp",
            KeyFormat::Smime => "smime",
        }
    }

    pub fn parse(s: &str) -> Option<KeyFormat> {
        match s {
            "openpgp" => Some(KeyFormat::OpenPgp),
            "smime" => Some(KeyFormat::Smime),
            _ => None,
        }
    }

    /// The format a kind of key is used for.
    pub fn of_kind(kind: &str) -> KeyFormat {
        match KeyKind::parse(kind) {
            Some(KeyKind::X509) => KeyFormat::Smime,
            _ => KeyFormat::OpenPgp,
        }
    }
}

/// The keys one account's mail is encrypted to, all of one format.
#[derive(Clone, Debug)]
pub enum RecipientKeys {
    OpenPgp(Vec<Cert>),
    Smime(Vec<X509>),
}

impl RecipientKeys {
    pub fn format(&self) -> KeyFormat {
        match self {
            RecipientKeys::OpenPgp(_) => KeyFormat::OpenPgp,
            RecipientKeys::Smime(_) => KeyFormat::Smime,
        }
    }

    /// Key ids, sorted: OpenPGP fingerprints or SHA-256 of the certificates, upper-case hex.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = match self {
            RecipientKeys::OpenPgp(c) => c.iter().map(|c| c.fingerprint().to_hex()).collect(),
            RecipientKeys::Smime(c) => c.iter().map(|c| x509::certificate_id(c)).collect(),
        };
        ids.sort();
        ids
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        match self {
            RecipientKeys::OpenPgp(c) => c.len(),
            RecipientKeys::Smime(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            RecipientKeys::OpenPgp(c) => c.is_empty(),
            RecipientKeys::Smime(c) => c.is_empty(),
        }
    }

    /// Both sets together when they are of one format (sorted by id, each once); `None`
    /// when one message cannot serve both.
    pub fn union(&self, other: &RecipientKeys) -> Option<RecipientKeys> {
        match (self, other) {
            (RecipientKeys::OpenPgp(a), RecipientKeys::OpenPgp(b)) => {
                let mut all: Vec<Cert> = a.iter().chain(b).cloned().collect();
                all.sort_by_key(|c| c.fingerprint().to_hex());
                all.dedup_by(|x, y| x.fingerprint() == y.fingerprint());
                Some(RecipientKeys::OpenPgp(all))
            }
            (RecipientKeys::Smime(a), RecipientKeys::Smime(b)) => {
                let mut all: Vec<(String, X509)> = a
                    .iter()
                    .chain(b)
                    .map(|c| (x509::certificate_id(c), c.clone()))
                    .collect();
                all.sort_by(|x, y| x.0.cmp(&y.0));
                all.dedup_by(|x, y| x.0 == y.0);
                Some(RecipientKeys::Smime(
                    all.into_iter().map(|(_, c)| c).collect(),
                ))
            }
            _ => None,
        }
    }
}

/// What an account's active keys give at a point in time.
#[derive(Clone, Debug)]
pub enum Selection {
    /// Encrypt to these (sorted by id).
    Encrypt(RecipientKeys),
    /// No active key of the chosen format.
    NoKey,
    /// Active keys of the chosen format exist, but none can be encrypted to now (expired or
    /// revoked since import): mail must wait rather than go out in clear.
    Unusable,
}

/// Chooses the keys of the account's active `keys`. `format` is the account's
/// `KeySettings.format`; without it, the format of the most recently activated key wins.
/// An account whose chosen format has no active key gets the other format rather than
/// plaintext.
pub fn select(keys: &[PublicKeyRecord], format: Option<KeyFormat>, now: SystemTime) -> Selection {
    let active: Vec<&PublicKeyRecord> = keys.iter().filter(|k| k.active).collect();
    let Some(latest) = active
        .iter()
        .max_by_key(|k| (k.updated_at, k.imported_at))
        .map(|k| KeyFormat::of_kind(&k.kind))
    else {
        return Selection::NoKey;
    };
    let of = |f: KeyFormat| -> Vec<&PublicKeyRecord> {
        active
            .iter()
            .copied()
            .filter(|k| KeyFormat::of_kind(&k.kind) == f)
            .collect()
    };
    let mut format = format.unwrap_or(latest);
    let mut chosen = of(format);
    if chosen.is_empty() {
        format = latest;
        chosen = of(format);
    }
    // Keys passed the policy at import; one that fails now is left out.
    let set = match format {
        KeyFormat::OpenPgp => {
            let mut certs: Vec<Cert> = chosen
                .iter()
                .filter_map(|k| policy::parse_public_cert(k.armored.as_bytes()).ok())
                .filter(|c| !policy::encryption_keys(c, now).is_empty())
                .collect();
            certs.sort_by_key(|c| c.fingerprint().to_hex());
            RecipientKeys::OpenPgp(certs)
        }
        KeyFormat::Smime => {
            let mut certs: Vec<(String, X509)> = chosen
                .iter()
                .filter_map(|k| x509::parse_stored(&k.armored).ok())
                .filter(|c| x509::usable_now(c, now))
                .map(|c| (x509::certificate_id(&c), c))
                .collect();
            certs.sort_by(|a, b| a.0.cmp(&b.0));
            RecipientKeys::Smime(certs.into_iter().map(|(_, c)| c).collect())
        }
    };
    if set.is_empty() {
        Selection::Unusable
    } else {
        Selection::Encrypt(set)
    }
}

/// The id a key upload would be stored under: the OpenPGP fingerprint, or the SHA-256 of an
/// X.509 certificate, upper-case hex.
pub fn key_id(bytes: &[u8]) -> Result<String, policy::PolicyError> {
    match x509::detect(bytes) {
        x509::Detected::X509 => {
            let cert: X509 = x509::parse_certificate(bytes)?;
            Ok(x509::certificate_id(&cert))
        }
        _ => Ok(policy::parse_public_cert(bytes)?.fingerprint().to_hex()),
    }
}

/// Checks a stored key against the policy again (at activation, in `sealpost check`): a key
/// that expired or was revoked since import fails.
pub fn recheck(
    key: &PublicKeyRecord,
    addresses: &[crate::Address],
    now: SystemTime,
    config: &policy::PolicyConfig,
) -> Result<policy::CertInfo, policy::PolicyError> {
    if KeyKind::parse(&key.kind) == Some(KeyKind::X509) {
        let cert = x509::parse_stored(&key.armored)?;
        x509::check_certificate(&cert, addresses, now, config)
    } else {
        let cert = policy::parse_public_cert(key.armored.as_bytes())?;
        policy::check_cert(&cert, addresses, now, config)
    }
}
