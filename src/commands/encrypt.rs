//! `sealpost encrypt`: the milter's transform on one message, stdin to stdout.

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use sealpost_keystore::policy;
use sealpost_milter::transform::{encrypt_message, Outcome, Recipients, TransformOptions};

use super::open_keystore;
use crate::cli::EncryptArgs;
use crate::config::Config;

pub async fn run(config: &Config, args: EncryptArgs) -> Result<ExitCode> {
    let mut certs = Vec::new();
    for path in &args.to {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
        let cert = policy::parse_public_cert(&bytes)
            .with_context(|| format!("key file {}", path.display()))?;
        certs.push(cert);
    }
    let mut protect_subject = args.protect_subject || config.milter.protect_subject;
    if !args.account.is_empty() {
        let ks = open_keystore(config).await?;
        for addr in &args.account {
            let id = ks.require_account(addr).await?;
            let keys = ks.active_keys_of(&id).await?;
            if keys.is_empty() {
                bail!("account {addr} has no active key to encrypt to");
            }
            for k in keys {
                certs.push(policy::parse_public_cert(k.armored.as_bytes())?);
            }
            if let Some(p) = ks.account_settings(&id).await?.protect_subject {
                protect_subject |= p;
            }
        }
    }
    let recipients =
        Recipients::new(&certs, SystemTime::now()).context("cannot encrypt to the given keys")?;
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
