//! One module per command group; each returns the process exit code.

mod accounts;
mod audit;
mod check;
mod encrypt;
mod escrow;
mod keys;
mod maildir;
mod man;
mod serve;

use std::process::ExitCode;

use anyhow::{Context, Result};
use sealpost_keystore::Keystore;

use crate::cli::{Cli, Command};
use crate::config::{self, Config, LogFormat};

pub fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Man { dir } = &cli.command {
        // Needs neither the configuration nor the runtime.
        return man::write(dir);
    }
    let loaded = config::load(cli.config.as_deref())?;
    init_logging(&loaded.config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Accounts(c) => accounts::run(&loaded.config, c).await,
            Command::Keys(c) => keys::run(&loaded.config, c).await,
            Command::Audit(c) => audit::run(&loaded.config, c).await,
            Command::Check(a) => check::run(&loaded, a).await,
            Command::Escrow(c) => escrow::run(&loaded.config, *c).await,
            Command::Serve => serve::run(&loaded, serve::Parts::All).await,
            Command::Milter => serve::run(&loaded, serve::Parts::Milter).await,
            Command::Jmap => serve::run(&loaded, serve::Parts::Jmap).await,
            Command::Encrypt(a) => encrypt::run(&loaded.config, a).await,
            Command::Maildir(c) => maildir::run(&loaded.config, c).await,
            Command::Man { .. } => unreachable!("handled before the configuration is loaded"),
        }
    })
}

/// Opens the keystore and applies pending migrations.
pub async fn open_keystore(config: &Config) -> Result<Keystore> {
    Keystore::open(
        &config.database,
        config.lookup.clone(),
        config.policy.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the keystore at {}",
            redact_url(&config.database.url)
        )
    })
}

/// The database URL without a password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SEALPOST_LOG")
        // sqlx reports routine PostgreSQL notices (e.g. "already exists, skipping") at info.
        .or_else(|_| EnvFilter::try_new(format!("{},sqlx=warn", config.log.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Unix seconds as RFC 3339 for tables.
pub fn time(t: i64) -> String {
    sealpost_keystore::policy::format_time(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
