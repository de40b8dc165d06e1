//! The audit drill (offline): for every escrow in a bundle, decrypt the password with the
//! officer key and check that it really unlocks its private key — the check the server
//! cannot make for escrows a client uploaded (recovery model 4).

use serde::Serialize;

use crate::bundle::Bundle;
use crate::officer::OfficerSecret;
use crate::recover::{escrowed_password, unlock_stored, RecoverError};

/// The verdict for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The escrow decrypts and its password unlocks the key.
    Ok,
    /// No escrow is stored for the key.
    EscrowMissing,
    /// The escrow does not decrypt with this officer key.
    EscrowUndecryptable,
    /// The escrow decrypts, but its password does not unlock the key.
    PasswordWrong,
    /// The private key in the bundle is missing or unreadable.
    KeyMissing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::EscrowMissing => "escrow missing",
            Verdict::EscrowUndecryptable => "escrow undecryptable",
            Verdict::PasswordWrong => "password wrong",
            Verdict::KeyMissing => "key missing",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DrillLine {
    pub account: String,
    pub fingerprint: String,
    pub verdict: Verdict,
    /// Why, for failures (names keys and files only, never a secret).
    pub detail: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub officer: String,
    pub checked: usize,
    pub failures: usize,
    pub results: Vec<DrillLine>,
}

/// Runs the drill over every entry of the bundle.
pub fn drill(
    officer: &OfficerSecret,
    bundle: &Bundle,
    mut progress: impl FnMut(u64, u64),
) -> DrillReport {
    let total = bundle.entries.len() as u64;
    let mut results = Vec::new();
    for (i, e) in bundle.entries.iter().enumerate() {
        let (verdict, detail) = if e.private_key.trim().is_empty() {
            (Verdict::KeyMissing, None)
        } else {
            match escrowed_password(officer, e) {
                Err(RecoverError::NoEscrow) => (Verdict::EscrowMissing, None),
                Err(err) => (Verdict::EscrowUndecryptable, Some(err.to_string())),
                Ok(pw) => match unlock_stored(&e.private_key, &pw) {
                    Ok(_) => (Verdict::Ok, None),
                    Err(RecoverError::WrongPassword) => (Verdict::PasswordWrong, None),
                    Err(err) => (Verdict::KeyMissing, Some(err.to_string())),
                },
            }
        };
        results.push(DrillLine {
            account: e.account.clone(),
            fingerprint: e.fingerprint.clone(),
            verdict,
            detail,
        });
        progress(i as u64 + 1, total);
    }
    DrillReport {
        officer: officer.fingerprint(),
        checked: results.len(),
        failures: results.iter().filter(|r| r.verdict != Verdict::Ok).count(),
        results,
    }
}
