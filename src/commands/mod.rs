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
    init_logging(&loaded.config)?;
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

/// Logs to stderr (which journald reads) and, with `[log] file`, also appends every line to
/// that file. Fails only when the file cannot be opened.
fn init_logging(config: &Config) -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, Registry};
    type Boxed = Box<dyn Layer<Registry> + Send + Sync>;
    // sqlx reports routine PostgreSQL notices (e.g. "already exists, skipping") at info.
    let configured = |level: &str| EnvFilter::try_new(format!("{level},sqlx=warn"));
    let stderr_filter = || {
        EnvFilter::try_from_env("SEALPOST_LOG")
            .or_else(|_| configured(&config.log.level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let json = config.log.format == LogFormat::Json;
    // The file copy never has colour codes; stderr keeps tracing-subscriber's default.
    let layer = |writer: tracing_subscriber::fmt::writer::BoxMakeWriter, file: bool| -> Boxed {
        let mut fmt = tracing_subscriber::fmt::layer().with_writer(writer);
        if file {
            fmt = fmt.with_ansi(false);
        }
        if json {
            fmt.json().boxed()
        } else {
            fmt.boxed()
        }
    };
    let mut layers: Vec<Boxed> = vec![layer(
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
        false,
    )
    .with_filter(stderr_filter())
    .boxed()];
    if !config.log.file.is_empty() {
        let path = log_file_path(&config.log.file, std::process::id());
        let file = open_log_file(&path)
            .with_context(|| format!("cannot open log file {} ([log] file)", path.display()))?;
        let filter = if config.log.file_level.is_empty() {
            stderr_filter()
        } else {
            configured(&config.log.file_level).with_context(|| {
                format!(
                    "invalid configuration: log.file_level = {:?}",
                    config.log.file_level
                )
            })?
        };
        layers.push(
            layer(
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file)),
                true,
            )
            .with_filter(filter)
            .boxed(),
        );
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(())
}

/// `[log] file` with `%p` replaced by the process id.
fn log_file_path(pattern: &str, pid: u32) -> std::path::PathBuf {
    pattern.replace("%p", &pid.to_string()).into()
}

/// Opened for appending (O_APPEND): each event is written with one write() call, so
/// processes sharing a file do not split each other's lines.
fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
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

    #[test]
    fn log_file_path_takes_the_pid() {
        assert_eq!(
            super::log_file_path("/var/log/sealpost-%p.log", 42),
            std::path::PathBuf::from("/var/log/sealpost-42.log")
        );
        assert_eq!(
            super::log_file_path("/var/log/sealpost.log", 42),
            std::path::PathBuf::from("/var/log/sealpost.log")
        );
    }
}
