//! `sealpost encrypt`: the milter's transform on one message, stdin to stdout.

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use sealpost_keystore::recipient::{self, RecipientKeys, Selection};
use sealpost_keystore::x509::{self, Detected};
use sealpost_keystore::{policy, AccountSettings, Address, Keystore};
use sealpost_milter::transform::{encrypt_message, Outcome, Recipients, TransformOptions};

use super::open_keystore;
use crate::cli::EncryptArgs;
use crate::config::Config;

pub async fn run(config: &Config, args: EncryptArgs) -> Result<ExitCode> {
    let mut keys: Option<RecipientKeys> = None;
    let mut add = |more: RecipientKeys, what: &str| -> Result<()> {
        keys = Some(match keys.take() {
            None => more,
            Some(k) => k.union(&more).with_context(|| {
                format!("{what} needs another format than the keys before it: one message is either OpenPGP or S/MIME")
            })?,
        });
        Ok(())
    };
    for path in &args.to {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
        let what = format!("key file {}", path.display());
        let more = match x509::detect(&bytes) {
            Detected::X509 => RecipientKeys::Smime(vec![
                x509::parse_certificate(&bytes).with_context(|| what.clone())?
            ]),
            _ => RecipientKeys::OpenPgp(vec![
                policy::parse_public_cert(&bytes).with_context(|| what.clone())?
            ]),
        };
        add(more, &what)?;
    }
    let mut protect_subject = args.protect_subject || config.milter.protect_subject;
    if !args.account.is_empty() {
        let ks = open_keystore(config).await?;
        for addr in &args.account {
            let (more, settings) = account_keys(&ks, addr).await?;
            add(more, &format!("account {addr}"))?;
            if let Some(p) = settings.protect_subject {
                protect_subject |= p;
            }
        }
    }
    let keys = keys.context("no recipient key given")?;
    let recipients = Recipients::for_keys(&keys, SystemTime::now(), config.milter.smime)
        .context("cannot encrypt to the given keys")?;
    let options = TransformOptions {
        protect_subject,
        compress: config.milter.compress,
        spill_threshold: config.milter.spill_threshold_bytes,
        spill_dir: config.milter.spill_dir.clone(),
    };
    // The transform is blocking I/O and crypto: keep it off the async workers.
    let outcome = tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
        let outcome = encrypt_message(stdin.lock(), &mut out, &recipients, &options)?;
        out.flush()?;
        Ok::<_, anyhow::Error>(outcome)
    })
    .await
    .context("the encryption task failed")?
    .context("cannot encrypt the message")?;
    if let Outcome::Skipped(reason) = outcome {
        tracing::info!(
            reason = reason.as_str(),
            "message already encrypted; copied unchanged"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The keys an account's mail is encrypted to, chosen as the milter chooses them, and the
/// account's settings.
pub async fn account_keys(
    ks: &Keystore,
    addr: &Address,
) -> Result<(RecipientKeys, AccountSettings)> {
    let id = ks.require_account(addr).await?;
    let settings = ks.account_settings(&id).await?;
    let active = ks.active_keys_of(&id).await?;
    match recipient::select(&active, settings.format, SystemTime::now()) {
        Selection::Encrypt(keys) => Ok((keys, settings)),
        Selection::NoKey => bail!("account {addr} has no active key to encrypt to"),
        Selection::Unusable => {
            bail!("the active keys of account {addr} are expired or revoked; none can be encrypted to")
        }
    }
}
