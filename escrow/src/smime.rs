//! S/MIME private keys in recovery: password-protected PKCS#12 bundles, stored as PEM text
//! next to the OpenPGP keys, and the CMS messages the milter encrypted to their certificate.

use openssl::cms::CmsContentInfo;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use sealpost_keystore::protection::pkcs12_der;
use sealpost_keystore::x509;
use sequoia_openpgp::crypto::Password;

use crate::recover::RecoverError;

/// An unlocked S/MIME key: the private key and its certificate.
pub struct SmimeKey {
    pub key: PKey<Private>,
    pub cert: X509,
    /// SHA-256 of the certificate, upper-case hex (the keystore's key id).
    pub id: String,
}

impl std::fmt::Debug for SmimeKey {
    // Never the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmimeKey").field("id", &self.id).finish()
    }
}

/// True when a stored private key is a PKCS#12 bundle.
pub fn is_pkcs12(stored: &str) -> bool {
    pkcs12_der(stored.as_bytes()).is_some()
}

/// The password as text: PKCS#12 passwords are strings (RFC 7292 uses BMPString).
fn password_text(pw: &Password) -> Result<String, RecoverError> {
    pw.map(|p| String::from_utf8(p.to_vec())).map_err(|_| {
        RecoverError::BadKey(
            "the escrowed password is not UTF-8 text, which a PKCS#12 password must be".into(),
        )
    })
}

/// Opens a stored PKCS#12 bundle with `pw`.
pub fn unlock(stored: &str, pw: &Password) -> Result<SmimeKey, RecoverError> {
    let der = pkcs12_der(stored.as_bytes())
        .ok_or_else(|| RecoverError::BadKey("not a PKCS#12 bundle".into()))?;
    let text = password_text(pw)?;
    let (key, cert) = x509::open_pkcs12(&der, &text).map_err(|e| {
        let e = e.to_string();
        if e.contains("wrong password") {
            RecoverError::WrongPassword
        } else {
            RecoverError::BadKey(e)
        }
    })?;
    let id = x509::certificate_id(&cert);
    Ok(SmimeKey { key, cert, id })
}

/// The stored bundle re-protected under `new` (PBES2 with AES-256 and PBKDF2-SHA-256, the
/// certificate readable without the password), as DER for a mail client to import.
pub fn reprotect(stored: &str, old: &Password, new: &Password) -> anyhow::Result<Vec<u8>> {
    if new.map(|p| p.is_empty()) {
        anyhow::bail!("the new password is empty");
    }
    let der =
        pkcs12_der(stored.as_bytes()).ok_or_else(|| anyhow::anyhow!("not a PKCS#12 bundle"))?;
    let old = password_text(old)?;
    let new = password_text(new)?;
    Ok(x509::reprotect_pkcs12(&der, &old, &new)?)
}

/// Decrypts a CMS (Auth)EnvelopedData structure, DER, with the key: the payload.
pub fn decrypt_cms(der: &[u8], key: &SmimeKey) -> Result<Vec<u8>, String> {
    let cms =
        CmsContentInfo::from_der(der).map_err(|_| "the S/MIME body is not CMS".to_string())?;
    cms.decrypt(&key.key, &key.cert)
        .map_err(|_| "the S/MIME message does not decrypt with this key".to_string())
}
