//! `sealpost check`: everything an operator should know before starting the service.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use sealpost_keystore::recipient;
use serde::Serialize;

use super::{open_keystore, print_json, redact_url};
use crate::cli::CheckArgs;
use crate::config::Loaded;

#[derive(Serialize)]
struct Finding {
    ok: bool,
    /// Not a failure, but something the operator should look at.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    warning: bool,
    what: String,
}

impl Finding {
    fn ok(what: String) -> Finding {
        Finding {
            ok: true,
            warning: false,
            what,
        }
    }

    fn problem(what: String) -> Finding {
        Finding {
            ok: false,
            warning: false,
            what,
        }
    }

    fn warning(what: String) -> Finding {
        Finding {
            ok: true,
            warning: true,
            what,
        }
    }
}

pub async fn run(loaded: &Loaded, args: CheckArgs) -> Result<ExitCode> {
    let config = &loaded.config;
    let mut findings = vec![Finding::ok(match &loaded.path {
        Some(p) => format!("config {} is valid", p.display()),
        None => "no config file given; built-in defaults are valid".into(),
    })];
    match open_keystore(config).await {
        Err(e) => findings.push(Finding::problem(format!("{e:#}"))),
        Ok(ks) => {
            findings.push(Finding::ok(format!(
                "database {} reachable, migrations applied",
                redact_url(&config.database.url)
            )));
            let now = SystemTime::now();
            let keys = ks.list_public_keys(None).await?;
            let mut active = 0;
            for k in keys.iter().filter(|k| k.active) {
                active += 1;
                let addresses = ks.addresses_of(&k.account_id).await?;
                let verdict = recipient::recheck(k, &addresses, now, &config.policy);
                if let Err(e) = verdict {
                    findings.push(Finding::problem(format!(
                        "active key {} of {} no longer passes the policy: {e}; mail to it is not encrypted to this key — ask the owner for a new key, or deactivate it",
                        k.fingerprint, k.account
                    )));
                }
            }
            findings.push(Finding::ok(format!(
                "{} keys stored, {active} active",
                keys.len()
            )));
            if !config.jmap.listen.is_empty() {
                findings.push(escrow_policy(config, ks.active_officer_keys().await?.len()));
            }
            let v = ks.audit_verify().await?;
            findings.push(if v.problems.is_empty() {
                Finding::ok(format!("audit log intact ({} rows)", v.rows))
            } else {
                Finding::problem(format!("audit log broken: {}", v.problems.join("; ")))
            });
        }
    }
    findings.push(milter_reachable(&config.milter.listen).await);
    let failed = findings.iter().any(|f| !f.ok);
    if args.json {
        print_json(&findings)?;
    } else {
        for f in &findings {
            if f.warning {
                println!("warning: {}", f.what);
            } else if f.ok {
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

/// Whether the escrow policy of the JMAP service can work with the officer keys installed.
fn escrow_policy(config: &crate::config::Config, officers: usize) -> Finding {
    use sealpost_jmap::EscrowMode;
    let keys = &config.jmap.keys;
    match (keys.escrow, officers) {
        (EscrowMode::Required, 0) => Finding::problem(
            "[jmap.keys] escrow = \"required\" but no officer key is active: clients cannot \
             store private keys; install one with `sealpost escrow officer-add`"
                .into(),
        ),
        (EscrowMode::Optional, 0) => Finding::warning(
            "[jmap.keys] escrow = \"optional\" but no officer key is active: clients cannot \
             escrow passwords until one is installed (`sealpost escrow officer-add`)"
                .into(),
        ),
        (EscrowMode::Off, _) => Finding::ok("escrow is off".into()),
        (mode, n) => Finding::ok(format!(
            "escrow {}: {n} active officer key(s)",
            mode.as_str()
        )),
    }
}

/// Whether something answers on the milter address Postfix is told to use. Not running is a
/// warning: `check` is also run before the service is started.
async fn milter_reachable(listen: &str) -> Finding {
    use std::time::Duration;
    let attempt = async {
        match listen.strip_prefix("unix:") {
            Some(path) => tokio::net::UnixStream::connect(path).await.map(drop),
            None => tokio::net::TcpStream::connect(listen).await.map(drop),
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(())) => Finding::ok(format!("milter answers on {listen}")),
        Ok(Err(e)) => Finding::warning(format!(
            "nothing answers on the milter address {listen} ({e}); until sealpost serve or \
             sealpost milter runs there, Postfix defers mail (milter_default_action = tempfail)"
        )),
        Err(_) => Finding::warning(format!(
            "the milter address {listen} did not answer within 2 s"
        )),
    }
}
