//! `[milter]` in the config file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::transform::{CmsOptions, ContentCipher, RsaPadding};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MilterConfig {
    /// `HOST:PORT` or `unix:/path/to/socket`.
    pub listen: String,
    /// Permissions of a `unix:` socket, in octal. Postfix's smtpd and cleanup connect as
    /// the postfix user, so it needs write access (e.g. through a shared group).
    pub socket_mode: String,
    /// What to do when one transaction has recipients needing different treatment.
    pub mixed: Mixed,
    /// What to do when a lookup or the encryption fails.
    pub on_error: OnError,
    /// Replace the outer Subject with `[...]` unless the account says otherwise.
    pub protect_subject: bool,
    /// Compress the payload before encrypting.
    pub compress: bool,
    /// Seconds a recipient lookup is cached (PostgreSQL notifications drop entries sooner).
    pub cache_ttl_secs: u64,
    /// Encrypted output up to this size stays in memory; beyond, it goes to a temp file.
    pub spill_threshold_bytes: usize,
    /// Directory for those temp files (default: the system temp directory).
    pub spill_dir: Option<PathBuf>,
    /// Most milter connections served at once.
    pub max_connections: usize,
    /// Seconds a connection may sit idle between milter commands.
    pub connection_timeout_secs: u64,
    /// Seconds in-flight messages get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Most recipients accepted in one SMTP transaction; more get 452 4.5.3 and come in
    /// another transaction.
    pub max_recipients: usize,
    /// Most header fields in one message; more: 552 5.3.4.
    pub max_header_fields: usize,
    /// Largest header section in bytes (names, values and separators); larger: 552 5.3.4.
    /// The milter holds the header section in memory, so this bounds it.
    pub max_header_bytes: usize,
    /// How S/MIME messages are encrypted; set from `[smime]`.
    #[serde(skip)]
    pub smime: CmsOptions,
}

/// `[smime]`: certificates and S/MIME encryption.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmimeConfig {
    /// PEM bundle of CAs that imported certificates must chain to. Empty: any certificate
    /// that passes the other checks, self-signed or from a private CA, is accepted.
    pub ca_file: String,
    /// Content encryption: "aes256-cbc" (RFC 8551 enveloped-data, read by every client) or
    /// "aes256-gcm" (RFC 5083 authEnveloped-data).
    pub content_cipher: SmimeCipher,
    /// RSA key transport: "pkcs1" (PKCS#1 v1.5, read by every client) or "oaep"
    /// (RSAES-OAEP with SHA-256).
    pub rsa_padding: SmimeRsaPadding,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum SmimeCipher {
    #[default]
    #[serde(rename = "aes256-cbc")]
    Aes256Cbc,
    #[serde(rename = "aes256-gcm")]
    Aes256Gcm,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum SmimeRsaPadding {
    #[default]
    #[serde(rename = "pkcs1")]
    Pkcs1,
    #[serde(rename = "oaep")]
    Oaep,
}

impl SmimeConfig {
    pub fn cms_options(&self) -> CmsOptions {
        CmsOptions {
            cipher: match self.content_cipher {
                SmimeCipher::Aes256Cbc => ContentCipher::Aes256Cbc,
                SmimeCipher::Aes256Gcm => ContentCipher::Aes256Gcm,
            },
            rsa_padding: match self.rsa_padding {
                SmimeRsaPadding::Pkcs1 => RsaPadding::Pkcs1v15,
                SmimeRsaPadding::Oaep => RsaPadding::Oaep,
            },
        }
    }

    pub fn ca_file(&self) -> Option<PathBuf> {
        let f = self.ca_file.trim();
        (!f.is_empty()).then(|| PathBuf::from(f))
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mixed {
    /// Each transaction carries one treatment; other recipients get 452 4.5.3 and the
    /// client retries them in a new transaction.
    Split,
    /// Key-holding recipients share one message encrypted to all their keys; plaintext
    /// recipients are still split off.
    Union,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// 451 4.7.x: the client retries later.
    Tempfail,
    /// 550 5.7.x: the message is refused permanently (the sender gets a bounce).
    Reject,
}

impl Default for MilterConfig {
    fn default() -> Self {
        MilterConfig {
            listen: "127.0.0.1:10047".into(),
            socket_mode: "0660".into(),
            mixed: Mixed::Split,
            on_error: OnError::Tempfail,
            protect_subject: false,
            compress: false,
            cache_ttl_secs: 30,
            spill_threshold_bytes: crate::transform::DEFAULT_SPILL_THRESHOLD,
            spill_dir: None,
            max_connections: 100,
            connection_timeout_secs: 600,
            shutdown_grace_secs: 30,
            max_recipients: 1000,
            max_header_fields: 1000,
            max_header_bytes: 1024 * 1024,
            smime: CmsOptions::default(),
        }
    }
}

impl MilterConfig {
    /// The unix socket mode as a number; a precise error for anything but 3-4 octal digits.
    pub fn socket_mode(&self) -> Result<u32, String> {
        let m = self.socket_mode.trim();
        if !(3..=4).contains(&m.len()) || !m.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!(
                "[milter] socket_mode must be an octal mode such as \"0660\", not {m:?}"
            ));
        }
        u32::from_str_radix(m, 8).map_err(|e| e.to_string())
    }
}
