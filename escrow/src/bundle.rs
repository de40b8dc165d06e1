//! Recovery bundles: what `export` writes on the server and the offline commands read.
//!
//! A bundle is a JSON file holding, per private key, the account, the public key, the
//! password-protected private key, the escrow blob and the officer key it is addressed to.
//! Nothing in it is readable without either the user's password or the officer's secret
//! key, but it is still created with mode 0600.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use sealpost_keystore::{Actor, Address, Keystore, Protection};
use serde::{Deserialize, Serialize};

use crate::secret_io;

/// The format tag of bundles.
pub const BUNDLE_FORMAT: &str = "sealpost-recovery-bundle/1";

/// Largest bundle read.
const MAX_BUNDLE: u64 = 1 << 30;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    /// Unix seconds.
    pub exported_at: i64,
    /// The operator who exported it (`cli:USER`).
    pub exported_by: String,
    pub reason: String,
    pub entries: Vec<BundleEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleEntry {
    /// The account's primary address.
    pub account: String,
    pub aliases: Vec<String>,
    /// The private key's (and its public key's) fingerprint.
    pub fingerprint: String,
    /// The armored public key, when still stored.
    pub public_key: Option<String>,
    /// The protected private key as stored.
    pub private_key: String,
    pub protection: Protection,
    /// The armored escrow blob (the password encrypted to the officer key), if any.
    pub escrow: Option<String>,
    pub officer_fingerprint: Option<String>,
}

/// Which escrows to export.
pub enum Selection<'a> {
    Account(&'a Address),
    All,
}

/// What an export wrote.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub path: String,
    pub entries: usize,
    pub with_escrow: usize,
    pub accounts: Vec<String>,
}

/// Collects the bundle from the keystore. `progress` is called with (done, total) per account.
pub async fn collect(
    ks: &Keystore,
    selection: &Selection<'_>,
    reason: &str,
    actor: &Actor,
    mut progress: impl FnMut(u64, u64),
) -> Result<Bundle> {
    let accounts = match selection {
        Selection::Account(a) => {
            let id = ks.require_account(a).await?;
            vec![ks
                .account_by_id(&id)
                .await?
                .ok_or_else(|| anyhow!("no account has the address {a}"))?]
        }
        Selection::All => ks.list_accounts().await?,
    };
    let total = accounts.len() as u64;
    let mut entries = Vec::new();
    for (i, acc) in accounts.iter().enumerate() {
        for pk in ks.private_keys_of(&acc.id).await? {
            let private_key = ks
                .private_key_armored(&acc.id, &pk.fingerprint)
                .await?
                .ok_or_else(|| anyhow!("private key {} vanished", pk.fingerprint))?;
            let public_key = ks
                .public_key_of(&acc.id, &pk.public_key_fingerprint)
                .await?
                .map(|k| k.armored);
            let escrow_rec = ks.escrow(&acc.id, &pk.fingerprint).await?;
            let escrow = ks.escrow_armored(&acc.id, &pk.fingerprint).await?;
            entries.push(BundleEntry {
                account: acc.primary.clone(),
                aliases: acc.aliases.clone(),
                fingerprint: pk.fingerprint.clone(),
                public_key,
                private_key,
                protection: pk.protection.clone(),
                escrow,
                officer_fingerprint: escrow_rec.map(|e| e.officer_fingerprint),
            });
        }
        progress(i as u64 + 1, total);
    }
    if let Selection::Account(a) = selection {
        if entries.is_empty() {
            bail!(
                "{a} has no private key stored on the server (recovery models 1 and 2 keep it \
                 on the user's device): there is nothing to export"
            );
        }
    }
    Ok(Bundle {
        format: BUNDLE_FORMAT.into(),
        exported_at: sealpost_keystore::now_unix(),
        exported_by: actor.0.clone(),
        reason: reason.into(),
        entries,
    })
}

/// Exports a bundle to `out` (mode 0600, never overwriting) and records the export in the
/// audit log with the operator and the reason: one row per exported key.
pub async fn export(
    ks: &Keystore,
    selection: Selection<'_>,
    reason: &str,
    out: &Path,
    actor: &Actor,
    progress: impl FnMut(u64, u64),
) -> Result<ExportReport> {
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("--reason must say why the escrow is exported (it goes to the audit log)");
    }
    if out.exists() {
        bail!("{} already exists; refusing to overwrite it", out.display());
    }
    let bundle = collect(ks, &selection, reason, actor, progress).await?;
    let mut data = serde_json::to_vec_pretty(&bundle)?;
    data.push(b'\n');
    secret_io::write_secret_file(out, &data)?;
    let audited = async {
        if bundle.entries.is_empty() {
            ks.audit(actor, None, "escrow.export", None, Some(reason))
                .await?;
        }
        for e in &bundle.entries {
            let detail = format!("{reason} (bundle {})", out.display());
            ks.audit(
                actor,
                Some(&e.account),
                "escrow.export",
                Some(&e.fingerprint),
                Some(&detail),
            )
            .await?;
        }
        Ok::<_, sealpost_keystore::Error>(())
    }
    .await;
    if let Err(e) = audited {
        // No unaudited export: take the file back.
        let _ = std::fs::remove_file(out);
        return Err(e).context("cannot record the export in the audit log; the bundle was removed");
    }
    let mut accounts: Vec<String> = bundle.entries.iter().map(|e| e.account.clone()).collect();
    accounts.dedup();
    Ok(ExportReport {
        path: out.display().to_string(),
        entries: bundle.entries.len(),
        with_escrow: bundle.entries.iter().filter(|e| e.escrow.is_some()).count(),
        accounts,
    })
}

impl Bundle {
    pub fn read(path: &Path) -> Result<Bundle> {
        let bytes = secret_io::read_limited(path, MAX_BUNDLE, "bundle")?;
        let b: Bundle = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("{} is not a sealpost recovery bundle ({e})", path.display()))?;
        if b.format != BUNDLE_FORMAT {
            bail!(
                "{} has the unknown format {:?} (expected {BUNDLE_FORMAT})",
                path.display(),
                b.format
            );
        }
        Ok(b)
    }

    /// The one entry to work on: the only one, or the one for this account or fingerprint.
    pub fn select(
        &self,
        account: Option<&Address>,
        fingerprint: Option<&str>,
    ) -> Result<&BundleEntry> {
        let fpr = fingerprint.map(|f| f.replace(' ', "").to_uppercase());
        let account = account.map(|a| a.to_string().to_lowercase());
        let hits: Vec<&BundleEntry> = self
            .entries
            .iter()
            .filter(|e| fpr.as_ref().is_none_or(|f| &e.fingerprint == f))
            .filter(|e| {
                account.as_ref().is_none_or(|a| {
                    e.account.to_lowercase() == *a
                        || e.aliases.iter().any(|x| x.to_lowercase() == *a)
                })
            })
            .collect();
        match hits.len() {
            1 => Ok(hits[0]),
            0 => bail!("the bundle has no matching key"),
            n => bail!(
                "the bundle holds {n} matching keys; choose one with --account ADDR or --key FPR"
            ),
        }
    }
}
