//! Offline recovery: decrypt an escrow with the officer key, unlock the user's private key
//! with the recovered password, and re-protect it under a new password.

use anyhow::{anyhow, bail, Result};
use openpgp::crypto::{Password, S2K};
use openpgp::packet::key::{SecretKeyMaterial, SecretParts};
use openpgp::packet::{Key, Packet};
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::types::{AEADAlgorithm, SymmetricAlgorithm};
use openpgp::Cert;
use sealpost_keystore::protection::{check_secret_protection, ProtectionConfig};
use sequoia_openpgp as openpgp;

use crate::bundle::BundleEntry;
use crate::officer::{unlock_cert, OfficerSecret};
use crate::smime::{self, SmimeKey};
use crate::symmetric::{DecryptError, Keyring};

/// Largest escrowed password accepted.
const MAX_PASSWORD: usize = 4096;

/// Why an entry could not be recovered (also the drill's verdicts).
#[derive(Debug, PartialEq, Eq)]
pub enum RecoverError {
    /// The key has no escrow (recovery model 3): only the user knows the password.
    NoEscrow,
    /// The escrow is not addressed to this officer key.
    NotForOfficer {
        officer: String,
        recipients: Vec<String>,
    },
    /// The escrow is addressed to the officer but does not decrypt.
    Undecryptable(String),
    /// The escrowed password does not unlock the private key.
    WrongPassword,
    /// The stored private key cannot be read.
    BadKey(String),
}

impl std::fmt::Display for RecoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoverError::NoEscrow => write!(
                f,
                "no escrow is stored for this key (recovery model 3): only the user's password unlocks it"
            ),
            RecoverError::NotForOfficer { officer, recipients } => write!(
                f,
                "the escrow is not addressed to officer key {officer} (it is for {})",
                if recipients.is_empty() { "an unknown key".to_string() } else { recipients.join(", ") }
            ),
            RecoverError::Undecryptable(why) => write!(f, "the escrow does not decrypt: {why}"),
            RecoverError::WrongPassword => {
                write!(f, "the escrowed password does not unlock the private key")
            }
            RecoverError::BadKey(why) => write!(f, "the stored private key is unreadable: {why}"),
        }
    }
}

impl std::error::Error for RecoverError {}

/// Decrypts the escrow of `entry` with the officer key: the user's password.
pub fn escrowed_password(
    officer: &OfficerSecret,
    entry: &BundleEntry,
) -> Result<Password, RecoverError> {
    let Some(blob) = &entry.escrow else {
        return Err(RecoverError::NoEscrow);
    };
    let keyring = Keyring::from_certs([&officer.cert]);
    match keyring.decrypt(blob.as_bytes(), MAX_PASSWORD) {
        Ok(mut bytes) => {
            let pw = Password::from(bytes.as_slice());
            crate::secret_io::wipe(&mut bytes);
            Ok(pw)
        }
        Err(DecryptError::NotForUs(recipients)) => Err(RecoverError::NotForOfficer {
            officer: officer.fingerprint(),
            recipients,
        }),
        Err(e) => Err(RecoverError::Undecryptable(e.to_string())),
    }
}

/// Unlocks a stored private key (a password-protected key, or a password-encrypted message
/// holding one) with `password`; returns the certificate with unencrypted secrets.
pub fn unlock_private_key(armored: &str, password: &Password) -> Result<Cert, RecoverError> {
    let trimmed = armored.trim_start();
    if trimmed.starts_with("-----BEGIN PGP MESSAGE-----") {
        let inner = Keyring::from_password(password)
            .decrypt(armored.as_bytes(), 1 << 20)
            .map_err(|e| match e {
                DecryptError::Failed(_) => RecoverError::WrongPassword,
                other => RecoverError::BadKey(other.to_string()),
            })?;
        let cert = Cert::from_bytes(&inner)
            .map_err(|_| RecoverError::BadKey("the decrypted message holds no key".into()))?;
        if !cert.is_tsk() {
            return Err(RecoverError::BadKey(
                "the decrypted message holds no secret key".into(),
            ));
        }
        // Keys inside such a message are usually unprotected; if not, the same password.
        return unlock_cert(cert, password).map_err(|_| RecoverError::WrongPassword);
    }
    let cert = Cert::from_bytes(armored.as_bytes())
        .map_err(|e| RecoverError::BadKey(e.to_string().lines().next().unwrap_or("").into()))?;
    if !cert.is_tsk() {
        return Err(RecoverError::BadKey("it holds no secret key".into()));
    }
    unlock_cert(cert, password).map_err(|_| RecoverError::WrongPassword)
}

/// A stored private key opened with its password.
#[derive(Debug)]
pub enum UnlockedKey {
    /// An OpenPGP certificate with unencrypted secrets.
    OpenPgp(Box<Cert>),
    /// An S/MIME key from a PKCS#12 bundle.
    Smime(SmimeKey),
}

/// Opens a stored private key of either kind (OpenPGP or PKCS#12) with `password`.
pub fn unlock_stored(stored: &str, password: &Password) -> Result<UnlockedKey, RecoverError> {
    if smime::is_pkcs12(stored) {
        return smime::unlock(stored, password).map(UnlockedKey::Smime);
    }
    unlock_private_key(stored, password).map(|c| UnlockedKey::OpenPgp(Box::new(c)))
}

/// Recovers the user's unlocked private key from a bundle entry with the officer key.
pub fn unlock_entry(officer: &OfficerSecret, entry: &BundleEntry) -> Result<UnlockedKey> {
    let pw = escrowed_password(officer, entry).map_err(|e| anyhow!("{}: {e}", entry.account))?;
    unlock_stored(&entry.private_key, &pw).map_err(|e| anyhow!("{}: {e}", entry.account))
}

/// Encrypts a (new) password to the officer key that did the recovery: an escrow blob for
/// `reinstate --escrow`.
pub fn escrow_to(officer: &OfficerSecret, password: &Password) -> Result<String> {
    let public = officer.cert.clone().strip_secret_key_material();
    password
        .map(|p| {
            sealpost_keystore::protection::encrypt_to_officers(p, std::slice::from_ref(&public))
        })
        .map_err(|e| anyhow!("cannot escrow the new password: {e}"))
}

/// Argon2 parameters for re-protected v6 keys: RFC 9580's second recommended setting
/// (three passes, four lanes, 64 MiB).
const ARGON2_T: u8 = 3;
const ARGON2_P: u8 = 4;
const ARGON2_M: u8 = 16;

/// Re-protects every secret key of an unlocked certificate under `password` and returns the
/// armored secret key. v6 keys get Argon2 with AES-256/OCB; v4 keys (which GnuPG 2.2 and
/// other v4-only implementations must still read) get iterated+salted SHA-256 with the
/// largest count OpenPGP can express and AES-256.
pub fn reprotect(cert: &Cert, password: &Password) -> Result<String> {
    if password.map(|p| p.is_empty()) {
        bail!("the new password is empty");
    }
    let mut packets: Vec<Packet> = Vec::new();
    let primary = cert.primary_key().key().clone();
    if let Ok(k) = primary.parts_into_secret() {
        if let Some(k) = protect_one(k, password)? {
            packets.push(k.into());
        }
    }
    for ka in cert.keys().subkeys().secret() {
        if let Some(k) = protect_one(ka.key().clone(), password)? {
            packets.push(k.into());
        }
    }
    let out = cert.clone().insert_packets(packets)?.0;
    // The result must satisfy the server's own upload rule.
    check_secret_protection(&out, &ProtectionConfig::default())
        .map_err(|e| anyhow!("the re-protected key would be refused: {e}"))?;
    let armored = out.as_tsk().armored().to_vec()?;
    Ok(String::from_utf8(armored).expect("armor is ASCII"))
}

fn protect_one<R: openpgp::packet::key::KeyRole>(
    key: Key<SecretParts, R>,
    password: &Password,
) -> Result<Option<Key<SecretParts, R>>> {
    match key.optional_secret() {
        Some(SecretKeyMaterial::Unencrypted(_)) => {}
        // GnuPG stubs (no secret present) stay as they are.
        _ => return Ok(None),
    }
    if key.version() == 6 {
        let mut salt = [0u8; 16];
        openpgp::crypto::random(&mut salt)?;
        let s2k = S2K::Argon2 {
            salt,
            t: ARGON2_T,
            p: ARGON2_P,
            m: ARGON2_M,
        };
        let (public, secret) = key.take_secret();
        let probe = public.clone().parts_into_unspecified();
        let secret = secret.encrypt_with(
            &probe,
            s2k,
            SymmetricAlgorithm::AES256,
            Some(AEADAlgorithm::OCB),
            password,
        )?;
        Ok(Some(public.add_secret(secret).0))
    } else {
        let s2k = S2K::new_iterated(openpgp::types::HashAlgorithm::SHA256, 0x3e00000)?;
        let (public, secret) = key.take_secret();
        let probe = public.clone().parts_into_unspecified();
        let secret =
            secret.encrypt_with(&probe, s2k, SymmetricAlgorithm::AES256, None, password)?;
        Ok(Some(public.add_secret(secret).0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::prelude::*;

    fn make(password: Option<&str>) -> Cert {
        CertBuilder::general_purpose(Some("<u@example.org>"))
            .set_password(password.map(Password::from))
            .generate()
            .unwrap()
            .0
    }

    #[test]
    fn unlocks_protected_keys_and_password_encrypted_messages() {
        let c = make(Some("pw-1"));
        let armored = String::from_utf8(c.as_tsk().armored().to_vec().unwrap()).unwrap();
        let open = unlock_private_key(&armored, &"pw-1".into()).unwrap();
        assert_eq!(open.keys().unencrypted_secret().count(), 3);
        assert_eq!(
            unlock_private_key(&armored, &"pw-2".into()).unwrap_err(),
            RecoverError::WrongPassword
        );

        // An Autocrypt-Setup-style upload: the key inside a password-encrypted message.
        let inner = make(None);
        let msg = crate::symmetric::encrypt_with_password(
            &inner.as_tsk().to_vec().unwrap(),
            &"setup-code".into(),
        )
        .unwrap();
        let open = unlock_private_key(&msg, &"setup-code".into()).unwrap();
        assert_eq!(open.fingerprint(), inner.fingerprint());
        assert_eq!(
            unlock_private_key(&msg, &"nope".into()).unwrap_err(),
            RecoverError::WrongPassword
        );
        assert!(matches!(
            unlock_private_key("garbage", &"x".into()).unwrap_err(),
            RecoverError::BadKey(_)
        ));
    }

    #[test]
    fn reprotects_v4_keys_with_iterated_sha256() {
        let open = unlock_private_key(
            &String::from_utf8(make(Some("old")).as_tsk().armored().to_vec().unwrap()).unwrap(),
            &"old".into(),
        )
        .unwrap();
        let armored = reprotect(&open, &"new-pw".into()).unwrap();
        let again = unlock_private_key(&armored, &"new-pw".into()).unwrap();
        assert_eq!(again.fingerprint(), open.fingerprint());
        assert_eq!(
            unlock_private_key(&armored, &"old".into()).unwrap_err(),
            RecoverError::WrongPassword
        );
        let cert = Cert::from_bytes(armored.as_bytes()).unwrap();
        for ka in cert.keys().secret() {
            match ka.key().optional_secret() {
                Some(SecretKeyMaterial::Encrypted(e)) => assert!(
                    matches!(
                        e.s2k(),
                        S2K::Iterated {
                            hash: openpgp::types::HashAlgorithm::SHA256,
                            hash_bytes: 65011712,
                            ..
                        }
                    ),
                    "{:?}",
                    e.s2k()
                ),
                _ => panic!("not protected"),
            }
        }
        assert!(reprotect(&open, &"".into()).is_err());
    }
}
