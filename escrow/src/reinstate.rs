//! Server side: store a re-protected private key for the user after a recovery.

use anyhow::{anyhow, Context, Result};
use sealpost_keystore::protection::{verify_private_key, ProtectionConfig};
use sealpost_keystore::{Actor, Address, Keystore, PrivateKeyRecord};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ReinstateReport {
    pub account: String,
    pub key: PrivateKeyRecord,
    /// True when the old escrow (which held the old password) was removed.
    pub escrow_removed: bool,
}

/// Verifies `bytes` as a protected private key of the account (same rules as a JMAP upload)
/// and stores it in place of the old one.
pub async fn reinstate(
    ks: &Keystore,
    account: &Address,
    bytes: &[u8],
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
    let primary = ks
        .account_by_id(&id)
        .await?
        .map(|a| a.primary)
        .unwrap_or_else(|| account.to_string());
    let (key, escrow_removed) = ks
        .reinstate_private_key(&id, &verified, reason, actor)
        .await
        .with_context(|| format!("cannot store the key for {primary}"))?;
    Ok(ReinstateReport {
        account: primary,
        key,
        escrow_removed,
    })
}
