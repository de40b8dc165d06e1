//! `sealpost serve`, `sealpost milter` and `sealpost jmap`: long-running services with a
//! metrics endpoint.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use sealpost_keystore::Keystore;
use sealpost_milter::{service, Metrics};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{open_keystore, redact_url};
use crate::config::{Config, Loaded};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// Everything this build serves.
    All,
    /// The milter alone (plus metrics).
    Milter,
    /// The JMAP key service alone (plus metrics).
    Jmap,
}

struct Health {
    registry: Registry,
    keystore: Keystore,
}

pub async fn run(loaded: &Loaded, parts: Parts) -> Result<ExitCode> {
    let (config, path) = (&loaded.config, loaded.path.as_deref());
    if parts == Parts::Jmap && config.jmap.listen.is_empty() {
        anyhow::bail!("[jmap] listen is empty, so there is nothing to serve");
    }
    let keystore = match parts {
        Parts::All | Parts::Jmap => open_keystore(config).await?,
        // Milter-only nodes may use a read-only role: no migrations there.
        Parts::Milter => Keystore::connect(
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
        })?,
    };
    if parts == Parts::Milter {
        let pending = keystore.pending_migrations().await?;
        if !pending.is_empty() {
            anyhow::bail!(
                "the keystore schema is not up to date ({} migrations pending); run `sealpost check` with the owner role first",
                pending.len()
            );
        }
    }

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    // Installed before anything serves, so SIGHUP never ends the process.
    let (settings_tx, settings) = watch::channel(Arc::new(config.milter.clone()));
    tokio::spawn(reload_on_hangup(
        path.map(Path::to_path_buf),
        config_fingerprint(config),
        settings_tx,
    ));

    // The JMAP service; a configuration error stops the start-up with the key's name.
    let jmap = if parts != Parts::Milter && !config.jmap.listen.is_empty() {
        let state = sealpost_jmap::JmapState::new(
            keystore.clone(),
            config.jmap.clone(),
            config.auth.clone(),
        )?;
        let l = tokio::net::TcpListener::bind(&config.jmap.listen)
            .await
            .with_context(|| format!("cannot listen on {} ([jmap] listen)", config.jmap.listen))?;
        info!(listen = %config.jmap.listen, auth = ?config.auth.mode, "JMAP service listening");
        let mut rx = stop_rx.clone();
        Some(tokio::spawn(sealpost_jmap::serve(l, state, async move {
            let _ = rx.wait_for(|s| *s).await;
        })))
    } else {
        None
    };

    if !config.metrics.listen.is_empty() {
        let health = Arc::new(Health {
            registry,
            keystore: keystore.clone(),
        });
        let app = Router::new()
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(health);
        let l = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} ([metrics] listen)",
                    config.metrics.listen
                )
            })?;
        info!(listen = %config.metrics.listen, "metrics listening");
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
    }

    if parts == Parts::Jmap {
        let jmap = jmap.expect("the JMAP service was started");
        match jmap.await {
            Ok(r) => r.context("the JMAP service stopped")?,
            Err(e) => anyhow::bail!("the JMAP service failed: {e}"),
        }
        keystore.close().await;
        info!("stopped");
        return Ok(ExitCode::SUCCESS);
    }

    let mode = config.milter.socket_mode().map_err(anyhow::Error::msg)?;
    let listener = service::bind(&config.milter.listen, mode)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} ([milter] listen)",
                config.milter.listen
            )
        })?;
    info!(listen = %config.milter.listen, "milter listening");

    let grace = Duration::from_secs(config.milter.shutdown_grace_secs);
    let mut rx = stop_rx.clone();
    let shutdown = async move {
        let _ = rx.wait_for(|s| *s).await;
        info!("shutting down: no new connections; finishing messages in flight");
    };
    let milter = service::run(listener, keystore.clone(), settings, metrics, shutdown);
    tokio::pin!(milter);
    let mut rx = stop_rx.clone();
    let deadline = async move {
        let _ = rx.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = &mut milter => r.context("the milter stopped")?,
        _ = deadline => warn!(grace_secs = grace.as_secs(), "messages still in flight after the grace period; exiting (Postfix retries them)"),
    }
    if let Some(j) = jmap {
        // Stopped by the same signal; in-flight API calls get a moment to finish.
        let _ = tokio::time::timeout(Duration::from_secs(5), j).await;
    }
    keystore.close().await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn metrics_text(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &h.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            "cannot encode metrics\n".to_string(),
        ),
    }
}

async fn ready(State(h): State<Arc<Health>>) -> impl IntoResponse {
    match sqlx::query("SELECT 1").execute(h.keystore.pool()).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "keystore unreachable\n"),
    }
}

/// What a reload cannot change in a running process, for telling the operator.
fn config_fingerprint(c: &Config) -> Vec<(&'static str, String)> {
    let m = &c.milter;
    vec![
        ("[database]", format!("{:?}", c.database)),
        ("[lookup]", format!("{:?}", c.lookup)),
        ("[policy]", format!("{:?}", c.policy)),
        ("[jmap]", format!("{:?}", c.jmap)),
        ("[auth]", format!("{:?}", c.auth)),
        ("[metrics]", format!("{:?}", c.metrics)),
        ("[log]", format!("{:?}", c.log)),
        (
            "[milter] listen, socket_mode, cache_ttl_secs, max_connections, connection_timeout_secs, shutdown_grace_secs",
            format!(
                "{:?}",
                (
                    &m.listen,
                    &m.socket_mode,
                    m.cache_ttl_secs,
                    m.max_connections,
                    m.connection_timeout_secs,
                    m.shutdown_grace_secs
                )
            ),
        ),
    ]
}

/// SIGHUP: reads the configuration again. The milter's per-message settings ([milter] mixed,
/// on_error, protect_subject, compress, spill_*, max_recipients, max_header_*) apply from the next message; anything else
/// needs a restart and is reported as such. A configuration with errors is refused and the
/// running settings stay.
async fn reload_on_hangup(
    path: Option<PathBuf>,
    mut running: Vec<(&'static str, String)>,
    settings: watch::Sender<Arc<sealpost_milter::MilterConfig>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; reloading is not available");
        return;
    };
    while hup.recv().await.is_some() {
        match crate::config::load(path.as_deref()) {
            Err(e) => warn!(
                error = %format!("{e:#}"),
                "reload refused: the configuration has errors; the running settings stay"
            ),
            Ok(loaded) => {
                let new = config_fingerprint(&loaded.config);
                let restart: Vec<&str> = running
                    .iter()
                    .zip(&new)
                    .filter(|(a, b)| a.1 != b.1)
                    .map(|(a, _)| a.0)
                    .collect();
                if !restart.is_empty() {
                    warn!(
                        settings = %restart.join("; "),
                        "changed settings that apply only after a restart"
                    );
                }
                running = new;
                settings.send_replace(Arc::new(loaded.config.milter));
                info!("configuration reloaded; milter settings apply to the next message");
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
