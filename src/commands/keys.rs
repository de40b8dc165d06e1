use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result};
use sealpost_keystore::{Actor, PublicKeyRecord};

use super::{open_keystore, print_json, time};
use crate::cli::KeysCmd;
use crate::config::Config;

/// Uploaded keys larger than this are refused before parsing.
const MAX_KEY_FILE: u64 = 1 << 20;

pub async fn run(config: &Config, cmd: KeysCmd) -> Result<ExitCode> {
    let ks = open_keystore(config).await?;
    let actor = Actor::cli();
    match cmd {
        KeysCmd::Import {
            address,
            file,
            json,
        } => {
            let bytes = read_key_file(&file)?;
            let k = ks
                .import_public_key(&address, &bytes, &actor, true)
                .await
                .with_context(|| format!("cannot import {} for {address}", file.display()))?;
            if json {
                print_json(&k)?;
            } else {
                println!(
                    "imported {} for {} ({})",
                    k.fingerprint, k.account, k.algorithm
                );
            }
        }
        KeysCmd::List { address, json } => {
            let keys = ks.list_public_keys(address.as_ref()).await?;
            if json {
                print_json(&keys)?;
            } else if keys.is_empty() {
                println!("no keys");
            } else {
                for k in &keys {
                    println!("{}", summary(k));
                }
            }
        }
        KeysCmd::Show {
            fingerprint,
            json,
            armor,
        } => {
            let k = ks.require_public_key(&fingerprint).await?;
            let history = ks.key_history(&k.fingerprint).await?;
            if armor {
                print!("{}", k.armored);
                if !k.armored.ends_with('\n') {
                    println!();
                }
            } else if json {
                print_json(&serde_json::json!({ "key": k, "history": history }))?;
            } else {
                println!("fingerprint: {}", k.fingerprint);
                println!("account:     {}", k.account);
                println!("kind:        {} v{}", k.kind, k.version);
                println!("active:      {}", if k.active { "yes" } else { "no" });
                println!("algorithm:   {}", k.algorithm);
                for u in &k.user_ids {
                    println!("user id:     {u}");
                }
                println!("created:     {}", time(k.created));
                println!(
                    "expires:     {}",
                    k.expires.map(time).unwrap_or_else(|| "never".into())
                );
                for h in history {
                    println!("history:     {} {} by {}", time(h.at), h.event, h.actor);
                }
            }
        }
        KeysCmd::Remove { fingerprint } => {
            let k = ks.remove_public_key(&fingerprint, &actor).await?;
            println!("removed {} of {}", k.fingerprint, k.account);
        }
        KeysCmd::Activate { fingerprint } => {
            let k = ks
                .set_key_active(&fingerprint, true, &actor)
                .await
                .context("cannot activate the key")?;
            println!("activated {} of {}", k.fingerprint, k.account);
        }
        KeysCmd::Deactivate { fingerprint } => {
            let k = ks.set_key_active(&fingerprint, false, &actor).await?;
            println!("deactivated {} of {}", k.fingerprint, k.account);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(k: &PublicKeyRecord) -> String {
    format!(
        "{}  {}  {}  {}  expires {}  {}",
        k.fingerprint,
        k.account,
        if k.active { "active  " } else { "inactive" },
        k.algorithm,
        k.expires.map(time).unwrap_or_else(|| "never".into()),
        k.user_ids.first().map(String::as_str).unwrap_or("")
    )
}

fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut buf)
            .context("cannot read the key from standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open key file {}", path.display()))?
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read key file {}", path.display()))?;
    }
    if buf.len() as u64 > MAX_KEY_FILE {
        anyhow::bail!(
            "key file {} is larger than {} bytes; that is not a single public key",
            path.display(),
            MAX_KEY_FILE
        );
    }
    Ok(buf)
}
