//! `sealpost check`: everything an operator should know before starting the service.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use sealpost_keystore::policy;
use serde::Serialize;

use super::{open_keystore, print_json, redact_url};
use crate::cli::CheckArgs;
use crate::config::Loaded;

#[derive(Serialize)]
struct Finding {
    ok: bool,
    what: String,
}

pub async fn run(loaded: &Loaded, args: CheckArgs) -> Result<ExitCode> {
    let config = &loaded.config;
    let mut findings = vec![Finding {
        ok: true,
        what: match &loaded.path {
            Some(p) => format!("config {} is valid", p.display()),
            None => "no config file given; built-in defaults are valid".into(),
        },
    }];
    match open_keystore(config).await {
        Err(e) => findings.push(Finding {
            ok: false,
            what: format!("{e:#}"),
        }),
        Ok(ks) => {
            findings.push(Finding {
                ok: true,
                what: format!(
                    "database {} reachable, migrations applied",
                    redact_url(&config.database.url)
                ),
            });
            let now = SystemTime::now();
            let keys = ks.list_public_keys(None).await?;
            let mut active = 0;
            for k in keys.iter().filter(|k| k.active) {
                active += 1;
                let addresses = ks.addresses_of(&k.account_id).await?;
                let verdict = policy::parse_public_cert(k.armored.as_bytes())
                    .and_then(|c| policy::check_cert(&c, &addresses, now, &config.policy));
                if let Err(e) = verdict {
                    findings.push(Finding {
                        ok: false,
                        what: format!(
                            "active key {} of {} no longer passes the policy: {e}; mail to it is not encrypted to this key — ask the owner for a new key, or deactivate it",
                            k.fingerprint, k.account
                        ),
                    });
                }
            }
            findings.push(Finding {
                ok: true,
                what: format!("{} keys stored, {active} active", keys.len()),
            });
            let v = ks.audit_verify().await?;
            findings.push(Finding {
                ok: v.problems.is_empty(),
                what: if v.problems.is_empty() {
                    format!("audit log intact ({} rows)", v.rows)
                } else {
                    format!("audit log broken: {}", v.problems.join("; "))
                },
            });
        }
    }
    let failed = findings.iter().any(|f| !f.ok);
    if args.json {
        print_json(&findings)?;
    } else {
        for f in &findings {
            if f.ok {
                println!("ok: {}", f.what);
            } else {
                eprintln!("problem: {}", f.what);
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
