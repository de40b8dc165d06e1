//! Decryption of OpenPGP messages with secret keys or passwords, and password encryption.

use std::io::{Read, Write};

use anyhow::{anyhow, Result};
use openpgp::crypto::{Password, SessionKey};
use openpgp::packet::key::{SecretParts, UnspecifiedRole};
use openpgp::packet::{Key, PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, Fingerprint, KeyHandle};
use sequoia_openpgp as openpgp;

/// Why a message could not be decrypted.
#[derive(Debug, PartialEq, Eq)]
pub enum DecryptError {
    /// None of the message's recipients is one of the keys (the fingerprints or key IDs
    /// the message is addressed to are given).
    NotForUs(Vec<String>),
    /// A recipient matched, but the session key did not decrypt (wrong key or damage),
    /// or the password is wrong.
    Failed(String),
    /// Larger than allowed.
    TooLarge,
}

impl std::fmt::Display for DecryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecryptError::NotForUs(r) if r.is_empty() => {
                write!(f, "the message is not encrypted to the given key")
            }
            DecryptError::NotForUs(r) => {
                write!(
                    f,
                    "the message is addressed to {}, not to the given key",
                    r.join(", ")
                )
            }
            DecryptError::Failed(why) => write!(f, "decryption failed: {why}"),
            DecryptError::TooLarge => write!(f, "the decrypted content is too large"),
        }
    }
}

impl std::error::Error for DecryptError {}

/// Secret keys (unencrypted) and passwords to try.
pub struct Keyring {
    keys: Vec<Key<SecretParts, UnspecifiedRole>>,
    passwords: Vec<Password>,
}

impl Keyring {
    /// Every unencrypted secret key of these certificates.
    pub fn from_certs<'a>(certs: impl IntoIterator<Item = &'a Cert>) -> Keyring {
        let mut keys = Vec::new();
        for c in certs {
            for ka in c.keys().unencrypted_secret() {
                keys.push(ka.key().clone());
            }
        }
        Keyring {
            keys,
            passwords: Vec::new(),
        }
    }

    pub fn from_password(pw: &Password) -> Keyring {
        Keyring {
            keys: Vec::new(),
            passwords: vec![pw.clone()],
        }
    }

    /// Decrypts `message` (armored or binary) and returns its literal content, at most
    /// `max` bytes.
    pub fn decrypt(&self, message: &[u8], max: usize) -> Result<Vec<u8>, DecryptError> {
        let p = StandardPolicy::new();
        let mut helper = Helper {
            keyring: self,
            recipients: Vec::new(),
            matched: false,
        };
        let outcome = (|| -> openpgp::Result<Vec<u8>> {
            let mut d =
                DecryptorBuilder::from_bytes(message)?.with_policy(&p, None, &mut helper)?;
            let mut out = Vec::new();
            (&mut d).take(max as u64 + 1).read_to_end(&mut out)?;
            Ok(out)
        })();
        match outcome {
            Ok(out) if out.len() > max => Err(DecryptError::TooLarge),
            Ok(out) => Ok(out),
            Err(e) => {
                if !helper.matched && self.passwords.is_empty() {
                    Err(DecryptError::NotForUs(helper.recipients))
                } else {
                    Err(DecryptError::Failed(
                        e.to_string().lines().next().unwrap_or("").to_string(),
                    ))
                }
            }
        }
    }
}

struct Helper<'a> {
    keyring: &'a Keyring,
    recipients: Vec<String>,
    matched: bool,
}

impl VerificationHelper for &mut Helper<'_> {
    fn get_certs(&mut self, _: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, _: MessageStructure) -> openpgp::Result<()> {
        // Signatures inside are not this tool's business; the content is returned as is.
        Ok(())
    }
}

impl DecryptionHelper for &mut Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            let handle = pkesk.recipient();
            if let Some(h) = &handle {
                self.recipients.push(h.to_hex());
            }
            for key in &self.keyring.keys {
                let fpr: Fingerprint = key.fingerprint();
                let hit = match &handle {
                    None => true,
                    Some(h) => h.aliases(KeyHandle::from(&fpr)),
                };
                if !hit {
                    continue;
                }
                self.matched = true;
                let Ok(mut pair) = key.clone().into_keypair() else {
                    continue;
                };
                if let Some((algo, sk)) = pkesk.decrypt(&mut pair, sym_algo) {
                    if decrypt(algo, &sk) {
                        return Ok(None);
                    }
                }
            }
        }
        for skesk in skesks {
            for pw in &self.keyring.passwords {
                if let Ok((algo, sk)) = skesk.decrypt(pw) {
                    if decrypt(algo, &sk) {
                        return Ok(None);
                    }
                }
            }
        }
        if self.keyring.passwords.is_empty() {
            Err(anyhow!("no key to decrypt the message"))
        } else {
            Err(anyhow!("wrong password"))
        }
    }
}

/// Encrypts `data` with a password (SKESK, iterated+salted SHA-256), armored.
pub fn encrypt_with_password(data: &[u8], password: &Password) -> Result<String> {
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let message = Armorer::new(message).build()?;
        let message = Encryptor::with_passwords(message, Some(password.clone())).build()?;
        let mut w = LiteralWriter::new(message).build()?;
        w.write_all(data)?;
        w.finalize()?;
    }
    Ok(String::from_utf8(out).expect("armor is ASCII"))
}

/// Decrypts a password-encrypted message made by [`encrypt_with_password`].
pub fn decrypt_with_password(message: &[u8], password: &Password) -> Result<Vec<u8>> {
    Keyring::from_password(password)
        .decrypt(message, 1 << 20)
        .map_err(|e| anyhow!("{e}"))
}
