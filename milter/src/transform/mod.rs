//! The message transform: turns a mail message into an RFC 3156 PGP/MIME message encrypted to
//! the recipients' OpenPGP certificates, or an RFC 8551 S/MIME enveloped-data message to their
//! X.509 certificates, with the headers protected per RFC 9788.
//!
//! The API follows what a milter sees: the header fields one by one, then body chunks, then
//! the end of the message. [`MessageEncryptor`] takes exactly that and answers with the header
//! edits for the outer message and the new body. [`encrypt_message`] wraps it for a complete
//! message read from a stream.
//!
//! The encrypted payload is a MIME entity: copies of the user-facing header fields, the
//! original `Content-*` fields (the Content-Type with `hp="cipher"` and
//! `protected-headers="v1"` appended), `HP-Outer` fields recording what stays outside, an
//! empty line, and the original body, all byte for byte apart from CRLF line endings.

mod armor;
mod ber;
mod cms;
mod encryptor;
mod headers;
mod message;
mod skip;
mod spool;

use std::path::PathBuf;
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::cert::Preferences;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::packet::Key;
use openpgp::types::Features;
use openpgp::Cert;
use openssl::x509::X509;
use sealpost_keystore::recipient::RecipientKeys;

pub use cms::{Base64Lines, CmsOptions, CmsWriter, ContentCipher, RsaPadding};
pub use encryptor::{Decision, MessageEncryptor, Transformed};
pub use headers::{HeaderEdit, HeaderField};
pub use message::{encrypt_message, MAX_HEADER_BYTES};
pub use skip::SkipReason;
pub use spool::{Spool, SpoolReader, MAX_BODY_CHUNK};

/// Default size above which the output moves from memory to a temporary file.
pub const DEFAULT_SPILL_THRESHOLD: usize = 4 * 1024 * 1024;

/// Name of the trace header field added to every message the transform sees.
pub const TRACE_HEADER: &str = "X-Sealpost";

/// The obscured Subject of RFC 9788 (section 4.4).
pub const OBSCURED_SUBJECT: &str = "[...]";

/// Why a message could not be transformed. Messages name fingerprints at most, never message
/// content or key material.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("no recipient certificates given")]
    NoRecipients,
    #[error("certificate {0} has no usable encryption subkey")]
    NoEncryptionKey(String),
    #[error("OpenPGP encryption failed: {0}")]
    Crypto(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the header section is larger than {0} bytes")]
    HeaderTooLarge(usize),
    #[error("the transform already failed and cannot continue")]
    Poisoned,
}

impl TransformError {
    /// Keeps I/O failures (disk full, closed pipe) apart from cryptographic ones.
    pub(crate) fn from_openpgp(e: anyhow::Error) -> TransformError {
        match e.downcast::<std::io::Error>() {
            Ok(io) => TransformError::Io(io),
            // Only the top-level message: nested causes could quote parser input.
            Err(e) => TransformError::Crypto(e.to_string()),
        }
    }
}

pub type Result<T, E = TransformError> = std::result::Result<T, E>;

/// Tunables of the transform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransformOptions {
    /// Replace the outer Subject with `[...]` (the real one stays inside).
    pub protect_subject: bool,
    /// Compress the payload before encryption.
    pub compress: bool,
    /// Output up to this many bytes is kept in memory; beyond it goes to a temporary file.
    pub spill_threshold: usize,
    /// Directory for the temporary file; the system temporary directory when `None`. Worth
    /// setting where /tmp is a RAM-backed tmpfs.
    pub spill_dir: Option<PathBuf>,
}

impl Default for TransformOptions {
    fn default() -> Self {
        TransformOptions {
            protect_subject: false,
            compress: false,
            spill_threshold: DEFAULT_SPILL_THRESHOLD,
            spill_dir: None,
        }
    }
}

/// What happened to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Encrypted to these certificates (upper-case hex primary fingerprints).
    Encrypted { fingerprints: Vec<String> },
    /// Already encrypted; delivered unchanged apart from the trace header.
    Skipped(SkipReason),
}

/// The keys one message is encrypted to: OpenPGP encryption subkeys chosen from the
/// recipients' certificates by the key policy, or S/MIME (X.509) certificates.
#[derive(Clone, Debug)]
pub struct Recipients {
    keys: RecipientSet,
    fingerprints: Vec<String>,
}

#[derive(Clone, Debug)]
enum RecipientSet {
    OpenPgp(Vec<RecipientKey>),
    Smime {
        certs: Vec<X509>,
        options: CmsOptions,
    },
}

#[derive(Clone, Debug)]
struct RecipientKey {
    key: Key<PublicParts, UnspecifiedRole>,
    features: Features,
}

impl Recipients {
    /// Chooses the encryption subkeys of every certificate at time `now`
    /// (`sealpost_keystore::policy::encryption_keys`). Fails if the list is empty or a
    /// certificate has no usable encryption subkey: silently leaving a recipient out would
    /// deliver mail they cannot read. The same certificate given twice counts once.
    pub fn new(certs: &[Cert], now: SystemTime) -> Result<Recipients> {
        if certs.is_empty() {
            return Err(TransformError::NoRecipients);
        }
        let mut keys: Vec<RecipientKey> = Vec::new();
        let mut fingerprints: Vec<String> = Vec::new();
        for cert in certs {
            let fpr = cert.fingerprint().to_hex();
            if fingerprints.contains(&fpr) {
                continue;
            }
            let enc = sealpost_keystore::policy::encryption_keys(cert, now);
            if enc.is_empty() {
                return Err(TransformError::NoEncryptionKey(fpr));
            }
            // The certificate's Features decide between SEIPDv1 and SEIPDv2; an absent
            // subpacket means the oldest format, which every implementation reads.
            let features = cert
                .with_policy(sealpost_keystore::policy::policy(), now)
                .ok()
                .and_then(|vc| vc.features())
                .unwrap_or_else(Features::empty);
            for key in enc {
                if !keys
                    .iter()
                    .any(|k| k.key.fingerprint() == key.fingerprint())
                {
                    keys.push(RecipientKey {
                        key,
                        features: features.clone(),
                    });
                }
            }
            fingerprints.push(fpr);
        }
        Ok(Recipients {
            keys: RecipientSet::OpenPgp(keys),
            fingerprints,
        })
    }

    /// S/MIME recipients: one RecipientInfo per certificate. Fails if the list is empty or
    /// a certificate is outside its validity period at `now`; the same certificate given
    /// twice counts once.
    pub fn smime(certs: &[X509], now: SystemTime, options: CmsOptions) -> Result<Recipients> {
        if certs.is_empty() {
            return Err(TransformError::NoRecipients);
        }
        let mut unique: Vec<X509> = Vec::new();
        let mut fingerprints: Vec<String> = Vec::new();
        for cert in certs {
            let id = sealpost_keystore::x509::certificate_id(cert);
            if fingerprints.contains(&id) {
                continue;
            }
            if !sealpost_keystore::x509::usable_now(cert, now) {
                return Err(TransformError::NoEncryptionKey(id));
            }
            fingerprints.push(id);
            unique.push(cert.clone());
        }
        Ok(Recipients {
            keys: RecipientSet::Smime {
                certs: unique,
                options,
            },
            fingerprints,
        })
    }

    /// The keys an account selection gives (`sealpost_keystore::recipient::select`).
    pub fn for_keys(
        keys: &RecipientKeys,
        now: SystemTime,
        smime: CmsOptions,
    ) -> Result<Recipients> {
        match keys {
            RecipientKeys::OpenPgp(c) => Recipients::new(c, now),
            RecipientKeys::Smime(c) => Recipients::smime(c, now, smime),
        }
    }

    /// Primary-key fingerprints of the OpenPGP certificates, or SHA-256 ids of the X.509
    /// certificates, upper-case hex, in the given order.
    pub fn fingerprints(&self) -> &[String] {
        &self.fingerprints
    }

    /// Number of recipient keys (one PKESK packet or CMS RecipientInfo each).
    pub fn key_count(&self) -> usize {
        match &self.keys {
            RecipientSet::OpenPgp(k) => k.len(),
            RecipientSet::Smime { certs, .. } => certs.len(),
        }
    }

    /// True for S/MIME recipients.
    pub fn is_smime(&self) -> bool {
        matches!(self.keys, RecipientSet::Smime { .. })
    }

    fn keys(&self) -> impl Iterator<Item = &Key<PublicParts, UnspecifiedRole>> {
        let keys: &[RecipientKey] = match &self.keys {
            RecipientSet::OpenPgp(k) => k,
            RecipientSet::Smime { .. } => &[],
        };
        keys.iter().map(|k| &k.key)
    }

    fn all_support_seipdv2(&self) -> bool {
        match &self.keys {
            RecipientSet::OpenPgp(k) => k.iter().all(|k| k.features.supports_seipdv2()),
            RecipientSet::Smime { .. } => false,
        }
    }
}
