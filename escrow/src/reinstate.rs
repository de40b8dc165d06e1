//! Server side: store a re-protected private key for the user after a recovery.

use anyhow::{anyhow, Context, Result};
use sealpost_keystore::protection::{verify_escrow, verify_private_key, ProtectionConfig};
use sealpost_keystore::{Actor, Address, Keystore, PrivateKeyRecord};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ReinstateReport {
    pub account: String,
    pub key: PrivateKeyRecord,
    /// True when the old escrow (which held the old password) was removed.
    pub escrow_removed: bool,
    /// True when an escrow of the new password was stored.
    pub escrow_stored: bool,
}

/// Verifies `bytes` as a protected private key of the account (same rules as a JMAP upload)
/// and stores it in place of the old one; with `escrow`, also stores that escrow of the new
/// password (verified like an upload: addressed to active officer keys only).
pub async fn reinstate(
    ks: &Keystore,
    account: &Address,
    bytes: &[u8],
    escrow: Option<&[u8]>,
    reason: Option<&str>,
    actor: &Actor,
) -> Result<ReinstateReport> {
    let id = ks.require_account(account).await?;
    let publics: Vec<(String, String)> = ks
        .public_keys_of(&id)
        .await?
        .into_iter()
        .map(|k| (k.fingerprint, k.armored))
        .collect();
    let config = ProtectionConfig {
        max_blob_size: 1 << 20,
        ..ProtectionConfig::default()
    };
    let verified = verify_private_key(bytes, &publics, None, &config)
        .map_err(|e| anyhow!("the key is refused: {e}"))?;
    let escrow = match escrow {
        Some(blob) => {
            use sequoia_openpgp::parse::Parse;
            let mut officers = Vec::new();
            for o in ks.active_officer_keys().await? {
                officers.push(
                    sequoia_openpgp::Cert::from_bytes(o.armored.as_bytes())
                        .map_err(|_| anyhow!("officer key {} is unreadable", o.fingerprint))?,
                );
            }
            Some(
                verify_escrow(blob, &officers, &config)
                    .map_err(|e| anyhow!("the escrow is refused: {e}"))?,
            )
        }
        None => None,
    };
    let primary = ks
        .account_by_id(&id)
        .await?
        .map(|a| a.primary)
        .unwrap_or_else(|| account.to_string());
    let (key, escrow_removed) = ks
        .reinstate_private_key(&id, &verified, reason, actor)
        .await
        .with_context(|| format!("cannot store the key for {primary}"))?;
    let escrow_stored = match &escrow {
        Some(e) => {
            ks.put_escrow(&id, &key.fingerprint, e, actor)
                .await
                .with_context(|| format!("cannot store the escrow for {primary}"))?;
            true
        }
        None => false,
    };
    Ok(ReinstateReport {
        account: primary,
        key,
        escrow_removed,
        escrow_stored,
    })
}
