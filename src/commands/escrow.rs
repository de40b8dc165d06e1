use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use sealpost_escrow::bundle::{self, Bundle, Selection};
use sealpost_escrow::officer::{self, OfficerAlgorithm, OfficerSecret, SecretOutput};
use sealpost_escrow::progress::Progress;
use sealpost_escrow::secret_io::{self, PassphraseSource};
use sealpost_escrow::{drill, maildir, recover, reinstate, rotate};
use sealpost_keystore::{Actor, OfficerKeyRecord};

use super::{open_keystore, print_json, time};
use crate::cli::{EscrowCmd, OfficerAlgo, OfficerSecretArgs};
use crate::config::Config;

pub async fn run(config: &Config, cmd: EscrowCmd) -> Result<ExitCode> {
    match cmd {
        EscrowCmd::OfficerInit {
            out,
            algo,
            user_id,
            passphrase_file,
            shares,
            threshold,
            share_passphrase,
            share_passphrase_files,
            json,
        } => {
            let algorithm = match algo {
                OfficerAlgo::Cv25519 => OfficerAlgorithm::Cv25519,
                OfficerAlgo::Rsa4096 => OfficerAlgorithm::Rsa4096,
            };
            let secret = match (shares, threshold) {
                (Some(n), Some(m)) => {
                    let passphrases = if !share_passphrase_files.is_empty() {
                        if share_passphrase_files.len() != usize::from(n) {
                            bail!(
                                "{} --share-passphrase-file given for {n} shares; give one per share",
                                share_passphrase_files.len()
                            );
                        }
                        Some(
                            share_passphrase_files
                                .iter()
                                .map(|f| secret_io::read_passphrase_file(f))
                                .collect::<Result<Vec<_>>>()?,
                        )
                    } else if share_passphrase {
                        let mut v = Vec::new();
                        for i in 1..=n {
                            v.push(
                                PassphraseSource::Prompt(format!(
                                    "New passphrase for share {i} of {n} (its holder types it): "
                                ))
                                .read_new()?,
                            );
                        }
                        Some(v)
                    } else {
                        None
                    };
                    SecretOutput::Shares {
                        shares: n,
                        threshold: m,
                        passphrases,
                    }
                }
                _ => SecretOutput::Protected(
                    PassphraseSource::from_option(
                        passphrase_file.as_deref(),
                        "New passphrase for the officer key: ",
                    )
                    .read_new()?,
                ),
            };
            let r = officer::init(&out, algorithm, &user_id, secret)?;
            if json {
                print_json(&r)?;
            } else {
                println!("officer key {}", r.fingerprint);
                println!("public key:  {}", r.public_key.display());
                println!("revocation:  {}", r.revocation.display());
                if let Some(k) = &r.secret_key {
                    println!("secret key:  {}", k.display());
                }
                for s in &r.shares {
                    println!("share:       {}", s.display());
                }
                if let Some(t) = r.threshold {
                    println!(
                        "any {t} of the {} shares recover the key; hand each to its holder",
                        r.shares.len()
                    );
                }
                println!(
                    "next: on the server, sealpost escrow officer-add {}",
                    r.public_key.display()
                );
            }
        }
        EscrowCmd::OfficerAdd { file, json } => {
            let cert = officer::read_public_cert(&file)?;
            let bytes = sequoia_openpgp::serialize::SerializeInto::to_vec(&cert.armored())
                .context("cannot re-armor the key")?;
            let ks = open_keystore(config).await?;
            let k = ks
                .add_officer_key(&bytes, &Actor::cli())
                .await
                .with_context(|| format!("cannot install {}", file.display()))?;
            if json {
                print_json(&k)?;
            } else {
                println!("installed officer key {} (active)", k.fingerprint);
            }
        }
        EscrowCmd::OfficerList { json } => {
            let ks = open_keystore(config).await?;
            let keys = ks.list_officer_keys().await?;
            if json {
                print_json(&keys)?;
            } else if keys.is_empty() {
                println!("no officer keys");
            } else {
                for k in &keys {
                    println!("{}", officer_line(k));
                }
            }
        }
        EscrowCmd::OfficerRetire { fingerprint } => {
            let ks = open_keystore(config).await?;
            let k = ks
                .set_officer_key_active(&fingerprint, false, &Actor::cli())
                .await?;
            println!(
                "retired officer key {}; escrows made to it stay stored",
                k.fingerprint
            );
        }
        EscrowCmd::Export {
            account,
            all,
            reason,
            out,
            json,
        } => {
            let ks = open_keystore(config).await?;
            let selection = match (&account, all) {
                (Some(a), _) => Selection::Account(a),
                _ => Selection::All,
            };
            let mut bar = Progress::new("exporting");
            let r = bundle::export(&ks, selection, &reason, &out, &Actor::cli(), |d, t| {
                if all {
                    bar.update(d, t)
                }
            })
            .await?;
            bar.finish();
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "wrote {} ({} key(s), {} with escrow); the export is recorded in the audit log",
                    r.path, r.entries, r.with_escrow
                );
            }
        }
        EscrowCmd::Recover {
            bundle,
            officer,
            account,
            key,
            reveal_password,
            reprotect,
            new_password_file,
            escrow_out,
            decrypt_maildir,
            out,
            json,
        } => {
            let b = Bundle::read(&bundle)?;
            let entry = b.select(account.as_ref(), key.as_deref())?.clone();
            if let Some(out) = out.as_ref().filter(|o| o.exists()) {
                // Said before any passphrase is asked for; a new empty directory is fine
                // for --decrypt-maildir.
                let empty_dir = decrypt_maildir.is_some()
                    && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none());
                if decrypt_maildir.is_some() && !empty_dir {
                    bail!(
                        "{} exists and is not empty; give a new directory for the decrypted mail",
                        out.display()
                    );
                }
                if !empty_dir {
                    bail!("{} already exists; refusing to overwrite it", out.display());
                }
            }
            let officer = load_officer(&officer)?;
            if reveal_password {
                let pw = recover::escrowed_password(&officer, &entry)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", entry.account))?;
                match out {
                    Some(path) => {
                        let mut data = pw.map(|p| p.to_vec());
                        data.push(b'\n');
                        let written = secret_io::write_secret_file(&path, &data);
                        secret_io::wipe(&mut data);
                        written?;
                        println!(
                            "wrote the password of {} ({}) to {} (mode 0600)",
                            entry.account,
                            entry.fingerprint,
                            path.display()
                        );
                    }
                    None => {
                        if !secret_io::stdout_is_terminal() {
                            bail!(
                                "refusing to print a password to a pipe or file; run on a terminal \
                                 or give --out FILE"
                            );
                        }
                        let mut stdout = std::io::stdout().lock();
                        writeln!(
                            stdout,
                            "password of {} ({}):",
                            entry.account, entry.fingerprint
                        )?;
                        pw.map(|p| stdout.write_all(p))?;
                        writeln!(stdout)?;
                    }
                }
            } else if reprotect {
                let out = out.expect("clap requires --out");
                let old = recover::escrowed_password(&officer, &entry)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", entry.account))?;
                let unlocked = recover::unlock_stored(&entry.private_key, &old)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", entry.account))?;
                let new = PassphraseSource::from_option(
                    new_password_file.as_deref(),
                    format!("New password for {}: ", entry.account),
                )
                .read_new()?;
                // An OpenPGP key comes back armored; a PKCS#12 bundle as DER (a .p12 file
                // that mail clients import).
                let armored: Vec<u8> = match &unlocked {
                    recover::UnlockedKey::OpenPgp(cert) => {
                        recover::reprotect(cert, &new)?.into_bytes()
                    }
                    recover::UnlockedKey::Smime(_) => {
                        sealpost_escrow::smime::reprotect(&entry.private_key, &old, &new)?
                    }
                };
                let escrow = match &escrow_out {
                    Some(path) => {
                        if path.exists() {
                            bail!(
                                "{} already exists; refusing to overwrite it",
                                path.display()
                            );
                        }
                        Some((path, recover::escrow_to(&officer, &new)?))
                    }
                    None => None,
                };
                secret_io::write_secret_file(&out, &armored)?;
                if let Some((path, blob)) = &escrow {
                    secret_io::write_secret_file(path, blob.as_bytes())?;
                }
                if json {
                    print_json(&serde_json::json!({
                        "account": entry.account,
                        "fingerprint": entry.fingerprint,
                        "out": out.display().to_string(),
                    }))?;
                } else {
                    println!(
                        "wrote the key of {} ({}) protected by the new password to {}",
                        entry.account,
                        entry.fingerprint,
                        out.display()
                    );
                    if let Some((path, _)) = &escrow {
                        println!("wrote the escrow of the new password to {}", path.display());
                    }
                    println!(
                        "next: on the server, sealpost escrow reinstate --account {} {}{}",
                        entry.account,
                        out.display(),
                        escrow
                            .as_ref()
                            .map(|(p, _)| format!(" --escrow {}", p.display()))
                            .unwrap_or_default()
                    );
                }
            } else if let Some(dir) = decrypt_maildir {
                let out = out.expect("clap requires --out");
                let key = recover::unlock_entry(&officer, &entry)?;
                let mut bar = Progress::new("decrypting");
                let r = maildir::decrypt_maildir(&dir, &out, &key, |d, t| bar.update(d, t))?;
                bar.finish();
                if json {
                    print_json(&r)?;
                } else {
                    println!(
                        "{} decrypted, {} copied unchanged, {} for another key, {} failed; \
                         written to {}",
                        r.decrypted,
                        r.copied,
                        r.other_key,
                        r.failed.len(),
                        out.display()
                    );
                    for (file, why) in &r.failed {
                        eprintln!("sealpost: {file}: {why}");
                    }
                }
                if !r.failed.is_empty() {
                    return Ok(ExitCode::from(1));
                }
            }
        }
        EscrowCmd::Audit {
            bundle,
            officer,
            json,
        } => {
            let b = Bundle::read(&bundle)?;
            let officer = load_officer(&officer)?;
            let mut bar = Progress::new("checking");
            let r = drill::drill(&officer, &b, |d, t| bar.update(d, t));
            bar.finish();
            if json {
                print_json(&r)?;
            } else {
                for l in &r.results {
                    match &l.detail {
                        Some(d) => println!(
                            "{}  {}  {}: {d}",
                            l.account,
                            l.fingerprint,
                            l.verdict.as_str()
                        ),
                        None => {
                            println!("{}  {}  {}", l.account, l.fingerprint, l.verdict.as_str())
                        }
                    }
                }
                println!(
                    "{} key(s) checked with officer key {}: {} ok, {} failed",
                    r.checked,
                    r.officer,
                    r.checked - r.failures,
                    r.failures
                );
            }
            if r.failures > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        EscrowCmd::Rotate {
            bundle,
            officer,
            new_public,
            out,
            json,
        } => {
            let b = Bundle::read(&bundle)?;
            let new = officer::read_public_cert(&new_public)?;
            let old = load_officer(&officer)?;
            let mut bar = Progress::new("re-escrowing");
            let r = rotate::rotate(&old, &b, &new, &out, |d, t| bar.update(d, t))?;
            bar.finish();
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "re-escrowed {} password(s) to officer key {} in {} ({} key(s) had no escrow)",
                    r.rotated, r.new_officer, r.out, r.without_escrow
                );
                for (account, fpr, why) in &r.skipped {
                    println!("skipped {account} {fpr}: {why}");
                }
                println!(
                    "next: on the server, sealpost escrow import-rotation {}",
                    r.out
                );
            }
            if !r.skipped.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        EscrowCmd::ImportRotation { file, json } => {
            let ks = open_keystore(config).await?;
            let r = rotate::import(&ks, &file, &Actor::cli()).await?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "stored {} escrow(s) for officer key {}",
                    r.imported, r.new_officer
                );
                for (account, fpr, why) in &r.skipped {
                    println!("skipped {account} {fpr}: {why}");
                }
                if r.old_retired {
                    println!("the old officer key is retired");
                } else {
                    println!("the old officer key stays active: escrows to it remain");
                }
            }
        }
        EscrowCmd::Reinstate {
            account,
            file,
            escrow,
            reason,
            json,
        } => {
            let bytes = secret_io::read_limited(&file, 1 << 20, "key file")?;
            let escrow = match &escrow {
                Some(p) => Some(secret_io::read_limited(p, 1 << 20, "escrow file")?),
                None => None,
            };
            let ks = open_keystore(config).await?;
            let r = reinstate::reinstate(
                &ks,
                &account,
                &bytes,
                escrow.as_deref(),
                reason.as_deref(),
                &Actor::cli(),
            )
            .await?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "stored the re-protected key {} for {}",
                    r.key.fingerprint, r.account
                );
                if r.escrow_stored {
                    println!("stored the escrow of the new password");
                } else if r.escrow_removed {
                    println!(
                        "removed its escrow (it held the old password); the user's client \
                         escrows the new one"
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_officer(a: &OfficerSecretArgs) -> Result<OfficerSecret> {
    match &a.officer_key {
        Some(path) => OfficerSecret::from_key_file(
            path,
            &PassphraseSource::from_option(
                a.passphrase_file.as_deref(),
                "Passphrase of the officer key: ",
            ),
        ),
        None => OfficerSecret::from_shares(&a.shares, &a.share_passphrase_files),
    }
}

fn officer_line(k: &OfficerKeyRecord) -> String {
    format!(
        "{}  {}  {}  added {}{}  {}",
        k.fingerprint,
        if k.active { "active " } else { "retired" },
        k.algorithm,
        time(k.added_at),
        k.retired_at
            .map(|t| format!(", retired {}", time(t)))
            .unwrap_or_default(),
        k.user_ids.first().map(String::as_str).unwrap_or("")
    )
}
