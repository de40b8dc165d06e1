use std::process::ExitCode;

use anyhow::Result;

use super::{open_keystore, print_json, time};
use crate::cli::AuditCmd;
use crate::config::Config;

pub async fn run(config: &Config, cmd: AuditCmd) -> Result<ExitCode> {
    let ks = open_keystore(config).await?;
    match cmd {
        AuditCmd::Verify { json } => {
            let v = ks.audit_verify().await?;
            if json {
                print_json(&v)?;
            } else if v.problems.is_empty() {
                println!("audit log intact: {} rows, hash chain verified", v.rows);
            }
            for p in &v.problems {
                eprintln!("sealpost: audit: {p}");
            }
            Ok(if v.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCmd::Show { account, json } => {
            let account = account.map(|a| a.to_string());
            let rows = ks.audit_rows(account.as_deref()).await?;
            if json {
                print_json(&rows)?;
            } else {
                for r in rows {
                    println!(
                        "{:>6}  {}  {:<24} {:<16} {} {}{}",
                        r.seq,
                        time(r.at),
                        r.action,
                        r.actor,
                        r.account.as_deref().unwrap_or("-"),
                        r.object.as_deref().unwrap_or("-"),
                        r.reason
                            .map(|x| format!("  reason: {x}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
