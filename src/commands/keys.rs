use std::io::Read;
use std::process::ExitCode;

use std::time::SystemTime;

use anyhow::{Context, Result};
use sealpost_keystore::{policy, Actor, PublicKeyRecord};
use sequoia_openpgp::Cert;
use serde::Serialize;

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
        KeysCmd::Expiring {
            days,
            json,
            notify,
            from,
            sendmail,
        } => {
            let keys = ks.list_public_keys(None).await?;
            let found = expiring(&keys, SystemTime::now(), days)?;
            if notify {
                check_sender(&from)?;
                let mut failed = 0;
                for e in &found {
                    match send_notice(&sendmail, &from, e) {
                        Ok(()) => {
                            if !json {
                                println!("notified {} about {}", e.address, e.fingerprint);
                            }
                        }
                        Err(err) => {
                            failed += 1;
                            eprintln!("sealpost: cannot notify {}: {err:#}", e.address);
                        }
                    }
                }
                if failed > 0 {
                    if json {
                        print_json(&found)?;
                    }
                    return Ok(ExitCode::from(1));
                }
            }
            if json {
                print_json(&found)?;
            } else if found.is_empty() {
                println!("no active key expires within {days} days");
            } else if notify {
                // The "notified" lines said it all.
            } else {
                for e in &found {
                    println!(
                        "{}  {}  {}{}",
                        e.address,
                        e.fingerprint,
                        if e.expired { "expired " } else { "expires " },
                        e.expires_at
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An active key that stops being usable for encryption within the window.
#[derive(Debug, Serialize)]
struct Expiring {
    address: String,
    fingerprint: String,
    /// "openpgp" or "x509".
    kind: String,
    /// Unix seconds.
    expires: i64,
    /// The same as RFC 3339.
    expires_at: String,
    /// Already unusable now.
    expired: bool,
}

/// Active keys whose encryption ability ends within `days` days of `now` (or already has),
/// soonest first.
fn expiring(keys: &[PublicKeyRecord], now: SystemTime, days: u32) -> Result<Vec<Expiring>> {
    let now_s = policy::unix(now);
    let until = now_s + i64::from(days) * 86_400;
    let mut found = Vec::new();
    for k in keys.iter().filter(|k| k.active) {
        let (expires, expired) = if k.kind == "x509" {
            // A certificate is usable until it expires.
            let Some(expires) = k.expires else { continue };
            (expires, expires <= now_s)
        } else {
            let cert = policy::parse_public_cert(k.armored.as_bytes())
                .with_context(|| format!("the stored key {} cannot be read", k.fingerprint))?;
            match encryption_deadline(&cert, now) {
                Deadline::Never => continue,
                Deadline::At(t) => (t, false),
                // Already unusable: report when it expired if the certificate says so.
                Deadline::Past => (k.expires.unwrap_or(now_s).min(now_s), true),
            }
        };
        if expires <= until {
            found.push(Expiring {
                address: k.account.clone(),
                fingerprint: k.fingerprint.clone(),
                kind: k.kind.clone(),
                expires,
                expires_at: time(expires),
                expired,
            });
        }
    }
    found.sort_by(|a, b| (a.expires, &a.address).cmp(&(b.expires, &b.address)));
    Ok(found)
}

/// The sender must be one plain address (or local part): it goes into a header and onto
/// the sendmail command line.
fn check_sender(from: &str) -> Result<()> {
    let ok = !from.is_empty()
        && !from.starts_with('-')
        && from
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"".contains(&b));
    if !ok {
        anyhow::bail!("--from must be a plain address such as postmaster@example.org");
    }
    Ok(())
}

/// Submits one notice through `sendmail -i -f FROM -- TO`.
fn send_notice(sendmail: &std::path::Path, from: &str, e: &Expiring) -> Result<()> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(sendmail)
        .args(["-i", "-f", from, "--", &e.address])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", sendmail.display()))?;
    let message = notice(from, e, SystemTime::now());
    let written = child
        .stdin
        .take()
        .map(|mut i| std::io::Write::write_all(&mut i, message.as_bytes()));
    let status = child
        .wait()
        .with_context(|| format!("cannot run {}", sendmail.display()))?;
    if let Some(Err(err)) = written {
        return Err(err).with_context(|| format!("cannot write to {}", sendmail.display()));
    }
    if !status.success() {
        anyhow::bail!("{} failed ({status})", sendmail.display());
    }
    Ok(())
}

/// The notice: plain ASCII text, marked as automatic (RFC 3834).
fn notice(from: &str, e: &Expiring, now: SystemTime) -> String {
    let day = &e.expires_at[..10];
    let smime = e.kind == "x509";
    let what = if smime {
        "S/MIME certificate"
    } else {
        "OpenPGP key"
    };
    let (subject, when) = if e.expired {
        (
            format!("Your {what} for {} has expired", e.address),
            format!("has expired ({day})"),
        )
    } else {
        (
            format!("Your {what} for {} expires on {day}", e.address),
            format!(
                "expires on {} UTC",
                e.expires_at.replace('T', " ").trim_end_matches('Z')
            ),
        )
    };
    let to = &e.address;
    let fpr = &e.fingerprint;
    let date = rfc5322_date(policy::unix(now));
    [
        format!("From: {from}"),
        format!("To: {to}"),
        format!("Subject: {subject}"),
        format!("Date: {date}"),
        "Auto-Submitted: auto-generated".into(),
        "MIME-Version: 1.0".into(),
        "Content-Type: text/plain; charset=us-ascii".into(),
        "Content-Transfer-Encoding: 7bit".into(),
        String::new(),
        format!("Incoming mail to {to} is encrypted to your {what}"),
        String::new(),
        format!("  {fpr}"),
        String::new(),
        format!("which {when}. After that, new mail can no longer be"),
        "encrypted to it.".into(),
        String::new(),
    ]
    .into_iter()
    .chain(if smime {
        [
            "A certificate cannot be extended. Get a new one from the authority that",
            "issued it (or make a new self-signed one), import the new certificate",
            "and its private key into your mail program, and upload the certificate",
            "through your webmail's key settings or ask your mail administrator to",
            "import it. Keep the old private key: it still opens the mail you have.",
            "",
        ]
        .map(String::from)
        .to_vec()
    } else {
        vec![
            "The server cannot extend a key. Extend its expiry date with the program".into(),
            "that holds your secret key, for example with GnuPG (the second command".into(),
            "extends the subkeys):".into(),
            String::new(),
            format!("  gpg --quick-set-expire {fpr} 2y"),
            format!("  gpg --quick-set-expire {fpr} 2y '*'"),
            String::new(),
            "Then upload the public key again through your webmail's key settings,".into(),
            "or ask your mail administrator to import it.".into(),
            String::new(),
        ]
    })
    .collect::<Vec<String>>()
    .join("\n")
}

/// Unix seconds as an RFC 5322 date in UTC ("Wed, 25 Nov 2026 17:14:06 +0000").
fn rfc5322_date(t: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // "YYYY-MM-DDTHH:MM:SSZ"
    let iso = time(t);
    let month: usize = iso[5..7].parse().unwrap_or(1);
    format!(
        "{}, {} {} {} {} +0000",
        DAYS[t.div_euclid(86_400).rem_euclid(7) as usize],
        &iso[8..10],
        MONTHS[month.saturating_sub(1).min(11)],
        &iso[..4],
        &iso[11..19]
    )
}

enum Deadline {
    /// Mail can be encrypted to the key indefinitely.
    Never,
    /// The last moment (Unix seconds) mail can be encrypted to the key.
    At(i64),
    /// Mail cannot be encrypted to the key now.
    Past,
}

/// When mail to this certificate can no longer be encrypted: the earlier of the primary
/// key's expiry and the expiry of its longest-lived encryption subkey valid now.
fn encryption_deadline(cert: &Cert, now: SystemTime) -> Deadline {
    if policy::encryption_keys(cert, now).is_empty() {
        return Deadline::Past;
    }
    let Ok(vc) = cert.with_policy(policy::standard_policy(), now) else {
        return Deadline::Past;
    };
    let primary = vc.primary_key().key_expiration_time().map(policy::unix);
    // The same selection as policy::encryption_keys; None means one of them never expires.
    let mut subkeys: Option<i64> = Some(i64::MIN);
    for ka in vc
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .for_transport_encryption()
    {
        subkeys = match (subkeys, ka.key_expiration_time().map(policy::unix)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    match (primary, subkeys) {
        (None, None) => Deadline::Never,
        (Some(t), None) | (None, Some(t)) => Deadline::At(t),
        (Some(a), Some(b)) => Deadline::At(a.min(b)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, expires: i64) -> PublicKeyRecord {
        PublicKeyRecord {
            fingerprint: "AB".repeat(32),
            account: "bob@example.org".into(),
            account_id: "a1".into(),
            kind: kind.into(),
            active: true,
            algorithm: "RSA3072".into(),
            version: 3,
            user_ids: vec!["bob@example.org".into()],
            created: 0,
            expires: Some(expires),
            imported_at: 0,
            updated_at: 0,
            armored: String::new(),
        }
    }

    #[test]
    fn certificates_expire_at_not_after_and_the_notice_says_how_to_renew() {
        let now = SystemTime::now();
        let t = policy::unix(now);
        let keys = [
            record("x509", t + 10 * 86_400),
            record("x509", t + 100 * 86_400),
            record("x509", t - 86_400),
        ];
        let found = expiring(&keys, now, 30).unwrap();
        assert_eq!(found.len(), 2);
        assert!(found[0].expired && !found[1].expired);
        let text = notice("postmaster@example.org", &found[1], now);
        assert!(text.contains("Subject: Your S/MIME certificate for bob@example.org expires on"));
        assert!(text.contains("A certificate cannot be extended"));
        assert!(!text.contains("gpg --quick-set-expire"));
    }
}
